"""SimRig with `render_thread`: the cameras render on their own thread, real MuJoCo and real GL.

Reference images are rendered on the test thread from a full `mj_forward` of the same qpos, so
"the frame shows the state it is stamped with" (arms, cameras and the towel's flex vertices) is
checked to the pixel.
"""

import threading
import time

import mujoco
import numpy as np
import pytest

from robot.aloha import start_pose
from robot.rig import RigError
from robot.sim.camera_render_thread import make_camera_renderer
from robot.sim.config import SimRigConfig
from robot.sim.sim_rig import SimRig

CAMERAS = ("cam_high", "cam_left_wrist")
H, W = 48, 64
WAIT_S = 20.0  # generous: the CPU is shared; only a broken renderer takes this long


class InjectableRenderer:
    """The renderer factory test hook: real `mujoco.Renderer`s that record the threads that
    create and close them, and raise what a lost GL context raises while `fail_render` is set
    (or refuse to be made while `fail_create` is)."""

    def __init__(self) -> None:
        self.fail_create = False
        self.fail_render = threading.Event()
        self.created_on: list[int] = []
        self.closed_on: list[int] = []

    def __call__(self, model, height, width):
        if self.fail_create:
            raise mujoco.FatalError("gladLoadGL error")
        hook = self

        class Renderer(mujoco.Renderer):
            def render(self, *args, **kwargs):
                if hook.fail_render.is_set():
                    raise mujoco.FatalError("OpenGL error 0x505 in mjr_render (injected by the test)")
                return super().render(*args, **kwargs)

            def close(self):
                if not getattr(self, "_close_recorded", False):
                    self._close_recorded = True
                    hook.closed_on.append(threading.get_ident())
                super().close()

        self.created_on.append(threading.get_ident())
        return Renderer(model, height, width)


def config() -> SimRigConfig:
    return SimRigConfig(camera_names=CAMERAS, image_height=H, image_width=W, render_thread=True)


@pytest.fixture(scope="module")
def rig():
    with SimRig(config()) as sim:
        yield sim


@pytest.fixture(scope="module")
def reference():
    """Renders the rig's current state on the test thread, from a full mj_forward."""
    renderers = {}

    def render(sim: SimRig) -> dict[str, np.ndarray]:
        renderer = renderers.setdefault(id(sim.model), make_camera_renderer(sim.model, H, W))
        data = mujoco.MjData(sim.model)
        data.qpos[:] = sim.data.qpos
        mujoco.mj_forward(sim.model, data)
        images = {}
        for name in CAMERAS:
            renderer.update_scene(data, camera=name)
            images[name] = renderer.render()
        return images

    yield render
    for renderer in renderers.values():
        renderer.close()


def read_until_frame_is_current(sim: SimRig):
    """read() until the frame due at the current tick is published (the renderer caught up)."""
    deadline = time.monotonic() + WAIT_S
    observation = sim.read()
    while sim.image_sim_time_s != sim.sim_time_s:
        assert time.monotonic() < deadline, "the render thread never caught up"
        time.sleep(0.005)
        observation = sim.read()
    return observation


def assert_same_images(actual, expected):
    for name in CAMERAS:
        assert np.array_equal(actual[name], expected[name]), f"{name} does not show the stamped state"


def test_frames_follow_the_arm_and_show_the_state_they_are_stamped_with(rig, reference):
    rig.reset_episode(0)
    first = rig.read()  # waits for the episode's first frame
    assert set(first.images) == set(CAMERAS) and rig.image_sim_time_s == 0.0
    assert_same_images(first.images, reference(rig))
    frame_period_s = 1.0 / rig.config.camera_fps
    action = start_pose()
    capture_times, frames = [], []
    for _ in range(40):
        action[0] += 0.01  # the left waist turns 0.4 rad in 0.8 simulated seconds
        observation = rig.read()
        assert set(observation.images) == set(CAMERAS)
        frame_sim_s = rig.image_sim_time_s
        assert frame_sim_s <= rig.sim_time_s
        assert abs(frame_sim_s / frame_period_s - round(frame_sim_s / frame_period_s)) < 1e-6  # a due tick's state
        times = set(observation.image_times_s.values())
        assert len(times) == 1 and times.pop() <= observation.time_s  # one exposure, before the reading
        capture_times.append(observation.image_times_s["cam_left_wrist"])
        frames.append(observation.images["cam_left_wrist"])
        rig.command(action)
    assert capture_times == sorted(capture_times)
    last = read_until_frame_is_current(rig)
    assert_same_images(last.images, reference(rig))
    moved = np.abs(last.images["cam_left_wrist"].astype(int) - first.images["cam_left_wrist"]).mean()
    assert moved > 10, "the left wrist camera did not follow its arm"
    # Every published frame is its own array: the recorder keeps references to them.
    distinct = list({id(frame): frame for frame in frames + [last.images["cam_left_wrist"]]}.values())
    assert len(distinct) >= 2
    assert not any(np.shares_memory(a, b) for i, a in enumerate(distinct) for b in distinct[i + 1 :])
    stats = rig.render_stats()
    assert stats.frames_rendered >= len(distinct) and stats.last_render_ms > 0
    assert rig.status().camera_fps["cam_high"] > 0


def test_synchronous_rendering_can_be_chosen_on_a_connected_rig(rig, reference):
    rig.reset_episode(1)
    rig.read()
    try:
        rig.set_render_thread(False)
        assert rig.render_stats() is None
        assert not any(t.name == "sim-cameras" for t in threading.enumerate())
        for tick in range(4):
            observation = rig.read()  # renders at the due ticks 0 and 2, on this thread
            assert rig.image_sim_time_s == (tick // 2) * 2 * rig.config.control_period_s
            assert observation.images["cam_high"].shape == (H, W, 3)
            rig.command(start_pose())
    finally:
        rig.set_render_thread(True)
    assert rig.render_stats() is not None
    assert_same_images(read_until_frame_is_current(rig).images, reference(rig))


def test_first_read_after_connect_and_reset_waits_and_disconnect_joins_the_thread(reference):
    hook = InjectableRenderer()
    sim = SimRig(config(), renderer_factory=hook)
    sim.connect()
    try:
        thread = sim._render_thread._thread
        assert thread.is_alive() and hook.created_on == [thread.ident] != [threading.get_ident()]
        assert_same_images(sim.read().images, reference(sim))
        for _ in range(5):
            sim.command(start_pose())
            sim.read()
        sim.reset_episode(5)  # another towel pose: a frame of the old episode would differ
        observation = sim.read()
        assert sim.image_sim_time_s == 0.0
        assert_same_images(observation.images, reference(sim))
    finally:
        sim.disconnect()
    assert not thread.is_alive()
    assert hook.closed_on == [thread.ident]  # the GL context was freed on the thread that made it


def test_a_gl_failure_on_the_render_thread_becomes_a_rig_error_on_read():
    hook = InjectableRenderer()
    hook.fail_create = True
    sim = SimRig(config(), renderer_factory=hook)
    with pytest.raises(RigError, match="libegl1 libegl-mesa0.*libosmesa6"):
        sim.connect()
    with pytest.raises(RigError, match="not connected"):
        sim.read()

    hook.fail_create = False
    with sim:
        sim.read()
        thread = sim._render_thread._thread
        hook.fail_render.set()
        deadline = time.monotonic() + WAIT_S
        with pytest.raises(RigError, match="(?s)0x505.*Reconnect the rig"):
            while time.monotonic() < deadline:  # frames already published are still handed out
                sim.command(start_pose())
                sim.read()
                time.sleep(0.005)
        with pytest.raises(RigError, match="0x505"):
            sim.read()  # and stays failed until reconnected
    assert not thread.is_alive() and hook.closed_on == [thread.ident]
