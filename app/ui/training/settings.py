"""The Training panel's settings: preset, steps, batch size, learning rate, video co-training,
checkpoint interval, device, run folder and further flags, with the Train / Cancel / Resume
buttons and the line that says why a press was refused. Empty or 0 fields mean the preset's
value (the flag is not passed). GUI thread only.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.studio.paths import REPO_ROOT
from app.studio.training.episode_rows import EpisodeRow
from app.studio.training.settings import (
    DEVICES,
    PRESET_HINTS,
    PRESETS,
    TrainSettings,
    default_run_dir,
    parse_extra_args,
    parse_lr,
)
from app.ui import theme


def _spin(special: str, maximum: int) -> QSpinBox:
    """A spin box whose 0 reads as `special` (the preset's value: the flag is not passed)."""
    box = QSpinBox()
    box.setRange(0, maximum)
    box.setSpecialValueText(special)
    box.setValue(0)
    return box


def display_path(path: Path) -> str:
    """A path as the user reads it: relative to the studio's folder when inside it."""
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


class TrainSettingsForm(QGroupBox):
    """The "Settings" box. The buttons only ask (`train_requested`, `cancel_requested`,
    `resume_requested`); the panel decides and answers through `say`."""

    train_requested = Signal()
    cancel_requested = Signal()
    resume_requested = Signal()

    def __init__(self, runs_root: Path, parent: QWidget | None = None) -> None:
        super().__init__("Settings", parent)
        self.runs_root = runs_root
        self._auto_run_dir = True  # the run folder follows the preset until the user edits it
        layout = QVBoxLayout(self)
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.preset_combo = QComboBox()
        self.preset_combo.addItems(list(PRESETS))
        self.preset_combo.currentTextChanged.connect(self._on_preset)
        form.addRow("Preset", self.preset_combo)
        self.preset_hint = QLabel("")
        self.preset_hint.setObjectName("hint")
        self.preset_hint.setWordWrap(True)
        form.addRow("", self.preset_hint)
        self.steps_spin = _spin("preset default", 10_000_000)
        form.addRow("Steps", self.steps_spin)
        self.batch_spin = _spin("preset default", 65_536)
        form.addRow("Batch size", self.batch_spin)
        self.lr_edit = QLineEdit()
        self.lr_edit.setPlaceholderText("preset default (e.g. 1e-4)")
        form.addRow("Learning rate", self.lr_edit)
        self.video_check = QCheckBox("video co-training")
        self.video_check.setChecked(True)
        self.video_check.setToolTip("Off: the action loss only (Fast-WAM's ablation); faster, usually worse")
        form.addRow("", self.video_check)
        self.checkpoint_spin = _spin("preset default", 10_000_000)
        form.addRow("Checkpoint every", self.checkpoint_spin)
        self.device_combo = QComboBox()
        self.device_combo.addItems(list(DEVICES))
        form.addRow("Device", self.device_combo)
        self.run_dir_edit = QLineEdit()
        self.run_dir_edit.textEdited.connect(lambda *_: setattr(self, "_auto_run_dir", False))
        form.addRow("Run folder", self.run_dir_edit)
        self.extra_edit = QLineEdit()
        self.extra_edit.setPlaceholderText("more flags of run.py train, e.g. --threads 2")
        form.addRow("More options", self.extra_edit)
        layout.addLayout(form)

        buttons = QHBoxLayout()
        self.train_button = QPushButton("Train")
        self.train_button.setStyleSheet(f"QPushButton:enabled {{ background: {theme.OK_COLOUR}; color: white; }}")
        self.train_button.clicked.connect(self.train_requested)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the job; it finishes its step and saves a checkpoint first")
        self.cancel_button.clicked.connect(self.cancel_requested)
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Continue this run from its latest checkpoint")
        self.resume_button.clicked.connect(self.resume_requested)
        for button in (self.train_button, self.cancel_button, self.resume_button):
            buttons.addWidget(button)
        layout.addLayout(buttons)
        self.message_label = QLabel("")
        self.message_label.setWordWrap(True)
        self.message_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.message_label)
        layout.addStretch(1)
        self._on_preset(self.preset_combo.currentText())

    def _on_preset(self, preset: str) -> None:
        self.preset_hint.setText(PRESET_HINTS.get(preset, ""))
        if self._auto_run_dir:
            self.run_dir_edit.setText(display_path(default_run_dir(preset, root=self.runs_root)))

    def suggest_next_run_dir(self) -> None:
        """After a start: the next Train makes a new run (unless the user named the folder)."""
        if self._auto_run_dir:
            self.run_dir_edit.setText(display_path(default_run_dir(self.preset_combo.currentText(), time.time() + 1,
                                                                   root=self.runs_root)))

    def _run_dir_from_field(self) -> Path:
        text = self.run_dir_edit.text().strip()
        if not text:
            raise ValueError("Name a run folder (e.g. runs/tiny-first-try).")
        path = Path(text).expanduser()
        return path if path.is_absolute() else REPO_ROOT / path

    def settings(self, selected: Sequence[EpisodeRow]) -> TrainSettings:
        """The settings of the fields for the `selected` episodes; ValueError says what to fix."""
        return TrainSettings(
            episodes=tuple(r.path for r in selected),
            labels=tuple({r.label for r in selected}),
            run_dir=self._run_dir_from_field(),
            preset=self.preset_combo.currentText(),
            steps=self.steps_spin.value() or None,
            batch_size=self.batch_spin.value() or None,
            lr=parse_lr(self.lr_edit.text()),
            video_cotraining=self.video_check.isChecked(),
            checkpoint_every=self.checkpoint_spin.value() or None,
            device=self.device_combo.currentText(),
            extra_args=parse_extra_args(self.extra_edit.text()),
        )

    def set_editable(self, editable: bool) -> None:
        """Locked while a job runs (the buttons are the panel's to set)."""
        for widget in (self.preset_combo, self.steps_spin, self.batch_spin, self.lr_edit, self.video_check,
                       self.checkpoint_spin, self.device_combo, self.run_dir_edit, self.extra_edit):
            widget.setEnabled(editable)

    def say(self, text: str, level: str) -> bool:
        """Show why a press did (not) work; returns False, so a refusal can `return form.say(...)`."""
        colour = {"error": theme.ERROR_COLOUR, "warning": theme.WARN_COLOUR}.get(level, theme.MUTED)
        self.message_label.setStyleSheet(f"color: {colour}; font-weight: {'bold' if level != 'info' else 'normal'};")
        self.message_label.setText(text)
        return False
