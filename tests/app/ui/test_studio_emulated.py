"""The studio window on the emulated real rig (configs/emulated.toml): four pty Dynamixel
emulators behind the real dynamixel-sdk, an emulated RealSense camera, the real control loop and
episode writer, driven through the window's buttons.

One window is shared by the tests of this module, in file order: start the arms and record
teleoperation, health, a silent servo, then calibration (which needs the arms stopped).
"""

from __future__ import annotations

import math
import re
import sys
import threading
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from app.ui import theme
from app.studio.studio import Phase, Studio
from app.ui.main_window import StudioWindow
from recordings.reader import Episode
from robot.dynamixel import control_table as ct
from robot.dynamixel.calibration import CalibrationStore
from robot.rigs import open_rig
from robot.types import ControlSource, Mode

ROOT = Path(__file__).resolve().parents[3]
WAIT_MS = 20_000


#: Threads that talked to a device (rig reads/commands, an arm's bus); the GUI thread must not be one.
DEVICE_CALLERS: set[str] = set()


def _note_thread(obj, names) -> None:
    for name in names:
        method = getattr(obj, name)

        def watched(*args, _method=method, **kwargs):
            DEVICE_CALLERS.add(threading.current_thread().name)
            return _method(*args, **kwargs)

        setattr(obj, name, watched)


def open_rig_watching_threads(path):
    """The real `open_rig`; the rig, and each arm once connected, note which thread calls them."""
    rig, rig_file = open_rig(path)
    connect = rig.connect

    def connect_and_watch():
        connect()
        for arm in rig.arms:
            _note_thread(arm, ("read", "read_pulses", "set_torque", "command"))
            _note_thread(arm.bus, ("sync_read", "sync_read_block", "read_state", "sync_write"))

    rig.connect = connect_and_watch
    _note_thread(rig, ("read", "command", "disconnect"))
    return rig, rig_file


def emulated_rig_file(tmp_path: Path) -> Path:
    """configs/emulated.toml with private calibration and store folders, short ramps and one
    small camera (every camera is three more threads on a shared 2-core box)."""
    text = (ROOT / "configs" / "emulated.toml").read_text()
    text = text.replace('calibration_dir = "../calibration/emulated"', f'calibration_dir = "{tmp_path / "calibration"}"')
    text = text.replace("[aloha]\n", "[aloha]\narm_ramp_s = 0.5\ngripper_ramp_s = 0.2\n", 1).replace("fps = 15", "fps = 6")
    text = text[: text.index('[[cameras]]\nkind = "realsense-emulated"\nname = "cam_left_wrist"')]
    text = text.replace('store_dir = "../recordings/episodes"', f'store_dir = "{tmp_path / "episodes"}"')
    path = tmp_path / "emulated.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def shared(qapp, tmp_path_factory):
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.001)  # the emulators are threads of this process (see tests/robot/dynamixel)
    tmp = tmp_path_factory.mktemp("emulated")
    studio = Studio(emulated_rig_file(tmp), rig_opener=open_rig_watching_threads)
    window = StudioWindow(studio)
    window.show()
    studio.start()
    assert studio.wait_until_running(60), [e.message for e in studio.events.all()]
    yield window, studio, tmp
    window.ask_recording_choice = lambda: None
    window.close()
    if studio.snapshot().phase is not Phase.STOPPED:
        studio.shutdown(recording_label=None)
    sys.setswitchinterval(before)


def gripper_id(rig, arm_id: str) -> int:
    arm = next(a for a in rig.arms if a.arm_id == arm_id)
    return next(j.servo_id for j in arm.layout.joints if j.name == "gripper")


def start_arms_and_squeeze(window: StudioWindow, studio: Studio, qtbot) -> None:
    """Start arms through the button; when the window asks, the test's hands squeeze both leaders."""
    rig = studio.rig
    for leader in ("leader_left", "leader_right"):
        rig.emulators[leader].attach_motion(gripper_id(rig, leader), None)  # the hand waits for the prompt
    qtbot.mouseClick(window.arms_panel.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "squeeze" in window.arms_panel.prompt_label.text(), timeout=WAIT_MS)
    assert not window.control_panel.source_buttons["leaders"].isEnabled()  # not before the squeeze
    for leader in ("leader_left", "leader_right"):
        rig.emulators[leader].set_position_rad(gripper_id(rig, leader), -0.6)
    qtbot.waitUntil(lambda: window.control_panel.source_buttons["leaders"].isEnabled(), timeout=WAIT_MS)
    assert studio.snapshot().arms.started


def drive_with_leaders(window, studio, qtbot) -> None:
    if not studio.snapshot().arms.started:
        start_arms_and_squeeze(window, studio, qtbot)
    qtbot.mouseClick(window.control_panel.source_buttons["leaders"], Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: studio.snapshot().mode is Mode.TELEOP and studio.snapshot().loop.source_name == "leader arms",
                    timeout=WAIT_MS)


def record_through_buttons(window, studio, qtbot, seconds: float) -> Episode:
    panel = window.control_panel
    qtbot.waitUntil(lambda: panel.start_button.isEnabled(), timeout=WAIT_MS)
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: studio.snapshot().recording.elapsed_s >= seconds, timeout=WAIT_MS)
    qtbot.mouseClick(panel.success_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: studio.snapshot().recording.last_saved.startswith("Saved"), timeout=WAIT_MS)
    saved = studio.snapshot().recording.last_saved
    name = re.match(r"Saved (\S+):", saved).group(1)
    return Episode.open(studio.store_dir / name)


def test_start_arms_then_record_leader_teleoperation(shared, qtbot):
    window, studio, _ = shared
    panel = window.control_panel
    qtbot.waitUntil(lambda: window.arms_panel.isVisible(), timeout=WAIT_MS)
    # What the emulated rig declares and asks: how the window shows it is in test_window_display.py.
    snap = studio.snapshot()
    assert snap.capabilities.real_arms and snap.capabilities.leaders and not snap.capabilities.resettable
    assert snap.arms.arm_ids == ("follower_left", "follower_right", "leader_left", "leader_right")
    assert not snap.arms.started and "Start arms" in snap.arms.prompt
    assert snap.available_sources == ("hold",)
    qtbot.waitUntil(lambda: window.camera_views["cam_high"].frames_shown >= 2, timeout=WAIT_MS)

    start_arms_and_squeeze(window, studio, qtbot)
    assert any("start pose" in p for p in window.arms_panel.prompts_shown)  # the ramp was announced
    drive_with_leaders(window, studio, qtbot)
    episode = record_through_buttons(window, studio, qtbot, 2.0)
    assert episode.length >= 40  # 2 s at 50 Hz, minus what a busy box loses
    assert {s.value for s in episode.control_sources} == {ControlSource.TELEOP.value}
    assert not episode.sim and episode.frame("cam_high", 0).ndim == 3
    # The leaders sway, so the followers' commands move.
    assert (episode.action.max(axis=0) - episode.action.min(axis=0)).max() > 0.02


def test_servo_table_flags_an_overheated_servo(shared, qtbot):
    window, studio, _ = shared
    rig = studio.rig
    table = window.servo_table
    qtbot.waitUntil(lambda: table.rowCount() == sum(len(a.layout.all_ids) for a in rig.arms), timeout=WAIT_MS)
    assert table.cell_colour("follower_left", 3, "Temp °C") is None
    rig.emulators["follower_left"].set_temperature(3, 70.0)
    try:
        qtbot.waitUntil(lambda: table.cell_colour("follower_left", 3, "Temp °C") == theme.ERROR_COLOUR, timeout=WAIT_MS)
        assert "hot" in window.arms_panel.health_label.text() and "follower_left" in window.arms_panel.health_label.text()
    finally:
        rig.emulators["follower_left"].set_temperature(3, 35.0)


def test_a_silent_servo_is_named_the_arm_holds_and_the_recording_keeps_its_frames(shared, qtbot):
    window, studio, _ = shared
    drive_with_leaders(window, studio, qtbot)
    panel = window.control_panel
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: studio.snapshot().recording.active and studio.snapshot().recording.frames >= 20, timeout=WAIT_MS)
    emulator = studio.rig.emulators["follower_right"]
    emulator.set_silent(7)
    try:
        qtbot.waitUntil(lambda: window.arms_panel.not_answering_label.isVisible(), timeout=WAIT_MS)
        assert "Servo 7" in window.arms_panel.not_answering_label.text()
        assert window.banner.isVisible() and "Servo 7" in window.banner.label.text()
        qtbot.waitUntil(lambda: studio.snapshot().mode is Mode.HOLD, timeout=WAIT_MS)
    finally:
        emulator.set_silent(7, False)
    qtbot.waitUntil(lambda: not window.arms_panel.not_answering_label.isVisible(), timeout=WAIT_MS)
    frames = studio.snapshot().recording.frames
    # A tick read after the servo answered again (held: the loop stays in HOLD) reaches the writer
    # before Stop; on a loaded box the GUI can see the recovery before the control thread has
    # published that tick.
    qtbot.waitUntil(lambda: studio.snapshot().recording.frames > frames, timeout=WAIT_MS)
    qtbot.mouseClick(panel.failure_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: studio.snapshot().recording.last_saved.count("failure"), timeout=WAIT_MS)
    name = re.match(r"Saved (\S+):", studio.snapshot().recording.last_saved).group(1)
    episode = Episode.open(studio.store_dir / name)
    assert episode.length >= frames and studio.snapshot().recording.frames_dropped == 0
    assert ControlSource.HOLD.value in {s.value for s in episode.control_sources}  # the hold is in the data


def test_calibrate_a_leader_step_by_step_through_the_window(shared, qtbot):
    window, studio, tmp = shared
    rig = studio.rig
    # Calibration needs the arms stopped: the window says so while they are started.
    if studio.snapshot().arms.started:
        assert not window.arms_panel.calibrate_button.isEnabled()
        qtbot.mouseClick(window.control_panel.estop_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: studio.snapshot().mode is Mode.ESTOP and not studio.snapshot().arms.started, timeout=WAIT_MS)
        qtbot.mouseClick(window.control_panel.clear_estop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.arms_panel.calibrate_button.isEnabled(), timeout=WAIT_MS)
    qtbot.mouseClick(window.arms_panel.calibrate_button, Qt.MouseButton.LeftButton)
    dialog = window.calibration_dialog
    assert dialog is not None and dialog.isVisible()

    emulator = rig.emulators["leader_left"]
    arm = next(a for a in rig.arms if a.arm_id == "leader_left")
    joints = arm.layout.joints
    for j in joints:
        emulator.attach_motion(j.servo_id, None)  # the test's hands hold the arm
    # This arm's horns sit a few degrees off the factory zero; two servos turn the other way.
    offsets_rad = [0.05, -0.08, 0.1, 0.0, 0.03, -0.04, 0.0]
    turns_rad = [math.pi / 2, -math.pi / 2, math.pi / 2, math.pi / 2, -math.pi / 2, math.pi / 2]

    def put(positions_rad):
        for j, q in zip(joints, positions_rad):
            emulator.set_position_rad(j.servo_id, q)

    def click_and_wait(button, step: str):
        qtbot.waitUntil(lambda: button.isEnabled(), timeout=WAIT_MS)
        qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: studio.calibration_status() is not None and studio.calibration_status().step == step,
                        timeout=WAIT_MS)

    dialog.arm_combo.setCurrentText("leader_left")
    click_and_wait(dialog.begin_button, "start")
    qtbot.waitUntil(lambda: "Calibrating leader_left" in dialog.prompt_label.text(), timeout=WAIT_MS)
    put(offsets_rad)
    click_and_wait(dialog.next_button, "zero")
    click_and_wait(dialog.next_button, "rotated")
    # Next without turning the joints is refused, with the joints named, and stays on the step.
    qtbot.mouseClick(dialog.next_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "did not turn" in dialog.error_label.text(), timeout=WAIT_MS)
    assert studio.calibration_status().step == "rotated" and "waist" in dialog.error_label.text()
    put([o + t for o, t in zip(offsets_rad, turns_rad)] + [0.0])
    click_and_wait(dialog.next_button, "gripper_open")
    emulator.set_position_rad(joints[-1].servo_id, 0.4)
    click_and_wait(dialog.next_button, "gripper_closed")
    emulator.set_position_rad(joints[-1].servo_id, -0.6)
    click_and_wait(dialog.next_button, "done")
    qtbot.waitUntil(lambda: dialog.save_button.isEnabled(), timeout=WAIT_MS)
    qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "Saved the calibration" in dialog.prompt_label.text(), timeout=WAIT_MS)

    saved = CalibrationStore(tmp / "calibration").load("leader_left")
    expected_zero = [round(ct.CENTER_PULSE + o / ct.RAD_PER_PULSE) for o in offsets_rad[:6]]
    assert [abs(j.zero_pulses - z) <= 2 for j, z in zip(saved.joints[:6], expected_zero)] == [True] * 6
    assert [j.sign for j in saved.joints[:6]] == [1, -1, 1, 1, -1, 1]
    assert saved.gripper_open_rad > saved.gripper_closed_rad
    assert arm.calibration == saved  # in use now
    dialog.close()


def test_the_gui_thread_never_talks_to_a_device(shared):
    """Everything above ran through the window: reads, commands, the ceremony, health, calibration."""
    assert {"control-loop", "studio-worker_0"} <= DEVICE_CALLERS
    assert threading.current_thread().name not in DEVICE_CALLERS and "MainThread" not in DEVICE_CALLERS
