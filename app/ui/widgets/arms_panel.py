"""The real rig's arms: Start arms (ALOHA's opening ceremony), what the rig asks of the operator,
a servo that stopped answering, a one-line health summary, and Calibrate.

Paints `app.studio.studio.ArmsState`; buttons only emit signals (GUI thread only).
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from app.ui import theme
from app.studio.studio import ArmsState

STARTING_COLOUR = "#b45309"  # amber: the arms move on their own, keep clear


def health_summary(arms: ArmsState) -> tuple[str, str]:
    """(text, colour) for the panel's health line: servo count, or the problems."""
    servos = sum(len(r.servos) for r in arms.health)
    if not arms.health:
        return "servo health: no reading yet", theme.MUTED
    problems = [p for r in arms.health for p in r.problems]
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        return f"servo health: {problems[0]}{more}", theme.ERROR_COLOUR
    return f"servo health: {servos} servos on {len(arms.health)} arms within limits", theme.OK_COLOUR


class ArmsPanelWidget(QGroupBox):
    """Start arms, the rig's prompt, faults and health at a glance, Calibrate."""

    start_requested = Signal()
    calibrate_requested = Signal()
    health_details_requested = Signal()

    def __init__(self, start_key: str, parent: QWidget | None = None) -> None:
        super().__init__("Arms", parent)
        layout = QVBoxLayout(self)
        self.start_button = QPushButton(f"Start arms  ({start_key})" if start_key else "Start arms")
        self.start_button.setToolTip("Followers move to the start pose; then squeeze both leader grippers to begin.")
        self.start_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.start_button.setMinimumHeight(40)
        self.start_button.clicked.connect(self.start_requested)
        layout.addWidget(self.start_button)
        self.prompt_label = QLabel("—")
        self.prompt_label.setWordWrap(True)
        self.prompt_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        layout.addWidget(self.prompt_label)
        self.not_answering_label = QLabel("")
        self.not_answering_label.setWordWrap(True)
        self.not_answering_label.setStyleSheet(theme.badge_style(theme.ERROR_COLOUR).replace("font-size: 15px", "font-size: 13px"))
        self.not_answering_label.hide()
        layout.addWidget(self.not_answering_label)
        self.health_label = QLabel("servo health: —")
        self.health_label.setWordWrap(True)
        layout.addWidget(self.health_label)
        row = QHBoxLayout()
        self.health_button = QPushButton("Servo table")
        self.health_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.health_button.clicked.connect(self.health_details_requested)
        self.calibrate_button = QPushButton("Calibrate…")
        self.calibrate_button.setToolTip("Measure an arm's joint zeros, directions and gripper range, step by step.")
        self.calibrate_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.calibrate_button.clicked.connect(self.calibrate_requested)
        row.addWidget(self.health_button)
        row.addWidget(self.calibrate_button)
        layout.addLayout(row)
        #: Every distinct prompt painted, in order (the window shows prompts that last a tick).
        self.prompts_shown: list[str] = []
        self._prompt_colour = ""

    def show_state(self, arms: ArmsState, estopped: bool, running: bool) -> None:
        self.start_button.setEnabled(running and not estopped and not arms.starting and not arms.started)
        if arms.started:
            text, colour = arms.prompt or "Arms started.", theme.OK_COLOUR
        elif arms.starting:
            text, colour = arms.prompt, STARTING_COLOUR
        else:
            text, colour = arms.prompt or "Press Start arms.", "#374151"
        if (self.prompt_label.text(), self._prompt_colour) != (text, colour):
            self._prompt_colour = colour
            self.prompt_label.setText(text)
            self.prompt_label.setStyleSheet(theme.badge_style(colour).replace("font-size: 15px", "font-size: 14px"))
            if not self.prompts_shown or self.prompts_shown[-1] != text:
                self.prompts_shown.append(text)
                del self.prompts_shown[:-50]
        alert = f"Not answering — {arms.not_answering}" if arms.not_answering else ""
        if self.not_answering_label.text() != alert:
            self.not_answering_label.setText(alert)
            self.not_answering_label.setVisible(bool(alert))
        summary, summary_colour = health_summary(arms)
        if self.health_label.text() != summary:
            self.health_label.setText(summary)
            self.health_label.setStyleSheet(f"color: {summary_colour}; font-weight: normal;")
        self.calibrate_button.setEnabled(running and not arms.started and not arms.starting)
