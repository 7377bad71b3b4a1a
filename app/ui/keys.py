"""Keyboard bindings of the studio: window shortcuts and the jog keys, shown in the help panel.

Shortcuts use keys that never type text (Esc, F-keys, Ctrl+...), so they fire with focus anywhere,
text fields included. Jog keys are plain letters, so they jog only while no text field has focus.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import Qt


@dataclass(frozen=True)
class Shortcut:
    action: str  # the window's action name
    keys: tuple[str, ...]  # QKeySequence strings; the first is shown on buttons
    description: str


SHORTCUTS: tuple[Shortcut, ...] = (
    Shortcut("estop", ("Esc", "Pause"), "Emergency stop (latches until cleared)"),
    Shortcut("clear_estop", ("Ctrl+Shift+E",), "Clear the E-stop (the arm holds where it is)"),
    Shortcut("source:keyboard", ("F2",), "Source: Jog (keyboard / mouse)"),
    # F3 is the rig's own source: Demo on the sim, Leaders on a real rig (only one exists per rig).
    Shortcut("source:demo", ("F3",), "Source: Demo (scripted towel fold, sim only)"),
    Shortcut("source:leaders", ("F3",), "Source: Leaders (the leader arms drive the followers; real rig, after Start arms)"),
    Shortcut("source:hold", ("F4",), "Source: hold position"),
    Shortcut("start_recording", ("F5", "Ctrl+R"), "Start recording"),
    Shortcut("stop_success", ("F6",), "Stop recording, label success"),
    Shortcut("stop_failure", ("F7",), "Stop recording, label failure"),
    Shortcut("discard", ("F8",), "Discard the recording in progress"),
    Shortcut("new_episode", ("Ctrl+N",), "New episode: reset the towel with the next seed"),
    # Function keys, like every shortcut: a letter would type into the Task field instead, and a
    # take-over that works only while no text field has focus is not one to rely on.
    Shortcut("autonomous", ("F10",), "Autonomous on / off: the loaded policy drives the arm, or lets go (hold)"),
    Shortcut("take_over", ("F11",), "Take over from the policy (jog keys / leader arms drive) / hand back to it"),
    Shortcut("start_arms", ("F9",), "Start arms (real rig): followers to the start pose, then squeeze both leader grippers"),
    Shortcut("help", ("F1",), "Show these keys"),
)


#: Shortcuts that exist on one kind of rig only (the window enables the one that applies, so a
#: key shared between them, F3, is never ambiguous).
SIM_ONLY_ACTIONS = frozenset({"source:demo"})
REAL_RIG_ONLY_ACTIONS = frozenset({"source:leaders", "start_arms"})


def shortcut_texts() -> dict[str, str]:
    """action -> the key shown on its button, e.g. {"estop": "Esc"}."""
    return {s.action: s.keys[0] for s in SHORTCUTS}


@dataclass(frozen=True)
class JogKey:
    key: Qt.Key
    label: str
    arm: str  # "left" | "right"
    axis: str  # "x" forward, "y" left, "z" up (gripper frame of the table), "gripper" open
    sign: float


# Left hand drives the left arm, right hand the right arm; same shape on both sides of the keyboard.
JOG_KEYS: tuple[JogKey, ...] = (
    JogKey(Qt.Key.Key_W, "W", "left", "x", +1.0),
    JogKey(Qt.Key.Key_S, "S", "left", "x", -1.0),
    JogKey(Qt.Key.Key_A, "A", "left", "y", +1.0),
    JogKey(Qt.Key.Key_D, "D", "left", "y", -1.0),
    JogKey(Qt.Key.Key_Q, "Q", "left", "z", +1.0),
    JogKey(Qt.Key.Key_E, "E", "left", "z", -1.0),
    JogKey(Qt.Key.Key_Z, "Z", "left", "gripper", +1.0),
    JogKey(Qt.Key.Key_X, "X", "left", "gripper", -1.0),
    JogKey(Qt.Key.Key_I, "I", "right", "x", +1.0),
    JogKey(Qt.Key.Key_K, "K", "right", "x", -1.0),
    JogKey(Qt.Key.Key_J, "J", "right", "y", +1.0),
    JogKey(Qt.Key.Key_L, "L", "right", "y", -1.0),
    JogKey(Qt.Key.Key_U, "U", "right", "z", +1.0),
    JogKey(Qt.Key.Key_O, "O", "right", "z", -1.0),
    JogKey(Qt.Key.Key_N, "N", "right", "gripper", +1.0),
    JogKey(Qt.Key.Key_M, "M", "right", "gripper", -1.0),
)
JOG_KEY_BY_CODE: dict[int, JogKey] = {int(k.key.value): k for k in JOG_KEYS}
FINE_MODIFIER_TEXT = "Shift"  # hold for slow, fine jogging


def help_html() -> str:
    """The help panel: every shortcut and jog key, in two columns so that it fits without scrolling."""
    rows = "".join(
        f"<tr><td><b>{' / '.join(s.keys)}</b>&nbsp;&nbsp;</td><td>{s.description}</td></tr>" for s in SHORTCUTS
    )
    axis_text = {"x": "forward / back", "y": "left / right", "z": "up / down", "gripper": "open / close"}
    jog_rows = ""
    for axis in ("x", "y", "z", "gripper"):
        cells = ""
        for arm in ("left", "right"):
            keys = " / ".join(k.label for k in JOG_KEYS if k.arm == arm and k.axis == axis)
            cells += f"<td><b>{keys}</b>&nbsp;&nbsp;</td>"
        jog_rows += f"<tr>{cells}<td>{axis_text[axis]}</td></tr>"
    shortcuts = (
        "<b>Shortcuts</b> (work anywhere in the window, also while typing)"
        f"<table cellspacing='1'>{rows}</table>"
    )
    jogging = (
        "<b>Jog keys</b> (source: Jog)"
        "<table cellspacing='1'><tr><td><i>left arm</i>&nbsp;&nbsp;</td><td><i>right arm</i>&nbsp;&nbsp;</td><td></td></tr>"
        f"{jog_rows}</table>"
        f"<p>Hold a key to move, release to stop; hold {FINE_MODIFIER_TEXT} for slow, fine moves. "
        "Jog keys do nothing while a text field has the focus (click a camera view first).</p>"
        "<p><b>Mouse</b>: drag in an arm's jog pad to move its gripper over the table; drag with the "
        "right button for up / down.</p>"
    )
    return (
        "<table width='100%' cellspacing='0'><tr>"
        f"<td valign='top' width='52%'>{shortcuts}</td><td valign='top'>{jogging}</td>"
        "</tr></table>"
    )
