"""The studio's main window: cameras on top, plots below, the control panel at the side.

The window owns no robot state. A QTimer reads `Studio.snapshot()` at <= 30 Hz and paints
it; buttons, shortcuts, jog keys and jog pads call the studio, whose methods never block. The GUI
thread therefore never touches the sim or a device.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QEvent, QObject, Qt, QTimer
from PySide6.QtGui import QCloseEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QDockWidget,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QTextEdit,
    QVBoxLayout,
    QWidget,
)

from app.ui import theme
from app.studio.history import HistoryWindow
from app.studio.paths import DEFAULT_RIG_FILE, RUNS_ROOT
from app.studio.snapshot import AutonomyState, Phase, StudioSnapshot
from app.studio.studio import Studio
from app.ui.keys import REAL_RIG_ONLY_ACTIONS, SHORTCUTS, SIM_ONLY_ACTIONS, shortcut_texts
from app.ui.jog_input import JogInput
from app.ui.widgets.arms_panel import STARTING_COLOUR, ArmsPanelWidget
from app.ui.widgets.calibration_dialog import CalibrationDialog
from app.ui.widgets.servo_health import ServoHealthWidget
from app.ui.widgets.status_bar import StudioStatusBar
from app.ui.widgets.camera_view import CameraViewWidget
from app.ui.widgets.control_panel import ControlPanelWidget
from app.ui.widgets.events_panel import ErrorBannerWidget, EventsWidget
from app.ui.widgets.help_panel import HelpPanelWidget
from app.ui.widgets.jog_pad import JogPadWidget
from app.ui.widgets.plots import JointPlotsWidget, TimingPlotWidget
from app.ui.policy.dock import PolicyDock
from app.ui.training.panel import TrainingPanelWidget
from app.ui.workbench.workbench_widget import WorkbenchWidget
from app.studio.events import Severity
from recordings.schema import Label
from robot.types import DEFAULT_CAMERA_NAMES, ControlSource, Mode

log = logging.getLogger(__name__)

PAINT_INTERVAL_MS = 33  # <= 30 Hz: the eye does not need more and llvmpipe has no cycles to spare
PLOT_EVERY_N_PAINTS = 2  # plots at 15 Hz: 28 curves of 500 points are the costliest paint
# The Policy panel's plots, while shown, paint at every paint (30 Hz): a plan lasts 0.64 s, and at
# 15 Hz re-plans every 4 ticks would be seen only every other time. Their dozen short curves cost little.
STATUS_EVERY_N_PAINTS = 10  # status bar at 3 Hz: numbers that change faster cannot be read
HEALTH_EVERY_N_PAINTS = 30  # servo table at 1 Hz: the rig reads each arm about once a second
PLOT_SPAN_S = 10.0

_TEXT_INPUTS = (QLineEdit, QAbstractSpinBox, QTextEdit, QPlainTextEdit, QComboBox)


class StudioWindow(QMainWindow):
    """The whole studio in one window. GUI thread only; talks to the robot through `studio`."""

    def __init__(self, studio: Studio, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.studio = studio
        self.setWindowTitle(f"Fast-WAM teleoperation studio — {studio.rig_path.name}")
        self.setStyleSheet(theme.STYLESHEET)
        self.paint_count = 0
        self._last_tick_index = -1
        self._close_after_shutdown = False
        self._shutdown_future = None

        keys = shortcut_texts()
        self.banner = ErrorBannerWidget()
        # A real rig's prompt (opening ceremony, E-stop) above the cameras, where the operator looks.
        self.arm_prompt_banner = QLabel("")
        self.arm_prompt_banner.setWordWrap(True)
        self.arm_prompt_banner.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.arm_prompt_banner.hide()
        self._real_rig: bool | None = None  # unknown until the rig is up
        self.calibration_dialog: CalibrationDialog | None = None

        # Cameras: the sim rig's names are not known until it is up; the default three are what
        # every rig of ours has, and any other camera gets a view when the rig reports it.
        self.camera_views: dict[str, CameraViewWidget] = {}
        self._camera_row = QHBoxLayout()
        self._camera_row.setSpacing(6)
        for name in DEFAULT_CAMERA_NAMES:
            self._add_camera_view(name)
        camera_widget = QWidget()
        camera_widget.setLayout(self._camera_row)

        self.joint_plots = JointPlotsWidget(PLOT_SPAN_S)
        self.timing_plot = TimingPlotWidget(control_rate_hz=50.0, span_s=PLOT_SPAN_S)
        self.events_list = EventsWidget()
        self.help_panel = HelpPanelWidget()
        help_scroll = QScrollArea()
        help_scroll.setWidget(self.help_panel)
        help_scroll.setWidgetResizable(True)
        self.bottom_tabs = QTabWidget()
        self.bottom_tabs.addTab(self.events_list, "Events")
        self.bottom_tabs.addTab(help_scroll, "Keys && help")
        self.servo_table = ServoHealthWidget()
        self._servo_tab = self.bottom_tabs.addTab(self.servo_table, "Servos")
        self.bottom_tabs.setTabVisible(self._servo_tab, False)
        self.bottom_tabs.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        bottom = QSplitter(Qt.Orientation.Horizontal)
        bottom.addWidget(self.timing_plot)
        bottom.addWidget(self.bottom_tabs)
        bottom.setSizes([500, 700])

        centre = QSplitter(Qt.Orientation.Vertical)
        centre.addWidget(camera_widget)
        centre.addWidget(self.joint_plots)
        centre.addWidget(bottom)
        centre.setSizes([380, 300, 220])
        centre.setChildrenCollapsible(False)
        self._centre = centre
        self._camera_widget = camera_widget
        self._user_sized_rows = False
        centre.splitterMoved.connect(lambda *_: setattr(self, "_user_sized_rows", True))

        # Side panel: E-stop on top and never scrolled away; the rest may scroll on small screens.
        self.control_panel = ControlPanelWidget([(s.name, s.button) for s in studio.source_options], keys)
        self.arms_panel = ArmsPanelWidget(keys.get("start_arms", ""))
        self.arms_panel.hide()
        self.arms_panel.start_requested.connect(self.start_arms)
        self.arms_panel.calibrate_requested.connect(self.open_calibration)
        self.arms_panel.health_details_requested.connect(lambda: self.bottom_tabs.setCurrentWidget(self.servo_table))
        # Until the rig says what it is, offer only what every rig has.
        for name in ("demo", "leaders"):
            self.control_panel.source_buttons[name].hide()
        jog_box = QGroupBox("Mouse jog (source: Jog)")
        jog_layout = QHBoxLayout(jog_box)
        self.jog_pads = {arm: JogPadWidget(arm) for arm in ("left", "right")}
        for pad in self.jog_pads.values():
            jog_layout.addWidget(pad)
        self.jog = JogInput(studio, self.jog_pads, self)
        side_inner = QWidget()
        side_layout = QVBoxLayout(side_inner)
        side_layout.setContentsMargins(0, 0, 0, 0)
        # The E-stop and clear buttons live at the top of the panel, outside the scroll area.
        estop_row = QVBoxLayout()
        estop_row.addWidget(self.control_panel.estop_button)
        estop_row.addWidget(self.control_panel.clear_estop_button)
        side_layout.addWidget(self.arms_panel)
        side_layout.addWidget(self.control_panel)
        side_layout.addWidget(jog_box)
        side_layout.addStretch(1)
        side_scroll = QScrollArea()
        side_scroll.setWidget(side_inner)
        side_scroll.setWidgetResizable(True)
        side_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        side_scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        side = QWidget()
        side.setFixedWidth(400)
        side_outer = QVBoxLayout(side)
        side_outer.setContentsMargins(0, 0, 0, 0)
        side_outer.addLayout(estop_row)
        side_outer.addWidget(side_scroll, 1)

        main = QWidget()
        main_layout = QHBoxLayout(main)
        main_layout.setContentsMargins(8, 8, 8, 4)
        left = QVBoxLayout()
        left.addWidget(self.banner)
        left.addWidget(self.arm_prompt_banner)
        # The live view and the Episodes workbench share the centre; the side panel (E-stop first)
        # stays in view whichever is shown, so the arm can always be stopped.
        self.pages = QTabWidget()
        self.pages.setDocumentMode(True)
        self.pages.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.pages.addTab(centre, "Live")
        self._episodes_placeholder = QLabel("The episode store opens here once the rig is up.")
        self._episodes_placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.pages.addTab(self._episodes_placeholder, "Episodes")
        self.pages.currentChanged.connect(self._on_page)
        self.workbench: WorkbenchWidget | None = None
        left.addWidget(self.pages, 1)
        main_layout.addLayout(left, 1)
        main_layout.addWidget(side)
        self.setCentralWidget(main)

        self.status = StudioStatusBar()
        self.setStatusBar(self.status)
        self._build_training()
        # The Policy panel (issue 10) in a dock beside Training's; its button in the status bar.
        self.policy = PolicyDock(self, studio, self.training_dock, self.jog.release, RUNS_ROOT,
                                 self._evaluation_rig)
        self.status.addPermanentWidget(self.policy.button)
        self._connect_panel()
        self._build_shortcuts()

        QApplication.instance().installEventFilter(self)
        self.paint_timer = QTimer(self)
        self.paint_timer.setInterval(PAINT_INTERVAL_MS)
        self.paint_timer.timeout.connect(self.refresh)
        self.paint_timer.start()
        self.resize(1600, 1000)

    # ------------------------------------------------------------------ construction helpers

    def _add_camera_view(self, name: str) -> None:
        view = CameraViewWidget(name)
        self.camera_views[name] = view
        self._camera_row.addWidget(view)
        if hasattr(self, "_centre"):
            self._fit_camera_row()

    def _build_training(self) -> None:
        """Training (issue 5): the panel in a dock below the cameras (it may float to a second
        screen); a status-bar button shows the job's state and shows or hides the dock."""
        self.training_panel = TrainingPanelWidget(store_dir_source=lambda: self.studio.store_dir)
        self.training_dock = QDockWidget("Training", self)
        self.training_dock.setObjectName("training_dock")
        self.training_dock.setWidget(self.training_panel)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.training_dock)
        self.training_dock.hide()
        self.training_button = QPushButton("Training: idle")
        self.training_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.training_button.setStyleSheet("QPushButton { padding: 1px 8px; font-weight: normal; }")
        self.training_button.setToolTip("Show or hide the Training panel")
        self.training_button.clicked.connect(lambda: self.training_dock.setVisible(not self.training_dock.isVisible()))
        self.training_panel.status_changed.connect(self.training_button.setText)
        self.training_button.setText(self.training_panel.status_line)
        self.status.addPermanentWidget(self.training_button)

    def _evaluation_rig(self) -> Path:
        """The rig file `run.py eval` runs: the studio's when it is a plain simulation, else the
        default simulated rig (an evaluation never drives the arm this window drives)."""
        caps = self._capabilities
        if caps is not None and caps.simulated and not caps.startable:
            return self.studio.rig_path
        return DEFAULT_RIG_FILE

    _capabilities = None

    def show_training(self, run_dir: Path | None = None) -> None:
        """Show the Training panel at a useful height; follow `run_dir` if given."""
        self.training_dock.show()
        self.resizeDocks([self.training_dock], [440], Qt.Orientation.Vertical)
        if run_dir is not None:
            self.training_panel.attach(run_dir)

    def _on_page(self, index: int) -> None:
        if index == 1:
            self.jog.release()
            self._open_workbench()

    def _open_workbench(self) -> None:
        """The workbench over the studio's store, built when first shown (the store is known once
        the rig is up). Replay goes to a simulation of its own, never to the rig this window drives."""
        if self.workbench is not None or self.studio.store_dir is None:
            return
        self.workbench = WorkbenchWidget(self.studio.store_dir, DEFAULT_RIG_FILE)
        self.pages.removeTab(1)
        self.pages.insertTab(1, self.workbench, "Episodes")
        self.pages.setCurrentIndex(1)

    def show_episodes(self) -> None:
        """Show the Episodes page (the workbench over the studio's store)."""
        self.pages.setCurrentIndex(1)

    def _connect_panel(self) -> None:
        panel = self.control_panel
        panel.estop_requested.connect(self.trigger_estop)
        panel.clear_estop_requested.connect(self.studio.clear_estop)
        panel.source_requested.connect(self.studio.select_source)
        panel.start_recording_requested.connect(self.start_recording)
        panel.stop_recording_requested.connect(self.stop_recording)
        panel.discard_recording_requested.connect(self.discard_recording)
        panel.new_episode_requested.connect(self.studio.new_episode)
        self.banner.dismissed.connect(lambda: None)

    def _build_shortcuts(self) -> None:
        actions = {
            "estop": self.trigger_estop,
            "clear_estop": self.studio.clear_estop,
            "start_recording": self.start_recording,
            "stop_success": lambda: self.stop_recording(True),
            "stop_failure": lambda: self.stop_recording(False),
            "discard": self.discard_recording,
            "new_episode": lambda: self.studio.new_episode(self.control_panel.seed_spin.value()),
            "help": lambda: self.bottom_tabs.setCurrentIndex(1),
            "start_arms": self.start_arms,
            "autonomous": self.policy.toggle_autonomous,
            "take_over": self.policy.toggle_take_over,
        }
        self.shortcuts: dict[str, list[QShortcut]] = {}
        for spec in SHORTCUTS:
            if spec.action.startswith("source:"):
                name = spec.action.split(":", 1)[1]
                handler = lambda n=name: self.studio.select_source(n)  # noqa: E731
            else:
                handler = actions[spec.action]
            self.shortcuts[spec.action] = []
            for key in spec.keys:
                # Application context: the keys work wherever focus is, text fields included
                # (none of them types text, so they cannot steal a keystroke from a field).
                shortcut = QShortcut(QKeySequence(key), self, context=Qt.ShortcutContext.ApplicationShortcut)
                shortcut.setAutoRepeat(False)
                shortcut.activated.connect(handler)
                # Rig-specific keys wait for the rig (F3 is Demo on the sim, Leaders on a real rig).
                shortcut.setEnabled(spec.action not in REAL_RIG_ONLY_ACTIONS)
                self.shortcuts[spec.action].append(shortcut)

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        self._fit_camera_row()

    def showEvent(self, event) -> None:  # noqa: N802
        super().showEvent(event)
        self._fit_camera_row()

    def _fit_camera_row(self) -> None:
        """Make the camera row as tall as its 4:3 frames at the row's width (no black bands),
        at most half the height, until the user drags the splitter themselves."""
        if self._user_sized_rows:
            return
        total = sum(self._centre.sizes()) or self._centre.height()
        if total <= 0:
            return
        views = max(1, len(self.camera_views))
        spacing = self._camera_row.spacing() * (views - 1)
        view_width = (self._centre.width() - spacing) / views
        camera_h = int(min(0.5 * total, max(150, view_width * 3 / 4)))
        rest = total - camera_h
        self._centre.setSizes([camera_h, int(rest * 0.56), rest - int(rest * 0.56)])

    # ------------------------------------------------------------------ user actions

    def start_arms(self) -> None:
        self.jog.release()
        self.studio.start_arms()

    def open_calibration(self) -> None:
        """Show the calibration window (one at a time; it stays open beside the studio)."""
        snap = self.studio.snapshot()
        if snap.arms is None:
            return
        if self.calibration_dialog is None:
            self.calibration_dialog = CalibrationDialog(self.studio, snap.arms.arm_ids, self)
        self.calibration_dialog.show()
        self.calibration_dialog.raise_()

    def trigger_estop(self) -> None:
        self.jog.release()
        self.studio.estop("E-stop pressed in the studio")

    def start_recording(self) -> None:
        snap = self.studio.snapshot()
        if snap.recording.active or snap.recording.busy:
            return  # F5 twice must not start a second episode or complain
        self.studio.start_recording(self.control_panel.task_edit.text(), self.control_panel.operator_edit.text())

    def stop_recording(self, success: bool) -> None:
        rec = self.studio.snapshot().recording
        if (rec.active or rec.failed) and not rec.busy:
            self.studio.stop_recording(success)

    def discard_recording(self) -> None:
        rec = self.studio.snapshot().recording
        if (rec.active or rec.failed) and not rec.busy:
            self.studio.discard_recording()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802
        kind = event.type()
        if kind in (QEvent.Type.KeyPress, QEvent.Type.KeyRelease) and not event.isAutoRepeat():
            return self.jog.key_event(event, self._jog_keys_active)
        if kind in (QEvent.Type.ApplicationDeactivate, QEvent.Type.WindowDeactivate) and watched is self:
            # A key released while another window has focus never reaches us: stop now.
            self.jog.release()
        return False

    def _jog_keys_active(self) -> bool:
        """Jog keys are plain letters: they jog only on the live page and when the user is not
        typing."""
        if not self.isActiveWindow() and QApplication.activeWindow() is not None:
            return False
        if self.pages.currentIndex() != 0:
            return False  # the workbench has keys of its own (play, step)
        return not isinstance(QApplication.focusWidget(), _TEXT_INPUTS)

    # ------------------------------------------------------------------ painting

    def refresh(self) -> None:
        """Paint the studio's latest snapshot (the paint timer's slot; also callable from tests)."""
        self.show_snapshot(self.studio.snapshot(), lambda: self.studio.history_window(PLOT_SPAN_S))
        if self._close_after_shutdown and self._shutdown_future is not None and self._shutdown_future.done():
            self.close()

    def show_snapshot(self, snap: StudioSnapshot, history: Callable[[], HistoryWindow | None] = lambda: None) -> None:
        """Paint `snap`; `history()` gives the plots' window when they are due (it copies arrays,
        so it is asked for only every PLOT_EVERY_N_PAINTS paints with a new tick). Nothing here
        reads the studio: a test can paint a hand-built snapshot."""
        self.paint_count += 1
        self._show_events(snap)
        self._show_controls(snap)
        self.status.show_mode(snap)
        self.policy.paint(snap)
        tick = snap.tick
        new_tick = tick is not None and tick.index != self._last_tick_index
        if new_tick:
            self._last_tick_index = tick.index
            self._show_cameras(snap)
            plots_due = self.paint_count % PLOT_EVERY_N_PAINTS == 0
            policy_due = self.policy.plots_due
            window = history() if plots_due or policy_due else None
            if plots_due and window is not None:
                self.joint_plots.set_history(window)
                self.timing_plot.set_history(window)
            if policy_due:
                self.policy.paint_plots(snap, window)
        if self.paint_count % STATUS_EVERY_N_PAINTS == 1 or snap.phase is not Phase.RUNNING:
            self._show_status(snap)

    def _show_events(self, snap: StudioSnapshot) -> None:
        last = self.events_list.last_event_id
        new = self.events_list.add_events(tuple(e for e in snap.events if e.event_id > last))
        for event in new:
            self.policy.show_event(event)
        errors = [e for e in new if e.severity is Severity.ERROR]
        if errors:
            self.banner.show_event(errors[-1])
            self.bottom_tabs.setCurrentWidget(self.events_list)

    def _show_controls(self, snap: StudioSnapshot) -> None:
        panel = self.control_panel
        panel.show_mode(snap.mode, snap.autonomy.state)
        loop, mode = snap.loop, snap.mode
        if loop is not None and mode is Mode.POLICY and snap.autonomy.state is AutonomyState.INTERVENTION:
            # The policy's source carries the person's actions now: say who, not which object.
            hands = "leader arms" if snap.capabilities.leaders and not snap.capabilities.simulated else "jog keys"
            panel.show_source("", f"you ({hands})", ControlSource.INTERVENTION)
        elif loop is not None and mode in (Mode.TELEOP, Mode.POLICY):
            label = loop.source_name + (" (blending in)" if loop.blending else "")
            panel.show_source(snap.source.name if snap.source else "", label, loop.source_kind)
        elif loop is not None:
            label = {Mode.ESTOP: "none (E-stop)", Mode.HOLD: "hold position", Mode.IDLE: "none"}[mode]
            kind = ControlSource.HOLD if mode is Mode.HOLD else ControlSource.NONE
            panel.show_source("hold" if mode is Mode.HOLD else "", label, kind)
        if snap.tick is not None:
            panel.show_clipped(snap.tick.clipped)
        self._show_rig_kind(snap)
        self._show_arms(snap)
        rec = snap.recording
        panel.set_recording(
            rec.active, bool(rec.busy) or snap.phase is not Phase.RUNNING, rec.elapsed_s, rec.frames, rec.failed
        )
        panel.new_episode_button.setEnabled(
            snap.phase is Phase.RUNNING
            and snap.resettable
            and not (rec.active or rec.failed or rec.busy)
            and snap.mode is not Mode.ESTOP
        )
        panel.show_episode_count(rec.episode_count)
        panel.show_last_saved(rec.busy or rec.last_saved)
        if rec.last_saved != self._last_saved_seen:
            self._last_saved_seen = rec.last_saved
            if self.workbench is not None:
                self.workbench.refresh()  # the new episode appears in the table at once
        if self._last_seed_shown != (snap.seed, snap.next_seed):
            self._last_seed_shown = (snap.seed, snap.next_seed)
            panel.show_seed(snap.seed, snap.next_seed)

    _last_seed_shown: tuple | None = None
    _last_saved_seen = ""
    _banner_colour = ""

    def _show_rig_kind(self, snap: StudioSnapshot) -> None:
        """Once the rig is up: the sources, keys and panels of its kind (sim or real)."""
        if snap.phase is not Phase.RUNNING:
            return
        real = snap.capabilities.real_arms
        self._capabilities = snap.capabilities
        available = snap.available_sources
        for name, button in self.control_panel.source_buttons.items():
            # Leaders on a real rig, and on a simulation driven by leader arms (button only: F3 is Demo there).
            button.setVisible(not (name == "demo" and not snap.capabilities.simulated) and not (name == "leaders" and not snap.capabilities.leaders))
            button.setEnabled(name in available)
        if real == self._real_rig:
            return
        self._real_rig = real
        for action, shortcuts in self.shortcuts.items():
            enabled = not ((action in SIM_ONLY_ACTIONS and real) or (action in REAL_RIG_ONLY_ACTIONS and not real))
            for shortcut in shortcuts:
                shortcut.setEnabled(enabled)
        self.arms_panel.setVisible(real)
        self.bottom_tabs.setTabVisible(self._servo_tab, real)
        self.control_panel.show_towel_reset(snap.resettable)
        self.status.show_real_rig(real)

    def _show_arms(self, snap: StudioSnapshot) -> None:
        arms = snap.arms
        if arms is None:
            return
        self.arms_panel.show_state(arms, snap.mode is Mode.ESTOP, snap.phase is Phase.RUNNING)
        if not arms.started:
            colour = STARTING_COLOUR if arms.starting else "#374151"
            text = arms.prompt
            if (self.arm_prompt_banner.text(), self._banner_colour) != (text, colour):
                self._banner_colour = colour
                self.arm_prompt_banner.setText(text)
                self.arm_prompt_banner.setStyleSheet(
                    f"QLabel {{ background: {colour}; color: white; font-size: 18px; font-weight: bold; padding: 8px; border-radius: 6px; }}"
                )
            self.arm_prompt_banner.show()
        else:
            self.arm_prompt_banner.hide()
        if self.paint_count % HEALTH_EVERY_N_PAINTS == 1 or self.servo_table.rowCount() == 0:
            self.servo_table.show_health(arms.health, arms.thresholds)

    def _show_cameras(self, snap: StudioSnapshot) -> None:
        observation = snap.tick.observation
        now = time.monotonic()
        for name, image in observation.images.items():
            if name not in self.camera_views:
                self._add_camera_view(name)
            capture = observation.image_times_s.get(name)
            age_ms = None if capture is None else max(0.0, (now - capture) * 1e3)
            self.camera_views[name].set_frame(image, capture, age_ms)

    def _show_status(self, snap: StudioSnapshot) -> None:
        self.status.show(snap)
        if abs(self.timing_plot.target_ms - 1e3 / snap.control_rate_hz) > 1e-6:
            self.timing_plot.set_target_rate(snap.control_rate_hz)

    # ------------------------------------------------------------------ closing

    def ask_recording_choice(self) -> Label | None | bool:
        """Asked when closing during a recording: a Label to save with, None to discard, False
        to cancel closing. Tests replace this method."""
        box = QMessageBox(self)
        box.setWindowTitle("A recording is running")
        box.setText("An episode is being recorded. Save it before closing?")
        success = box.addButton("Save as success", QMessageBox.ButtonRole.AcceptRole)
        failure = box.addButton("Save as failure", QMessageBox.ButtonRole.AcceptRole)
        discard = box.addButton("Discard", QMessageBox.ButtonRole.DestructiveRole)
        box.addButton("Keep recording", QMessageBox.ButtonRole.RejectRole)
        box.exec()
        clicked = box.clickedButton()
        if clicked is success:
            return Label.SUCCESS
        if clicked is failure:
            return Label.FAILURE
        if clicked is discard:
            return None
        return False

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        if self._shutdown_future is not None and self._shutdown_future.done():
            self.paint_timer.stop()
            if self.workbench is not None:
                self.workbench.close()  # its worker and the episode it plays
            QApplication.instance().removeEventFilter(self)
            event.accept()
            return
        event.ignore()
        if self._shutdown_future is not None:
            return  # already winding down; the paint timer closes the window when done
        label: Label | None = Label.UNKNOWN
        rec = self.studio.snapshot().recording
        if rec.active or rec.failed:
            choice = self.ask_recording_choice()
            if choice is False:
                return
            label = choice
        if not self.training_panel.confirm_close():
            return  # a training job runs and the user chose not to close (the recording is untouched)
        self.policy.close()
        self.jog.release()
        self._close_after_shutdown = True
        self._shutdown_future = self.studio.shutdown_async(label)
