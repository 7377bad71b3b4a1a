"""The Training panel's "Cameras and task" box: what the ticked episodes hold (cameras with image
sizes, tasks, action/state widths), a camera for each view of the preset's canvas (with a
one-click choice when the episodes' cameras are named otherwise, e.g. ACT's one `top` camera),
the task of files that name none, and the warnings that go with the choice. A view over
`app.studio.training.inputs.InputsChoice`. GUI thread only.
"""

from __future__ import annotations

from typing import Sequence

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.studio.training.episode_rows import EpisodeRow
from app.studio.training.inputs import InputsChoice
from app.ui import theme

CHOOSE = "— choose —"


class EpisodeInputsWidget(QGroupBox):
    """The "Cameras and task" box. `changed` fires when the choice (or what it is about) changed."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Cameras and task", parent)
        self._rows: list[EpisodeRow] = []
        self._preset = "tiny"
        self._map: dict[str, str] = {}  # the user's choices, kept while episodes come and go
        self._views: tuple[str, ...] = ()
        self._combos: dict[str, QComboBox] = {}
        self._choice = InputsChoice.of([], self._preset)
        self._editable = True

        layout = QVBoxLayout(self)
        facts = QFormLayout()
        self.cameras_label = QLabel("")
        self.cameras_label.setWordWrap(True)
        self.widths_label = QLabel("")
        self.tasks_label = QLabel("")
        self.tasks_label.setWordWrap(True)
        facts.addRow("Cameras", self.cameras_label)
        facts.addRow("Actions", self.widths_label)
        facts.addRow("Task", self.tasks_label)
        layout.addLayout(facts)
        self.views_label = QLabel("")
        self.views_label.setObjectName("hint")
        self.views_label.setWordWrap(True)
        layout.addWidget(self.views_label)
        self.views_form = QFormLayout()
        layout.addLayout(self.views_form)
        self.use_button = QPushButton("")
        self.use_button.setToolTip("Fill every view with the camera proposed for it")
        self.use_button.clicked.connect(self.use_proposal)
        layout.addWidget(self.use_button)
        task_form = QFormLayout()
        self.task_edit = QLineEdit()
        self.task_edit.setToolTip("The task of the ticked episodes whose files name none (ALOHA/ACT files)")
        self.task_edit.textEdited.connect(lambda *_: self._refresh())
        task_form.addRow("Task of files without one", self.task_edit)
        layout.addLayout(task_form)
        self.problem_label = QLabel("")  # why training cannot start with this choice
        self.problem_label.setWordWrap(True)
        self.problem_label.setStyleSheet(f"color: {theme.ERROR_COLOUR};")
        layout.addWidget(self.problem_label)
        self.hint_label = QLabel("")  # what to know before training (mixed shapes, a default task)
        self.hint_label.setWordWrap(True)
        self.hint_label.setStyleSheet(f"color: {theme.WARN_COLOUR};")
        layout.addWidget(self.hint_label)
        self._refresh()

    # ------------------------------------------------------------------ input

    def set_rows(self, rows: Sequence[EpisodeRow]) -> None:
        """The ticked episodes."""
        self._rows = list(rows)
        self._refresh()

    def set_preset(self, preset: str) -> None:
        self._preset = preset
        self._refresh()

    def use_proposal(self) -> None:
        """The one-click choice: every view from the proposed camera."""
        if self._choice.proposal is not None:
            self._map = self._choice.proposal.as_dict()
            self._refresh()

    def set_view_camera(self, view: str, camera: str) -> None:
        """Choose the camera of one view (as picking it in its list does)."""
        combo = self._combos[view]
        index = combo.findText(camera)
        if index < 0:
            raise KeyError(f"{camera} is not offered for {view} (offered: "
                           f"{[combo.itemText(i) for i in range(combo.count())]})")
        combo.setCurrentIndex(index)

    # ------------------------------------------------------------------ output

    def choice(self) -> InputsChoice:
        return self._choice

    def shown_cameras(self) -> dict[str, tuple[str, bool]]:
        """view -> (the camera its list shows, whether the list can be changed now)."""
        return {view: (combo.currentText(), combo.isEnabled()) for view, combo in self._combos.items()}

    # ------------------------------------------------------------------ painting

    def _on_combo(self, view: str, text: str) -> None:
        if text == CHOOSE:
            self._map.pop(view, None)
        else:
            self._map[view] = text
        self._refresh()

    def _refresh(self) -> None:
        choice = self._choice = InputsChoice.of(self._rows, self._preset, self._map, self.task_edit.text())
        summary = choice.summary
        has_rows = summary.episodes > 0
        self.cameras_label.setText(summary.camera_text() if has_rows else "tick episodes to see what they hold")
        self.widths_label.setText(summary.width_text() if has_rows else "")
        self.tasks_label.setText(choice.summary.task_text(choice.task_for_untasked) if has_rows else "")
        self.views_label.setText(f"The {self._preset} canvas has {len(choice.views)} views; each reads one camera "
                                 "of the episodes:")
        self._show_views(choice)
        self.use_button.setVisible(choice.proposal is not None)
        self.use_button.setText(choice.use_text())
        self._apply_enabled()
        self.task_edit.setPlaceholderText(choice.preset_task if summary.untasked else "every file names its task")
        self.problem_label.setText((choice.problem() or "") if has_rows else "")
        self.problem_label.setVisible(bool(self.problem_label.text()))
        self.hint_label.setText(" ".join(choice.warnings()) if has_rows else "")
        self.hint_label.setVisible(bool(self.hint_label.text()))
        self.changed.emit()

    def _show_views(self, choice: InputsChoice) -> None:
        cameras = choice.summary.common_cameras
        if choice.views != self._views:
            while self.views_form.rowCount():
                self.views_form.removeRow(0)
            self._combos = {}
            for view in choice.views:
                combo = QComboBox()
                combo.currentTextChanged.connect(lambda text, v=view: self._on_combo(v, text))
                self._combos[view] = combo
                self.views_form.addRow(view, combo)
            self._views = choice.views
        for view, combo in self._combos.items():
            offered = list(cameras)
            wanted = choice.reads(view)
            if wanted not in offered:
                offered.insert(0, CHOOSE)
                wanted = CHOOSE
            combo.blockSignals(True)
            if [combo.itemText(i) for i in range(combo.count())] != offered:
                combo.clear()
                combo.addItems(offered)
            combo.setCurrentText(wanted)
            colour = theme.ERROR_COLOUR if wanted == CHOOSE and cameras else theme.TEXT
            combo.setStyleSheet(f"color: {colour};")
            combo.blockSignals(False)

    def set_editable(self, editable: bool) -> None:
        """Locked while a job runs (the run reads what was chosen when it started)."""
        self._editable = editable
        self._apply_enabled()

    def _apply_enabled(self) -> None:
        summary = self._choice.summary
        for combo in self._combos.values():
            combo.setEnabled(self._editable and bool(summary.common_cameras))
        self.use_button.setEnabled(self._editable)
        self.task_edit.setEnabled(self._editable and summary.untasked > 0)
