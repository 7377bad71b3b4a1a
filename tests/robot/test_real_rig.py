"""The ALOHA rig on emulated hardware, end to end: rig file -> four Dynamixel buses (pty emulators,
real dynamixel-sdk) and emulated RealSense cameras -> the real control loop: opening ceremony with
the scripted operator squeezing both leaders, teleoperation, E-stop, a servo going silent."""

import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from robot.aloha import START_ARM_POSE_RAD
from robot.control_loop import ControlLoop
from robot.real_rig import AlohaRig
from robot.rig_config import RigFileError
from robot.rigs import open_rig
from robot.types import Mode

ROOT = Path(__file__).resolve().parents[2]

def emulated_rig_file(tmp_path: Path, **overrides) -> Path:
    """configs/emulated.toml with a private calibration folder, small cameras and short ramps."""
    text = (ROOT / "configs" / "emulated.toml").read_text()
    text = text.replace('calibration_dir = "../calibration/emulated"', f'calibration_dir = "{tmp_path / "calibration"}"')
    settings = {"arm_ramp_s": 0.5, "gripper_ramp_s": 0.2, **overrides}
    for key, value in settings.items():
        text, found = re.subn(rf"^{key} = .*$", f"{key} = {value}", text, flags=re.M)
        if not found:
            text = text.replace("[aloha]\n", f"[aloha]\n{key} = {value}\n", 1)
    text = re.sub(r"fps = 15", "fps = 6", text)
    # One camera is enough here; three more threads per camera would only load the shared CPUs.
    text = text[: text.index("[[cameras]]\nkind = \"realsense-emulated\"\nname = \"cam_left_wrist\"")]
    path = tmp_path / "emulated.toml"
    path.write_text(text.replace('store_dir = "../recordings/episodes"', f'store_dir = "{tmp_path / "episodes"}"'))
    return path

@pytest.fixture
def rig_and_loop(tmp_path):
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.001)  # the emulators are threads here; see tests/robot/dynamixel/conftest.py
    rig, rig_file = open_rig(emulated_rig_file(tmp_path))
    assert isinstance(rig, AlohaRig)
    rig.connect()
    loop = ControlLoop(rig, rig_file.control)
    yield rig, loop
    loop.stop()
    rig.disconnect()
    sys.setswitchinterval(before)

def wait_until(condition, timeout_s):
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True

def torque(rig, arm_id):
    em = rig.emulators[arm_id]
    return [em.read_register(i, "Torque_Enable") for i in (1, 2, 3, 9)]

def test_the_rig_files_parse_and_refuse_mistakes_with_a_line(tmp_path):
    rig, rig_file = open_rig(ROOT / "configs" / "aloha.toml")
    assert [a.port for a in rig.config.arms][:2] == ["/dev/ttyDXL_puppet_left", "/dev/ttyDXL_puppet_right"]
    assert rig.config.settings.velocity_limit == 131 and rig.camera_names == ("cam_high", "cam_left_wrist", "cam_right_wrist")
    bad = tmp_path / "bad.toml"
    bad.write_text((ROOT / "configs" / "aloha.toml").read_text().replace("velocity_limit = 131", "velocity_limt = 131"))
    with pytest.raises(RigFileError, match=r"line \d+: \[aloha\] velocity_limt: .*Did you mean velocity_limit"):
        open_rig(bad)
    bad.write_text((ROOT / "configs" / "aloha.toml").read_text().replace('port = "/dev/ttyDXL_master_right"', ""))
    with pytest.raises(RigFileError, match="leader_right has no port"):
        open_rig(bad)

def test_opening_ceremony_then_teleop_through_the_control_loop(rig_and_loop):
    rig, loop = rig_and_loop
    obs = rig.read()
    assert obs.qpos.shape == (14,) and obs.qpos.dtype == np.float32
    assert set(obs.images) == {"cam_high"}
    assert obs.images["cam_high"].shape == (240, 320, 3)
    assert "calibrated" in " ".join(m.text for m in rig.status().messages)  # uncalibrated arms are flagged
    rig.command(np.zeros(14))  # ignored: not started
    assert torque(rig, "follower_left") == [0, 0, 0, 0]

    loop.start()
    assert not rig.starting
    rig.begin_start()
    assert rig.starting  # at once: the window shows the start under way before the first tick
    assert wait_until(lambda: rig.started, 15.0), rig.start_prompt
    assert not rig.starting
    tick = loop.snapshot().tick
    assert np.abs(tick.observation.qpos[:6] - START_ARM_POSE_RAD).max() < 0.05
    # The leaders' torque-off goes out as a sync write (no reply): give the emulator's thread a
    # moment to take the packet off the pty before looking at its registers.
    assert wait_until(lambda: torque(rig, "leader_right") == [0, 0, 0, 0], 2.0)
    assert torque(rig, "follower_left") == [1, 1, 1, 1]

    loop.set_source(rig.leader_source())
    loop.request_mode(Mode.TELEOP)
    assert wait_until(lambda: loop.snapshot().mode is Mode.TELEOP and not loop.snapshot().blending, 5.0)
    actions = []
    unsubscribe = loop.subscribe(lambda record: actions.append(record.action[0]))
    time.sleep(1.0)
    unsubscribe()
    # The followers track the swaying leaders: the action moves with the leader's waist, and the
    # observation trails it by little. The leader moves at <= 0.24 rad/s, so allow for tick age.
    snap = loop.snapshot()
    leader = rig.emulators["leader_left"].position_rad(1)
    age_s = time.monotonic() - snap.tick.observation.time_s
    assert abs(snap.tick.action[0] - leader) < 0.05 + 0.25 * age_s
    assert abs(snap.tick.observation.qpos[0] - snap.tick.action[0]) < 0.1
    assert max(actions) - min(actions) > 0.02 and len(actions) > 10

    loop.estop()
    assert wait_until(lambda: not rig.started and torque(rig, "follower_right") == [0, 0, 0, 0], 2.0)
    assert torque(rig, "follower_left") == [0, 0, 0, 0]
    assert "E-stop" in rig.start_prompt
    # An E-stop during a start ends the start: the window must not wait for it.
    rig.begin_start()
    assert rig.starting
    loop.estop()
    assert wait_until(lambda: not rig.starting, 2.0)

def test_a_servo_that_goes_silent_holds_the_loop_and_is_named(rig_and_loop):
    rig, loop = rig_and_loop
    loop.start()
    assert wait_until(lambda: loop.snapshot().tick is not None, 5.0)
    rig.emulators["follower_right"].set_silent(7)
    assert wait_until(lambda: any(e.code == "rig_read" for e in loop.snapshot().events), 5.0)
    event = next(e for e in loop.snapshot().events if e.code == "rig_read")
    assert "Servo 7 (wrist_angle joint)" in event.message
    rig.emulators["follower_right"].set_silent(7, False)
    assert wait_until(lambda: any(e.code == "rig_read" and "reading again" in e.message for e in loop.snapshot().events), 5.0)

def test_a_stopped_control_loop_cuts_the_torque_and_needs_a_new_start(tmp_path):
    rig, rig_file = open_rig(emulated_rig_file(tmp_path, torque_watchdog_ms=300.0))
    rig.connect()
    loop = ControlLoop(rig, rig_file.control)
    try:
        loop.start()
        rig.begin_start()
        assert wait_until(lambda: rig.started, 15.0), rig.start_prompt
        loop.stop()  # the control thread is gone (as if it hung): nothing kicks the watchdog
        assert wait_until(lambda: torque(rig, "follower_left") == [0, 0, 0, 0], 3.0)
        assert not rig.started and "control loop stopped" in rig.start_prompt
        loop = ControlLoop(rig, rig_file.control)
        loop.start()  # reading resumes; driving needs the ceremony again
        assert wait_until(lambda: loop.snapshot().tick is not None, 5.0)
        rig.command(np.zeros(14))
        assert torque(rig, "follower_left") == [0, 0, 0, 0]
    finally:
        loop.stop()
        rig.disconnect()
