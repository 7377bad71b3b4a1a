"""The side panel: E-stop, mode and source, recording controls, task/operator, episode seed.

It holds no state of the rig: buttons emit signals the window forwards to the studio, and
`show_state(...)` paints what the studio reports (GUI thread only).
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.studio.snapshot import AutonomyState
from app.ui import theme
from robot.types import ControlSource, Mode


def mode_words(mode: Mode, autonomy: AutonomyState = AutonomyState.OFF) -> tuple[str, str]:
    """(words, colour) of what drives the arm, for the control panel and the status bar: the
    policy's two states are told apart from each other and from teleoperation at a glance."""
    if mode is Mode.ESTOP:
        return "E-STOP (latched)", theme.MODE_COLOURS[Mode.ESTOP]
    if mode is Mode.POLICY and autonomy is AutonomyState.INTERVENTION:
        return "INTERVENTION (you drive)", theme.SOURCE_COLOURS[ControlSource.INTERVENTION]
    if mode is Mode.POLICY and autonomy is AutonomyState.AUTONOMOUS:
        return "AUTONOMOUS (policy drives)", theme.MODE_COLOURS[Mode.POLICY]
    return mode.value.upper(), theme.MODE_COLOURS[mode]


def _format_elapsed(seconds: float) -> str:
    minutes, secs = divmod(max(0.0, seconds), 60.0)
    return f"{int(minutes):02d}:{secs:04.1f}"


class EStopButton(QPushButton):
    """The big red button. Enabled always: pressing it twice is harmless, missing it is not."""

    def __init__(self, shortcut_text: str, parent: QWidget | None = None) -> None:
        super().__init__(f"E-STOP\n{shortcut_text}", parent)
        self.setObjectName("estop")
        self.setMinimumHeight(84)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # never steals focus from a text field
        self.setStyleSheet(
            "QPushButton#estop { background: #dc2626; color: white; font-size: 26px; font-weight: 900;"
            " border: 3px solid #7f1d1d; border-radius: 10px; }"
            "QPushButton#estop:hover { background: #ef4444; }"
            "QPushButton#estop:pressed { background: #991b1b; }"
        )


class ControlPanelWidget(QWidget):
    """Buttons and fields of the side panel. Signals carry the user's intent; nothing here blocks."""

    estop_requested = Signal()
    clear_estop_requested = Signal()
    source_requested = Signal(str)
    start_recording_requested = Signal()
    stop_recording_requested = Signal(bool)  # True = success, False = failure
    discard_recording_requested = Signal()
    new_episode_requested = Signal(int)  # seed

    def __init__(
        self,
        sources: list[tuple[str, str]],
        shortcuts: dict[str, str],
        parent: QWidget | None = None,
    ) -> None:
        """sources: (name, label) of the selectable action sources; shortcuts: action -> key text."""
        super().__init__(parent)
        self._shortcuts = shortcuts
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)

        # --- safety: the window places these two above everything that may scroll ------------
        self.estop_button = EStopButton(shortcuts.get("estop", ""))
        self.estop_button.clicked.connect(self.estop_requested)
        self.clear_estop_button = QPushButton(f"Clear E-stop  ({shortcuts.get('clear_estop', '')})")
        self.clear_estop_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.clear_estop_button.clicked.connect(self.clear_estop_requested)

        # --- what is in control --------------------------------------------------------------
        control_box = QGroupBox("Control")
        grid = QGridLayout(control_box)
        grid.addWidget(QLabel("Mode"), 0, 0)
        self.mode_badge = QLabel("—")
        self.mode_badge.setAlignment(Qt.AlignmentFlag.AlignCenter)
        grid.addWidget(self.mode_badge, 0, 1)
        grid.addWidget(QLabel("Source"), 1, 0)
        self.source_badge = QLabel("—")
        self.source_badge.setAlignment(Qt.AlignmentFlag.AlignCenter)
        grid.addWidget(self.source_badge, 1, 1)
        grid.addWidget(QLabel("Safety"), 2, 0)
        self.safety_label = QLabel("—")
        self.safety_label.setWordWrap(True)
        self.safety_label.setToolTip("Joints the safety filter limited in the latest tick (position or speed).")
        grid.addWidget(self.safety_label, 2, 1)
        source_row = QHBoxLayout()
        self.source_buttons: dict[str, QPushButton] = {}
        self._source_group = QButtonGroup(self)
        self._source_group.setExclusive(True)
        for name, label in sources:
            key = shortcuts.get(f"source:{name}", "")
            button = QPushButton(f"{label}\n{key}" if key else label)
            button.setMinimumWidth(60)
            button.setCheckable(True)
            button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            button.clicked.connect(lambda _=False, n=name: self.source_requested.emit(n))
            self._source_group.addButton(button)
            self.source_buttons[name] = button
            source_row.addWidget(button)
        grid.addLayout(source_row, 3, 0, 1, 2)
        grid.setColumnStretch(1, 1)
        layout.addWidget(control_box)

        # --- episode -------------------------------------------------------------------------
        episode_box = QGroupBox("Episode")
        form = QFormLayout(episode_box)
        self.episode_form = form
        self.task_edit = QLineEdit("fold the towel in half")
        self.task_edit.setPlaceholderText("what the demonstration does")
        form.addRow("Task", self.task_edit)
        self.operator_edit = QLineEdit()
        self.operator_edit.setPlaceholderText("your name")
        form.addRow("Operator", self.operator_edit)
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.seed_spin.setToolTip("Towel placement seed of the next reset; the same seed gives the same towel.")
        form.addRow("Next seed", self.seed_spin)
        self.current_seed_label = QLabel("—")
        form.addRow("Towel seed", self.current_seed_label)
        self.new_episode_button = QPushButton(f"New episode: reset towel  ({shortcuts.get('new_episode', '')})")
        self.new_episode_button.setToolTip("Reset the towel and the arms with the next seed.")
        self.new_episode_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.new_episode_button.clicked.connect(lambda: self.new_episode_requested.emit(self.seed_spin.value()))
        form.addRow(self.new_episode_button)
        layout.addWidget(episode_box)

        # --- recording -----------------------------------------------------------------------
        record_box = QGroupBox("Recording")
        rec = QGridLayout(record_box)
        self.recording_badge = QLabel("not recording")
        self.recording_badge.setAlignment(Qt.AlignmentFlag.AlignCenter)
        rec.addWidget(self.recording_badge, 0, 0, 1, 2)
        self.elapsed_label = QLabel("00:00.0")
        self.elapsed_label.setStyleSheet("font-size: 28px; font-family: monospace; font-weight: bold;")
        self.elapsed_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        rec.addWidget(self.elapsed_label, 1, 0, 1, 2)
        self.episode_counter_label = QLabel("0 episodes in the store")
        self.episode_counter_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        rec.addWidget(self.episode_counter_label, 2, 0, 1, 2)
        self.start_button = QPushButton(f"● Start recording  ({shortcuts.get('start_recording', '')})")
        self.start_button.setStyleSheet("QPushButton:enabled { color: #fca5a5; }")
        self.start_button.clicked.connect(self.start_recording_requested)
        rec.addWidget(self.start_button, 3, 0, 1, 2)
        self.success_button = QPushButton(f"Stop: success\n{shortcuts.get('stop_success', '')}")
        self.success_button.setStyleSheet("QPushButton:enabled { color: #86efac; }")
        self.success_button.clicked.connect(lambda: self.stop_recording_requested.emit(True))
        rec.addWidget(self.success_button, 4, 0)
        self.failure_button = QPushButton(f"Stop: failure\n{shortcuts.get('stop_failure', '')}")
        self.failure_button.setStyleSheet("QPushButton:enabled { color: #fcd34d; }")
        self.failure_button.clicked.connect(lambda: self.stop_recording_requested.emit(False))
        rec.addWidget(self.failure_button, 4, 1)
        self.discard_button = QPushButton(f"Discard  ({shortcuts.get('discard', '')})")
        self.discard_button.clicked.connect(self.discard_recording_requested)
        rec.addWidget(self.discard_button, 5, 0, 1, 2)
        self.last_saved_label = QLabel("")
        self.last_saved_label.setObjectName("hint")
        self.last_saved_label.setWordWrap(True)
        rec.addWidget(self.last_saved_label, 6, 0, 1, 2)
        for button in (self.start_button, self.success_button, self.failure_button, self.discard_button):
            button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        layout.addWidget(record_box)
        self.set_recording(active=False, busy=False)

    def show_towel_reset(self, available: bool) -> None:
        """The seed rows and New episode exist for a rig that can reset its towel (the sim) only."""
        for widget in (self.seed_spin, self.current_seed_label, self.new_episode_button):
            self.episode_form.setRowVisible(widget, available)

    # --- painting the studio's state -----------------------------------------------------------
    def show_mode(self, mode: Mode, autonomy: AutonomyState = AutonomyState.OFF) -> None:
        text, colour = mode_words(mode, autonomy)
        if self.mode_badge.text() != text:
            self.mode_badge.setText(text)
            self.mode_badge.setStyleSheet(theme.badge_style(colour))
        self.clear_estop_button.setEnabled(mode is Mode.ESTOP)

    def show_clipped(self, joints: tuple[str, ...]) -> None:
        """The joints the safety filter limited in the latest tick (empty: none)."""
        text = "limiting " + ", ".join(joints) if joints else "within limits"
        if self.safety_label.text() != text:
            self.safety_label.setText(text)
            colour = theme.WARN_COLOUR if joints else theme.OK_COLOUR
            self.safety_label.setStyleSheet(f"color: {colour}; font-weight: normal;")

    def show_source(self, name: str, label: str, kind: ControlSource) -> None:
        if self.source_badge.text() != label:
            self.source_badge.setText(label)
            self.source_badge.setStyleSheet(theme.badge_style(theme.SOURCE_COLOURS[kind]))
        if any((source_name == name) != button.isChecked() for source_name, button in self.source_buttons.items()):
            # An exclusive group refuses to uncheck its last checked button (no source driving).
            self._source_group.setExclusive(False)
            for source_name, button in self.source_buttons.items():
                button.setChecked(source_name == name)
            self._source_group.setExclusive(True)

    def set_recording(
        self, active: bool, busy: bool, elapsed_s: float = 0.0, frames: int = 0, failed: bool = False
    ) -> None:
        """Enable the buttons that make sense now; `busy` while a save or reset is in progress;
        `failed` when the writer stopped on an error (Stop then keeps what was written)."""
        open_episode = active or failed
        self.start_button.setEnabled(not open_episode and not busy)
        for button in (self.success_button, self.failure_button, self.discard_button):
            button.setEnabled(open_episode and not busy)
        self.new_episode_button.setEnabled(not open_episode and not busy)
        self.task_edit.setReadOnly(open_episode)
        self.operator_edit.setReadOnly(open_episode)
        if failed and not busy:
            text, colour = "recording stopped by an error", theme.ERROR_COLOUR
        elif active:
            text, colour = f"● REC  {frames} frames", theme.RECORDING_COLOUR
        elif busy:
            text, colour = "saving…", theme.WARN_COLOUR
        else:
            text, colour = "not recording", "#374151"
        if self.recording_badge.text() != text:
            self.recording_badge.setText(text)
            self.recording_badge.setStyleSheet(theme.badge_style(colour))
        self.elapsed_label.setText(_format_elapsed(elapsed_s))

    def show_episode_count(self, count: int | None) -> None:
        text = "episode store unavailable" if count is None else f"{count} episode{'s' * (count != 1)} in the store"
        if self.episode_counter_label.text() != text:
            self.episode_counter_label.setText(text)

    def show_last_saved(self, text: str) -> None:
        if self.last_saved_label.text() != text:
            self.last_saved_label.setText(text)

    def show_seed(self, current_seed: int | None, next_seed: int) -> None:
        """The towel's seed now, and the one the next "New episode" will use (the spin box is
        left alone while the user edits it)."""
        text = "—" if current_seed is None else str(current_seed)
        if self.current_seed_label.text() != text:
            self.current_seed_label.setText(text)
        if not self.seed_spin.hasFocus():
            self.seed_spin.setValue(next_seed)
