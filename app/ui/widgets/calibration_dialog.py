"""Step-by-step calibration of one Dynamixel arm, in a window of its own (no input(), no print()).

The procedure (`robot.dynamixel.calibration.CalibrationProcedure`) runs on the studio's worker
thread; this dialog only asks the studio (`begin_calibration`, then `studio.calibration`'s
`next`/`back`/`save`/`cancel`, and `refresh` on a timer for the live reading) and paints
`studio.calibration_status()`. GUI thread only; it never touches a bus.
"""

from __future__ import annotations

import math

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.ui import theme
from app.studio.studio import CalibrationStatus, Studio
from robot.dynamixel.calibration import CalibrationStep

REFRESH_MS = 200  # the live reading: one sync read on the worker per refresh


class CalibrationDialog(QDialog):
    """Choose an arm, Begin, then Next through the steps; Back redoes one; Save keeps the result."""

    def __init__(self, studio: Studio, arm_ids: tuple[str, ...], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.studio = studio
        self.setWindowTitle("Calibrate an arm")
        self.setModal(False)
        self.setMinimumWidth(560)
        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        row.addWidget(QLabel("Arm"))
        self.arm_combo = QComboBox()
        self.arm_combo.addItems(list(arm_ids))
        row.addWidget(self.arm_combo, 1)
        self.begin_button = QPushButton("Begin")
        self.begin_button.clicked.connect(self._begin)
        row.addWidget(self.begin_button)
        layout.addLayout(row)
        self.prompt_label = QLabel("Choose the arm to calibrate and press Begin. Its torque goes off: hold it.")
        self.prompt_label.setWordWrap(True)
        self.prompt_label.setMinimumHeight(70)
        self.prompt_label.setStyleSheet("font-size: 15px; font-weight: bold;")
        layout.addWidget(self.prompt_label)
        self.error_label = QLabel("")
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet(f"color: {theme.ERROR_COLOUR}; font-weight: bold;")
        layout.addWidget(self.error_label)
        self.live_grid = QGridLayout()
        self.live_labels: dict[str, QLabel] = {}
        layout.addLayout(self.live_grid)
        buttons = QHBoxLayout()
        self.back_button = QPushButton("Back")
        self.next_button = QPushButton("Next")
        self.save_button = QPushButton("Save")
        self.cancel_button = QPushButton("Cancel")
        self.back_button.clicked.connect(self.studio.calibration.back)
        self.next_button.clicked.connect(self.studio.calibration.next)
        self.save_button.clicked.connect(self.studio.calibration.save)
        self.cancel_button.clicked.connect(self._cancel)
        for button in (self.back_button, self.next_button, self.save_button, self.cancel_button):
            buttons.addWidget(button)
        layout.addLayout(buttons)
        self._own_arm: str | None = None  # the arm this dialog began (a status of another is not ours)
        self.timer = QTimer(self)
        self.timer.setInterval(REFRESH_MS)
        self.timer.timeout.connect(self.refresh)
        self.timer.start()
        self.refresh()

    def _begin(self) -> None:
        self._own_arm = self.arm_combo.currentText()
        self.error_label.setText("")
        self.studio.begin_calibration(self._own_arm)

    def _cancel(self) -> None:
        status = self.studio.calibration_status()
        if status is not None and not status.closed:
            self.studio.calibration.cancel()
        else:
            self.close()

    def refresh(self) -> None:
        """Paint the studio's calibration status and ask for a fresh live reading."""
        status = self.studio.calibration_status()
        if status is not None and status.arm_id != self._own_arm and self._own_arm is None and not status.closed:
            self._own_arm = status.arm_id  # opened elsewhere (a script): follow it
        mine = status if status is not None and status.arm_id == self._own_arm else None
        open_ = mine is not None and not mine.closed
        if open_:
            self.studio.calibration.refresh()
        self._show(mine, open_)

    def _show(self, status: CalibrationStatus | None, open_: bool) -> None:
        self.arm_combo.setEnabled(not open_)
        self.begin_button.setEnabled(not open_)
        step = status.step if status is not None else ""
        self.back_button.setEnabled(open_ and step not in (CalibrationStep.START.value,))
        self.next_button.setEnabled(open_ and step != CalibrationStep.DONE.value)
        self.save_button.setEnabled(open_ and step == CalibrationStep.DONE.value)
        self.cancel_button.setText("Cancel" if open_ else "Close")
        if status is None:
            return
        prompt = status.prompt
        if status.saved_path:
            prompt = f"Saved the calibration of {status.arm_id} to {status.saved_path}. It is in use now."
        if self.prompt_label.text() != prompt:
            self.prompt_label.setText(prompt)
        if self.error_label.text() != status.error:
            self.error_label.setText(status.error)
        self._show_live(status)

    def _show_live(self, status: CalibrationStatus) -> None:
        if not self.live_labels and status.joint_names:
            for k, name in enumerate(status.joint_names):
                self.live_grid.addWidget(QLabel(name), k // 4 * 2, k % 4)
                value = QLabel("—")
                value.setStyleSheet("font-family: monospace; font-size: 14px;")
                value.setAlignment(Qt.AlignmentFlag.AlignLeft)
                self.live_grid.addWidget(value, k // 4 * 2 + 1, k % 4)
                self.live_labels[name] = value
        live = status.live_rad
        for k, name in enumerate(status.joint_names):
            label = self.live_labels.get(name)
            if label is not None:
                label.setText("—" if live is None else f"{math.degrees(live[k]):+7.1f}°")

    def closeEvent(self, event) -> None:  # noqa: N802
        status = self.studio.calibration_status()
        if status is not None and status.arm_id == self._own_arm and not status.closed:
            self.studio.calibration.cancel()  # closing the window must not leave an arm half-calibrated
        self.timer.stop()
        super().closeEvent(event)
