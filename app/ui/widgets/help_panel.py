"""The help panel: every shortcut and jog key, so nobody has to guess."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QWidget

from app.ui.keys import help_html


class HelpPanelWidget(QLabel):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(help_html(), parent)
        self.setTextFormat(Qt.TextFormat.RichText)
        self.setWordWrap(True)
        self.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.setStyleSheet("QLabel { font-size: 12px; font-weight: normal; }")
        self.setTextInteractionFlags(Qt.TextInteractionFlag.NoTextInteraction)
