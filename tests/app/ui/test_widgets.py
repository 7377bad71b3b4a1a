"""The window's parts on plain data: plot history, event log, camera scaling, help text."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from app.studio.events import EventLog, Severity
from app.studio.history import TickHistory
from app.ui.keys import JOG_KEYS, SHORTCUTS, help_html
from app.ui.widgets.camera_view import CameraViewWidget
from robot.types import ControlSource, Mode, Observation, TickRecord, TickTimings


def record(index: int, t: float, value: float) -> TickRecord:
    observation = Observation(
        qpos=np.full(14, value, np.float32),
        qvel=np.zeros(14, np.float32),
        effort=np.zeros(14, np.float32),
        images={},
        image_times_s={},
        time_s=100.0 + t,
    )
    timings = TickTimings(period_s=0.02, jitter_s=0.001, read_s=0, source_s=0, safety_s=0, command_s=0, total_s=0.01)
    return TickRecord(index, observation, np.full(14, value + 1, np.float32), ControlSource.TELEOP, Mode.TELEOP, timings, sim_time_s=t)


def test_history_keeps_the_newest_ticks_in_order_on_simulated_time():
    history = TickHistory(capacity=50)
    for i in range(120):
        history.on_tick(record(i, i * 0.02, float(i)))
    window = history.window(span_s=None)
    assert window.length == 50
    assert window.measured[:, 0].tolist() == list(range(70, 120))
    assert window.commanded[-1, 0] == 120.0
    assert window.time_s[-1] == 0.0 and np.allclose(np.diff(window.time_s), 0.02)
    assert np.allclose(window.period_ms, 20.0) and np.allclose(window.jitter_ms, 1.0)
    assert history.window(span_s=0.5).length == 26  # 0.5 s back, both ends included
    assert history.latest.index == 119
    history.clear()
    assert history.window().length == 0 and history.latest is None


def test_history_is_safe_to_fill_from_another_thread():
    history = TickHistory(capacity=100)
    done = threading.Event()

    def writer():
        for i in range(5000):
            history.on_tick(record(i, i * 0.02, float(i)))
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    while not done.is_set():
        window = history.window()
        # A copy is internally consistent: consecutive ticks, whatever the writer does meanwhile.
        if window.length > 1:
            assert np.all(np.diff(window.measured[:, 0]) == 1.0)
    thread.join()


def test_history_rejects_a_useless_capacity():
    with pytest.raises(ValueError, match="capacity"):
        TickHistory(capacity=1)


def test_event_log_numbers_events_and_keeps_the_newest():
    log = EventLog(max_events=3)
    for i in range(5):
        log.add(Severity.WARNING, "loop", f"event {i}", "do something")
    assert [e.message for e in log.all()] == ["event 2", "event 3", "event 4"]
    assert [e.message for e in log.since(3)] == ["event 4"]
    assert log.all()[-1].what_to_do == "do something"


def test_camera_view_converts_only_the_visible_size(qtbot):
    view = CameraViewWidget("cam_high")
    qtbot.addWidget(view)
    view.resize(300, 150)
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[:, :320] = (255, 0, 0)
    view.set_frame(frame, capture_time_s=1.0, age_ms=12.0)
    target = view._target_rect()
    assert (target.width(), target.height()) == (200, 150)  # 4:3 letterboxed into 300x150
    assert target.left() == 50
    image = view._scaled_image(target)
    assert (image.width(), image.height()) == (200, 150)
    assert image.pixelColor(10, 75).red() == 255 and image.pixelColor(190, 75).red() == 0
    shown = view.frames_shown
    view._scaled_image(target)  # same frame, same size: no new conversion
    assert view.frames_shown == shown
    view.set_frame(frame, capture_time_s=1.0, age_ms=30.0)  # same capture: nothing to redo
    view._scaled_image(view._target_rect())
    assert view.frames_shown == shown


def test_help_lists_every_shortcut_and_jog_key():
    text = help_html()
    for shortcut in SHORTCUTS:
        assert shortcut.keys[0] in text and shortcut.description in text
    for key in JOG_KEYS:
        assert f"<b>{key.label}" in text or f" {key.label}</b>" in text or f"/ {key.label}" in text


def test_servo_cells_are_coloured_against_the_thresholds():
    from app.ui import theme
    from app.ui.widgets.servo_health import cell_colours
    from robot.dynamixel.control_table import HardwareError
    from robot.dynamixel.health import HealthThresholds, ServoHealth

    th = HealthThresholds(max_temperature_c=65.0)
    fine = ServoHealth(1, "waist", 40.0, 12.0, 100.0, None, HardwareError(0))
    assert cell_colours(fine, th) == {}
    warm = ServoHealth(1, "waist", 60.0, 12.0, 1500.0, None, HardwareError(0))
    assert cell_colours(warm, th) == {"Temp °C": theme.WARN_COLOUR, "Current": theme.WARN_COLOUR}
    bad = ServoHealth(1, "waist", 70.0, 9.0, 2000.0, None, HardwareError(4), ("hot",))
    assert cell_colours(bad, th) == {"Temp °C": theme.ERROR_COLOUR, "Supply V": theme.ERROR_COLOUR,
                                     "Current": theme.ERROR_COLOUR, "Hardware error": theme.ERROR_COLOUR}
    loaded = ServoHealth(9, "gripper", 40.0, 12.0, None, 90.0, HardwareError(0))
    assert cell_colours(loaded, th) == {"Current": theme.ERROR_COLOUR}
