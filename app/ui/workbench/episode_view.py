"""One episode, played back: every camera side by side, the timeline, the joint plots with a cursor
locked to the frame on screen, and the label editor.

Playback: a 60 Hz GUI timer advances a `PlaybackClock`; the frames come decoded (and resized to
the size shown) from a `FramePrefetcher` worker, and each tick shows the newest step decoded up to
the one due (when decoding falls behind, steps are skipped rather than the clock held back). A
step is shown only when all its frames are decoded, and the cursor (timeline, plots, step
counter) is set to the step of the frames shown, so what is on screen is always the frame at the
cursor.

Keys: Space play/pause, Left/Right one step, Shift+Left/Right ten steps, Home/End, 1/2/3 speed.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QKeySequence, QPixmapCache, QShortcut
from PySide6.QtWidgets import (
    QComboBox,
    QGraphicsItem,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.ui import theme
from app.ui.widgets.camera_view import CameraViewWidget
from app.ui.workbench.timeline import MARKER_COLOURS, NOT_RECORDED, TimelineWidget, source_colour
from recordings.errors import EpisodeFormatError
from recordings.playback import SPEEDS, FramePrefetcher, PlaybackClock
from recordings.qa import QaThresholds
from recordings.reader import Episode
from recordings.timeline import MarkerKind, Timeline, episode_timeline
from robot.types import ARM_NAMES, JOINTS_PER_ARM

log = logging.getLogger(__name__)

TICK_MS = 16  # GUI refresh while playing: above the 50 Hz the frames change at


def timeline_legend(timeline: Timeline) -> str:
    """Rich text naming the band colours and markers present."""
    parts = []
    for source in dict.fromkeys(band.source for band in timeline.bands):
        parts.append(f'<span style="color:{source_colour(source).name()}">■</span> {source}')
    counts: dict[MarkerKind, int] = {}
    for marker in timeline.markers:
        counts[marker.kind] = counts.get(marker.kind, 0) + 1
    for kind, count in counts.items():
        parts.append(f'<span style="color:{MARKER_COLOURS[kind]}">▎</span> {count} {kind.value}')
    if timeline.length and not timeline.loop_recorded:
        parts.append(f"<i>E-stops, clipping, hold reasons unknown: {NOT_RECORDED}</i>")
    return "&nbsp;&nbsp;".join(parts)


def _style(plot: pg.PlotItem, title: str, y_label: str) -> pg.PlotItem:
    plot.setTitle(title, color=theme.TEXT, size="10pt")
    plot.setLabel("left", y_label)
    plot.getAxis("left").enableAutoSIPrefix(False)  # "(x0.001)" beside radians confuses
    plot.showGrid(x=True, y=True, alpha=0.2)
    plot.setMenuEnabled(False)
    plot.setDownsampling(auto=True, mode="peak")
    plot.setClipToView(True)
    return plot


class JointPlots(QWidget):
    """qpos (solid) vs action (dashed) per arm, effort, and tracking error (action - qpos), all
    against time in s, each with a cursor line. GUI thread.

    The cursor moves 50 times a second while playing, and everything under it repaints: one
    graphics view for all four plots (one repaint, not four), and every curve and axis (with its
    grid, which spans the plot) paints from a pixmap of its own instead of stroking its path
    again (13 -> 4 ms of CPU per cursor move, 56 curves of 500 steps, 1500x900 window). The
    lines move only when the cursor has moved half a pixel or more (a long episode advances less
    than that per step, and the picture would not change)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.canvas = pg.GraphicsLayoutWidget()
        self.canvas.setMinimumHeight(240)
        layout.addWidget(self.canvas)
        titles = {
            "left": ("left arm: qpos solid, action dashed", "rad / 0..1"),
            "right": ("right arm: qpos solid, action dashed", "rad / 0..1"),
            "effort": ("effort", "servo units"),
            "error": ("tracking error (action - qpos)", "rad / 0..1"),
        }
        self.plots: dict[str, pg.PlotItem] = {}
        for i, (key, (title, unit)) in enumerate(titles.items()):
            self.plots[key] = _style(self.canvas.addPlot(row=i // 2, col=i % 2), title, unit)
        self.plots["right"].setXLink(self.plots["left"])
        self.plots["effort"].setXLink(self.plots["left"])
        self.plots["error"].setXLink(self.plots["left"])
        self.cursors = {}
        for key, plot in self.plots.items():
            line = pg.InfiniteLine(pos=0, angle=90, movable=False, pen=pg.mkPen("#ffffff", width=1))
            plot.addItem(line)
            self.cursors[key] = line
        self.time_s = np.zeros(0)
        self._cursor_s = 0.0
        for plot in self.plots.values():
            for name in ("left", "bottom"):
                plot.getAxis(name).setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        self._size_pixmap_cache()

    def _size_pixmap_cache(self) -> None:
        """Make Qt's pixmap cache (10 MB by default, shared by the application) hold every
        cached curve and axis at the plots' size: when it cannot, each repaint evicts and redraws
        them all, slower than no cache. ~35 MB at 1500x900; grows only."""
        items = sum(len(plot.listDataItems()) + 2 for plot in self.plots.values())
        plot_bytes = self.canvas.width() * self.canvas.height() * self.devicePixelRatioF() ** 2 * 4 / len(self.plots)
        needed_kb = int(items * plot_bytes * 1.25 / 1024)
        if needed_kb > QPixmapCache.cacheLimit():
            QPixmapCache.setCacheLimit(needed_kb)

    def set_data(self, time_s: np.ndarray, qpos: np.ndarray, action: np.ndarray, effort: np.ndarray | None) -> None:
        self.time_s = time_s
        for key, plot in self.plots.items():
            for item in [i for i in plot.listDataItems()]:
                plot.removeItem(item)
        curves = []
        for a, arm in enumerate(ARM_NAMES):
            for j in range(JOINTS_PER_ARM):
                k = a * JOINTS_PER_ARM + j
                colour = theme.JOINT_COLOURS[j % len(theme.JOINT_COLOURS)]
                curves.append(self.plots[arm].plot(time_s, qpos[:, k], pen=pg.mkPen(colour, width=1.5)))
                curves.append(self.plots[arm].plot(time_s, action[:, k], pen=pg.mkPen(colour, width=1, style=Qt.PenStyle.DashLine)))
                curves.append(self.plots["error"].plot(time_s, action[:, k] - qpos[:, k], pen=pg.mkPen(colour, width=1)))
                if effort is not None:
                    curves.append(self.plots["effort"].plot(time_s, effort[:, k], pen=pg.mkPen(colour, width=1)))
        for item in curves:
            # The cache must be on the curve that paints (a PlotDataItem paints nothing itself).
            item.curve.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self._size_pixmap_cache()
        self.plots["effort"].setTitle("effort" if effort is not None else "effort (not in this file)", color=theme.TEXT, size="10pt")
        # Fixed ranges: auto-ranging re-measures every curve each time the cursor moves.
        for key, plot in self.plots.items():
            plot.enableAutoRange(enable=False)
            items = plot.listDataItems()
            values = [item.yData for item in items if item.yData is not None and len(item.yData)]
            if values:
                low = float(min(np.nanmin(v) for v in values))
                high = float(max(np.nanmax(v) for v in values))
                plot.setYRange(low, high if high > low else low + 1.0, padding=0.05)
        if len(time_s):
            self.plots["left"].setXRange(float(time_s[0]), float(time_s[-1]), padding=0.01)

    def set_cursor(self, step: int) -> None:
        if 0 <= step < len(self.time_s):
            self._cursor_s = x = float(self.time_s[step])
            half_pixel = 0.5 / self.devicePixelRatioF()
            for key, line in self.cursors.items():
                view = self.plots[key].vb
                (low, high), width = view.viewRange()[0], view.width()
                # In pixels (ViewBox.mapViewToScene would cost 0.25 ms, twice per plot per frame).
                moved = abs(x - line.value()) * width / (high - low) if high > low else float("inf")
                if moved >= half_pixel or width < 2:  # not laid out yet: no pixels to compare
                    line.setValue(x)

    def cursor_time_s(self) -> float:
        """The time of the step at the cursor, s (the lines lie within half a pixel of it)."""
        return self._cursor_s


class EpisodeViewWidget(QWidget):
    """Plays one episode file. `open_episode(path)`; `cursor` is the step on screen.

    Emits `label_requested(name, label, reason, notes)` when the user saves a label (the
    workbench writes it) and `error(text)` when the file cannot be played."""

    label_requested = Signal(str, str, str, str)
    error = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.path: Path | None = None
        self.clock: PlaybackClock | None = None
        self.prefetcher: FramePrefetcher | None = None
        self.timeline: Timeline | None = None
        self.cursor = 0
        self.frames_shown = 0  # distinct steps put on screen (benchmarks)
        self.cameras: dict[str, CameraViewWidget] = {}
        self._shapes: dict[str, tuple[int, int]] = {}
        self._sized_for: tuple[int, int] | None = None
        self._last_tick = time.monotonic()
        self._timer = QTimer(self)
        self._timer.setInterval(TICK_MS)
        self._timer.timeout.connect(self._on_tick)

        self.camera_row = QHBoxLayout()
        cameras = QWidget()
        cameras.setLayout(self.camera_row)
        self.camera_row.setContentsMargins(0, 0, 0, 0)

        self.play_button = QPushButton("Play")
        self.play_button.setToolTip("Play / pause (Space)")
        self.play_button.clicked.connect(self.toggle_play)
        back, forward = QPushButton("◀ step"), QPushButton("step ▶")
        back.setToolTip("One step back (Left; Shift+Left: ten)")
        forward.setToolTip("One step on (Right; Shift+Right: ten)")
        back.clicked.connect(lambda: self.step_by(-1))
        forward.clicked.connect(lambda: self.step_by(1))
        self.speed = QComboBox()
        for speed in SPEEDS:
            self.speed.addItem(f"{speed:g}x", speed)
        self.speed.setCurrentIndex(SPEEDS.index(1.0))
        self.speed.currentIndexChanged.connect(self._speed_changed)
        self.position = QLabel("no episode")
        self.position.setObjectName("hint")
        self.timeline_widget = TimelineWidget()
        self.timeline_widget.seek_requested.connect(self.seek)
        self.legend = QLabel("")
        self.legend.setObjectName("hint")
        # What the markers at the cursor say (a hold's reason, an E-stop's message, the clipped
        # joints), so it is read while stepping, not only in a hover tooltip.
        self.cursor_markers = QLabel("")
        self.cursor_markers.setObjectName("hint")
        self.cursor_markers.setWordWrap(True)
        self.timeline_widget.cursor_markers_changed.connect(
            lambda text: self.cursor_markers.setText(" · ".join(text.splitlines())))

        self.label_combo = QComboBox()
        for label in ("success", "failure", "unknown"):
            self.label_combo.addItem(label)
        self.reason_combo = QComboBox()
        self.reason_combo.setEditable(True)
        self.reason_combo.setMinimumWidth(160)
        self.notes_edit = QLineEdit()
        self.notes_edit.setPlaceholderText("note")
        self.save_label = QPushButton("Save label")
        self.save_label.clicked.connect(self._save_label)
        self.label_combo.currentTextChanged.connect(lambda text: self.reason_combo.setEnabled(text == "failure"))

        transport = QHBoxLayout()
        for widget in (self.play_button, back, forward, QLabel("speed"), self.speed, self.position):
            transport.addWidget(widget)
        transport.addStretch(1)
        for widget in (QLabel("label"), self.label_combo, QLabel("reason"), self.reason_combo, self.notes_edit, self.save_label):
            transport.addWidget(widget)

        self.plots = JointPlots()
        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addWidget(cameras, 1)
        top_layout.addWidget(self.timeline_widget)
        top_layout.addWidget(self.legend)
        top_layout.addWidget(self.cursor_markers)
        top_layout.addLayout(transport)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(top)
        splitter.addWidget(self.plots)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        splitter.setSizes([600, 360])  # the cameras first; the plots below
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(splitter)

        shortcuts = (
            ("Space", self.toggle_play),
            ("Left", lambda: self.step_by(-1)),
            ("Right", lambda: self.step_by(1)),
            ("Shift+Left", lambda: self.step_by(-10)),
            ("Shift+Right", lambda: self.step_by(10)),
            ("Home", lambda: self.seek(0)),
            ("End", lambda: self.seek(self.clock.length - 1 if self.clock else 0)),
            ("1", lambda: self.speed.setCurrentIndex(0)),
            ("2", lambda: self.speed.setCurrentIndex(1)),
            ("3", lambda: self.speed.setCurrentIndex(2)),
        )
        for key, slot in shortcuts:
            shortcut = QShortcut(QKeySequence(key), self)
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            shortcut.activated.connect(slot)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)

    # ---- opening ----
    def set_failure_reasons(self, reasons: tuple[str, ...]) -> None:
        current = self.reason_combo.currentText()
        self.reason_combo.clear()
        self.reason_combo.addItem("")
        self.reason_combo.addItems(list(reasons))
        self.reason_combo.setCurrentText(current)

    def open_episode(self, path: str | Path, thresholds: QaThresholds | None = None) -> bool:
        """Load the episode's arrays, timeline and first frames; False (and `error`) when it
        cannot be read."""
        self.close_episode()
        path = Path(path)
        try:
            with Episode.open(path) as episode:
                qpos, action, effort = episode.qpos, episode.action, episode.effort
                stamps = episode.sim_times if episode.sim_times is not None else episode.timestamps
                rate = episode.metadata.control_rate_hz
                time_s = (stamps - stamps[0]) if stamps is not None else np.arange(episode.length) / rate
                timeline = episode_timeline(episode, thresholds)
                meta, reason = episode.metadata, episode.failure_reason
                cameras = episode.camera_names
                shapes = {camera: episode.frame(camera, 0).shape[:2] for camera in cameras}
            prefetcher = FramePrefetcher(path, cameras)
        except (EpisodeFormatError, OSError) as error:
            self.error.emit(f"Cannot open {path.name}: {error}")
            return False
        self.path, self.prefetcher, self.timeline = path, prefetcher, timeline
        self.clock = PlaybackClock(len(qpos), rate, float(self.speed.currentData()))
        self._shapes = {camera: (int(h), int(w)) for camera, (h, w) in shapes.items()}
        for camera in cameras:
            view = CameraViewWidget(camera)
            self.cameras[camera] = view
            self.camera_row.addWidget(view)
        self.timeline_widget.set_timeline(timeline)
        self.legend.setText(timeline_legend(timeline))
        self.plots.set_data(time_s, qpos, action, effort)
        self.label_combo.setCurrentText(meta.label.value)
        self.reason_combo.setCurrentText(reason)
        self.reason_combo.setEnabled(meta.label.value == "failure")
        self.notes_edit.setText(meta.notes)
        self._update_prefetch_size()
        self.cursor = -1
        self.seek(0)
        return True

    def close_episode(self) -> None:
        self._timer.stop()
        if self.prefetcher is not None:
            self.prefetcher.close()
        self.prefetcher = self.clock = None
        self.path = None
        for view in self.cameras.values():
            self.camera_row.removeWidget(view)
            view.deleteLater()
        self.cameras = {}
        self._sized_for = None
        self.play_button.setText("Play")

    def closeEvent(self, event) -> None:  # noqa: N802
        self.close_episode()
        super().closeEvent(event)

    # ---- transport ----
    def toggle_play(self) -> None:
        if self.clock is None:
            return
        if self.clock.playing:
            self.pause()
        else:
            self.play()

    def play(self) -> None:
        if self.clock is None:
            return
        self.clock.play()
        self._last_tick = time.monotonic()
        self._timer.start()
        self.play_button.setText("Pause")

    def pause(self) -> None:
        if self.clock is not None:
            self.clock.pause()
            self.clock.seek(self.cursor)  # resume from the frame on screen
        self._timer.stop()
        self.play_button.setText("Play")

    def step_by(self, steps: int) -> None:
        if self.clock is not None:
            self.pause()
            self.seek(self.cursor + steps)

    def seek(self, step: int) -> None:
        """Show `step` now."""
        if self.clock is None or self.prefetcher is None:
            return
        step = self.clock.seek(step)
        self._update_prefetch_size()  # decode at the size the cameras have now (they may just have been laid out)
        try:
            frames = self.prefetcher.frames(step)
        except (EpisodeFormatError, OSError, ValueError) as error:
            self.error.emit(f"Cannot show step {step} of {self.path.name}: {error}")
            return
        self._show(frames)

    def _speed_changed(self) -> None:
        if self.clock is not None:
            self.clock.set_speed(float(self.speed.currentData()))

    def _on_tick(self) -> None:
        clock, prefetcher = self.clock, self.prefetcher
        if clock is None or prefetcher is None:
            return
        now = time.monotonic()
        due = clock.advance(now - self._last_tick)
        self._last_tick = now
        if due != self.cursor:
            if due < self.cursor:  # the clock went back (a seek while playing): show it now
                self.seek(due)
                return
            frames = prefetcher.latest(due, after=self.cursor)
            if frames is not None:
                self._show(frames)
            elif prefetcher.error:
                self.pause()
                self.error.emit(prefetcher.error)
        if not clock.playing and self.cursor >= clock.length - 1:
            self.pause()

    def _show(self, frames) -> None:
        self._update_prefetch_size()
        for camera, image in frames.frames.items():
            self.cameras[camera].set_frame(image, float(frames.step), None)
        self.cursor = frames.step
        self.frames_shown += 1
        self.timeline_widget.set_cursor(frames.step)
        self.plots.set_cursor(frames.step)
        if self.clock is not None:
            seconds = frames.step / self.clock.rate_hz
            self.position.setText(f"step {frames.step} / {self.clock.length - 1}   {seconds:.2f} s")

    # ---- sizes ----
    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        self._update_prefetch_size()

    def _update_prefetch_size(self) -> None:
        """Decode straight to the size the cameras are shown at (all cameras share one size)."""
        if self.prefetcher is None or not self.cameras:
            return
        view = next(iter(self.cameras.values()))
        if (view.width(), view.height()) == self._sized_for:
            return
        self._sized_for = (view.width(), view.height())
        height, width = next(iter(self._shapes.values()))
        scale = min(view.width() / width, view.height() / height)
        if scale <= 0:
            return
        size = (max(2, int(width * scale)), max(2, int(height * scale)))
        self.prefetcher.set_size(size if scale < 1 else None)

    # ---- label ----
    def _save_label(self) -> None:
        if self.path is None:
            return
        label = self.label_combo.currentText()
        reason = self.reason_combo.currentText().strip() if label == "failure" else ""
        self.label_requested.emit(self.path.name, label, reason, self.notes_edit.text())
