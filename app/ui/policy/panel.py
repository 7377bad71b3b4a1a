"""The Policy panel: choose a checkpoint, load it, hand the arm to it and take it back, watch what
it plans and how late it is, and evaluate it in simulation.

The panel holds no state of the policy: its buttons emit signals the window forwards to the studio
(`Studio.load_policy`, `start_autonomy`, `take_over`, ...: none blocks; the checkpoint loads on the
studio's worker thread), and `show_status(...)` paints `StudioSnapshot.autonomy`. Describing a
checkpoint for the chooser reads a few small JSON files (`describe_checkpoint`), never torch.
GUI thread only.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.studio.autonomy import AutonomySettings
from app.studio.checkpoints import CheckpointInfo, CheckpointUnreadable, describe_checkpoint, recent_run_folders
from app.studio.eval_job import EvalRequest, evaluation_store
from app.studio.events import Severity, StudioEvent
from app.studio.history import HistoryWindow
from app.studio.snapshot import AutonomyState, AutonomyStatus
from app.ui import theme
from app.ui.policy.evaluation import EvalBoxWidget
from app.ui.policy.plots import PolicyPlotsWidget
from robot.types import ControlSource, Mode

DEVICES = ("auto", "cuda", "cpu")
#: strategy -> the one line the panel shows under the selector (model/execution.py has the rest).
STRATEGY_HINTS: dict[str, str] = {
    "ensemble": "Temporal ensembling (ACT): a new plan every 4 ticks, each action the weighted mean of the "
                "plans that cover it. Smooth; the default.",
    "plain": "Plain chunks: execute half of each plan, then re-plan. Simplest; a seam every plan.",
    "rtc": "Real-time chunking: each plan is in-painted to continue the one it replaces (guided flow steps; "
           "no retraining). About 4x the inference time on a CPU.",
}
STATE_COLOURS: dict[AutonomyState, str] = {
    AutonomyState.OFF: "#374151",
    AutonomyState.LOADING: theme.WARN_COLOUR,
    AutonomyState.READY: theme.OK_COLOUR,
    AutonomyState.AUTONOMOUS: theme.MODE_COLOURS[Mode.POLICY],
    AutonomyState.INTERVENTION: theme.SOURCE_COLOURS[ControlSource.INTERVENTION],
    AutonomyState.FAULT: theme.ERROR_COLOUR,
}
STATE_WORDS: dict[AutonomyState, str] = {
    AutonomyState.OFF: "no policy loaded",
    AutonomyState.LOADING: "loading…",
    AutonomyState.READY: "ready (not driving)",
    AutonomyState.AUTONOMOUS: "AUTONOMOUS: the policy drives",
    AutonomyState.INTERVENTION: "INTERVENTION: you drive",
    AutonomyState.FAULT: "stopped: see below",
}

INTERVENTION_HINT = ("You drive: the jog keys and pads (the leader arms on a real rig); these steps are recorded as "
                     "intervention. Hand back ({key}) and the policy re-plans from where the arm is.")


def describe_html(info: CheckpointInfo) -> str:
    """The chooser's description of a checkpoint (rich text)."""
    loss = "not recorded" if info.val_action_loss is None else f"{info.val_action_loss:.4f}"
    best = "yes, the run's best" if info.is_best else "no (the run's newest)" if info.run_dir else "—"
    rows = [
        ("Model", f"{info.preset} · {info.variant} · {info.horizon} actions per plan"),
        ("Step", "?" if info.step is None else f"{info.step:,}"),
        ("Val. action loss", loss),
        ("Best", best),
        ("Trained on", info.trained_on or "not recorded"),
        ("Cameras", ", ".join(info.cameras) or "?"),
        ("Folder", str(info.path)),
    ]
    body = "".join(f"<tr><td style='color:{theme.MUTED}'>{k}&nbsp;</td><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table cellspacing='0'>{body}</table>"


def display_name(folder: Path, runs_root: Path) -> str:
    try:
        return str(folder.relative_to(runs_root))
    except ValueError:
        return str(folder)


class PolicyPanelWidget(QWidget):
    """The controls (left) and the live plots (right). Signals carry the user's intent."""

    load_requested = Signal(object, object)  # (Path, AutonomySettings)
    autonomous_requested = Signal(bool)  # True: hand the arm to the policy; False: let go
    take_over_requested = Signal()
    hand_back_requested = Signal()

    def __init__(self, shortcuts: dict[str, str], runs_root: Path, rig_source: Callable[[], Path],
                 parent: QWidget | None = None) -> None:
        """shortcuts: action -> key text (app.ui.keys); runs_root: where the chooser lists run
        folders (and evaluations are stored); rig_source: the simulated rig file evaluations use."""
        super().__init__(parent)
        self.runs_root = Path(runs_root)
        self._rig_source = rig_source
        self._keys = shortcuts
        self._info: CheckpointInfo | None = None
        self._state: AutonomyState | None = None
        self._driving = False

        # -- checkpoint -----------------------------------------------------------------------------
        checkpoint_box = QGroupBox("Checkpoint")
        self.checkpoint_combo = QComboBox()
        self.checkpoint_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.checkpoint_combo.setMinimumContentsLength(16)
        self.checkpoint_combo.setToolTip(f"Run folders with a checkpoint under {self.runs_root} (newest first); "
                                         "a run folder loads its best checkpoint")
        self.checkpoint_combo.currentIndexChanged.connect(self._on_checkpoint_chosen)
        self.browse_button = QPushButton("Browse…")
        self.browse_button.clicked.connect(self.browse)
        chooser_row = QHBoxLayout()
        chooser_row.addWidget(self.checkpoint_combo, 1)
        chooser_row.addWidget(self.browse_button)
        self.info_label = QLabel("")
        self.info_label.setWordWrap(True)
        self.info_label.setTextFormat(Qt.TextFormat.RichText)
        self.info_label.setStyleSheet("font-weight: normal;")
        self.info_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        self.device_combo.setToolTip("auto: the GPU (cuda) when there is one, else the CPU")
        self.strategy_combo = QComboBox()
        self.strategy_combo.addItems(tuple(STRATEGY_HINTS))
        self.strategy_combo.currentTextChanged.connect(self._on_strategy)
        self.strategy_hint = QLabel("")
        self.strategy_hint.setObjectName("hint")
        self.strategy_hint.setWordWrap(True)
        self.image_age_spin = QDoubleSpinBox()
        self.image_age_spin.setRange(0.1, 10.0)
        self.image_age_spin.setSingleStep(0.1)
        self.image_age_spin.setDecimals(1)
        self.image_age_spin.setSuffix(" s")
        self.image_age_spin.setValue(AutonomySettings().max_image_age_s)
        self.image_age_spin.setToolTip("The policy stops (the arm holds) when a camera's newest image is older than "
                                       "this: it would act on the past. Raise it only for cameras slower than the "
                                       "status bar's fps suggests")
        self.mismatch_check = QCheckBox("Load even if it does not fit")
        self.mismatch_check.setToolTip("Experts: load a checkpoint whose cameras, image sizes or task differ from the "
                                       "rig's (refused otherwise; the differences are still reported)")
        self.load_button = QPushButton("Load")
        self.load_button.setToolTip("Load the checkpoint (in the background) and check it fits the rig")
        self.load_button.clicked.connect(self.request_load)
        form = QFormLayout()
        form.addRow("Device", self.device_combo)
        form.addRow("Strategy", self.strategy_combo)
        form.addRow(self.strategy_hint)
        form.addRow("Camera age limit", self.image_age_spin)
        form.addRow(self.mismatch_check)
        checkpoint_layout = QVBoxLayout(checkpoint_box)
        checkpoint_layout.addLayout(chooser_row)
        checkpoint_layout.addWidget(self.info_label)
        checkpoint_layout.addLayout(form)
        checkpoint_layout.addWidget(self.load_button)

        # -- autonomy -------------------------------------------------------------------------------
        autonomy_box = QGroupBox("Autonomy")
        self.state_badge = QLabel("—")
        self.state_badge.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.state_badge.setWordWrap(True)
        self.autonomous_button = QPushButton()
        self.autonomous_button.setCheckable(True)
        self.autonomous_button.setMinimumHeight(56)
        self.autonomous_button.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.autonomous_button.setStyleSheet(
            "QPushButton { font-size: 18px; }"
            f"QPushButton:checked {{ background: {theme.MODE_COLOURS[Mode.POLICY]}; border-color: #f0abfc; }}")
        # clicked, not toggled: the button's checked state is painted from the snapshot, and a
        # refused start must not leave it looking on.
        self.autonomous_button.clicked.connect(lambda checked: self.autonomous_requested.emit(checked))
        take_key = shortcuts.get("take_over", "")
        self.take_over_button = QPushButton(f"Take over  ({take_key})")
        self.take_over_button.setToolTip("You drive (jog keys and pads; leader arms on a real rig); the steps are "
                                         "recorded as intervention")
        self.take_over_button.clicked.connect(self.take_over_requested)
        self.hand_back_button = QPushButton(f"Hand back  ({take_key})")
        self.hand_back_button.setToolTip("The policy drives again, re-planning from where the arm is")
        self.hand_back_button.clicked.connect(self.hand_back_requested)
        self.message_label = QLabel("")
        self.message_label.setWordWrap(True)
        self.message_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        for button in (self.browse_button, self.load_button, self.autonomous_button, self.take_over_button,
                       self.hand_back_button):
            button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        grid = QGridLayout(autonomy_box)
        grid.addWidget(self.state_badge, 0, 0, 1, 2)
        grid.addWidget(self.autonomous_button, 1, 0, 1, 2)
        grid.addWidget(self.take_over_button, 2, 0)
        grid.addWidget(self.hand_back_button, 2, 1)
        grid.addWidget(self.message_label, 3, 0, 1, 2)

        self.eval_box = EvalBoxWidget(self.eval_request)

        controls = QWidget()
        controls_layout = QVBoxLayout(controls)
        controls_layout.setContentsMargins(0, 0, 0, 0)
        controls_layout.addWidget(autonomy_box)
        controls_layout.addWidget(checkpoint_box)
        controls_layout.addWidget(self.eval_box)
        controls_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(controls)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(440)  # the widest row (Take over | Hand back) whole, beside a scroll bar
        self.plots = PolicyPlotsWidget()
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(scroll)
        splitter.addWidget(self.plots)
        splitter.setSizes([440, 1160])
        splitter.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(splitter)

        self._on_strategy(self.strategy_combo.currentText())
        self.refresh_checkpoints()
        self.show_status(AutonomyStatus(), Mode.IDLE, running=False)

    # ------------------------------------------------------------------ the chooser

    def refresh_checkpoints(self, select: Path | None = None) -> None:
        """List the run folders under the runs root (and `select`, or keep the current choice)."""
        current = Path(select).resolve() if select is not None else self.chosen_path()
        folders = [folder.resolve() for folder in recent_run_folders(self.runs_root)]
        if current is not None and current not in folders:
            folders.insert(0, current)
        self.checkpoint_combo.blockSignals(True)
        self.checkpoint_combo.clear()
        for folder in folders:
            self.checkpoint_combo.addItem(display_name(folder, self.runs_root), str(folder))
        if current is not None:
            self.checkpoint_combo.setCurrentIndex(folders.index(current))
        self.checkpoint_combo.blockSignals(False)
        self._on_checkpoint_chosen()

    def chosen_path(self) -> Path | None:
        data = self.checkpoint_combo.currentData()
        return Path(data) if data else None

    def choose(self, folder: Path) -> None:
        """Choose `folder` (a run or checkpoint folder) as if browsed to."""
        self.refresh_checkpoints(select=Path(folder))

    def browse(self) -> None:
        start = self.chosen_path() or self.runs_root
        folder = QFileDialog.getExistingDirectory(self, "Choose a run folder or a checkpoint folder", str(start))
        if folder:
            self.choose(Path(folder))

    def _on_checkpoint_chosen(self) -> None:
        path = self.chosen_path()
        self._info = None
        if path is None:
            self.info_label.setText(f"<i>No run folders with a checkpoint under {html.escape(str(self.runs_root))}. "
                                    "Train one (Training panel) or choose a folder with Browse….</i>")
        else:
            try:
                self._info = describe_checkpoint(path)
            except (CheckpointUnreadable, OSError) as error:
                self.info_label.setText(f"<span style='color:{theme.ERROR_COLOUR}'>{html.escape(str(error))}</span>")
            else:
                self.info_label.setText(describe_html(self._info))
        self._update_controls()

    def _on_strategy(self, strategy: str) -> None:
        self.strategy_hint.setText(STRATEGY_HINTS.get(strategy, ""))

    # ------------------------------------------------------------------ requests

    def settings(self) -> AutonomySettings:
        device = self.device_combo.currentText()
        return AutonomySettings(device=None if device == "auto" else device, strategy=self.strategy_combo.currentText(),
                                max_image_age_s=self.image_age_spin.value(), allow_mismatch=self.mismatch_check.isChecked())

    def request_load(self) -> None:
        if self._info is not None:
            self.load_requested.emit(self._info.path, self.settings())

    def eval_request(self, episodes: int, first_seed: int, max_seconds: float) -> EvalRequest:
        """The evaluation of the chosen checkpoint with the panel's device and strategy."""
        if self._info is None:
            raise ValueError("Choose a checkpoint first.")
        device = self.device_combo.currentText()
        return EvalRequest(checkpoint=self._info.path, episodes=episodes, first_seed=first_seed,
                           strategy=self.strategy_combo.currentText(), rig=self._rig_source(),
                           device=None if device == "auto" else device, max_seconds=max_seconds,
                           save_dir=evaluation_store(self.runs_root, self._info.path))

    # ------------------------------------------------------------------ painting

    def show_status(self, status: AutonomyStatus, mode: Mode, running: bool) -> None:
        """Paint the autonomy's state (`snapshot().autonomy`), the loop's mode and whether the
        rig runs (nothing can be loaded or driven before)."""
        state = status.state
        driving = status.driving and mode is Mode.POLICY
        if (state, driving) != (self._state, self._driving):
            if state is AutonomyState.INTERVENTION and not status.message:
                self._say(INTERVENTION_HINT.format(key=self._keys.get("take_over", "")), theme.TEXT)
            self._state, self._driving = state, driving
            words = STATE_WORDS[state]
            if status.checkpoint is not None and state is not AutonomyState.LOADING:
                words += f"  ·  {status.checkpoint.preset} on {status.device}"
            self.state_badge.setText(words)
            self.state_badge.setStyleSheet(theme.badge_style(STATE_COLOURS[state]))
            key = self._keys.get("autonomous", "")
            self.autonomous_button.setText(f"■ Stop autonomy  ({key})" if driving else f"▶ Autonomous  ({key})")
        self.autonomous_button.setChecked(driving)
        self.autonomous_button.setEnabled(running and status.checkpoint is not None and state is not AutonomyState.LOADING)
        self.take_over_button.setEnabled(state is AutonomyState.AUTONOMOUS)
        self.hand_back_button.setEnabled(state is AutonomyState.INTERVENTION)
        self._running = running
        self._loading = state is AutonomyState.LOADING
        self._update_controls()
        # Shown once when it changes (a later refusal must not be painted over), and only when no
        # event said it already with what to do (the loop's says it in its own words).
        message = status.message if state in (AutonomyState.FAULT, AutonomyState.INTERVENTION) else ""
        if message != self._status_message:
            self._status_message = message
        else:
            message = ""
        if message and message not in self.message_label.text():
            if state is AutonomyState.FAULT:
                self._say(message, theme.ERROR_COLOUR)
            else:
                self._say(f"{message} {INTERVENTION_HINT.format(key=self._keys.get('take_over', ''))}", theme.TEXT)

    def show_event(self, event: StudioEvent) -> None:
        """A policy event (loaded, refused, stopped, ...) with what to do."""
        colour = {Severity.ERROR: theme.ERROR_COLOUR, Severity.WARNING: theme.WARN_COLOUR}.get(event.severity, theme.TEXT)
        text = event.message + (f" {event.what_to_do}" if event.what_to_do else "")
        self._say(text, colour)

    def _say(self, text: str, colour: str) -> None:
        self.message_label.setText(text)
        self.message_label.setStyleSheet(f"color: {colour}; font-weight: normal;")

    def show_plots(self, status: AutonomyStatus, history: HistoryWindow | None) -> None:
        self.plots.show_status(status.runner, history, plans=status.state is AutonomyState.AUTONOMOUS)

    _running = False
    _loading = False
    _status_message = ""

    def _update_controls(self) -> None:
        self.load_button.setEnabled(self._running and self._info is not None and not self._loading and not self._driving)
