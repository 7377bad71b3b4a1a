"""What happened and what to do: loop events (safety clips, source faults), recorder and rig errors.

The newest event is on top; errors also show in a banner above the cameras until dismissed, since
a user who is watching the arm will not read a list.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QPushButton, QWidget

from app.ui import theme
from app.studio.events import Severity, StudioEvent

SEVERITY_COLOURS = {Severity.INFO: theme.MUTED, Severity.WARNING: theme.WARN_COLOUR, Severity.ERROR: theme.ERROR_COLOUR}


#: What the user reads for each origin of an event.
ORIGIN_NAMES = {"loop": "Control", "recorder": "Recording", "rig": "Rig", "studio": "Studio"}


def event_text(event: StudioEvent) -> str:
    text = f"{event.clock}  {ORIGIN_NAMES.get(event.origin, event.origin)}: {event.message}"
    if event.what_to_do:
        text += f"\n    → {event.what_to_do}"
    return text


class EventsWidget(QListWidget):
    """A bounded list of events, newest first. `add_events` takes only events it has not shown."""

    def __init__(self, max_items: int = 300, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.max_items = max_items
        self.last_event_id = -1
        self.setWordWrap(True)
        self.setAlternatingRowColors(False)
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)

    def add_events(self, events) -> list[StudioEvent]:
        """Show events newer than the last one shown; returns those that were new."""
        new = [e for e in events if e.event_id > self.last_event_id]
        for event in new:
            item = QListWidgetItem(event_text(event))
            item.setForeground(QColor(SEVERITY_COLOURS[event.severity]))
            item.setToolTip(event_text(event))
            self.insertItem(0, item)
            self.last_event_id = event.event_id
        while self.count() > self.max_items:
            self.takeItem(self.count() - 1)
        return new


class ErrorBannerWidget(QWidget):
    """A red strip with the latest error and what to do; hidden until an error arrives."""

    dismissed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAutoFillBackground(True)
        self.setStyleSheet("ErrorBannerWidget, QLabel, QPushButton { background: #7f1d1d; color: white; }")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 6, 10, 6)
        self.label = QLabel("")
        self.label.setWordWrap(True)
        self.label.setStyleSheet("font-size: 14px; font-weight: bold;")
        layout.addWidget(self.label, 1)
        close = QPushButton("Dismiss")
        close.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        close.clicked.connect(self.dismiss)
        layout.addWidget(close)
        self.hide()

    def show_event(self, event: StudioEvent) -> None:
        text = f"{ORIGIN_NAMES.get(event.origin, event.origin)}: {event.message}"
        if event.what_to_do:
            text += f"  —  {event.what_to_do}"
        self.label.setText(text)
        self.show()

    def dismiss(self) -> None:
        self.hide()
        self.dismissed.emit()
