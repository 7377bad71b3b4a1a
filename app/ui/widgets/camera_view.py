"""One live camera: the latest frame scaled to the visible size, with its name and frame age."""

from __future__ import annotations

import cv2
import numpy as np
from PySide6.QtCore import QRect, QSize, Qt
from PySide6.QtGui import QColor, QFont, QImage, QPainter
from PySide6.QtWidgets import QSizePolicy, QWidget

from app.ui import theme


class CameraViewWidget(QWidget):
    """Shows the newest (H, W, 3) uint8 RGB frame of one camera, letterboxed to keep its aspect.

    The frame is resized with OpenCV to the pixels actually visible before it becomes a QImage,
    so a 640x480 frame shown in a 320x240 box costs a 320x240 conversion, not a full-size one.
    GUI thread only.
    """

    def __init__(self, camera_name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.camera_name = camera_name
        self._frame: np.ndarray | None = None
        self._frame_time_s: float | None = None
        self._age_ms: float | None = None
        self._image: QImage | None = None
        self._image_buffer: np.ndarray | None = None  # keeps the QImage's memory alive
        self._image_key: tuple | None = None
        self.frames_shown = 0
        self.setMinimumSize(160, 120)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)

    def sizeHint(self) -> QSize:
        return QSize(400, 300)

    def hasHeightForWidth(self) -> bool:
        return True

    def heightForWidth(self, width: int) -> int:
        return int(width * 3 / 4)

    def set_frame(self, frame: np.ndarray | None, capture_time_s: float | None, age_ms: float | None) -> None:
        """Hand over the latest frame; repaints only when the frame is new or its age label changed."""
        self._age_ms = age_ms
        if frame is None:
            if self._frame is not None:
                self._frame = None
                self._image = None
                self.update()
            return
        if capture_time_s is not None and capture_time_s == self._frame_time_s and frame is self._frame:
            return
        self._frame = frame
        self._frame_time_s = capture_time_s
        self._image_key = None  # re-scale at the next paint
        self.update()

    def _target_rect(self) -> QRect:
        """Largest rectangle with the frame's aspect that fits the widget, centred."""
        if self._frame is None:
            return self.rect()
        h, w = self._frame.shape[:2]
        scale = min(self.width() / w, self.height() / h)
        tw, th = max(1, int(w * scale)), max(1, int(h * scale))
        return QRect((self.width() - tw) // 2, (self.height() - th) // 2, tw, th)

    def _scaled_image(self, target: QRect) -> QImage:
        key = (self._frame_time_s, id(self._frame), target.width(), target.height())
        if self._image is None or self._image_key != key:
            frame = self._frame
            if frame.shape[1] != target.width() or frame.shape[0] != target.height():
                frame = cv2.resize(frame, (target.width(), target.height()), interpolation=cv2.INTER_AREA)
            self._image_buffer = np.ascontiguousarray(frame[..., :3])
            h, w = self._image_buffer.shape[:2]
            self._image = QImage(self._image_buffer.data, w, h, 3 * w, QImage.Format.Format_RGB888)
            self._image_key = key
            self.frames_shown += 1
        return self._image

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor("#000000"))
        if self._frame is None:
            painter.setPen(QColor(theme.MUTED))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, f"{self.camera_name}\nno frame yet")
        else:
            target = self._target_rect()
            painter.drawImage(target.topLeft(), self._scaled_image(target))
        self._paint_caption(painter)
        painter.end()

    def _paint_caption(self, painter: QPainter) -> None:
        text = self.camera_name
        if self._age_ms is not None:
            text += f"  {self._age_ms:.0f} ms"
        font = QFont(self.font())
        font.setPointSizeF(max(8.0, font.pointSizeF()))
        font.setBold(True)
        painter.setFont(font)
        metrics = painter.fontMetrics()
        box = QRect(6, 6, metrics.horizontalAdvance(text) + 12, metrics.height() + 6)
        painter.fillRect(box, QColor(0, 0, 0, 160))
        stale = self._age_ms is not None and self._age_ms > 500
        painter.setPen(QColor(theme.WARN_COLOUR if stale else "#ffffff"))
        painter.drawText(box, Qt.AlignmentFlag.AlignCenter, text)
