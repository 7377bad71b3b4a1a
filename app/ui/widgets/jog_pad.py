"""Mouse jogging: a square pad per arm. Dragging away from the centre moves that gripper in the
table plane at a speed proportional to the distance (left button); the right button drags up/down.
Releasing stops it. Emits normalised velocities in [-1, 1]; the studio scales them.
"""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from app.ui import theme


class JogPadWidget(QWidget):
    """jog_changed(arm, x, y, z): x forward (up on the pad), y left, z up; all in [-1, 1]."""

    jog_changed = Signal(str, float, float, float)

    def __init__(self, arm: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.arm = arm
        self._origin: QPointF | None = None
        self._pointer: QPointF | None = None
        self._vertical = False
        #: (x, y, z) in [-1, 1] while the mouse is held, else zeros; the window re-sends it
        #: periodically, because the jog source forgets a velocity that is not refreshed.
        self.direction: tuple[float, float, float] = (0.0, 0.0, 0.0)
        self.setMinimumSize(110, 110)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip(f"Drag to jog the {arm} gripper: left button in the table plane, right button up/down.")

    def sizeHint(self) -> QSize:
        return QSize(130, 120)

    def _radius(self) -> float:
        return max(10.0, min(self.width(), self.height()) / 2 - 8)

    def mousePressEvent(self, event) -> None:  # noqa: N802
        self._origin = QPointF(self.width() / 2, self.height() / 2)
        self._vertical = event.button() == Qt.MouseButton.RightButton
        self._update_pointer(event.position())

    def mouseMoveEvent(self, event) -> None:  # noqa: N802
        if self._origin is not None:
            self._update_pointer(event.position())

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802
        self._origin = self._pointer = None
        self.direction = (0.0, 0.0, 0.0)
        self.jog_changed.emit(self.arm, 0.0, 0.0, 0.0)
        self.update()

    def _update_pointer(self, position: QPointF) -> None:
        self._pointer = position
        r = self._radius()
        dx = max(-1.0, min(1.0, (position.x() - self._origin.x()) / r))
        dy = max(-1.0, min(1.0, (position.y() - self._origin.y()) / r))
        if self._vertical:
            self.direction = (0.0, 0.0, -dy)
        else:
            # Screen up = forward (+x), screen left = +y (the robot's left, seen from behind it).
            self.direction = (-dy, -dx, 0.0)
        self.jog_changed.emit(self.arm, *self.direction)
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        c = QPointF(self.width() / 2, self.height() / 2)
        r = self._radius()
        painter.setPen(QPen(QColor("#4b5563"), 1))
        painter.setBrush(QColor("#111827"))
        painter.drawEllipse(c, r, r)
        painter.drawLine(QPointF(c.x() - r, c.y()), QPointF(c.x() + r, c.y()))
        painter.drawLine(QPointF(c.x(), c.y() - r), QPointF(c.x(), c.y() + r))
        painter.setPen(QColor(theme.MUTED))
        painter.drawText(QRectF(0, 0, self.width(), 16), Qt.AlignmentFlag.AlignCenter, f"{self.arm} arm")
        if self._pointer is not None:
            painter.setPen(QPen(QColor("#3b82f6"), 3))
            painter.drawLine(c, self._pointer)
            painter.setBrush(QColor("#3b82f6"))
            painter.drawEllipse(self._pointer, 6, 6)
        painter.end()
