"""What the studio window shows for a given snapshot: each test paints hand-built
`StudioSnapshot`s into a real window whose studio is never started (no rig, no loop, no writer;
its paint timer stopped) and asserts on the widgets.

The window paints a snapshot in `show_snapshot` without reading the studio, so anything a rig
could report can be painted here in milliseconds: a rig kind, an E-stop, a hot servo, a full disk.
That the real rig, loop and writer produce such snapshots and that they reach the window is
checked by the end-to-end window tests (test_studio_window.py, test_studio_emulated.py,
test_studio_sim_leaders.py, test_lifecycle.py).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest

from app.studio.events import Severity, StudioEvent
from app.studio.history import HistoryWindow
from app.studio.monitor import LOW_DISK_BYTES
from app.studio.checkpoints import CheckpointInfo
from app.studio.snapshot import (
    SOURCE_BY_NAME,
    ArmsState,
    AutonomyState,
    AutonomyStatus,
    Phase,
    RecordingStatus,
    StudioSnapshot,
)
from app.studio.studio import Studio
from app.ui import theme
from app.ui.main_window import HEALTH_EVERY_N_PAINTS, PLOT_EVERY_N_PAINTS, STATUS_EVERY_N_PAINTS, StudioWindow
from app.ui.widgets.arms_panel import STARTING_COLOUR
from robot.capabilities import Capabilities
from robot.control_loop import LoopState, LoopStats
from robot.dynamixel.control_table import HardwareError
from robot.dynamixel.errors import ServoNotResponding
from robot.dynamixel.health import HealthReport, HealthThresholds, ServoHealth
from model.runner import LatencySummary, RunnerStatus
from robot.types import STATE_DIM, ControlSource, Mode, Observation, RigStatus, TickRecord, TickTimings

ROOT = Path(__file__).resolve().parents[3]

# What each rig of ours declares (the table in robot/capabilities.py; tests/robot/test_capabilities.py
# pins it to the rig classes).
SIM = Capabilities(simulated=True, resettable=True, task=True)
SIM_WITH_LEADERS = Capabilities(simulated=True, startable=True, resettable=True, leaders=True, health=True, task=True)
REAL_ARMS = Capabilities(startable=True, leaders=True, calibratable=True, health=True)

ARM_IDS = ("follower_left", "follower_right", "leader_left", "leader_right")
PRESS_START = "Press Start arms to bring the arms to the start pose."
MOVING = "Moving the followers to the start pose. Keep clear of the arms."
READY = "Arms ready: the followers follow the leaders (or the policy)."


# ---------------------------------------------------------------------------- snapshot factories

def loop_state(mode: Mode = Mode.HOLD, source_name: str = "", kind: ControlSource = ControlSource.NONE,
               blending: bool = False) -> LoopState:
    """The loop's state as `ControlLoop.state()` reports it (a source only while driving)."""
    return LoopState(running=True, mode=mode, source_name=source_name, source_kind=kind, blending=blending)


def tick(index: int, images: dict[str, np.ndarray] | None = None, clipped: tuple[str, ...] = (),
         age_s: float = 0.02) -> TickRecord:
    """A tick record whose camera frames were captured `age_s` ago."""
    now = time.monotonic()
    images = images or {}
    observation = Observation(
        qpos=np.zeros(STATE_DIM, np.float32), qvel=np.zeros(STATE_DIM, np.float32),
        effort=np.zeros(STATE_DIM, np.float32), images=images,
        image_times_s={name: now - age_s for name in images}, time_s=now,
    )
    timings = TickTimings(period_s=0.02, jitter_s=0.0005, read_s=0.004, source_s=0.001, safety_s=0.0002,
                          command_s=0.001, total_s=0.007)
    return TickRecord(index, observation, np.zeros(STATE_DIM, np.float32), ControlSource.HOLD, Mode.HOLD, timings,
                      clipped=clipped, sim_time_s=index * 0.02)


def loop_stats(rate_hz: float = 49.8, jitter_ms: float = 1.2) -> LoopStats:
    return LoopStats(ticks=500, target_rate_hz=50.0, achieved_rate_hz=rate_hz, jitter_p99_ms=jitter_ms,
                     late_ticks=3, missed_deadlines=1)


def sim_snapshot(**changes) -> StudioSnapshot:
    """The simulated rig running, holding, with nothing recorded yet; `changes` replace fields."""
    snap = StudioSnapshot(
        phase=Phase.RUNNING,
        rig_name="sim-aloha",
        loop=loop_state(Mode.HOLD),
        loop_stats=loop_stats(),
        source=SOURCE_BY_NAME["hold"],
        rig_status=RigStatus("sim-aloha", real_time_factor=0.93,
                             camera_fps={"cam_high": 29.8, "cam_left_wrist": 30.0, "cam_right_wrist": 30.1}),
        disk_free_bytes=int(12.3 * 1024**3),
        store_dir=Path("/data/episodes"),
        recording=RecordingStatus(episode_count=3),
        seed=0,
        next_seed=1,
        camera_names=("cam_high", "cam_left_wrist", "cam_right_wrist"),
        capabilities=SIM,
    )
    return dataclasses.replace(snap, **changes)


def servo(servo_id: int, joint: str, temperature_c: float = 38.0, current_ma: float = 120.0,
          problems: tuple[str, ...] = ()) -> ServoHealth:
    return ServoHealth(servo_id, joint, temperature_c, 12.1, current_ma, None, HardwareError.NONE, problems)


def health_report(arm_id: str, *servos: ServoHealth, age_s: float = 0.2) -> HealthReport:
    return HealthReport(arm_id, f"/dev/ttyDXL_{arm_id}", servos, time.monotonic() - age_s)


def healthy_reports() -> tuple[HealthReport, ...]:
    return tuple(health_report(arm, servo(1, "waist"), servo(3, "elbow")) for arm in ARM_IDS)


def arms_state(**changes) -> ArmsState:
    """Real arms, connected and not started, every servo within limits; `changes` replace fields."""
    arms = ArmsState(prompt=PRESS_START, health=healthy_reports(), thresholds=HealthThresholds(), arm_ids=ARM_IDS)
    return dataclasses.replace(arms, **changes)


def real_arms_snapshot(**changes) -> StudioSnapshot:
    """A rig with real follower arms, connected and idle (its torque off until Start arms)."""
    base = sim_snapshot(
        rig_name="aloha-emulated",
        loop=loop_state(Mode.IDLE),
        source=None,
        rig_status=RigStatus("aloha-emulated", camera_fps={"cam_high": 14.9}),
        seed=None,
        next_seed=0,
        camera_names=("cam_high",),
        capabilities=REAL_ARMS,
        arms=arms_state(),
    )
    return dataclasses.replace(base, **changes)


def event(event_id: int, severity: Severity, message: str, what_to_do: str = "", origin: str = "loop") -> StudioEvent:
    return StudioEvent(event_id, severity, origin, message, what_to_do)


def paint(window: StudioWindow, snap: StudioSnapshot, times: int = 1, history=lambda: None) -> None:
    for _ in range(times):
        window.show_snapshot(snap, history)


@pytest.fixture
def window(qtbot, tmp_path):
    """A shown window over a studio that never starts: only the test paints it."""
    studio = Studio(ROOT / "configs" / "sim.toml", tmp_path)
    window = StudioWindow(studio)
    window.paint_timer.stop()
    window.show()
    yield window
    # The window's own way out: close asks the studio to shut down (there is nothing to close),
    # and the paint timer closes the window once it has.
    window.close()
    window.paint_timer.start()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=5000)


def visible_sources(window: StudioWindow) -> set[str]:
    return {name for name, button in window.control_panel.source_buttons.items() if button.isVisible()}


def enabled_sources(window: StudioWindow) -> set[str]:
    return {name for name, button in window.control_panel.source_buttons.items() if button.isEnabled()}


def shortcut_enabled(window: StudioWindow, action: str) -> bool:
    return all(shortcut.isEnabled() for shortcut in window.shortcuts[action])


def servo_tab_visible(window: StudioWindow) -> bool:
    return window.bottom_tabs.isTabVisible(window.bottom_tabs.indexOf(window.servo_table))


# ---------------------------------------------------------------------------- rig kinds

def test_before_the_rig_is_up_only_what_every_rig_has_is_offered(window):
    paint(window, StudioSnapshot(phase=Phase.STARTING, rig_name="sim"))
    panel = window.control_panel
    assert visible_sources(window) == {"keyboard", "hold"}
    assert not window.arms_panel.isVisible() and not servo_tab_visible(window)
    assert not panel.start_button.isEnabled() and not panel.new_episode_button.isEnabled()
    assert not shortcut_enabled(window, "start_arms") and not shortcut_enabled(window, "source:leaders")
    assert panel.mode_badge.text() == "IDLE" and panel.source_badge.text() == "—"
    assert window.status.phase.text() == "starting sim…"


def test_the_simulated_rig_offers_demo_on_f3_and_no_arms(window):
    paint(window, sim_snapshot())
    panel = window.control_panel
    assert visible_sources(window) == enabled_sources(window) == {"keyboard", "demo", "hold"}
    assert panel.source_buttons["demo"].text() == "Demo\nF3"
    assert shortcut_enabled(window, "source:demo")
    assert not shortcut_enabled(window, "source:leaders") and not shortcut_enabled(window, "start_arms")
    assert not window.arms_panel.isVisible() and not window.arm_prompt_banner.isVisible()
    assert not servo_tab_visible(window)
    # The towel reset and its seeds, and the simulation's speed against real time.
    assert panel.new_episode_button.isVisible() and panel.new_episode_button.isEnabled()
    assert panel.seed_spin.isVisible() and panel.current_seed_label.isVisible()
    assert window.status.rtf.isVisible() and window.status.rtf.text() == "real-time 0.93×"
    assert window.status.phase.text() == "sim-aloha"


def test_a_simulation_driven_by_leader_arms_adds_the_leaders_button_but_no_start_arms(window):
    paint(window, sim_snapshot(rig_name="sim-leaders", capabilities=SIM_WITH_LEADERS))
    panel = window.control_panel
    assert visible_sources(window) == enabled_sources(window) == {"keyboard", "leaders", "demo", "hold"}
    # F3 stays Demo on a simulation: the Leaders button has no key of its own there.
    assert shortcut_enabled(window, "source:demo") and not shortcut_enabled(window, "source:leaders")
    assert not shortcut_enabled(window, "start_arms")
    assert not window.arms_panel.isVisible() and not servo_tab_visible(window)
    assert panel.new_episode_button.isVisible() and window.status.rtf.isVisible()


def test_real_arms_show_the_arms_panel_and_leaders_instead_of_demo(window):
    paint(window, real_arms_snapshot())
    panel, arms = window.control_panel, window.arms_panel
    assert arms.isVisible() and servo_tab_visible(window)
    assert visible_sources(window) == {"keyboard", "leaders", "hold"}
    assert enabled_sources(window) == {"hold"}  # nothing drives the arms before Start arms
    assert panel.source_buttons["leaders"].text() == "Leaders\nF3"
    assert shortcut_enabled(window, "source:leaders") and shortcut_enabled(window, "start_arms")
    assert not shortcut_enabled(window, "source:demo")
    # No towel to reset, no simulated time.
    assert not panel.new_episode_button.isVisible() and not panel.seed_spin.isVisible()
    assert not window.status.rtf.isVisible()
    # The rig's prompt above the cameras and in the panel; Start arms and Calibrate offered.
    assert window.arm_prompt_banner.isVisible() and window.arm_prompt_banner.text() == PRESS_START
    assert "#374151" in window.arm_prompt_banner.styleSheet()
    assert arms.prompt_label.text() == PRESS_START
    assert arms.start_button.isEnabled() and arms.calibrate_button.isEnabled()
    assert panel.mode_badge.text() == "IDLE" and panel.source_badge.text() == "none"

    paint(window, real_arms_snapshot(arms=arms_state(started=True, prompt=READY)))
    assert enabled_sources(window) == {"keyboard", "leaders", "hold"}
    assert not window.arm_prompt_banner.isVisible()
    assert arms.prompt_label.text() == READY and theme.OK_COLOUR in arms.prompt_label.styleSheet()
    assert not arms.calibrate_button.isEnabled()  # calibration needs the arms stopped
    assert arms.prompts_shown == [PRESS_START, READY]


def test_the_start_prompt_turns_amber_while_the_arms_start(window):
    paint(window, real_arms_snapshot(arms=arms_state(starting=True, prompt=MOVING)))
    arms = window.arms_panel
    assert window.arm_prompt_banner.isVisible() and window.arm_prompt_banner.text() == MOVING
    assert STARTING_COLOUR in window.arm_prompt_banner.styleSheet()
    assert STARTING_COLOUR in arms.prompt_label.styleSheet()
    assert not arms.start_button.isEnabled() and not arms.calibrate_button.isEnabled()
    # An E-stop ends the ceremony; Start arms waits for the E-stop to be cleared.
    paint(window, real_arms_snapshot(loop=loop_state(Mode.ESTOP), arms=arms_state(prompt="E-stop: torque is off.")))
    assert not arms.start_button.isEnabled() and arms.calibrate_button.isEnabled()
    assert "#374151" in window.arm_prompt_banner.styleSheet()


def test_the_health_summary_and_servo_table_colour_hand_built_reports(window):
    arms, table = window.arms_panel, window.servo_table
    paint(window, real_arms_snapshot(arms=arms_state(health=())))
    assert arms.health_label.text() == "servo health: no reading yet" and table.rowCount() == 0

    paint(window, real_arms_snapshot())
    assert arms.health_label.text() == "servo health: 8 servos on 4 arms within limits"
    assert theme.OK_COLOUR in arms.health_label.styleSheet()
    assert table.rowCount() == 8
    assert all(table.cell_colour(arm, 3, "Temp °C") is None for arm in ARM_IDS)

    hot = "hot: 70 degC (limit 65); let it cool down"
    reports = (
        health_report("follower_left", servo(1, "waist", temperature_c=58.0), servo(3, "elbow", 70.0, problems=(hot,))),
        health_report("follower_right", servo(1, "waist", current_ma=1500.0), servo(3, "elbow")),
        *healthy_reports()[2:],
    )
    hot_snapshot = real_arms_snapshot(arms=arms_state(health=reports))
    paint(window, hot_snapshot)  # the table follows at about 1 Hz, the summary at once
    assert arms.health_label.text() == f"servo health: follower_left elbow (servo 3): {hot}"
    assert theme.ERROR_COLOUR in arms.health_label.styleSheet()
    paint(window, hot_snapshot, times=HEALTH_EVERY_N_PAINTS)
    assert table.cell_colour("follower_left", 3, "Temp °C") == theme.ERROR_COLOUR
    assert table.cell_colour("follower_left", 1, "Temp °C") == theme.WARN_COLOUR  # close to the limit
    assert table.cell_colour("follower_right", 1, "Current") == theme.WARN_COLOUR
    assert table.cell_colour("follower_right", 3, "Temp °C") is None
    ages = {table.item(row, 7).text() for row in range(table.rowCount())}
    assert ages == {"<1"}

    # An arm not read for seconds (a servo of it stopped answering): its age turns red.
    stale = (health_report("follower_left", servo(1, "waist"), servo(3, "elbow"), age_s=10.0), *reports[1:])
    paint(window, real_arms_snapshot(arms=arms_state(health=stale)), times=HEALTH_EVERY_N_PAINTS)
    age = table.item(0, 7)
    assert age.text() == "10" and age.foreground().color().name() == theme.ERROR_COLOUR
    fresh = table.item(2, 7)
    assert fresh.text() == "<1" and fresh.foreground().color().name() == theme.MUTED

    # Servo table: the panel's button brings its tab to the front.
    window.bottom_tabs.setCurrentIndex(0)
    arms.health_button.click()
    assert window.bottom_tabs.currentWidget() is window.servo_table


def test_a_servo_that_stops_answering_is_named_until_it_answers_again(window):
    silent = str(ServoNotResponding("/dev/ttyDXL_follower_right", 7, "Present_Position", "no status packet",
                                    joint="wrist_rotate"))
    started = arms_state(started=True, prompt=READY)
    paint(window, real_arms_snapshot(arms=dataclasses.replace(started, not_answering=silent)))
    label = window.arms_panel.not_answering_label
    assert label.isVisible() and label.text() == f"Not answering — {silent}"
    assert "Servo 7" in label.text() and "Check the power" in label.text()
    paint(window, real_arms_snapshot(arms=started))
    assert not label.isVisible()


# ---------------------------------------------------------------------------- mode and source

def test_mode_and_source_badges_follow_the_loop(window):
    panel = window.control_panel
    checked = lambda: {n for n, b in panel.source_buttons.items() if b.isChecked()}  # noqa: E731
    paint(window, sim_snapshot())
    assert panel.mode_badge.text() == "HOLD" and theme.MODE_COLOURS[Mode.HOLD] in panel.mode_badge.styleSheet()
    assert panel.source_badge.text() == "hold position" and checked() == {"hold"}
    assert not panel.clear_estop_button.isEnabled()

    paint(window, sim_snapshot(loop=loop_state(Mode.TELEOP, "scripted fold", ControlSource.SCRIPTED, blending=True),
                               source=SOURCE_BY_NAME["demo"]))
    assert panel.mode_badge.text() == "TELEOP" and theme.MODE_COLOURS[Mode.TELEOP] in panel.mode_badge.styleSheet()
    assert panel.source_badge.text() == "scripted fold (blending in)"
    assert theme.SOURCE_COLOURS[ControlSource.SCRIPTED] in panel.source_badge.styleSheet()
    assert checked() == {"demo"}
    paint(window, sim_snapshot(loop=loop_state(Mode.TELEOP, "scripted fold", ControlSource.SCRIPTED),
                               source=SOURCE_BY_NAME["demo"]))
    assert panel.source_badge.text() == "scripted fold"

    paint(window, sim_snapshot(loop=loop_state(Mode.POLICY, "fast-wam policy", ControlSource.POLICY), source=None))
    assert panel.mode_badge.text() == "POLICY" and theme.MODE_COLOURS[Mode.POLICY] in panel.mode_badge.styleSheet()
    assert panel.source_badge.text() == "fast-wam policy" and checked() == set()

    paint(window, sim_snapshot(loop=loop_state(Mode.ESTOP), source=SOURCE_BY_NAME["demo"]))
    assert panel.mode_badge.text() == "E-STOP (latched)"
    assert theme.MODE_COLOURS[Mode.ESTOP] in panel.mode_badge.styleSheet()
    assert panel.source_badge.text() == "none (E-stop)" and checked() == set()
    assert panel.clear_estop_button.isEnabled() and panel.estop_button.isEnabled()
    assert not panel.new_episode_button.isEnabled()  # the reset moves the arms: not while latched

    paint(window, sim_snapshot(loop=loop_state(Mode.IDLE), source=None))
    assert panel.mode_badge.text() == "IDLE" and panel.source_badge.text() == "none"
    assert not panel.clear_estop_button.isEnabled()


def test_the_safety_line_names_the_joints_the_filter_limited(window):
    panel = window.control_panel
    paint(window, sim_snapshot(tick=tick(1, clipped=("left_elbow", "left_wrist_angle"))))
    assert panel.safety_label.text() == "limiting left_elbow, left_wrist_angle"
    assert theme.WARN_COLOUR in panel.safety_label.styleSheet()
    paint(window, sim_snapshot(tick=tick(2)))
    assert panel.safety_label.text() == "within limits" and theme.OK_COLOUR in panel.safety_label.styleSheet()


# ---------------------------------------------------------------------------- recording

def test_the_recording_panel_in_every_state(window):
    panel = window.control_panel
    recording_buttons = lambda: {b.text().split()[0]: b.isEnabled() for b in (  # noqa: E731
        panel.start_button, panel.success_button, panel.failure_button, panel.discard_button)}
    paint(window, sim_snapshot())
    assert panel.recording_badge.text() == "not recording"
    assert recording_buttons() == {"●": True, "Stop:": False, "Discard": False}
    assert panel.elapsed_label.text() == "00:00.0" and panel.episode_counter_label.text() == "3 episodes in the store"
    assert not panel.task_edit.isReadOnly()

    paint(window, sim_snapshot(recording=RecordingStatus(active=True, elapsed_s=83.4, frames=4170, episode_count=3)))
    assert panel.recording_badge.text() == "● REC  4170 frames"
    assert theme.RECORDING_COLOUR in panel.recording_badge.styleSheet()
    assert panel.elapsed_label.text() == "01:23.4"
    assert not panel.start_button.isEnabled()
    assert panel.success_button.isEnabled() and panel.failure_button.isEnabled() and panel.discard_button.isEnabled()
    assert panel.task_edit.isReadOnly() and panel.operator_edit.isReadOnly()
    assert not panel.new_episode_button.isEnabled()  # no towel reset in the middle of an episode

    saving = RecordingStatus(busy="saving the episode…", elapsed_s=83.5, frames=4175, episode_count=3)
    paint(window, sim_snapshot(recording=saving))
    assert panel.recording_badge.text() == "saving…" and theme.WARN_COLOUR in panel.recording_badge.styleSheet()
    assert not any((panel.start_button.isEnabled(), panel.success_button.isEnabled(), panel.discard_button.isEnabled()))
    assert panel.last_saved_label.text() == "saving the episode…"

    saved = "Saved episode_000003.hdf5: success, 4175 steps, 83.5 s."
    paint(window, sim_snapshot(recording=RecordingStatus(last_saved=saved, episode_count=4)))
    assert panel.recording_badge.text() == "not recording" and panel.start_button.isEnabled()
    assert panel.last_saved_label.text() == saved
    assert panel.episode_counter_label.text() == "4 episodes in the store"
    assert panel.new_episode_button.isEnabled() and not panel.task_edit.isReadOnly()

    paint(window, sim_snapshot(recording=RecordingStatus(failed=True, elapsed_s=12.0, frames=600, episode_count=4)))
    assert panel.recording_badge.text() == "recording stopped by an error"
    assert theme.ERROR_COLOUR in panel.recording_badge.styleSheet()
    assert not panel.start_button.isEnabled()  # Stop keeps what was written, Discard drops it
    assert panel.success_button.isEnabled() and panel.failure_button.isEnabled() and panel.discard_button.isEnabled()

    paint(window, sim_snapshot(recording=RecordingStatus(episode_count=1)))
    assert panel.episode_counter_label.text() == "1 episode in the store"
    paint(window, sim_snapshot(recording=RecordingStatus(episode_count=None)))
    assert panel.episode_counter_label.text() == "episode store unavailable"


def test_the_seed_fields_show_the_towel_now_and_next_and_leave_a_typed_seed_alone(window, qtbot):
    panel = window.control_panel
    paint(window, sim_snapshot(seed=None, next_seed=0))
    assert panel.current_seed_label.text() == "—" and panel.seed_spin.value() == 0
    paint(window, sim_snapshot(seed=7, next_seed=8))
    assert panel.current_seed_label.text() == "7" and panel.seed_spin.value() == 8
    window.activateWindow()
    panel.seed_spin.setFocus()
    qtbot.waitUntil(panel.seed_spin.hasFocus, timeout=2000)
    panel.seed_spin.setValue(42)
    paint(window, sim_snapshot(seed=8, next_seed=9))
    assert panel.seed_spin.value() == 42 and panel.current_seed_label.text() == "8"


# ---------------------------------------------------------------------------- status bar

def test_the_status_bar_shows_loop_rate_cameras_and_disk(window):
    paint(window, sim_snapshot(control_rate_hz=30.0))
    assert window.status.loop.text() == "loop  49.8 / 50 Hz  jitter p99  1.2 ms"
    assert f"color: {theme.TEXT}" in window.status.loop.styleSheet()
    assert "late ticks 3, missed deadlines 1" in window.status.loop.toolTip()
    assert window.status.cameras.text() == "cameras fps: high 29.8  left_wrist 30.0  right_wrist 30.1"
    assert window.status.disk.text() == "disk free 12.3 GB"
    assert f"color: {theme.TEXT}" in window.status.disk.styleSheet()
    assert window.status.disk.toolTip() == "Episode store: /data/episodes"
    assert window.timing_plot.target_ms == pytest.approx(1e3 / 30.0)  # the rig's own control rate

    # A few times a second while running: numbers that change faster could not be read.
    slow = sim_snapshot(loop_stats=loop_stats(rate_hz=40.0))
    paint(window, slow, times=STATUS_EVERY_N_PAINTS - 1)
    assert "49.8" in window.status.loop.text()
    paint(window, slow)
    assert "40.0" in window.status.loop.text()


def test_a_slow_loop_and_a_nearly_full_disk_are_coloured(window):
    # ALOHA re-records episodes below 42 Hz; the window says so before that happens.
    paint(window, sim_snapshot(loop_stats=loop_stats(rate_hz=38.5, jitter_ms=9.7), disk_free_bytes=LOW_DISK_BYTES - 1))
    assert window.status.loop.text() == "loop  38.5 / 50 Hz  jitter p99  9.7 ms"
    assert f"color: {theme.WARN_COLOUR}" in window.status.loop.styleSheet()
    assert "below 42 Hz" in window.status.loop.toolTip()
    assert window.status.disk.text() == "disk free 1024.0 MB"
    assert f"color: {theme.ERROR_COLOUR}" in window.status.disk.styleSheet()


def test_the_phase_is_shown_at_once_and_nothing_is_recorded_unless_the_rig_runs(window):
    panel = window.control_panel
    paint(window, sim_snapshot())
    assert window.status.phase.text() == "sim-aloha" and panel.start_button.isEnabled()
    for phase, text in ((Phase.STOPPING, "shutting down…"), (Phase.FAILED, "rig failed — see Events"),
                        (Phase.STOPPED, "stopped")):
        paint(window, sim_snapshot(phase=phase))  # not held back to the status bar's few times a second
        assert window.status.phase.text() == text
        assert not panel.start_button.isEnabled() and not panel.new_episode_button.isEnabled(), phase


# ---------------------------------------------------------------------------- events

def test_events_are_listed_once_newest_first_and_an_error_raises_the_banner(window):
    first = (event(0, Severity.INFO, "sim-aloha is running at 50 Hz.", origin="rig"),
             event(1, Severity.WARNING, "left_elbow limited to its position range.", "Move it back inside.", "loop"))
    paint(window, sim_snapshot(events=first), times=3)
    events = window.events_list
    assert events.count() == 2
    assert events.item(0).text().endswith("Control: left_elbow limited to its position range.\n    → Move it back inside.")
    assert events.item(1).text()[:8].replace(":", "").isdigit() and "Rig: sim-aloha is running" in events.item(1).text()
    assert not window.banner.isVisible()  # a warning is listed, not shouted

    window.bottom_tabs.setCurrentIndex(1)  # the user reads the keys
    error = event(2, Severity.ERROR, "The recording could not write to disk: no space left.",
                  "Stop to keep the frames written; free some space.", "recorder")
    paint(window, sim_snapshot(events=(*first[1:], error)))  # the oldest has left the snapshot
    assert events.count() == 3 and events.item(0).text().split("  ", 1)[1].startswith("Recording: The recording")
    assert window.banner.isVisible()
    assert window.banner.label.text() == (
        "Recording: The recording could not write to disk: no space left."
        "  —  Stop to keep the frames written; free some space.")
    assert window.bottom_tabs.currentWidget() is events

    window.banner.dismiss()
    paint(window, sim_snapshot(events=(*first[1:], error)))
    assert not window.banner.isVisible() and events.count() == 3  # the same error does not come back


# ---------------------------------------------------------------------------- cameras and plots

def frame(rgb: tuple[int, int, int], height: int = 480, width: int = 640) -> np.ndarray:
    image = np.empty((height, width, 3), np.uint8)
    image[:] = rgb
    return image


def test_camera_views_paint_the_frames_of_the_newest_tick(window, qtbot):
    colours = {"cam_high": (200, 30, 30), "cam_left_wrist": (30, 200, 30), "cam_right_wrist": (30, 30, 200)}
    paint(window, sim_snapshot(tick=tick(1, {name: frame(c) for name, c in colours.items()})))
    for name, colour in colours.items():
        view = window.camera_views[name]
        shown = view.grab().toImage()
        centre = shown.pixelColor(shown.width() // 2, shown.height() // 2)
        assert (centre.red(), centre.green(), centre.blue()) == colour, name
        assert view.frames_shown == 1
    # A camera the default row lacks gets a view of its own.
    paint(window, sim_snapshot(tick=tick(2, {"cam_low": frame((250, 250, 0), 240, 320)})))
    assert list(window.camera_views) == ["cam_high", "cam_left_wrist", "cam_right_wrist", "cam_low"]
    qtbot.waitUntil(window.camera_views["cam_low"].isVisible, timeout=2000)  # shown by the next event loop pass
    shown = window.camera_views["cam_low"].grab().toImage()
    assert shown.pixelColor(shown.width() // 2, shown.height() // 2).name() == "#fafa00"


def test_the_plots_show_a_hand_built_history_when_due(window):
    n = 200
    t = np.linspace(-4.0, 0.0, n)
    measured = np.zeros((n, STATE_DIM), np.float32)
    measured[:, 0] = 0.3 * np.sin(t)
    commanded = measured + 0.05
    commanded[:, 7] = 2.5  # the right arm's waist far off: its plot's y range grows to show it
    period = np.full(n, 20.0, np.float32)
    period[-1] = 31.0
    history = HistoryWindow(t, commanded, measured, period, np.full(n, 0.4, np.float32))
    asked = []

    def history_source():
        asked.append(True)
        return history

    # Plots are the costliest paint: the history is asked for only every PLOT_EVERY_N_PAINTS
    # paints, and only when a new tick came.
    for i in range(1, 2 * PLOT_EVERY_N_PAINTS + 1):
        paint(window, sim_snapshot(tick=tick(i)), history=history_source)
    paint(window, sim_snapshot(tick=tick(2 * PLOT_EVERY_N_PAINTS)), history=history_source)  # the same tick
    assert len(asked) == 2

    x, y = window.joint_plots.measured_curves["left"][0].getData()
    assert np.array_equal(x, t) and np.allclose(y, 0.3 * np.sin(t))
    _, commanded_y = window.joint_plots.commanded_curves["right"][0].getData()
    assert np.allclose(commanded_y, 2.5)
    low, high = window.joint_plots.plots["right"].viewRange()[1]
    assert low < 0.0 and high > 2.5
    # The left arm stays within a radian of zero: its axis still reads in radians, not in "x0.001".
    left_axis = window.joint_plots.plots["left"].getAxis("left")
    assert max(map(abs, window.joint_plots.plots["left"].viewRange()[1])) < 1.0
    assert left_axis.labelString() == window.joint_plots.plots["right"].getAxis("left").labelString()
    assert "x0.001" not in left_axis.labelString()
    px, py = window.timing_plot.period_curve.getData()
    assert np.array_equal(px, t) and py[-1] == 31.0


# ---------------------------------------------------------------------------- the policy (issue 10)

def checkpoint_info() -> CheckpointInfo:
    return CheckpointInfo(path=Path("/runs/tiny-1/best"), run_dir=Path("/runs/tiny-1"), preset="tiny",
                          variant="fastwam", horizon=32, action_dim=14, proprio_dim=14,
                          cameras=("cam_high", "cam_left_wrist", "cam_right_wrist"), canvas_hw=(128, 160),
                          tasks=("fold the towel",), step=3900, val_action_loss=0.0055, is_best=True,
                          trained_on="138 episodes from runs/demos150")


def runner_status(tick_now: int = 104) -> RunnerStatus:
    """The runner 104 ticks into a run: a plan from tick 100 (the left gripper closing from 0.9),
    the one it replaced from tick 96, and 10 chunks' latencies (one came too late: apply_tick -1)."""
    plan = np.zeros((32, 14), np.float32)
    plan[:, 6] = np.linspace(0.9, 0.1, 32)
    previous = np.zeros((32, 14), np.float32)
    previous[:, 6] = 0.8
    inference = np.array([0.05, 0.06, 0.055, 0.3, 0.052, 0.058, 0.061, 0.049, 0.07, 0.9])
    to_command = inference + 0.01
    apply_ticks = np.array([4, 12, 20, 28, 36, 44, 52, 60, 68, -1])
    return RunnerStatus(state="running", strategy={"strategy": "ensemble", "every": 4}, tick=tick_now, period_s=0.02,
                        plan=plan, plan_first_tick=100, previous=previous, previous_first_tick=96, queue_depth=28,
                        chunks=10, skipped=3, apply_ticks=apply_ticks, inference_s=inference,
                        obs_age_s=np.full(10, 0.004), obs_to_command_s=to_command,
                        queue_depths=np.full(10, 28), inference=LatencySummary.of(inference),
                        obs_age=LatencySummary.of(np.full(10, 0.004)),
                        obs_to_command=LatencySummary.of(to_command[apply_ticks >= 0]))


def autonomy(state: AutonomyState, **changes) -> AutonomyStatus:
    loaded = state not in (AutonomyState.OFF, AutonomyState.LOADING)
    status = AutonomyStatus(state=state, checkpoint=checkpoint_info() if loaded else None,
                            device="cpu" if loaded else "", runner=runner_status() if loaded else None)
    return dataclasses.replace(status, **changes)


def policy_snapshot(state: AutonomyState, index: int = 1, **changes) -> StudioSnapshot:
    """The sim with the policy (AUTONOMOUS) or the person correcting it (INTERVENTION) driving."""
    kind = ControlSource.INTERVENTION if state is AutonomyState.INTERVENTION else ControlSource.POLICY
    fields = dict(loop=loop_state(Mode.POLICY, "policy", kind), source=None, autonomy=autonomy(state), tick=tick(index))
    return sim_snapshot(**{**fields, **changes})


def test_the_mode_says_autonomous_or_intervention_in_the_panel_and_the_status_bar(window):
    panel, policy = window.control_panel, window.policy.panel
    paint(window, sim_snapshot(autonomy=autonomy(AutonomyState.READY)))
    assert window.status.mode.text() == panel.mode_badge.text() == "HOLD"
    assert window.policy.button.text() == "Policy: ready (tiny)"
    assert policy.autonomous_button.isEnabled() and not policy.autonomous_button.isChecked()
    assert policy.autonomous_button.text() == "▶ Autonomous  (F10)"
    assert not policy.take_over_button.isEnabled() and not policy.hand_back_button.isEnabled()

    paint(window, policy_snapshot(AutonomyState.AUTONOMOUS))
    assert window.status.mode.text() == panel.mode_badge.text() == "AUTONOMOUS (policy drives)"
    assert theme.MODE_COLOURS[Mode.POLICY] in window.status.mode.styleSheet()
    assert policy.autonomous_button.isChecked() and policy.autonomous_button.text() == "■ Stop autonomy  (F10)"
    assert policy.take_over_button.isEnabled() and policy.take_over_button.text() == "Take over  (F11)"
    assert not policy.load_button.isEnabled()  # no loading another policy under the one driving
    assert policy.state_badge.text() == "AUTONOMOUS: the policy drives  ·  tiny on cpu"

    paint(window, policy_snapshot(AutonomyState.INTERVENTION))
    assert window.status.mode.text() == panel.mode_badge.text() == "INTERVENTION (you drive)"
    assert theme.SOURCE_COLOURS[ControlSource.INTERVENTION] in panel.mode_badge.styleSheet()
    assert policy.hand_back_button.isEnabled() and not policy.take_over_button.isEnabled()
    assert panel.source_badge.text() == "you (jog keys)"
    assert policy.message_label.text().startswith("You drive: the jog keys") and "Hand back (F11)" in policy.message_label.text()

    paint(window, policy_snapshot(AutonomyState.AUTONOMOUS, loop=loop_state(Mode.ESTOP)))
    assert window.status.mode.text() == panel.mode_badge.text() == "E-STOP (latched)"  # over any policy state


def test_the_plan_is_drawn_ahead_of_now_with_the_previous_one_behind_it(window):
    window.policy.show()
    plots = window.policy.panel.plots
    assert plots.joint_combo.currentText() == "left gripper"
    n = 100
    t = np.linspace(-2.0, 0.0, n)
    measured = np.zeros((n, STATE_DIM), np.float32)
    measured[:, 6] = 0.9
    history = HistoryWindow(t, measured + 0.01, measured, np.full(n, 20.0, np.float32), np.zeros(n, np.float32))
    painted = [paint(window, policy_snapshot(AutonomyState.AUTONOMOUS, index=i), history=lambda: history)
               for i in (1, 2)]
    assert len(painted) == 2
    x, y = plots.plan_curve.getData()
    # actions[0] is for tick 100, now is tick 104: 4 ticks (80 ms) of the plan have passed.
    assert np.allclose(x, (np.arange(32) - 4) * 0.02) and np.allclose(y, np.linspace(0.9, 0.1, 32))
    px, py = plots.previous_curve.getData()
    assert np.isclose(px[0], -0.16) and np.allclose(py, 0.8)
    mx, my = plots.measured_curve.getData()
    assert np.array_equal(mx, t) and np.allclose(my, 0.9)
    # Latency: the chunk that came too late is in the histogram but has no place in time.
    lx, ly = plots.inference_curve.getData()
    assert np.allclose(lx, (np.array([4, 12, 20, 28, 36, 44, 52, 60, 68]) - 104) * 0.02) and len(ly) == 9
    status = runner_status()
    assert plots.percentile_lines["inference_p50"].value() == status.inference.p50_ms
    assert plots.percentile_lines["obs_to_command_p95"].value() == status.obs_to_command.p95_ms
    edges, counts = plots.inference_hist.getData()
    assert counts.sum() == 10 and len(edges) == len(counts) + 1
    assert "queue 28" in plots.readout.text() and "p99" in plots.readout.text()
    # Another joint: the right waist, all zeros in this plan.
    plots.joint_combo.setCurrentText("right waist")
    paint(window, policy_snapshot(AutonomyState.AUTONOMOUS, index=3), history=lambda: history)
    assert np.allclose(plots.plan_curve.getData()[1], 0.0)
    # Nothing loaded: the plan and the latencies go.
    paint(window, sim_snapshot(tick=tick(4)), history=lambda: history)
    assert len(plots.plan_curve.getData()[0]) == 0 and plots.readout.text() == "No policy loaded."


def test_a_refused_policy_says_why_and_what_to_do_in_the_panel(window):
    refused = "The policy was not loaded: the checkpoint reads 'cam_low'; the rig has camera(s) ['cam_high']"
    what = "Choose a checkpoint trained on this rig's cameras."
    paint(window, sim_snapshot(autonomy=AutonomyStatus(state=AutonomyState.FAULT, message=refused),
                               events=(event(1, Severity.ERROR, refused, what, origin="policy"),)))
    policy = window.policy.panel
    assert policy.message_label.text() == f"{refused} {what}"
    assert theme.ERROR_COLOUR in policy.message_label.styleSheet()
    assert not policy.autonomous_button.isEnabled()  # nothing loaded to drive
    assert window.banner.isVisible()
    # A policy that stops while driving: the loop's event says so and the arm holds.
    stopped = "The source 'policy' failed: PolicyFault: the plan holds NaN. The arm holds."
    paint(window, sim_snapshot(autonomy=autonomy(AutonomyState.FAULT, message="the plan holds NaN"),
                               events=(event(2, Severity.ERROR, stopped, "Reload the policy."),)))
    assert policy.message_label.text() == f"{stopped} Reload the policy."
    assert policy.state_badge.text().startswith("stopped")
