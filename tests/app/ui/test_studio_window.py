"""The studio window on the real simulated rig (MuJoCo), the real control loop and the real
episode writer, driven through its buttons, shortcuts and keys like a user would.

One window is shared by the tests of this module (building the sim costs seconds on a laptop);
each test starts from "holding, not recording, no E-stop" (the `studio` fixture sees to that).
"""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from app.studio.studio import Phase, Studio
from app.ui.main_window import StudioWindow
from recordings.reader import Episode
from recordings.schema import Label
from robot.types import ControlSource, Mode

ROOT_RIG = "configs/sim.toml"
WAIT_MS = 30_000  # a shared 2-core CI box may run the sim at a fraction of real time


#: Names of the threads that called into the rig (the GUI thread must never be one of them).
RIG_CALLERS: set[str] = set()


def open_rig_watching_threads(path):
    """The real `open_rig`, with the rig's methods noting which thread calls them."""
    import threading

    from robot.rigs import open_rig

    rig, rig_file = open_rig(path)
    for name in ("read", "command", "reset_episode", "connect", "disconnect"):
        method = getattr(rig, name)

        def watched(*args, _method=method, **kwargs):
            RIG_CALLERS.add(threading.current_thread().name)
            return _method(*args, **kwargs)

        setattr(rig, name, watched)
    return rig, rig_file


@pytest.fixture(scope="module")
def shared(qapp, tmp_path_factory):
    from pathlib import Path

    store = tmp_path_factory.mktemp("store")
    rig_file = Path(__file__).resolve().parents[3] / ROOT_RIG
    studio = Studio(rig_file, store, rig_opener=open_rig_watching_threads)
    window = StudioWindow(studio)
    window.show()
    studio.start()
    assert studio.wait_until_running(60), [e.message for e in studio.events.all()]
    yield window, studio, store
    window.ask_recording_choice = lambda: None  # a failed test may leave a recording: discard it
    window.close()
    if studio.snapshot().phase is not Phase.STOPPED:
        studio.shutdown(recording_label=None)


@pytest.fixture
def studio(shared, qtbot):
    """The shared window, holding, with no recording and no E-stop."""
    window, studio, store = shared
    rec = studio.snapshot().recording
    if rec.active or rec.failed:  # left over by a failed test
        studio.discard_recording()
    studio.clear_estop()
    studio.select_source("hold")
    qtbot.waitUntil(lambda: studio.snapshot().mode is Mode.HOLD, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: not studio.snapshot().recording.active and not studio.snapshot().recording.busy, timeout=WAIT_MS)
    window.activateWindow()
    window.setFocus()
    return window, studio, store


def wait_ticks(qtbot, studio: Studio, count: int) -> None:
    start = studio.history.count
    qtbot.waitUntil(lambda: studio.history.count >= start + count, timeout=WAIT_MS)


def wait_until_driving(qtbot, studio: Studio) -> None:
    """Teleop, and past the loop's 0.75 s blend from the held pose into the new source."""
    qtbot.waitUntil(lambda: studio.snapshot().mode is Mode.TELEOP, timeout=WAIT_MS)
    wait_ticks(qtbot, studio, 45)


def test_the_running_sim_reaches_the_window(studio, qtbot):
    """What the real rig, loop and monitor report gets to the screen: rendered frames, the plotted
    ticks, the loop's rate. How each is painted is in test_window_display.py."""
    window, studio, _ = studio
    # Three live camera views with real rendered frames.
    for name in ("cam_high", "cam_left_wrist", "cam_right_wrist"):
        view = window.camera_views[name]
        qtbot.waitUntil(lambda v=view: v.frames_shown >= 2, timeout=WAIT_MS)
        frame = studio.snapshot().tick.observation.images[name]
        assert frame.std() > 5, f"{name} renders a flat image"
    # Plots carry the last ticks, on simulated time.
    def plotted_ticks() -> int:
        x = window.joint_plots.measured_curves["left"][1].getData()[0]
        return 0 if x is None else len(x)

    qtbot.waitUntil(lambda: plotted_ticks() > 5, timeout=WAIT_MS)
    x, y = window.joint_plots.measured_curves["left"][1].getData()
    assert len(x) > 5 and np.all(np.diff(x) > 0) and x[-1] == 0.0
    assert window.timing_plot.period_curve.getData()[1] is not None
    qtbot.waitUntil(lambda: "Hz" in window.status.loop.text() and "fps" in window.status.cameras.text(), timeout=WAIT_MS)
    # The sim's snapshot: what the rig declares, and the monitor's readings of the rig (its
    # real-time factor needs a second of running) and of the disk.
    snap = studio.snapshot()
    assert snap.capabilities.simulated and snap.capabilities.resettable and not snap.capabilities.leaders
    assert not snap.capabilities.real_arms and snap.arms is None
    assert snap.available_sources == ("keyboard", "demo", "hold")
    qtbot.waitUntil(lambda: studio.snapshot().rig_status.real_time_factor is not None, timeout=WAIT_MS)
    assert studio.snapshot().disk_free_bytes > 0
    qtbot.waitUntil(lambda: window.status.rtf.text().startswith("real-time ") and "×" in window.status.rtf.text(),
                    timeout=WAIT_MS)


def test_record_a_scripted_episode_through_the_buttons(studio, qtbot):
    window, studio, store = studio
    panel = window.control_panel
    before = len(list(store.glob("episode_*.hdf5")))
    panel.task_edit.setText("fold the towel in half")
    panel.operator_edit.setText("test operator")
    qtbot.mouseClick(panel.source_buttons["demo"], Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: studio.snapshot().mode is Mode.TELEOP, timeout=WAIT_MS)
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: studio.snapshot().recording.active, timeout=WAIT_MS)
    qtbot.waitUntil(panel.success_button.isEnabled, timeout=WAIT_MS)  # painted: the click can land
    # Two seconds of episode: 100 ticks at 50 Hz (the sim never skips a tick, so on a slow
    # machine this takes longer in wall time; the elapsed clock shows wall time).
    qtbot.waitUntil(lambda: studio.snapshot().recording.frames >= 100, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: studio.snapshot().recording.elapsed_s >= 1.5, timeout=WAIT_MS)
    qtbot.mouseClick(panel.success_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: studio.snapshot().recording.last_saved.startswith("Saved"), timeout=WAIT_MS)
    assert len(list(store.glob("episode_*.hdf5"))) == before + 1
    qtbot.waitUntil(lambda: studio.snapshot().recording.episode_count == before + 1, timeout=WAIT_MS)

    path = sorted(store.glob("episode_*.hdf5"))[-1]
    status = studio.session.writer.status()
    with Episode.open(path) as episode:
        assert episode.label is Label.SUCCESS
        assert len(episode) == status.frames_written >= 100  # >= 2 s of 50 Hz ticks, nothing dropped
        assert status.frames_dropped == 0
        assert episode.qpos.shape == (len(episode), 14) and episode.action.shape == (len(episode), 14)
        assert episode.metadata.task == "fold the towel in half"
        assert episode.metadata.operator == "test operator"
        assert episode.sim
        assert set(episode.camera_names) == {"cam_high", "cam_left_wrist", "cam_right_wrist"}
        sources = set(episode.control_sources)
        assert ControlSource.SCRIPTED in sources
        assert episode.frame("cam_high", len(episode) - 1).shape == (240, 320, 3)
        assert episode.duration_s >= 1.5
    assert studio.snapshot().recording.last_saved.startswith(f"Saved {path.name}: success")

    # The Episodes page: the workbench over the studio's store lists it (the E-stop stays in view).
    window.show_episodes()
    workbench = window.workbench
    assert workbench is not None and window.pages.currentWidget() is workbench
    assert window.control_panel.estop_button.isVisible()
    qtbot.waitUntil(lambda: workbench.table.model.rowCount() == before + 1, timeout=WAIT_MS)
    window.pages.setCurrentIndex(0)


def test_estop_button_latches_until_cleared(studio, qtbot):
    window, studio, _ = studio
    panel = window.control_panel
    studio.select_source("keyboard")
    qtbot.waitUntil(lambda: studio.snapshot().mode is Mode.TELEOP, timeout=WAIT_MS)
    qtbot.mouseClick(panel.estop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: studio.snapshot().mode is Mode.ESTOP, timeout=WAIT_MS)
    qtbot.waitUntil(panel.clear_estop_button.isEnabled, timeout=WAIT_MS)  # painted: the click can land
    assert window.banner.isVisible() and "E-stop" in window.banner.label.text()
    # Latched: asking for a source changes nothing, and the user is told why.
    qtbot.mouseClick(panel.source_buttons["demo"], Qt.MouseButton.LeftButton)
    wait_ticks(qtbot, studio, 5)
    assert studio.snapshot().mode is Mode.ESTOP
    assert any("E-stop is latched" in e.message for e in studio.events.all())
    # The arm holds still while latched.
    q0 = studio.snapshot().tick.observation.qpos.copy()
    wait_ticks(qtbot, studio, 10)
    assert np.abs(studio.snapshot().tick.observation.qpos[:6] - q0[:6]).max() < 0.02
    qtbot.mouseClick(panel.clear_estop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: studio.snapshot().mode is Mode.HOLD, timeout=WAIT_MS)


def test_shortcuts_work_with_focus_in_a_text_field(studio, qtbot):
    window, studio, store = studio
    panel = window.control_panel
    panel.task_edit.setText("fold the towel in half")
    panel.task_edit.setFocus()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is panel.task_edit, timeout=5000)

    qtbot.keyClick(panel.task_edit, Qt.Key.Key_F3)  # source: demo
    qtbot.waitUntil(lambda: studio.snapshot().mode is Mode.TELEOP, timeout=WAIT_MS)
    assert studio.snapshot().source.name == "demo"
    qtbot.keyClick(panel.task_edit, Qt.Key.Key_F4)  # source: hold
    qtbot.waitUntil(lambda: studio.snapshot().mode is Mode.HOLD, timeout=WAIT_MS)

    before = len(list(store.glob("episode_*.hdf5")))
    qtbot.keyClick(panel.task_edit, Qt.Key.Key_F5)  # start recording
    qtbot.waitUntil(lambda: studio.snapshot().recording.active, timeout=WAIT_MS)
    wait_ticks(qtbot, studio, 10)
    qtbot.keyClick(panel.task_edit, Qt.Key.Key_F7)  # stop, failure
    qtbot.waitUntil(lambda: "failure" in studio.snapshot().recording.last_saved, timeout=WAIT_MS)
    assert len(list(store.glob("episode_*.hdf5"))) == before + 1
    with Episode.open(sorted(store.glob("episode_*.hdf5"))[-1]) as episode:
        assert episode.label is Label.FAILURE

    qtbot.keyClick(panel.task_edit, Qt.Key.Key_F5)
    qtbot.waitUntil(lambda: studio.snapshot().recording.active, timeout=WAIT_MS)
    qtbot.keyClick(panel.task_edit, Qt.Key.Key_F8)  # discard
    qtbot.waitUntil(lambda: not studio.snapshot().recording.active and not studio.snapshot().recording.busy, timeout=WAIT_MS)
    assert len(list(store.glob("episode_*.hdf5"))) == before + 1
    assert not list(store.glob("*.partial"))

    qtbot.keyClick(panel.task_edit, Qt.Key.Key_Escape)  # E-stop, even while typing
    qtbot.waitUntil(lambda: studio.snapshot().mode is Mode.ESTOP, timeout=WAIT_MS)
    qtbot.keyClick(panel.task_edit, Qt.Key.Key_E, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    qtbot.waitUntil(lambda: studio.snapshot().mode is Mode.HOLD, timeout=WAIT_MS)
    assert panel.task_edit.text() == "fold the towel in half"  # no shortcut typed into the field


def test_jog_keys_move_the_arm_but_not_while_typing(studio, qtbot):
    window, studio, _ = studio
    panel = window.control_panel
    qtbot.keyClick(window, Qt.Key.Key_F2)  # source: jog
    wait_until_driving(qtbot, studio)
    assert studio.snapshot().source.name == "keyboard"

    # Typing a jog letter into the task field types it and moves nothing.
    panel.task_edit.setFocus()
    panel.task_edit.setText("")
    q0 = studio.snapshot().tick.observation.qpos.copy()
    qtbot.keyPress(panel.task_edit, Qt.Key.Key_W, delay=-1)
    wait_ticks(qtbot, studio, 15)
    qtbot.keyRelease(panel.task_edit, Qt.Key.Key_W)
    assert panel.task_edit.text() == "w"
    assert np.abs(studio.snapshot().tick.observation.qpos[:6] - q0[:6]).max() < 0.01

    # With focus elsewhere, holding W drives the left gripper forward; the right arm stays put.
    window.camera_views["cam_high"].setFocus()
    panel.task_edit.clearFocus()
    q0 = studio.snapshot().tick.observation.qpos.copy()
    qtbot.keyPress(window.camera_views["cam_high"], Qt.Key.Key_W)
    wait_ticks(qtbot, studio, 25)
    q1 = studio.snapshot().tick.observation.qpos.copy()
    qtbot.keyRelease(window.camera_views["cam_high"], Qt.Key.Key_W)
    assert np.abs(q1[:6] - q0[:6]).max() > 0.01, "holding W did not move the left arm"
    assert np.abs(q1[7:13] - q0[7:13]).max() < 0.01, "W moved the right arm"
    # Released: the command stops changing (the followers then settle on it).
    wait_ticks(qtbot, studio, 3)
    a2 = studio.snapshot().tick.action.copy()
    wait_ticks(qtbot, studio, 10)
    a3 = studio.snapshot().tick.action.copy()
    assert np.abs(a3 - a2).max() < 1e-3


def test_new_episode_resets_the_towel_with_the_seed_chosen(studio, qtbot):
    window, studio, _ = studio
    panel = window.control_panel
    panel.seed_spin.setValue(7)
    qtbot.mouseClick(panel.new_episode_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: studio.snapshot().seed == 7, timeout=WAIT_MS)
    assert studio.snapshot().next_seed == 8
    assert studio.rig.episode_seed == 7
    wait_ticks(qtbot, studio, 5)
    assert studio.snapshot().mode is Mode.HOLD
    assert studio.snapshot().tick.sim_time_s < 5.0  # a fresh episode's clock


def test_a_full_disk_is_shown_with_what_to_do_and_the_frames_are_kept(studio, qtbot):
    """A real write failure: once the first frames are on disk, the writer process may grow no
    file beyond its current size plus 50 kB (RLIMIT_FSIZE, set on that process); the writer
    meets EFBIG ("File too large"), which is what a full disk looks like to it."""
    import resource

    window, studio, store = studio
    panel = window.control_panel
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    writer = studio.session.writer
    qtbot.waitUntil(lambda: writer.status().frames_written >= 1, timeout=WAIT_MS)
    pid = writer.process_id
    soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    try:
        size = writer.status().partial_path.stat().st_size
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (size + 50_000, hard))
        qtbot.waitUntil(lambda: studio.snapshot().recording.failed, timeout=WAIT_MS)
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard))
    qtbot.waitUntil(lambda: window.banner.isVisible() and "could not write" in window.banner.label.text(), timeout=WAIT_MS)
    text = window.banner.label.text()
    assert "free some space" in text and "frames written before the error are kept" in text
    assert any(e.origin == "recorder" and "Recording stopped" in e.message for e in studio.events.all())
    qtbot.waitUntil(panel.failure_button.isEnabled, timeout=WAIT_MS)  # painted: the click can land
    # The disk has room again: Stop keeps what was written.
    saved_before = studio.snapshot().recording.last_saved
    qtbot.mouseClick(panel.failure_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: studio.snapshot().recording.last_saved not in ("", saved_before), timeout=WAIT_MS)
    path = store / studio.snapshot().recording.last_saved.split()[1].rstrip(":")
    with Episode.open(path) as episode:
        assert len(episode) >= 1
        assert episode.label is Label.FAILURE
    def ready_for_the_next_episode() -> bool:
        rec = studio.snapshot().recording
        return not (rec.active or rec.failed or rec.busy)

    qtbot.waitUntil(ready_for_the_next_episode, timeout=WAIT_MS)


def test_dragging_a_jog_pad_moves_that_arm(studio, qtbot):
    window, studio, _ = studio
    studio.select_source("keyboard")
    wait_until_driving(qtbot, studio)
    pad = window.jog_pads["right"]
    centre = pad.rect().center()
    a0 = studio.snapshot().tick.action.copy()
    qtbot.mousePress(pad, Qt.MouseButton.LeftButton, pos=centre)
    qtbot.mouseMove(pad, centre - type(centre)(0, int(pad.height() / 2) - 4))  # up = forward
    assert pad.direction[0] > 0.5
    wait_ticks(qtbot, studio, 40)  # longer than the jog source's dead-man time: the window refreshes it
    a1 = studio.snapshot().tick.action.copy()
    qtbot.mouseRelease(pad, Qt.MouseButton.LeftButton)
    assert np.abs(a1[7:13] - a0[7:13]).max() > 0.01, "dragging the right pad did not move the right arm"
    assert np.abs(a1[:6] - a0[:6]).max() < 1e-3, "the right pad moved the left arm"
    assert pad.direction == (0.0, 0.0, 0.0)


def test_the_gui_thread_never_touches_the_rig(studio):
    """Runs after the tests above have clicked, typed, recorded and reset through the window."""
    import threading

    assert RIG_CALLERS, "the rig was never called"
    assert threading.main_thread().name not in RIG_CALLERS
    assert RIG_CALLERS <= {"control-loop"} | {n for n in RIG_CALLERS if n.startswith("studio-worker")}


def test_a_killed_recorder_process_holds_the_arm_shows_it_and_stop_keeps_the_frames(studio, qtbot):
    import os
    import signal
    import time

    from recordings.writer_status import WriterState

    window, studio, store = studio
    studio.select_source("demo")
    qtbot.waitUntil(lambda: studio.snapshot().mode is Mode.TELEOP, timeout=WAIT_MS)
    assert studio.start_recording("fold the towel").result(WAIT_MS / 1000)
    writer = studio.session.writer
    qtbot.waitUntil(lambda: writer.status().frames_written >= 50, timeout=WAIT_MS)
    written = writer.status().frames_written
    killed_at = time.monotonic()
    os.kill(writer.process_id, signal.SIGKILL)
    qtbot.waitUntil(lambda: writer.status().state is WriterState.ERROR, timeout=5_000)
    assert time.monotonic() - killed_at < 1.0  # seen the moment its socket ends
    qtbot.waitUntil(lambda: studio.snapshot().mode is Mode.HOLD, timeout=WAIT_MS)
    # The loop itself says when the arm began to hold: within a second of the kill.
    held = [e for e in studio.loop.events_since(0) if e.code == "mode" and "-> hold" in e.message and e.time_s >= killed_at]
    assert held and held[0].time_s - killed_at < 1.0, [(e.message, e.time_s - killed_at) for e in held]
    qtbot.waitUntil(lambda: any("recorder process was killed" in e.message for e in studio.snapshot().events), timeout=WAIT_MS)
    event = next(e for e in studio.snapshot().events if "recorder process was killed" in e.message)
    assert event.what_to_do and studio.snapshot().recording.failed
    # The window shows it: the event in its list.
    qtbot.waitUntil(lambda: any("recorder process was killed" in window.events_list.item(i).text()
                                for i in range(window.events_list.count())), timeout=WAIT_MS)

    path = studio.stop_recording(False, notes="recorder killed").result(WAIT_MS / 1000)
    assert path is not None
    with Episode.open(path) as episode:
        assert len(episode) >= written
        assert episode.label is Label.FAILURE
    # The next recording gets a new recorder process.
    assert studio.start_recording("fold the towel").result(WAIT_MS / 1000)
    qtbot.waitUntil(lambda: writer.status().frames_written >= 10, timeout=WAIT_MS)
    studio.discard_recording().result(WAIT_MS / 1000)
