"""Colours and fonts of the studio, in one place so every widget agrees on what red means."""

from __future__ import annotations

from robot.types import ControlSource, Mode

# Mode colours: E-stop is the only red in the window; teleop and policy must be told apart at a
# glance from across the lab, so they sit far apart on the colour wheel (blue vs violet/magenta).
MODE_COLOURS: dict[Mode, str] = {
    Mode.IDLE: "#6b7280",
    Mode.TELEOP: "#2563eb",
    Mode.POLICY: "#a21caf",
    Mode.HOLD: "#d97706",
    Mode.ESTOP: "#dc2626",
}
SOURCE_COLOURS: dict[ControlSource, str] = {
    ControlSource.NONE: "#6b7280",
    ControlSource.TELEOP: "#2563eb",
    ControlSource.SCRIPTED: "#0d9488",
    ControlSource.POLICY: "#a21caf",
    ControlSource.INTERVENTION: "#ea580c",
    ControlSource.HOLD: "#d97706",
}
RECORDING_COLOUR = "#dc2626"
OK_COLOUR = "#16a34a"
WARN_COLOUR = "#d97706"
ERROR_COLOUR = "#dc2626"

# One colour per joint (waist .. gripper), used for both arms; measured solid, commanded dashed.
JOINT_COLOURS: tuple[str, ...] = ("#60a5fa", "#f87171", "#34d399", "#fbbf24", "#c084fc", "#22d3ee", "#f472b6")

BACKGROUND = "#111827"
PANEL = "#1f2937"
TEXT = "#e5e7eb"
MUTED = "#9ca3af"

STYLESHEET = f"""
QWidget {{ background: {BACKGROUND}; color: {TEXT}; font-size: 13px; }}
QGroupBox {{ border: 1px solid #374151; border-radius: 6px; margin-top: 14px; padding: 6px;
             background: {PANEL}; font-weight: bold; }}
QGroupBox::title {{ subcontrol-origin: margin; left: 8px; padding: 0 4px; color: {MUTED}; }}
QGroupBox QWidget {{ background: {PANEL}; }}
QLineEdit, QSpinBox, QComboBox {{ background: #111827; border: 1px solid #4b5563; border-radius: 4px;
             padding: 3px 6px; font-weight: normal; }}
QPushButton {{ background: #374151; border: 1px solid #4b5563; border-radius: 5px; padding: 6px 10px;
             font-weight: bold; }}
QPushButton:hover {{ background: #4b5563; }}
QPushButton:disabled {{ color: #6b7280; background: #1f2937; border-color: #374151; }}
QPushButton:checked {{ background: #1d4ed8; border-color: #3b82f6; }}
QListWidget {{ background: #111827; border: 1px solid #374151; font-weight: normal; }}
QStatusBar {{ background: {PANEL}; border-top: 1px solid #374151; }}
QStatusBar QLabel {{ background: {PANEL}; padding: 0 8px; font-family: monospace; }}
QLabel#hint {{ color: {MUTED}; font-weight: normal; font-size: 12px; }}
"""


def badge_style(colour: str) -> str:
    """A filled, rounded label: the mode/source/recording indicators."""
    return (
        f"QLabel {{ background: {colour}; color: white; border-radius: 6px; padding: 4px 10px;"
        " font-weight: bold; font-size: 15px; }"
    )
