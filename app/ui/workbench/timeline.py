"""The episode timeline: control-source bands, event markers and the cursor; click or drag to seek."""

from __future__ import annotations

from PySide6.QtCore import QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from app.ui import theme
from recordings.timeline import MarkerKind, Timeline
from robot.types import ControlSource

MARKER_COLOURS: dict[MarkerKind, str] = {
    MarkerKind.INTERVENTION: "#ea580c",
    MarkerKind.HOLD: "#d97706",
    MarkerKind.LOST_TICKS: "#dc2626",
    MarkerKind.STALL: "#f43f5e",
    MarkerKind.CAMERA_FAULT: "#e879f9",
    MarkerKind.ESTOP: "#ff2d2d",
    MarkerKind.SAFETY_CLIP: "#facc15",
    MarkerKind.LOOP_EVENT: "#22d3ee",
}
#: Markers drawn as a bar to their end (a hold or an intervention is its band already).
BAR_KINDS = frozenset({MarkerKind.ESTOP, MarkerKind.SAFETY_CLIP})
#: Said when a file has no loop record (older files, ALOHA's): unknown, not "nothing happened".
NOT_RECORDED = "this file does not record the loop's modes, safety clipping or events"


def source_colour(source: str) -> QColor:
    try:
        return QColor(theme.SOURCE_COLOURS[ControlSource(source)])
    except ValueError:
        return QColor(theme.MUTED)  # "unknown": an ALOHA file


class TimelineWidget(QWidget):
    """Bands (one colour per control source) over the episode's steps, markers as ticks above
    them (a marker that lasts, E-stop or clipping, also as a bar to its end; the E-stop shades
    the bands red), the cursor as a white line. Emits `seek_requested(step)` on click and drag.
    GUI thread."""

    seek_requested = Signal(int)
    #: The text of the markers at the cursor ("" when none), when it changes: what the view
    #: shows under the timeline, so a hold's reason is read without hovering.
    cursor_markers_changed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._timeline: Timeline | None = None
        self._cursor = 0
        self._cursor_text: str | None = None
        self.setMinimumHeight(44)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setMouseTracking(True)

    def sizeHint(self) -> QSize:
        return QSize(600, 44)

    def set_timeline(self, timeline: Timeline | None) -> None:
        self._timeline = timeline
        self._cursor = 0
        self._cursor_text = None
        self.setToolTip(self._tooltip())
        self._announce_cursor_markers()
        self.update()

    def set_cursor(self, step: int) -> None:
        if step != self._cursor:
            self._cursor = step
            self._announce_cursor_markers()
            self.update()

    def cursor_markers_text(self) -> str:
        """The markers at the cursor, one per line ("" when none or no episode)."""
        if self._timeline is None:
            return ""
        return "\n".join(marker.text for marker in self._timeline.markers_at(self._cursor))

    def _announce_cursor_markers(self) -> None:
        text = self.cursor_markers_text()
        if text != self._cursor_text:
            self._cursor_text = text
            self.cursor_markers_changed.emit(text)

    @property
    def cursor(self) -> int:
        return self._cursor

    def _x(self, step: float) -> float:
        length = self._timeline.length if self._timeline else 1
        return 4 + (self.width() - 8) * step / max(length, 1)

    def _step_at(self, x: float) -> int:
        length = self._timeline.length if self._timeline else 1
        step = int((x - 4) / max(self.width() - 8, 1) * length)
        return min(max(step, 0), max(length - 1, 0))

    def _tooltip(self) -> str:
        if self._timeline is None:
            return ""
        kinds = sorted({band.source for band in self._timeline.bands})
        lines = ["Bands: " + ", ".join(kinds)]
        counts: dict[str, int] = {}
        for marker in self._timeline.markers:
            counts[marker.kind.value] = counts.get(marker.kind.value, 0) + 1
        if counts:
            lines.append("Markers: " + ", ".join(f"{n} {kind}" for kind, n in counts.items()))
        if not self._timeline.loop_recorded:
            lines.append(f"Unknown: {NOT_RECORDED}")
        return "\n".join(lines)

    def paintEvent(self, event) -> None:  # noqa: N802
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(theme.PANEL))
        if self._timeline is None or self._timeline.length == 0:
            painter.setPen(QColor(theme.MUTED))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "no episode")
            painter.end()
            return
        band_top, band_height = 16.0, float(self.height() - 22)
        for band in self._timeline.bands:
            rect = QRectF(self._x(band.start), band_top, max(self._x(band.end) - self._x(band.start), 1.0), band_height)
            painter.fillRect(rect, source_colour(band.source))
        for marker in self._timeline.markers:
            colour = QColor(MARKER_COLOURS[marker.kind])
            x = self._x(marker.step)
            if marker.end is not None and marker.kind in BAR_KINDS:
                width = max(self._x(marker.end) - x, 2.0)
                if marker.kind is MarkerKind.ESTOP:
                    shade = QColor(colour)
                    shade.setAlpha(90)
                    painter.fillRect(QRectF(x, band_top, width, band_height), shade)
                painter.fillRect(QRectF(x, 9.0, width, 5.0), colour)
            painter.setPen(QPen(colour, 3 if marker.kind is MarkerKind.ESTOP else 2))
            painter.drawLine(int(x), 2, int(x), 14)
        x = self._x(self._cursor + 0.5)
        painter.setPen(QPen(QColor("#ffffff"), 2))
        painter.drawLine(int(x), 0, int(x), self.height())
        painter.end()

    def mousePressEvent(self, event) -> None:  # noqa: N802
        if self._timeline is not None and event.button() == Qt.MouseButton.LeftButton:
            self.seek_requested.emit(self._step_at(event.position().x()))

    def mouseMoveEvent(self, event) -> None:  # noqa: N802
        if self._timeline is None:
            return
        if event.buttons() & Qt.MouseButton.LeftButton:
            self.seek_requested.emit(self._step_at(event.position().x()))
        else:
            x = event.position().x()
            step = self._step_at(x)
            near = [m.text for m in self._timeline.markers
                    if abs(self._x(m.step) - x) < 4 or (m.end is not None and m.step <= step < m.end)]
            self.setToolTip("\n".join(near) if near else self._tooltip() + f"\nstep {step}")
