"""Jogging from the keyboard and the on-screen pads: held keys and pad directions become the
studio's jog requests, re-sent inside the jog source's dead-man time while anything is held.

    jog = JogInput(studio, pads, parent=window)
    handled = jog.key_event(event, active=window_accepts_jog_keys)   # from the window's event filter
    jog.send()          # a pad moved
    jog.release()       # focus lost, a dialog, the policy took the arm: stop now

GUI thread only.
"""

from __future__ import annotations

from typing import Callable, Mapping

from PySide6.QtCore import QEvent, QObject, Qt, QTimer

from app.studio.studio import Studio
from app.ui.keys import JOG_KEY_BY_CODE
from app.ui.widgets.jog_pad import JogPadWidget

JOG_REFRESH_MS = 100  # re-send held jog keys well inside the jog source's 0.5 s dead-man timer
_AXES = {"x": 0, "y": 1, "z": 2}


class JogInput(QObject):
    def __init__(self, studio: Studio, pads: Mapping[str, JogPadWidget], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.studio = studio
        self.pads = dict(pads)
        self.held: set[int] = set()
        self.fine = False
        self.timer = QTimer(self)
        self.timer.setInterval(JOG_REFRESH_MS)
        self.timer.timeout.connect(self.send)
        for pad in self.pads.values():
            pad.jog_changed.connect(lambda *_: self.send())

    def key_event(self, event: QEvent, active: Callable[[], bool]) -> bool:
        """A key press or release (not auto-repeated); True when it was a jog key and is taken.
        `active()`: whether jog keys may act now (asked on presses only: a release always stops)."""
        kind = event.type()
        jog_key = JOG_KEY_BY_CODE.get(event.key())
        if jog_key is None or not (kind is QEvent.Type.KeyRelease or active()):
            return False
        # The filter sees the event once per widget it propagates through; the set makes that harmless.
        self.fine = bool(event.modifiers() & Qt.KeyboardModifier.ShiftModifier)
        if kind is QEvent.Type.KeyPress:
            self.held.add(event.key())
        elif event.key() in self.held:
            self.held.discard(event.key())
        else:
            return False
        self.send()
        return True

    def send(self) -> None:
        velocity = {"left": [0.0, 0.0, 0.0], "right": [0.0, 0.0, 0.0]}
        gripper = {"left": 0.0, "right": 0.0}
        for code in self.held:
            key = JOG_KEY_BY_CODE[code]
            if key.axis == "gripper":
                gripper[key.arm] += key.sign
            else:
                velocity[key.arm][_AXES[key.axis]] += key.sign
        pads_active = False
        for arm in ("left", "right"):
            pad = self.pads[arm].direction
            pads_active = pads_active or any(pad)
            direction = [max(-1.0, min(1.0, k + p)) for k, p in zip(velocity[arm], pad)]
            self.studio.jog(arm, direction, fine=self.fine)
            self.studio.jog_gripper(arm, max(-1.0, min(1.0, gripper[arm])), fine=self.fine)
        # Refresh held keys and pads inside the jog source's dead-man time; stop when all are let go.
        if (self.held or pads_active) and not self.timer.isActive():
            self.timer.start()
        elif not (self.held or pads_active):
            self.timer.stop()

    def release(self) -> None:
        self.held.clear()
        for pad in self.pads.values():
            pad.direction = (0.0, 0.0, 0.0)
        self.timer.stop()
        self.studio.stop_jogging()
