"""Scrolling plots: joints per arm (commanded vs measured) and control timing (period, jitter).

Both paint a `HistoryWindow` copy handed over by the window (GUI thread only). Commanded is the
action after the safety filter, measured is the observed qpos, so a gap between the dashed and the
solid line of one colour is the tracking error of that joint.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QWidget

from app.ui import theme
from app.studio.history import HistoryWindow
from robot.types import ARM_JOINT_NAMES, ARM_NAMES, JOINTS_PER_ARM

pg.setConfigOptions(antialias=False, background=theme.BACKGROUND, foreground=theme.TEXT)


def styled_plot(title: str, y_label: str, span_s: float) -> pg.PlotWidget:
    plot = pg.PlotWidget()
    plot.setTitle(title, color=theme.TEXT, size="11pt")
    plot.setLabel("left", y_label)
    # pyqtgraph rescales a unit-less axis whose values stay within +-1 ("(x0.001)", ticks of
    # hundreds): joints a few tenths of a radian from zero would read as hundreds of radians.
    plot.getAxis("left").enableAutoSIPrefix(False)
    plot.setLabel("bottom", "time (s)")
    plot.showGrid(x=True, y=True, alpha=0.2)
    plot.setXRange(-span_s, 0, padding=0)
    plot.setMouseEnabled(x=False, y=True)
    plot.setMenuEnabled(False)
    plot.setClipToView(True)
    plot.setDownsampling(auto=True, mode="peak")
    plot.setMinimumHeight(150)
    return plot


class JointPlotsWidget(QWidget):
    """Two plots (left arm, right arm), 7 joints each: measured solid, commanded dashed.

    Joints are in rad; the gripper is normalised 0..1 (the ALOHA convention), so one axis fits all.
    Curves are bare PlotCurveItems with a y range we set ourselves: PlotDataItem's per-call
    bookkeeping and auto-ranging cost more than the drawing at 28 curves x 500 points.
    """

    def __init__(self, span_s: float = 10.0, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.span_s = span_s
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.plots: dict[str, pg.PlotWidget] = {}
        self.measured_curves: dict[str, list[pg.PlotCurveItem]] = {}
        self.commanded_curves: dict[str, list[pg.PlotCurveItem]] = {}
        self._y_ranges: dict[str, tuple[float, float]] = {}
        for arm in ARM_NAMES:
            plot = styled_plot(f"{arm} arm: measured (solid) vs commanded (dashed)", "rad | gripper 0..1", span_s)
            plot.enableAutoRange(axis="y", enable=False)
            # Top left: the newest samples are drawn at the right edge.
            legend = plot.addLegend(offset=(4, 4), labelTextSize="8pt", colCount=4)
            legend.setBrush(pg.mkBrush(17, 24, 39, 180))
            measured, commanded = [], []
            for j, joint in enumerate(ARM_JOINT_NAMES):
                colour = theme.JOINT_COLOURS[j]
                solid = pg.PlotCurveItem(pen=pg.mkPen(colour, width=2), skipFiniteCheck=True)
                dashed = pg.PlotCurveItem(pen=pg.mkPen(colour, width=1, style=Qt.PenStyle.DashLine), skipFiniteCheck=True)
                plot.addItem(dashed)
                plot.addItem(solid)
                legend.addItem(solid, joint)
                measured.append(solid)
                commanded.append(dashed)
            self.plots[arm] = plot
            self.measured_curves[arm] = measured
            self.commanded_curves[arm] = commanded
            self._y_ranges[arm] = (-1.0, 1.0)
            plot.setYRange(-1.0, 1.0, padding=0)
            layout.addWidget(plot)

    def set_history(self, history: HistoryWindow) -> None:
        if history.length == 0:
            return
        t = history.time_s
        for a, arm in enumerate(ARM_NAMES):
            base = a * JOINTS_PER_ARM
            measured = history.measured[:, base : base + JOINTS_PER_ARM]
            commanded = history.commanded[:, base : base + JOINTS_PER_ARM]
            for j in range(JOINTS_PER_ARM):
                self.measured_curves[arm][j].setData(t, measured[:, j])
                self.commanded_curves[arm][j].setData(t, commanded[:, j])
            # Python floats: pyqtgraph's range checks overflow on float32 scalars.
            low = float(min(measured.min(), commanded.min()))
            high = float(max(measured.max(), commanded.max()))
            self._fit_y(arm, low, high)

    def _fit_y(self, arm: str, low: float, high: float) -> None:
        """Grow the range (with room to spare) when the data leaves it, shrink it only when the
        data needs less than half: a y axis that rescales every frame makes every curve look
        like it moves, and each rescale costs a full relayout of the plot."""
        current_low, current_high = self._y_ranges[arm]
        grow = low < current_low or high > current_high
        shrink = (high - low) < 0.4 * (current_high - current_low)
        if grow or shrink:
            margin = 0.25 * max(0.5, high - low)
            self._y_ranges[arm] = (low - margin, high + margin)
            self.plots[arm].setYRange(low - margin, high + margin, padding=0)


class TimingPlotWidget(QWidget):
    """Control period and start jitter per tick (ms), with the target period as a reference line."""

    def __init__(self, control_rate_hz: float, span_s: float = 10.0, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.span_s = span_s
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self._target_ms = 1e3 / control_rate_hz
        self.plot = styled_plot("", "ms", span_s)
        self.plot.enableAutoRange(axis="y", enable=False)
        legend = self.plot.addLegend(offset=(4, 4), labelTextSize="8pt", colCount=2)
        legend.setBrush(pg.mkBrush(17, 24, 39, 180))
        self.target_line = pg.InfiniteLine(
            pos=self._target_ms, angle=0, pen=pg.mkPen(theme.MUTED, width=1, style=Qt.PenStyle.DotLine)
        )
        self.plot.addItem(self.target_line)
        self.period_curve = pg.PlotCurveItem(pen=pg.mkPen("#60a5fa", width=2), skipFiniteCheck=True)
        self.jitter_curve = pg.PlotCurveItem(pen=pg.mkPen("#f59e0b", width=2), skipFiniteCheck=True)
        for curve, name in ((self.period_curve, "period"), (self.jitter_curve, "start jitter")):
            self.plot.addItem(curve)
            legend.addItem(curve, name)
        self._y_top = 0.0
        layout.addWidget(self.plot)
        self.set_target_rate(control_rate_hz)

    @property
    def target_ms(self) -> float:
        return self._target_ms

    def set_target_rate(self, control_rate_hz: float) -> None:
        self._target_ms = 1e3 / control_rate_hz
        self.target_line.setPos(self._target_ms)
        self.plot.setTitle(f"control timing (target period {self._target_ms:.0f} ms, dotted)", color=theme.TEXT, size="11pt")
        self._set_top(2.5 * self._target_ms)

    def set_history(self, history: HistoryWindow) -> None:
        if history.length == 0:
            return
        self.period_curve.setData(history.time_s, history.period_ms)
        self.jitter_curve.setData(history.time_s, history.jitter_ms)
        # Fit the 99th percentile, not the maximum: the one long first tick after a start would
        # otherwise flatten everything else; the axis never goes below 2.5 periods.
        top = float(np.percentile(np.maximum(history.period_ms, history.jitter_ms), 99))
        self._set_top(max(2.5 * self._target_ms, 1.15 * top))

    def _set_top(self, top: float) -> None:
        if abs(top - self._y_top) > 0.1 * self._y_top:
            self._y_top = top
            self.plot.setYRange(0, top, padding=0)
