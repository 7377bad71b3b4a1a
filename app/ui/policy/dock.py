"""The Policy panel's place in the main window: a dock beside the Training one, a status-bar button
that shows autonomy's state and shows or hides the dock, and the requests its buttons and keys
make of the studio (none blocks: loading runs on the studio's worker thread). GUI thread only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDockWidget, QMainWindow, QPushButton

from app.studio.events import StudioEvent
from app.studio.history import HistoryWindow
from app.studio.snapshot import AutonomyState, Phase, StudioSnapshot
from app.studio.studio import Studio
from app.ui.keys import shortcut_texts
from app.ui.policy.panel import PolicyPanelWidget

DOCK_HEIGHT = 430  # the controls' Autonomy box whole, and plots tall enough to read a plan


def is_policy_event(event: StudioEvent) -> bool:
    """Events the panel repeats: the policy's own (loaded, refused, ...) and the loop's about the
    policy's source (it stopped: why and what to do)."""
    return event.origin == "policy" or (event.origin == "loop" and "'policy'" in event.message)


class PolicyDock:
    """`panel` in `dock` on `window`, and `button` in its status bar.

    release_jog_keys: the window's, called before the arm changes hands (a key held down must
    not carry over); rig_for_evaluation: the rig file `run.py eval` is to run.
    """

    def __init__(self, window: QMainWindow, studio: Studio, below: QDockWidget,
                 release_jog_keys: Callable[[], None], runs_root: Path,
                 rig_for_evaluation: Callable[[], Path]) -> None:
        self.studio = studio
        self._release_jog_keys = release_jog_keys
        self._window = window
        self.panel = PolicyPanelWidget(shortcut_texts(), runs_root, rig_for_evaluation)
        self.dock = QDockWidget("Policy", window)
        self.dock.setObjectName("policy_dock")
        self.dock.setWidget(self.panel)
        window.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.dock)
        window.tabifyDockWidget(below, self.dock)
        self.dock.hide()
        self.button = QPushButton("Policy: off")
        self.button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.button.setStyleSheet("QPushButton { padding: 1px 8px; font-weight: normal; }")
        self.button.setToolTip("Show or hide the Policy panel")
        self.button.clicked.connect(lambda: self.dock.hide() if self.dock.isVisible() else self.show())
        self.panel.load_requested.connect(lambda path, settings: studio.load_policy(path, settings))
        self.panel.autonomous_requested.connect(self.set_autonomous)
        self.panel.take_over_requested.connect(self.take_over)
        self.panel.hand_back_requested.connect(self.hand_back)

    def show(self, checkpoint: Path | None = None) -> None:
        """Show the panel at a useful height, its run list read afresh (a run may have finished
        since); choose `checkpoint` in it if given."""
        self.dock.show()
        self.dock.raise_()
        self._window.resizeDocks([self.dock], [DOCK_HEIGHT], Qt.Orientation.Vertical)
        self.panel.refresh_checkpoints(select=checkpoint)

    # ------------------------------------------------------------------ requests (buttons, keys)

    def toggle_autonomous(self) -> None:
        """The Autonomous key: hand the arm to the loaded policy, or let go of it (hold)."""
        self.set_autonomous(not self.studio.snapshot().autonomy.driving)

    def set_autonomous(self, on: bool) -> None:
        self._release_jog_keys()
        if on:
            self.studio.start_autonomy()
        else:
            self.studio.stop_autonomy()
        self._repaint()

    def toggle_take_over(self) -> None:
        """The take-over key: the person drives while the policy does, the policy again while the
        person does (refused, with an event, otherwise)."""
        if self.studio.snapshot().autonomy.state is AutonomyState.INTERVENTION:
            self.hand_back()
        else:
            self.take_over()

    def take_over(self) -> None:
        self.studio.take_over()
        self._repaint()

    def hand_back(self) -> None:
        self._release_jog_keys()
        self.studio.hand_back()
        self._repaint()

    def _repaint(self) -> None:
        """The controls at once after a request, and the refusal if there was one (not at the
        next paint: a key press should answer while the key is still down)."""
        snap = self.studio.snapshot()
        for event in snap.events[-3:]:
            if is_policy_event(event) and event.event_id > self._last_event_id:
                self.show_event(event)
        self.paint(snap)

    # ------------------------------------------------------------------ painting

    _last_event_id = -1

    def show_event(self, event: StudioEvent) -> None:
        """A new event of the studio's: the panel repeats those about the policy."""
        if is_policy_event(event) and event.event_id > self._last_event_id:
            self._last_event_id = event.event_id
            self.panel.show_event(event)

    def paint(self, snap: StudioSnapshot) -> None:
        autonomy = snap.autonomy
        self.panel.show_status(autonomy, snap.mode, snap.phase is Phase.RUNNING)
        line = f"Policy: {autonomy.state.value}"
        if autonomy.checkpoint is not None:
            line += f" ({autonomy.checkpoint.preset})"
        if self.button.text() != line:
            self.button.setText(line)

    @property
    def plots_due(self) -> bool:
        """The plots paint at every paint with a new tick while the panel is shown."""
        return self.dock.isVisible()

    def paint_plots(self, snap: StudioSnapshot, history: HistoryWindow | None) -> None:
        self.panel.show_plots(snap.autonomy, history)

    def close(self) -> None:
        """The window closes: an evaluation is its child process and must not be left behind."""
        self.panel.eval_box.stop_now()
