"""SimRig against real MuJoCo (gym-aloha's model) and real offscreen rendering."""

import numpy as np
import pytest

from robot.aloha import ALOHA_GRIPPERS, START_ARM_POSE_RAD, start_pose
from robot.rig import Rig, RigError
from robot.sim.config import SimRigConfig
from robot.sim.sim_rig import SimRig
from robot.types import DEFAULT_CAMERA_NAMES, STATE_DIM, Observation


@pytest.fixture(scope="module")
def rig():
    """A camera-less rig shared by the state tests (building one takes ~1 s)."""
    with SimRig(SimRigConfig(camera_names=())) as sim:
        yield sim


def blue_fraction(image: np.ndarray) -> float:
    """Share of pixels in the towel's blue (nothing else in the scene is blue)."""
    r, g, b = (image[..., k].astype(int) for k in range(3))
    return float(np.mean((b > r + 60) & (b > g + 30)))


def test_three_named_cameras_render_the_towel_at_the_start_pose():
    with SimRig(SimRigConfig(image_height=120, image_width=160, render_thread=False)) as sim:
        observation = sim.read()
        assert set(observation.images) == set(DEFAULT_CAMERA_NAMES)
        for name, image in observation.images.items():
            assert image.shape == (120, 160, 3) and image.dtype == np.uint8
            assert image.mean() > 20, f"{name} is black"
            assert blue_fraction(image) > 0.02, f"the towel is not visible in {name}"
            assert observation.image_times_s[name] <= observation.time_s
        # Move the towel off the table: its blue disappears (the check above sees the towel itself).
        sim.data.qpos[sim._scene.towel_vertex_qpos_adr[:, 0]] += 5.0
        sim.command(start_pose())
        sim.command(start_pose())  # 25 fps at 50 Hz: a new frame every 2nd tick
        assert all(blue_fraction(image) < 0.001 for image in sim.read().images.values())


def test_the_full_aloha_image_size_is_selectable():
    with SimRig(SimRigConfig(camera_names=("cam_left_wrist",), image_height=480, image_width=640)) as sim:
        image = sim.read().images["cam_left_wrist"]
        assert image.shape == (480, 640, 3)
        assert blue_fraction(image) > 0.02


def test_cameras_render_every_second_tick_by_simulated_time():
    with SimRig(SimRigConfig(camera_names=("cam_high",), image_height=48, image_width=64, render_thread=False)) as sim:
        times = []
        for _ in range(6):
            times.append(sim.read().image_times_s["cam_high"])
            sim.command(start_pose())
        new_frame = [times[i] != times[i - 1] for i in range(1, 6)]
        assert new_frame == [False, True, False, True, False]  # frames at ticks 0, 2, 4
        assert sim.status().camera_fps["cam_high"] > 0


def test_state_speaks_the_14d_aloha_convention(rig):
    rig.reset_episode(0)
    observation = rig.read()
    assert isinstance(rig, Rig) and rig.simulated
    assert isinstance(observation, Observation) and observation.task == "fold the towel"
    for vector in (observation.qpos, observation.qvel, observation.effort):
        assert vector.shape == (STATE_DIM,) and vector.dtype == np.float32
    assert observation.qpos[:6] == pytest.approx(START_ARM_POSE_RAD, abs=1e-6)
    assert observation.qpos[7:13] == pytest.approx(START_ARM_POSE_RAD, abs=1e-6)
    # ALOHA's start pose has the fingers at 0.02239 m: normalised with the follower finger range.
    expected = float(ALOHA_GRIPPERS.follower_finger_m.normalize(0.02239))
    assert observation.qpos[6] == pytest.approx(expected, abs=1e-5)


def test_commands_move_joints_and_grippers_as_the_convention_says(rig):
    rig.reset_episode(0)
    action = start_pose()
    action[0] += 0.2  # left waist
    action[9] -= 0.15  # right elbow
    action[6] = 0.5  # left gripper half open
    action[13] = 1.0  # right gripper open: 0.058 m is past the model's 0.057 m and is clamped
    for _ in range(40):
        rig.command(action)
    observation = rig.read()
    assert observation.qpos[0] == pytest.approx(action[0], abs=0.01)
    assert observation.qpos[9] == pytest.approx(action[9], abs=0.01)
    assert observation.qpos[6] == pytest.approx(0.5, abs=0.02)
    assert observation.qpos[13] == pytest.approx(ALOHA_GRIPPERS.follower_finger_m.normalize(0.057), abs=0.02)
    scene = rig._scene
    left_finger, right_finger = scene.finger_qpos_adr["left"]
    assert rig.data.qpos[left_finger] == pytest.approx(ALOHA_GRIPPERS.follower_finger_m.unnormalize(0.5), abs=1e-3)
    assert rig.data.qpos[right_finger] == pytest.approx(-rig.data.qpos[left_finger], abs=1e-3)
    assert np.any(np.abs(observation.effort[:6]) > 0.1)  # the servos hold the arm against gravity


def test_each_command_advances_exactly_one_control_period(rig):
    rig.reset_episode(1)
    assert rig.sim_time_s == 0.0
    for tick in range(1, 26):
        rig.command(start_pose())
        assert rig.sim_time_s == tick * 0.02
        assert rig.data.time == tick * 0.02
    assert rig.status().real_time_factor > 0


def test_reset_draws_the_towel_pose_from_the_seed(rig):
    rig.reset_episode(7)
    first = rig.towel_vertices_m().copy()
    center_7, yaw_7 = rig.towel_pose()
    rig.command(start_pose())
    rig.reset_episode(7)
    assert rig.towel_vertices_m() == pytest.approx(first, abs=1e-12)
    rig.reset_episode(8)
    center_8, yaw_8 = rig.towel_pose()
    assert not np.allclose(rig.towel_vertices_m(), first)
    assert (center_7 != center_8).any() and yaw_7 != yaw_8
    config = rig.config
    for seed in range(10):
        rig.reset_episode(seed)
        center, yaw = rig.towel_pose()
        assert np.all(np.abs(center - np.array(config.towel_center_m)) <= config.towel_position_jitter_m)
        assert abs(yaw) <= config.towel_rotation_jitter_rad
        vertices = rig.towel_vertices_m()
        assert vertices[:, :2].mean(axis=0) == pytest.approx(center, abs=1e-9)
        assert rig.sim_time_s == 0.0
    assert rig.reset_episode() == 10  # no seed: the next one


def test_towel_rests_on_the_table_without_sinking_or_sliding(rig):
    rig.reset_episode(3)
    before = rig.towel_vertices_m().copy()
    for _ in range(50):
        rig.command(start_pose())
    after = rig.towel_vertices_m()
    assert np.abs(after - before).max() < 0.003
    assert after[:, 2].min() > 0.002


def test_joint_limits_come_from_the_model(rig):
    limits = rig.joint_limits()
    assert limits.low[[6, 13]] == pytest.approx([0, 0]) and limits.high[[6, 13]] == pytest.approx([1, 1])
    assert limits.low[1] == pytest.approx(-1.85005) and limits.high[1] == pytest.approx(1.25664)  # shoulder
    assert limits.max_step[0] == pytest.approx(3.0 / 50)


def test_bad_actions_are_refused_and_do_not_advance_time(rig):
    rig.reset_episode(0)
    with pytest.raises(ValueError, match="shape"):
        rig.command(np.zeros(7))
    bad = start_pose()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        rig.command(bad)
    assert rig.sim_time_s == 0.0


def test_a_disconnected_rig_says_what_to_do():
    with pytest.raises(RigError, match="connect"):
        SimRig(SimRigConfig(camera_names=())).read()


@pytest.mark.parametrize(
    "field, value, fix",
    [
        ("physics_timestep_s", 0.003, "divide the control period"),
        ("camera_fps", 60.0, "at most control_rate_hz"),
        ("camera_names", ("cam_low",), "camera_names"),
        ("towel_rotation_jitter_rad", 1.0, "pi/4"),
        ("image_height", 4, "240x320"),
    ],
)
def test_config_rejects_bad_values_with_the_fix(field, value, fix):
    with pytest.raises(ValueError, match=fix):
        SimRigConfig(**{field: value})


def test_config_accepts_toml_style_lists():
    config = SimRigConfig(camera_names=["cam_high"], towel_center_m=[0.0, 0.52])
    assert config.camera_names == ("cam_high",) and config.towel_center_m == (0.0, 0.52)
    assert config.substeps == 10


def test_renderer_follows_the_thread_that_reads():
    """GL contexts belong to a thread: a rig read from a new control thread renders there."""
    import threading

    with SimRig(SimRigConfig(camera_names=("cam_high",), image_height=48, image_width=64, render_thread=False)) as sim:
        first = sim.read().images["cam_high"]
        out = {}

        def control_thread():
            for _ in range(2):
                sim.command(start_pose())
            out["image"] = sim.read().images["cam_high"]

        worker = threading.Thread(target=control_thread)
        worker.start()
        worker.join(timeout=30)
        assert out["image"].shape == first.shape and out["image"].mean() > 20
        assert sim._renderer_thread == worker.ident


def test_no_gl_context_becomes_a_rig_error_naming_the_packages(monkeypatch):
    import mujoco

    def no_context(*args, **kwargs):
        raise mujoco.FatalError("gladLoadGL error")  # what mujoco raises without a usable GL

    monkeypatch.setattr(mujoco, "Renderer", no_context)
    with SimRig(SimRigConfig(camera_names=("cam_high",), image_height=48, image_width=64, render_thread=False)) as sim:
        with pytest.raises(RigError, match="libegl1 libegl-mesa0.*libosmesa6"):
            sim.read()


def test_a_blown_up_simulation_restarts_the_episode_and_says_so(rig):
    rig.reset_episode(4)
    for _ in range(3):
        rig.command(start_pose())
    before = rig.towel_vertices_m().copy()
    rig.data.qvel[rig._scene.towel_vertex_dof_adr[0, 2]] = 1e12  # what an exploding cloth looks like to MuJoCo
    with pytest.raises(RigError, match="unstable.*seed 4"):
        rig.command(start_pose())
    assert rig.sim_time_s == 0.0 and rig.episode_seed == 4
    rig.reset_episode(4)
    assert rig.towel_vertices_m() == pytest.approx(before, abs=0.003)


def test_a_step_above_the_tuned_one_is_reported_in_the_status():
    with SimRig(SimRigConfig(camera_names=(), physics_timestep_s=0.004)) as sim:
        assert any("physics_timestep_s = 0.002" in message.text for message in sim.status().messages)
