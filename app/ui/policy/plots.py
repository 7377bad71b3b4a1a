"""What the policy plans and how late it is, painted from snapshots (GUI thread only).

- Plan: for one joint (the selector), the commanded action (dashed) and the measured qpos (solid)
  of the last seconds, and the policy's current plan drawn ahead of now with the plan it replaced
  faded behind it: each re-plan shows as the bright curve jumping away from the faded one.
- Latency: per chunk, the inference time, the observation's age when inference began and the time
  from the observation to the chunk's first command, over the last seconds, with p50 (dashed) and
  p95 (dotted) lines of inference and observation-to-command; beside it their histogram.
- Queue: actions planned ahead of the arm when each chunk was asked for, and now.

Every curve and line is made once; `show_status` only calls setData/setPos on them, so a paint costs
the same on the thousandth frame as on the first (the window paints this at its full 30 Hz).
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QGridLayout, QHBoxLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from app.studio.history import HistoryWindow
from app.ui import theme
from app.ui.widgets.plots import styled_plot
from robot.types import ARM_JOINT_NAMES, ARM_NAMES, JOINTS_PER_ARM

PAST_S = 4.0  # the plan plot's past: long enough to see a few re-plans, short enough to see each
AHEAD_S = 1.0  # its future: a 32-action plan at 50 Hz reaches 0.64 s ahead
LATENCY_SPAN_S = 20.0
PLAN_COLOUR = "#f0abfc"  # the policy's violet (theme.MODE_COLOURS[POLICY]), lighter to read on dark
PREVIOUS_COLOUR = (240, 171, 252, 80)  # the same, faded: a wide pale band behind the plan
INFERENCE_COLOUR = "#60a5fa"
OBS_AGE_COLOUR = "#9ca3af"
TO_COMMAND_COLOUR = "#fbbf24"
QUEUE_COLOUR = "#34d399"

#: The joint selector's entries: (label, index into the 14 actions).
JOINT_CHOICES: tuple[tuple[str, int], ...] = tuple(
    (f"{arm} {joint}", a * JOINTS_PER_ARM + j) for a, arm in enumerate(ARM_NAMES) for j, joint in enumerate(ARM_JOINT_NAMES)
)

_NO_EDGES, _NO_COUNTS = np.zeros(1), np.zeros(0)


def _pen(colour, width: float = 2, style=Qt.PenStyle.SolidLine):
    return pg.mkPen(colour, width=width, style=style)


def _format_ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}"


class PolicyPlotsWidget(QWidget):
    """The plan, latency, histogram and queue plots. `show_status(runner, history)` paints a
    `model.runner.RunnerStatus` (None: nothing loaded) and the window's `HistoryWindow`."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.joint_combo = QComboBox()
        for label, index in JOINT_CHOICES:
            self.joint_combo.addItem(label, index)
        self.joint_combo.setCurrentIndex(JOINTS_PER_ARM - 1)  # the left gripper: what a fold is about
        self.joint_combo.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.joint_combo.setToolTip("The joint whose commands, measurements and plans are drawn")
        self.readout = QLabel("")
        self.readout.setObjectName("hint")
        self.readout.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # A long line wraps rather than widening the window past the screen.
        self.readout.setWordWrap(True)
        self.readout.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)

        # -- plan ---------------------------------------------------------------------------------
        self.plan_plot = styled_plot("", "rad | gripper 0..1", PAST_S)
        self.plan_plot.setXRange(-PAST_S, AHEAD_S, padding=0)
        self.plan_plot.setLabel("bottom", "time from now (s)")
        legend = self.plan_plot.addLegend(offset=(4, 4), labelTextSize="8pt", colCount=4)
        legend.setBrush(pg.mkBrush(17, 24, 39, 180))
        self.previous_curve = pg.PlotCurveItem(pen=_pen(PREVIOUS_COLOUR, 7), skipFiniteCheck=True)
        self.plan_curve = pg.PlotCurveItem(pen=_pen(PLAN_COLOUR, 3), skipFiniteCheck=True)
        self.commanded_curve = pg.PlotCurveItem(pen=_pen(theme.TEXT, 1.5, Qt.PenStyle.DashLine), skipFiniteCheck=True)
        self.measured_curve = pg.PlotCurveItem(pen=_pen("#22d3ee", 2), skipFiniteCheck=True)
        for curve, name in ((self.measured_curve, "measured"), (self.commanded_curve, "commanded"),
                            (self.plan_curve, "plan"), (self.previous_curve, "previous plan")):
            self.plan_plot.addItem(curve)
            legend.addItem(curve, name)
        self.now_line = pg.InfiniteLine(pos=0.0, angle=90, pen=_pen(theme.MUTED, 1, Qt.PenStyle.DotLine))
        self.plan_plot.addItem(self.now_line)
        self._plan_y = (0.0, 0.0)

        # -- latency over time ---------------------------------------------------------------------
        self.latency_plot = styled_plot("latency per plan (p50 dashed, p95 dotted)", "ms", LATENCY_SPAN_S)
        self.latency_plot.setLabel("bottom", "time from now (s)")
        self.latency_plot.enableAutoRange(axis="y", enable=False)
        legend = self.latency_plot.addLegend(offset=(4, 4), labelTextSize="8pt", colCount=3)
        legend.setBrush(pg.mkBrush(17, 24, 39, 180))
        self.inference_curve = pg.PlotCurveItem(pen=_pen(INFERENCE_COLOUR), skipFiniteCheck=True)
        self.obs_age_curve = pg.PlotCurveItem(pen=_pen(OBS_AGE_COLOUR, 1), skipFiniteCheck=True)
        self.to_command_curve = pg.PlotCurveItem(pen=_pen(TO_COMMAND_COLOUR), skipFiniteCheck=True)
        for curve, name in ((self.inference_curve, "inference"), (self.obs_age_curve, "obs. age"),
                            (self.to_command_curve, "obs. → command")):
            self.latency_plot.addItem(curve)
            legend.addItem(curve, name)
        # p50 dashed, p95 dotted, in the colour of their series.
        self.percentile_lines: dict[str, pg.InfiniteLine] = {}
        for series, colour in (("inference", INFERENCE_COLOUR), ("obs_to_command", TO_COMMAND_COLOUR)):
            for level, style in (("p50", Qt.PenStyle.DashLine), ("p95", Qt.PenStyle.DotLine)):
                line = pg.InfiniteLine(pos=0.0, angle=0, pen=_pen(colour, 1, style))
                line.hide()
                self.latency_plot.addItem(line)
                self.percentile_lines[f"{series}_{level}"] = line
        self._latency_top = 0.0

        # -- histogram -----------------------------------------------------------------------------
        self.histogram_plot = pg.PlotWidget()
        self.histogram_plot.setTitle("latency histogram", color=theme.TEXT, size="10pt")
        self.histogram_plot.setLabel("bottom", "ms")
        self.histogram_plot.setLabel("left", "chunks")
        self.histogram_plot.setMenuEnabled(False)
        self.histogram_plot.setMouseEnabled(x=False, y=False)
        self.histogram_plot.showGrid(x=True, y=True, alpha=0.2)
        self.histogram_plot.setMinimumHeight(120)
        # A step curve takes one more x (bin edge) than y: empty is one edge and no count.
        self.inference_hist = pg.PlotCurveItem(x=_NO_EDGES, y=_NO_COUNTS, stepMode="center", fillLevel=0, pen=_pen(INFERENCE_COLOUR, 1),
                                               brush=pg.mkBrush(96, 165, 250, 90))
        self.to_command_hist = pg.PlotCurveItem(x=_NO_EDGES, y=_NO_COUNTS, stepMode="center", fillLevel=0, pen=_pen(TO_COMMAND_COLOUR, 1),
                                                brush=pg.mkBrush(251, 191, 36, 70))
        self.histogram_plot.addItem(self.inference_hist)
        self.histogram_plot.addItem(self.to_command_hist)

        # -- queue depth ---------------------------------------------------------------------------
        self.queue_plot = styled_plot("queue: actions planned ahead when each plan was asked for", "actions",
                                      LATENCY_SPAN_S)
        self.queue_plot.setLabel("bottom", "time from now (s)")
        self.queue_plot.setMinimumHeight(110)
        self.queue_curve = pg.PlotCurveItem(pen=_pen(QUEUE_COLOUR), skipFiniteCheck=True)
        self.queue_plot.addItem(self.queue_curve)
        self.queue_plot.enableAutoRange(axis="y", enable=False)
        self._queue_top = 0.0

        header = QHBoxLayout()
        header.addWidget(QLabel("Joint"))
        header.addWidget(self.joint_combo)
        header.addWidget(self.readout, 1)
        grid = QGridLayout()
        grid.setContentsMargins(0, 0, 0, 0)
        grid.addWidget(self.plan_plot, 0, 0, 2, 1)
        grid.addWidget(self.latency_plot, 0, 1)
        grid.addWidget(self.histogram_plot, 0, 2)
        grid.addWidget(self.queue_plot, 1, 1, 1, 2)
        grid.setColumnStretch(0, 5)
        grid.setColumnStretch(1, 4)
        grid.setColumnStretch(2, 2)
        grid.setRowStretch(0, 3)
        grid.setRowStretch(1, 2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(header)
        layout.addLayout(grid, 1)
        self.joint_combo.currentIndexChanged.connect(lambda _: self._set_titles())
        self._set_titles()

    @property
    def joint_index(self) -> int:
        """The chosen joint's index into the 14 actions (left arm 0..6, right arm 7..13)."""
        return int(self.joint_combo.currentData())

    def _set_titles(self) -> None:
        self.plan_plot.setTitle(f"{self.joint_combo.currentText()}: measured, commanded, plan ahead of now",
                                color=theme.TEXT, size="10pt")
        self._plan_y = (0.0, 0.0)  # another joint, another range

    # ------------------------------------------------------------------ painting

    def show_status(self, runner, history: HistoryWindow | None, plans: bool = True) -> None:
        """Paint `runner` (a RunnerStatus, or None) and `history` (None: keep the past as drawn);
        `plans`: draw the plans (only while the policy drives: a plan that no longer acts, frozen
        at the tick it was made for, would read as one that does)."""
        joint = self.joint_index
        low, high = np.inf, -np.inf
        if history is not None and history.length:
            measured = history.measured[:, joint]
            commanded = history.commanded[:, joint]
            self.measured_curve.setData(history.time_s, measured)
            self.commanded_curve.setData(history.time_s, commanded)
            low, high = float(min(measured.min(), commanded.min())), float(max(measured.max(), commanded.max()))
        if runner is None:
            for curve in (self.plan_curve, self.previous_curve, self.inference_curve, self.obs_age_curve,
                          self.to_command_curve, self.queue_curve):
                curve.setData([], [])
            self.inference_hist.setData(_NO_EDGES, _NO_COUNTS)
            self.to_command_hist.setData(_NO_EDGES, _NO_COUNTS)
            for line in self.percentile_lines.values():
                line.hide()
            self.readout.setText("No policy loaded.")
        else:
            if plans:
                low, high = self._show_plans(runner, joint, low, high)
            else:
                self.plan_curve.setData([], [])
                self.previous_curve.setData([], [])
            self._show_latency(runner)
        if np.isfinite(low) and np.isfinite(high):
            self._fit_plan_y(low, high)

    def _show_plans(self, runner, joint: int, low: float, high: float) -> tuple[float, float]:
        period = runner.period_s
        for curve, plan, first in ((self.plan_curve, runner.plan, runner.plan_first_tick),
                                   (self.previous_curve, runner.previous, runner.previous_first_tick)):
            if plan is None:
                curve.setData([], [])
                continue
            values = plan[:, joint]
            curve.setData((first - runner.tick + np.arange(values.shape[0])) * period, values)
            low, high = min(low, float(values.min())), max(high, float(values.max()))
        return low, high

    def _show_latency(self, runner) -> None:
        applied = runner.apply_ticks >= 0
        x = (runner.apply_ticks[applied] - runner.tick) * runner.period_s
        inference_ms = runner.inference_s * 1e3
        to_command_ms = runner.obs_to_command_s[applied] * 1e3
        self.inference_curve.setData(x, inference_ms[applied])
        self.obs_age_curve.setData(x, runner.obs_age_s[applied] * 1e3)
        self.to_command_curve.setData(x, to_command_ms)
        self.queue_curve.setData(x, runner.queue_depths[applied].astype(np.float64))
        for series, summary in (("inference", runner.inference), ("obs_to_command", runner.obs_to_command)):
            for level in ("p50", "p95"):
                line = self.percentile_lines[f"{series}_{level}"]
                value = getattr(summary, f"{level}_ms")
                line.setVisible(value is not None)
                if value is not None:
                    line.setPos(value)
        top = max((v for v in (runner.inference.p99_ms, runner.obs_to_command.p99_ms) if v is not None), default=0.0)
        self._latency_top = self._grow_or_shrink(self.latency_plot, self._latency_top, max(50.0, 1.2 * top))
        self._queue_top = self._grow_or_shrink(self.queue_plot, self._queue_top,
                                               float(max(8, int(runner.queue_depths.max(initial=0)) + 4)))
        self._show_histogram(inference_ms, to_command_ms, top)
        inf, o2c = runner.inference, runner.obs_to_command
        self.readout.setText(
            f"{runner.state}  ·  queue {runner.queue_depth}  ·  chunks {runner.chunks}, skipped actions {runner.skipped}  ·  "
            f"inference p50 {_format_ms(inf.p50_ms)} / p95 {_format_ms(inf.p95_ms)} / p99 {_format_ms(inf.p99_ms)} / "
            f"max {_format_ms(inf.max_ms)} ms  ·  obs→command p50 {_format_ms(o2c.p50_ms)} / p95 {_format_ms(o2c.p95_ms)} / "
            f"p99 {_format_ms(o2c.p99_ms)} ms")

    def _show_histogram(self, inference_ms: np.ndarray, to_command_ms: np.ndarray, top: float) -> None:
        edges = np.linspace(0.0, max(50.0, 1.2 * top), 31)
        for curve, values in ((self.inference_hist, inference_ms), (self.to_command_hist, to_command_ms)):
            values = values[np.isfinite(values)]
            if values.size == 0:
                curve.setData(_NO_EDGES, _NO_COUNTS)
                continue
            # The tail beyond the axis lands in the last bin rather than vanishing.
            counts, _ = np.histogram(np.minimum(values, edges[-1] - 1e-9), bins=edges)
            curve.setData(edges, counts.astype(np.float64))

    @staticmethod
    def _grow_or_shrink(plot: pg.PlotWidget, current: float, wanted: float) -> float:
        """Rescale only on a real change: an axis that moves every frame makes every curve look
        like it moves, and each rescale relays the plot out."""
        if wanted > current or wanted < 0.5 * current:
            plot.setYRange(0, wanted, padding=0)
            return wanted
        return current

    def _fit_plan_y(self, low: float, high: float) -> None:
        current_low, current_high = self._plan_y
        if low < current_low or high > current_high or (high - low) < 0.3 * (current_high - current_low):
            margin = 0.2 * max(0.1, high - low)
            self._plan_y = (low - margin, high + margin)
            self.plan_plot.setYRange(low - margin, high + margin, padding=0)
