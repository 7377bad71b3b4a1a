"""Per-servo health of a real rig: temperature, supply voltage, current (or load) and the
hardware-error bits of every servo, coloured against the rig's thresholds.

Paints `robot.dynamixel.health.HealthReport`s the studio copied from the rig (the control thread
reads one arm at a time, about once a second each); never reads a servo itself. GUI thread only.
"""

from __future__ import annotations

import time

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem, QWidget

from app.ui import theme
from robot.dynamixel.health import HealthReport, HealthThresholds, ServoHealth

COLUMNS = ("Arm", "Joint", "ID", "Temp °C", "Supply V", "Current", "Hardware error", "Age s")
#: Readings this close to a limit are amber (a warning before the red problem).
TEMPERATURE_MARGIN_C = 10.0
CURRENT_MARGIN = 0.75
#: A report older than this is greyed: the arm is not being read (a servo stopped answering).
STALE_AFTER_S = 3.0


def cell_colours(servo: ServoHealth, th: HealthThresholds) -> dict[str, str]:
    """Column name -> colour for the readings of one servo (only those worth a colour)."""
    colours = {}
    if servo.temperature_c > th.max_temperature_c:
        colours["Temp °C"] = theme.ERROR_COLOUR
    elif servo.temperature_c > th.max_temperature_c - TEMPERATURE_MARGIN_C:
        colours["Temp °C"] = theme.WARN_COLOUR
    if not th.min_voltage_v <= servo.voltage_v <= th.max_voltage_v:
        colours["Supply V"] = theme.ERROR_COLOUR
    if servo.current_ma is not None:
        if abs(servo.current_ma) > th.max_current_ma:
            colours["Current"] = theme.ERROR_COLOUR
        elif abs(servo.current_ma) > CURRENT_MARGIN * th.max_current_ma:
            colours["Current"] = theme.WARN_COLOUR
    elif servo.load_percent is not None:
        if abs(servo.load_percent) > th.max_load_percent:
            colours["Current"] = theme.ERROR_COLOUR
        elif abs(servo.load_percent) > CURRENT_MARGIN * th.max_load_percent:
            colours["Current"] = theme.WARN_COLOUR
    if servo.hardware_error:
        colours["Hardware error"] = theme.ERROR_COLOUR
    return colours


class ServoHealthWidget(QTableWidget):
    """One row per servo (shadows included), grouped by arm."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(0, len(COLUMNS), parent)
        self.setHorizontalHeaderLabels(COLUMNS)
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(20)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.horizontalHeader().setStretchLastSection(True)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.setStyleSheet("QTableWidget { background: #111827; gridline-color: #374151; font-weight: normal; font-size: 12px; }")
        self._shown: tuple[float, ...] = ()
        self.updates = 0

    def show_health(self, reports: tuple[HealthReport, ...], thresholds: HealthThresholds, now_s: float | None = None) -> None:
        """Repaint when a report is new; ages are refreshed on every call (callers: ~1 Hz)."""
        now_s = time.monotonic() if now_s is None else now_s
        stamps = tuple(r.time_s for r in reports)
        rows = sum(len(r.servos) for r in reports)
        if stamps != self._shown or self.rowCount() != rows:
            self._shown = stamps
            self.updates += 1
            self.setRowCount(rows)
            row = 0
            for report in reports:
                for servo in report.servos:
                    self._fill_row(row, report, servo, thresholds)
                    row += 1
        row = 0
        for report in reports:
            age = max(0.0, now_s - report.time_s)
            stale = age > STALE_AFTER_S
            for _ in report.servos:
                item = self.item(row, COLUMNS.index("Age s"))
                if item is not None:
                    item.setText(f"{age:.0f}" if age >= 1.5 else "<1")
                    item.setForeground(QColor(theme.ERROR_COLOUR if stale else theme.MUTED))
                    item.setToolTip("Not read for a while: is a servo of this arm not answering?" if stale else "")
                row += 1

    def _fill_row(self, row: int, report: HealthReport, servo: ServoHealth, thresholds: HealthThresholds) -> None:
        if servo.current_ma is not None:
            current = f"{servo.current_ma:.0f} mA"
        elif servo.load_percent is not None:
            current = f"{servo.load_percent:.0f} %"
        else:
            current = "—"
        values = {
            "Arm": report.arm_id,
            "Joint": servo.joint,
            "ID": str(servo.servo_id),
            "Temp °C": f"{servo.temperature_c:.0f}",
            "Supply V": f"{servo.voltage_v:.1f}",
            "Current": current,
            "Hardware error": servo.hardware_error.describe() if servo.hardware_error else "none",
            "Age s": "",
        }
        colours = cell_colours(servo, thresholds)
        tooltip = "; ".join(servo.problems)
        for column, name in enumerate(COLUMNS):
            item = QTableWidgetItem(values[name])
            colour = colours.get(name)
            if colour is not None:
                item.setBackground(QColor(colour))
                item.setForeground(QColor("white"))
            elif name in ("Arm", "Hardware error") or not servo.problems:
                item.setForeground(QColor(theme.MUTED if name in ("Arm", "Hardware error") else theme.TEXT))
            item.setToolTip(tooltip)
            self.setItem(row, column, item)

    def cell_colour(self, arm_id: str, servo_id: int, column: str) -> str | None:
        """The background colour of one cell, '#rrggbb' (None: no colour); for tests and tools."""
        col = COLUMNS.index(column)
        for row in range(self.rowCount()):
            if self.item(row, 0).text() == arm_id and self.item(row, 2).text() == str(servo_id):
                brush = self.item(row, col).background()
                return brush.color().name() if brush.style() != Qt.BrushStyle.NoBrush else None
        raise KeyError(f"no row for {arm_id} servo {servo_id}")
