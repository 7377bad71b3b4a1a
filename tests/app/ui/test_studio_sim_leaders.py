"""The studio window on the simulation driven by leader arms (configs/sim_leaders_emulated.toml:
two pty Dynamixel emulators with scripted hands behind the real dynamixel-sdk, the MuJoCo world):
Leaders is offered beside Demo, and once both grippers are squeezed the simulated arms follow
the leaders."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from app.studio.studio import Phase, Studio
from app.ui.main_window import StudioWindow
from robot.types import Mode

ROOT = Path(__file__).resolve().parents[3]
WAIT_MS = 20_000


@pytest.fixture
def window_on_sim_leaders(qapp, tmp_path):
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.001)  # the emulators are threads of this process (see tests/robot/dynamixel)
    text = (ROOT / "configs" / "sim_leaders_emulated.toml").read_text()
    text = text.replace('calibration_dir = "../calibration/emulated"', f'calibration_dir = "{tmp_path / "calibration"}"')
    text = text.replace('store_dir = "../recordings/episodes"', f'store_dir = "{tmp_path / "episodes"}"')
    path = tmp_path / "sim_leaders.toml"
    path.write_text(text)
    studio = Studio(path)
    window = StudioWindow(studio)
    window.show()
    studio.start()
    assert studio.wait_until_running(60), [e.message for e in studio.events.all()]
    yield window, studio
    window.ask_recording_choice = lambda: None
    window.close()
    if studio.snapshot().phase is not Phase.STOPPED:
        studio.shutdown(recording_label=None)
    sys.setswitchinterval(before)


def test_leaders_drive_the_simulated_arms_from_the_window(window_on_sim_leaders, qtbot):
    window, studio = window_on_sim_leaders
    buttons = window.control_panel.source_buttons
    qtbot.waitUntil(buttons["leaders"].isEnabled, timeout=WAIT_MS)  # painted: the click can land
    # Still a simulation (the scripted demo stays available) with leaders and no arms panel;
    # how the window shows that is in test_window_display.py.
    snap = studio.snapshot()
    assert snap.capabilities.simulated and snap.capabilities.leaders and not snap.capabilities.real_arms
    assert snap.arms is None and snap.available_sources == ("keyboard", "leaders", "demo", "hold")
    qtbot.mouseClick(buttons["leaders"], Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: studio.snapshot().mode is Mode.TELEOP and studio.snapshot().loop.source_name == "leader arms",
                    timeout=WAIT_MS)
    # The scripted hands squeeze both grippers every few seconds; then the sim follows the leaders.
    rig = studio.rig
    qtbot.waitUntil(lambda: rig.started, timeout=WAIT_MS)
    first = studio.snapshot().tick.observation.qpos.copy()
    qtbot.waitUntil(lambda: abs(studio.snapshot().tick.observation.qpos - first).max() > 0.02, timeout=WAIT_MS)
