"""End-effector jogging with the real kinematics (gym-aloha's ViperX model in MuJoCo)."""

import threading

import numpy as np
import pytest

from robot.aloha import start_pose
from robot.kinematics import BimanualKinematics
from robot.teleop import EndEffectorJogSource, JogConfig
from robot.types import ControlSource, Observation, zero_state

RATE_HZ = 50.0


@pytest.fixture(scope="module")
def kinematics():
    return BimanualKinematics()


def observation(qpos) -> Observation:
    q = np.asarray(qpos, dtype=np.float32)
    return Observation(qpos=q, qvel=zero_state(), effort=zero_state(), images={}, image_times_s={}, time_s=0.0)


def jog(source, ticks, start=None):
    """Start the source at `start` (default: the ALOHA start pose) and run it `ticks` ticks."""
    obs = observation(start_pose() if start is None else start)
    source.start(obs)
    actions = [source.next_action(obs) for _ in range(ticks)]
    return np.array(actions, dtype=np.float64)


@pytest.mark.parametrize(
    "arm, velocity",
    [("left", (0.05, 0.0, 0.0)), ("left", (0.0, 0.0, 0.05)), ("right", (0.0, -0.05, 0.0)), ("right", (-0.03, 0.0, -0.04))],
)
def test_jog_moves_the_grasp_point_in_the_commanded_direction(kinematics, arm, velocity):
    source = EndEffectorJogSource(kinematics, RATE_HZ)
    assert source.kind is ControlSource.TELEOP
    before = kinematics.forward(start_pose())
    source.set_velocity(arm, velocity)
    actions = jog(source, 25)  # 0.5 s
    after = kinematics.forward(actions[-1])
    moved = after[arm][0] - before[arm][0]
    expected = np.asarray(velocity) * 0.5
    np.testing.assert_allclose(moved, expected, atol=2e-3)
    # The fingers keep their tilt; their heading turns only as much as the waist must turn
    # (the azimuth of the grasp point about the waist axis), and the other arm does not move.
    fingers_before, fingers_after = before[arm][1][:, 0], after[arm][1][:, 0]
    assert fingers_after[2] == pytest.approx(fingers_before[2], abs=0.02)
    waist_xy = np.array([-0.469, 0.5]) if arm == "left" else np.array([0.469, 0.5])
    azimuth = [np.arctan2(*(p[arm][0][:2] - waist_xy)[::-1]) for p in (before, after)]
    heading = [np.arctan2(f[1], f[0]) for f in (fingers_before, fingers_after)]
    assert np.angle(np.exp(1j * (heading[1] - heading[0]))) == pytest.approx(azimuth[1] - azimuth[0], abs=0.02)
    other = "right" if arm == "left" else "left"
    np.testing.assert_allclose(after[other][0], before[other][0], atol=1e-9)
    # Small joint steps: a jog never asks for a jump.
    steps = np.abs(np.diff(np.vstack([start_pose(), actions]), axis=0))
    assert steps.max() < 0.05


def test_jog_starts_from_the_current_pose_not_the_start_pose(kinematics):
    pose = start_pose()
    pose[0] = 0.3  # left waist turned
    pose[8] = -0.7  # right shoulder
    source = EndEffectorJogSource(kinematics, RATE_HZ)
    actions = jog(source, 5, start=pose)
    np.testing.assert_allclose(actions[0], pose, atol=1e-6)  # no velocity: stays put
    source.set_velocity("left", (0.0, 0.0, 0.05))
    action = source.next_action(observation(pose))
    assert abs(action[0] - 0.3) < 0.01  # moved from where it was


def test_yaw_rotates_the_gripper_about_the_vertical(kinematics):
    source = EndEffectorJogSource(kinematics, RATE_HZ)
    source.set_velocity("left", (0.0, 0.0, 0.0), angular_rad_s=(0.0, 0.0, 0.4))
    actions = jog(source, 25)
    before = kinematics.forward(start_pose())["left"]
    after = kinematics.forward(actions[-1])["left"]
    # The fingers' axis (x column) turned by ~0.2 rad about z, the point stayed.
    x0, x1 = before[1][:2, 0], after[1][:2, 0]
    angle = np.arctan2(x1[1], x1[0]) - np.arctan2(x0[1], x0[0])
    assert angle == pytest.approx(0.2, abs=0.02)
    np.testing.assert_allclose(after[0], before[0], atol=3e-3)


def test_speed_is_capped_and_bad_input_refused(kinematics):
    source = EndEffectorJogSource(kinematics, RATE_HZ, JogConfig(max_linear_mps=0.05))
    source.set_velocity("left", (1.0, 0.0, 0.0))  # asks for 1 m/s
    actions = jog(source, 25)
    moved = kinematics.forward(actions[-1])["left"][0] - kinematics.forward(start_pose())["left"][0]
    assert moved[0] == pytest.approx(0.025, abs=2e-3)
    with pytest.raises(ValueError, match="arm must be one of"):
        source.set_velocity("middle", (0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="finite"):
        source.set_velocity("left", (np.nan, 0.0, 0.0))
    with pytest.raises(ValueError, match="three"):
        source.set_velocity("left", (0.1, 0.0))


def test_the_table_floor_stops_the_target(kinematics):
    config = JogConfig(max_linear_mps=0.3)
    source = EndEffectorJogSource(kinematics, RATE_HZ, config)
    source.set_velocity("left", (0.0, 0.0, -0.3))
    actions = jog(source, 100)  # 2 s at 0.3 m/s would go 0.6 m down, through the table
    z = kinematics.forward(actions[-1])["left"][0][2]
    assert abs(z - config.workspace_low_m[2]) <= config.reach_tolerance_m
    assert source.targets()["left"][2] >= config.workspace_low_m[2] - 1e-9


def test_holding_a_key_past_the_reach_does_not_wind_up_the_target(kinematics):
    source = EndEffectorJogSource(kinematics, RATE_HZ, JogConfig(max_linear_mps=0.3))
    source.set_velocity("left", (0.3, 0.0, 0.0))  # toward the far side, beyond the arm's reach
    obs = observation(start_pose())
    source.start(obs)
    for _ in range(200):
        source.next_action(obs)
    reached = kinematics.forward(source.next_action(obs))["left"][0]
    assert np.linalg.norm(source.targets()["left"] - reached) < 0.01
    # Reversing moves back at once instead of first unwinding a far-away target.
    source.set_velocity("left", (-0.1, 0.0, 0.0))
    back = [kinematics.forward(source.next_action(obs))["left"][0][0] for _ in range(10)]
    assert back[-1] < reached[0] - 0.01


def test_gripper_opens_and_closes_at_the_configured_speed(kinematics):
    source = EndEffectorJogSource(kinematics, RATE_HZ, JogConfig(gripper_speed_per_s=1.0))
    start = start_pose(gripper_open=1.0)
    obs = observation(start)
    source.start(obs)
    source.set_gripper("right", open=False)
    values = [source.next_action(obs)[13] for _ in range(60)]
    assert values[0] == pytest.approx(1.0 - 1.0 / RATE_HZ)
    assert values[24] == pytest.approx(0.5, abs=1e-5)
    assert values[-1] == pytest.approx(0.0)
    source.set_gripper_velocity("right", 0.5)
    values = [source.next_action(obs)[13] for _ in range(100)]
    assert values[49] == pytest.approx(0.5, abs=1e-5) and values[-1] == pytest.approx(1.0)
    assert source.next_action(obs)[6] == pytest.approx(1.0)  # the left gripper never moved


def test_setters_from_another_thread_while_the_control_thread_ticks(kinematics):
    source = EndEffectorJogSource(kinematics, RATE_HZ)
    obs = observation(start_pose())
    source.start(obs)
    stop = threading.Event()

    def gui():
        i = 0
        while not stop.is_set():
            source.set_velocity("left", (0.02 * np.sin(i), 0.02 * np.cos(i), 0.0))
            source.set_gripper("right", open=i % 2 == 0)
            i += 1

    thread = threading.Thread(target=gui)
    thread.start()
    try:
        actions = np.array([source.next_action(obs) for _ in range(100)])
    finally:
        stop.set()
        thread.join()
    assert np.all(np.isfinite(actions))
    assert np.abs(np.diff(actions, axis=0)).max() < 0.05
    source.stop_motion()
    still = source.next_action(obs)
    np.testing.assert_allclose(source.next_action(obs), still, atol=1e-9)


def test_velocity_timeout_stops_a_jog_that_was_never_released(kinematics, monkeypatch):
    source = EndEffectorJogSource(kinematics, RATE_HZ, JogConfig(velocity_timeout_s=0.2))
    obs = observation(start_pose())
    source.start(obs)
    source.set_velocity("left", (0.05, 0.0, 0.0))
    moving = source.next_action(obs)
    import robot.teleop as teleop

    real_monotonic = teleop.time.monotonic
    monkeypatch.setattr(teleop.time, "monotonic", lambda: real_monotonic() + 1.0)
    a = source.next_action(obs)
    b = source.next_action(obs)
    np.testing.assert_allclose(a, b, atol=1e-12)
    assert not np.allclose(moving, start_pose())


# --------------------------------------------------------------- through the loop, on the MuJoCo rig


@pytest.fixture(scope="module")
def sim_rig():
    from robot.sim import SimRig, SimRigConfig

    rig = SimRig(SimRigConfig(camera_names=()))  # no cameras: the arms are what is tested here
    rig.connect()
    yield rig
    rig.disconnect()


def test_jogging_the_simulated_rig_through_the_control_loop(kinematics, sim_rig):
    from robot.control_loop import ControlLoop, LoopConfig
    from robot.types import Mode

    config = LoopConfig(rate_hz=sim_rig.control_rate_hz, blend_s=0.2)
    loop = ControlLoop(sim_rig, config)
    source = EndEffectorJogSource(kinematics, config.rate_hz)
    records = []
    loop.subscribe(records.append)
    for _ in range(10):  # idle: the sim is commanded its hold pose, so the arm settles in place
        loop.tick_once()
    before = kinematics.forward(loop.tick_once().observation.qpos)["left"][0]
    loop.set_source(source)
    loop.request_mode(Mode.TELEOP)
    source.set_velocity("left", (0.0, 0.06, 0.0))
    for _ in range(50):  # 1 s of simulated time
        loop.tick_once()
    source.set_velocity("left", (0.0, 0.0, 0.0))
    for _ in range(15):  # let the position servos catch up
        loop.tick_once()
    after = kinematics.forward(records[-1].observation.qpos)["left"][0]
    moved = after - before
    assert moved[1] == pytest.approx(0.06 * (1.0 - config.blend_s / 2), abs=0.012), moved
    assert abs(moved[0]) < 0.01 and abs(moved[2]) < 0.01
    teleop = [r for r in records if r.mode is Mode.TELEOP]
    assert teleop and all(r.source is ControlSource.TELEOP for r in teleop)
    # Simulated time counts ticks exactly; the safety filter never had to cut a jog step.
    assert records[-1].sim_time_s == pytest.approx(sim_rig.tick_count / sim_rig.control_rate_hz)
    assert not any(r.clipped for r in teleop)
    assert loop.snapshot().mode is Mode.TELEOP
