"""Leader arms driving the simulated followers (the "sim-leaders" rig kind): rig file -> two
Dynamixel leader buses (pty emulators with scripted hands, the real dynamixel-sdk) + the MuJoCo
rig. Recording from it through the paced loop is tested with `run.py record` in
tests/app/studio/test_jobs.py."""

import re
import sys
from pathlib import Path

import numpy as np
import pytest

from robot.dynamixel.arm import GRIPPER
from robot.rig_config import RigFileError
from robot.rigs import open_rig
from robot.sim_leaders import SimLeadersRig

ROOT = Path(__file__).resolve().parents[2]
EMULATED = ROOT / "configs" / "sim_leaders_emulated.toml"


def rig_file(tmp_path: Path, text: str | None = None) -> Path:
    """configs/sim_leaders_emulated.toml with a private calibration folder and store, one camera."""
    text = text if text is not None else EMULATED.read_text()
    text = text.replace('calibration_dir = "../calibration/emulated"', f'calibration_dir = "{tmp_path / "calibration"}"')
    text = text.replace('store_dir = "../recordings/episodes"', f'store_dir = "{tmp_path / "episodes"}"')
    # One camera keeps the shared CPUs free for the loop; the sim's cameras are tested elsewhere.
    text = text.replace('camera_names = ["cam_high", "cam_left_wrist", "cam_right_wrist"]', 'camera_names = ["cam_high"]')
    path = tmp_path / "sim_leaders.toml"
    path.write_text(text)
    return path


@pytest.fixture(autouse=True)
def fast_thread_switching():
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.001)  # the emulators are threads here; see tests/robot/dynamixel/conftest.py
    yield
    sys.setswitchinterval(before)


def test_the_rig_files_parse_and_refuse_followers_with_a_line(tmp_path):
    rig, _ = open_rig(ROOT / "configs" / "sim_leaders.toml")
    assert isinstance(rig, SimLeadersRig) and rig.simulated
    assert [a.port for a in rig.leaders_config.leaders] == ["/dev/ttyDXL_master_left", "/dev/ttyDXL_master_right"]
    assert rig.camera_names == ("cam_high", "cam_left_wrist", "cam_right_wrist") and rig.control_rate_hz == 50.0
    text = EMULATED.read_text()
    bad = rig_file(tmp_path, text + '\n[[arms]]\nname = "follower_left"\n')
    with pytest.raises(RigFileError, match=r"line \d+: .*no real followers.*follower_left"):
        open_rig(bad)
    bad = rig_file(tmp_path, text.replace("retries = 6", "retries = 6\nvelocity_limit = 131"))
    with pytest.raises(RigFileError, match=r"line \d+: \[aloha\] velocity_limit: concerns real follower arms"):
        open_rig(bad)
    bad = rig_file(tmp_path, re.sub(r'\[\[arms\]\]\nname = "leader_right"\n', "", text))
    with pytest.raises(RigFileError, match="leader_left, leader_right; given: leader_left"):
        open_rig(bad)


def test_leaders_are_limp_and_drive_only_after_both_grippers_are_squeezed(tmp_path):
    rig, _ = open_rig(rig_file(tmp_path))
    rig.connect()
    try:
        gripper_id = rig.leaders[0].layout.joints[GRIPPER].servo_id
        for name, bus in rig.emulators.items():
            assert all(bus.read_register(s, "Torque_Enable") == 0 for s in (1, 2, 3, gripper_id)), name
            bus.attach_motion(gripper_id, None)  # the test's hands, not the script's
            bus.set_position_rad(gripper_id, 0.2)  # open
        rig.begin_start()
        for _ in range(3):
            rig.command(rig.read().qpos)
        assert not rig.started and "squeeze both grippers" in rig.start_prompt
        assert "squeeze both grippers" in " ".join(m.text for m in rig.status().messages)
        rig.emulators["leader_left"].set_position_rad(gripper_id, -0.6)
        rig.command(rig.read().qpos)
        assert not rig.started  # one hand is not enough
        rig.emulators["leader_right"].set_position_rad(gripper_id, -0.6)
        rig.read()
        assert rig.started
        action = rig.leader_action()
        assert action.shape == (14,) and action.dtype == np.float32
        assert action[GRIPPER] == pytest.approx((-0.6 + 0.6842) / (0.3083 + 0.6842), abs=0.01)
        rig.on_estop()
        assert not rig.started and "E-stop" in rig.start_prompt
        rig.on_estop_cleared()
        rig.read()  # both still squeezed: the hand-over is immediate
        assert rig.started
    finally:
        rig.disconnect()
    assert rig.emulators == {} and rig.leaders == []
