"""The Training panel: choose episodes, set the few settings that matter, start, follow, cancel
and resume a `python run.py train` job while the rest of the window keeps collecting demos.

The job runs detached from the window's process (QProcess.startDetached) and records itself in
its run folder (`app.studio.training`): job.json, its events in train.jsonl, its stderr in
train.log. A 4 Hz timer reads what it appended, checks that the process lives, and paints the
stage, progress bar and ETA, loss curves, log and checkpoints. Closing the window therefore need
not stop the job, and a window opened later finds it again through the run folder - as it finds
a run started from a terminal. Episode summaries are read in a worker thread (the chooser);
everything else is small file reads on the GUI thread.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QProcess, Qt, QTimer, Signal
from PySide6.QtWidgets import QMessageBox, QScrollArea, QSplitter, QVBoxLayout, QWidget

from app.studio.paths import REPO_ROOT, RUNS_ROOT
from app.studio.training.follower import RunFollower, find_runs
from app.studio.training.job import announce_start, launch_command, record_launch, record_launch_failure
from app.studio.training.run_state import Outcome
from app.studio.training.settings import TrainSettings, resume_argv, train_argv
from app.ui.training.chooser import EpisodeChooserWidget
from app.ui.training.progress import RunProgressWidget
from app.ui.training.settings import TrainSettingsForm, display_path

log = logging.getLogger(__name__)

POLL_MS = 250  # the job logs every few seconds at most; 4 Hz keeps the bar lively and costs nothing


class TrainingPanelWidget(QWidget):
    """The whole panel: `chooser`, `form` and `run_view` side by side, and the job they drive.
    GUI thread only. `status_changed` carries one line for a status bar."""

    status_changed = Signal(str)

    def __init__(
        self,
        store_dir_source: Callable[[], Path | None] | None = None,
        runs_root: Path | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.runs_root = Path(runs_root) if runs_root is not None else RUNS_ROOT
        self.follower: RunFollower | None = None
        self._last_status = ""

        self.chooser = EpisodeChooserWidget(store_dir_source)
        self.chooser.selection_changed.connect(self._update_controls)
        self.form = TrainSettingsForm(self.runs_root)
        self.form.train_requested.connect(self.start_training)
        self.form.cancel_requested.connect(self.cancel_training)
        self.form.resume_requested.connect(self.resume_training)
        self.run_view = RunProgressWidget()
        self.run_view.run_chosen.connect(self._on_run_chosen)
        # The settings scroll rather than squeeze when the dock is short.
        settings = QScrollArea()
        settings.setWidget(self.form)
        settings.setWidgetResizable(True)
        settings.setFrameShape(QScrollArea.Shape.NoFrame)
        settings.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        for part in (self.chooser, settings, self.run_view):
            splitter.addWidget(part)
        splitter.setSizes([380, 300, 820])
        splitter.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(splitter)

        self.timer = QTimer(self)
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self.poll)
        self.timer.start()
        self._refresh_runs()
        self._attach_on_open()
        self._update_controls()

    def settings(self) -> TrainSettings:
        """The settings of the fields for the ticked episodes; ValueError says what to fix."""
        return self.form.settings(self.chooser.selected_rows())

    # ------------------------------------------------------------------ the job

    @property
    def status_line(self) -> str:
        """The one line `status_changed` last carried (for a status bar made after the panel)."""
        return self._last_status or "Training: idle"

    def job_running(self) -> bool:
        return self.follower is not None and self.follower.state.outcome is Outcome.RUNNING

    def start_training(self) -> bool:
        """Train: a new run with the panel's settings. False (with the reason shown) if refused."""
        form = self.form
        if self.job_running():
            return form.say("A training job is running; cancel it first or wait for it to finish.", "warning")
        try:
            settings = self.settings()
        except ValueError as error:
            return form.say(str(error), "error")
        run_dir = settings.run_dir
        there = RunFollower(run_dir)
        if there.job_alive():  # e.g. started from another window or a terminal
            self.attach(run_dir)
            return form.say(f"A job is already running in {display_path(run_dir)}; it is shown here now.", "warning")
        existing = there.resume_checkpoint()
        if existing is not None:
            self.attach(run_dir)
            return form.say(f"{display_path(run_dir)} already holds a run (checkpoint {existing.name}). "
                            "Press Resume to continue it, or name another run folder.", "warning")
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            return form.say(f"The run folder {run_dir} cannot be created: {error}. Choose another one.", "error")
        started = self._launch(run_dir, train_argv(settings), resume=False, cwd=REPO_ROOT)
        if started:
            form.suggest_next_run_dir()  # the folder of this run is in the Run list
        return started

    def resume_training(self) -> bool:
        """Resume: the same command as the run's last start, plus --resume, from where it ran."""
        follower = self.follower
        if follower is None or follower.job is None or self.job_running():
            return self.form.say("There is no stopped run to resume here.", "warning")
        cwd = Path(follower.job.cwd) if Path(follower.job.cwd).is_dir() else REPO_ROOT
        return self._launch(follower.run_dir, resume_argv(follower.job.argv), resume=True, cwd=cwd)

    def cancel_training(self) -> bool:
        follower = self.follower
        if follower is None or not self.job_running():
            return False
        try:
            sent = follower.cancel()
        except OSError as error:
            return self.form.say(f"The job could not be asked to stop: {error}", "error")
        if sent:
            self.form.say("Stopping: the job finishes its current step and saves a checkpoint first. "
                          "(Before training begins, it stops after the episode or autoencoder step in hand; "
                          "what was done is kept for the next start.)", "info")
        self._update_controls()
        return sent

    def _launch(self, run_dir: Path, argv: list[str], resume: bool, cwd: Path) -> bool:
        try:
            announce_start(run_dir, argv, resume)
        except OSError as error:
            return self.form.say(f"Cannot write into the run folder {run_dir}: {error}", "error")
        program, arguments = launch_command(run_dir, argv)
        ok, pid = QProcess.startDetached(program, arguments, str(cwd))
        if not ok or not pid:
            record_launch_failure(run_dir, program)
        else:
            record_launch(run_dir, pid, argv, program, cwd)
            log.info("training job %s started in %s: %s", pid, run_dir, " ".join(argv))
        self.attach(run_dir)
        self._refresh_runs()
        self.form.say("", "info")
        return bool(ok and pid)

    def attach(self, run_dir: Path) -> None:
        """Follow `run_dir` (a live job or a finished run): its log is read from the start."""
        self.follower = RunFollower(run_dir)
        self.run_view.clear()
        self._refresh_runs()  # a run folder outside the runs root is listed too
        self.poll()

    def _attach_on_open(self) -> None:
        """A window opened while a job runs follows it; otherwise it shows the newest run."""
        runs = find_runs(self.runs_root)
        for run_dir in runs:
            if RunFollower(run_dir).job_alive():
                self.attach(run_dir)
                return
        if runs:
            self.attach(runs[0])

    def _refresh_runs(self) -> None:
        self.run_view.list_runs(find_runs(self.runs_root), self.follower.run_dir if self.follower else None)

    def _on_run_chosen(self, run_dir: Path) -> None:
        if not self.job_running() and (self.follower is None or self.follower.run_dir != run_dir):
            self.attach(run_dir)
            self._update_controls()

    # ------------------------------------------------------------------ polling

    def poll(self) -> None:
        """The timer's slot: the chooser's scan, the job's new lines, and what changed on screen."""
        self.chooser.poll(rescan_allowed=not self.job_running())
        follower = self.follower
        if follower is not None:
            lines = follower.poll()
            if lines:
                self.run_view.add_lines(lines)
                self.run_view.show_curves(follower)
            if self.run_view.show_checkpoints(follower):
                self._update_controls()
        line = self.run_view.show_status(follower)
        if line != self._last_status:
            self._last_status = line
            self.status_changed.emit(line)
            self._update_controls()
        if follower is not None and follower.loading:
            QTimer.singleShot(0, self.poll)  # a long finished run: read the rest at once, in slices

    def _update_controls(self) -> None:
        running = self.job_running()
        self.chooser.set_editable(not running)
        self.form.set_editable(not running)
        self.run_view.runs_combo.setEnabled(not running)
        self.form.train_button.setEnabled(not running and bool(self.chooser.selected_rows()))
        cancelling = self.follower is not None and self.follower.cancel_requested
        self.form.cancel_button.setEnabled(running and not cancelling)
        follower = self.follower
        resumable = (
            not running and follower is not None and follower.job is not None
            and (follower.state.outcome in (Outcome.CANCELLED, Outcome.CRASHED)
                 or (follower.state.outcome is Outcome.FAILED and follower.resume_checkpoint() is not None))
        )
        self.form.resume_button.setEnabled(resumable)

    # ------------------------------------------------------------------ closing the window

    def ask_keep_job(self) -> str | None:
        """Asked when the window closes during a job: "keep" it running, "stop" it, or None to
        not close. Tests replace this method."""
        box = QMessageBox(self)
        box.setWindowTitle("Training is running")
        box.setText("A training job is running. Keep it running after the window closes?\n"
                    "You can follow it again when you reopen the studio.")
        keep = box.addButton("Keep training", QMessageBox.ButtonRole.AcceptRole)
        stop = box.addButton("Stop training", QMessageBox.ButtonRole.DestructiveRole)
        box.addButton("Don't close", QMessageBox.ButtonRole.RejectRole)
        box.exec()
        clicked = box.clickedButton()
        if clicked is keep:
            return "keep"
        if clicked is stop:
            return "stop"
        return None

    def confirm_close(self) -> bool:
        """The window's closeEvent asks this first: False = do not close."""
        if not self.job_running():
            return True
        choice = self.ask_keep_job()
        if choice is None:
            return False
        if choice == "stop":
            self.cancel_training()
        return True
