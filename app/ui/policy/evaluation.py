"""The Policy panel's "Evaluate in sim" box: N seeds of the chosen checkpoint as a `python run.py
eval` process beside the studio, its success count and 95 % interval as each rollout ends, and
Cancel.

The process is the window's child (QProcess): its JSON lines arrive on stdout and are parsed by
`app.studio.eval_job.EvalProgress` (Qt-free); the rollouts go to a store of their own, which
"Review rollouts" opens in the episode workbench (`run.py review`). GUI thread only.
"""

from __future__ import annotations

import logging
import sys
from collections import deque
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QProcess, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.studio.eval_job import EvalProgress, EvalRequest, EvalState, eval_command, request_cancel
from app.studio.paths import REPO_ROOT, RUN_PY
from app.ui import theme

log = logging.getLogger(__name__)

KILL_AFTER_MS = 10_000  # Cancel asks politely (SIGINT: the job closes its store); then it is killed
STDERR_LINES = 20


class EvalBoxWidget(QGroupBox):
    """Evaluate in sim. `request_source(episodes, first_seed, max_seconds)` returns the
    `EvalRequest` for the panel's checkpoint and settings, or raises ValueError saying what to
    fix. `finished` fires when a job has ended (any way)."""

    finished = Signal()

    def __init__(self, request_source: Callable[[int, int, float], EvalRequest], parent: QWidget | None = None) -> None:
        super().__init__("Evaluate in sim", parent)
        self._request_source = request_source
        self.process: QProcess | None = None
        self.progress: EvalProgress | None = None
        self.request: EvalRequest | None = None
        self._cancelled = False
        self._stderr: deque[str] = deque(maxlen=STDERR_LINES)

        self.episodes_spin = QSpinBox()
        self.episodes_spin.setRange(1, 1000)
        self.episodes_spin.setValue(10)
        self.episodes_spin.setToolTip("Rollouts, one towel placement (seed) each")
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.seed_spin.setValue(1000)
        self.seed_spin.setToolTip("Seed of the first towel placement (then +1); demos use 0.., so 1000.. are unseen")
        self.seconds_spin = QDoubleSpinBox()
        self.seconds_spin.setRange(0.5, 600.0)
        self.seconds_spin.setDecimals(1)
        self.seconds_spin.setValue(15.0)
        self.seconds_spin.setSuffix(" s")
        self.seconds_spin.setToolTip("Simulated time a rollout has to fold the towel before it counts as failed")
        row = QHBoxLayout()
        row.addWidget(self.episodes_spin)
        row.addWidget(QLabel("from seed"))
        row.addWidget(self.seed_spin)
        form = QFormLayout()
        form.addRow("Episodes", row)
        form.addRow("Time limit", self.seconds_spin)

        self.start_button = QPushButton("Evaluate in sim")
        self.start_button.setToolTip("Run the chosen checkpoint on the simulated towel task in the background "
                                     "(`run.py eval`); the arm here is not touched")
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.review_button = QPushButton("Review rollouts")
        self.review_button.setToolTip("Open the recorded rollouts in the episode workbench")
        self.review_button.clicked.connect(self.review)
        buttons = QHBoxLayout()
        for button in (self.start_button, self.cancel_button, self.review_button):
            button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            buttons.addWidget(button)
        self.bar = QProgressBar()
        self.bar.setTextVisible(True)
        self.bar.setFormat("%v / %m")
        self.result_label = QLabel("Not run yet.")
        self.result_label.setWordWrap(True)
        self.result_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.store_label = QLabel("")
        self.store_label.setObjectName("hint")
        self.store_label.setWordWrap(True)
        self.store_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.bar)
        layout.addWidget(self.result_label)
        layout.addWidget(self.store_label)
        self._update_controls()

    # ------------------------------------------------------------------ the job

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.state() is not QProcess.ProcessState.NotRunning

    def start(self) -> bool:
        """Start the evaluation the fields and the panel describe; False (reason shown) if not."""
        if self.running:
            return False
        try:
            request = self._request_source(self.episodes_spin.value(), self.seed_spin.value(),
                                           self.seconds_spin.value())
        except ValueError as error:
            self._say(str(error), theme.ERROR_COLOUR)
            return False
        self.request = request
        self.progress = EvalProgress(request.episodes)
        self._cancelled = False
        self._stderr.clear()
        program, arguments = eval_command(request, sys.executable)
        process = QProcess(self)
        process.setProgram(program)
        process.setArguments(arguments)
        process.setWorkingDirectory(str(REPO_ROOT))
        process.readyReadStandardOutput.connect(self._read_stdout)
        process.readyReadStandardError.connect(self._read_stderr)
        process.finished.connect(self._on_finished)
        process.errorOccurred.connect(self._on_error)
        self.process = process
        log.info("evaluation started: %s %s", program, " ".join(arguments))
        process.start()
        self.store_label.setText(f"Rollouts go to {request.save_dir}" if request.save_dir else "")
        self._paint()
        return True

    def cancel(self) -> bool:
        """Ask the job to stop (it closes its store first); killed if it has not within 10 s."""
        process = self.process
        if not self.running or process is None:
            return False
        self._cancelled = True
        pid = int(process.processId())
        if pid > 0:
            request_cancel(pid)
        else:
            process.kill()
        # The process's child: it goes with the process (a widget closed meanwhile takes both).
        killer = QTimer(process)
        killer.setSingleShot(True)
        killer.timeout.connect(process.kill)  # a no-op once the job has ended
        killer.start(KILL_AFTER_MS)
        self._update_controls()
        return True

    def stop_now(self, wait_ms: int = 3000) -> None:
        """The window closes: cancel, wait a little, then kill (never leave a job behind)."""
        process = self.process
        if not self.running or process is None:
            return
        self.cancel()
        if not process.waitForFinished(wait_ms):
            process.kill()
            process.waitForFinished(1000)

    def review(self) -> None:
        """Open the rollouts' store in the workbench, in a process of its own."""
        if self.request is None or self.request.save_dir is None or not self.request.save_dir.is_dir():
            self._say("No recorded rollouts yet: run an evaluation first.", theme.WARN_COLOUR)
            return
        QProcess.startDetached(sys.executable, [str(RUN_PY), "review", "--store", str(self.request.save_dir)],
                               str(REPO_ROOT))

    # ------------------------------------------------------------------ process slots

    def _read_stdout(self) -> None:
        if self.process is None or self.progress is None:
            return
        text = bytes(self.process.readAllStandardOutput()).decode("utf-8", "replace")
        if self.progress.feed_text(text):
            self._paint()

    def _read_stderr(self) -> None:
        if self.process is None:
            return
        text = bytes(self.process.readAllStandardError()).decode("utf-8", "replace")
        self._stderr.extend(line for line in text.splitlines() if line.strip())

    def _on_error(self, error: QProcess.ProcessError) -> None:
        if error is QProcess.ProcessError.FailedToStart and self.progress is not None:
            self.progress.finish(-1)
            self.progress.message = f"The evaluation process could not be started ({sys.executable})."
            self.progress.what_to_do = "Check the studio's Python environment (`python run.py eval --help`)."
            self._paint()
            self.finished.emit()

    def _on_finished(self, exit_code: int, _status: QProcess.ExitStatus) -> None:
        self._read_stdout()
        self._read_stderr()
        progress = self.progress
        if progress is None:
            return
        said_why = progress.state is EvalState.FAILED  # the job's own error line
        progress.finish(exit_code, cancelled=self._cancelled)
        if progress.state is EvalState.FAILED and not said_why and self._stderr:
            progress.message += f" Its last words: {self._stderr[-1]}"
        log.info("evaluation ended (%s): %s", progress.state.value, progress.text)
        self._paint()
        self.finished.emit()

    # ------------------------------------------------------------------ painting

    def _paint(self) -> None:
        progress = self.progress
        if progress is not None:
            self.bar.setRange(0, max(1, progress.episodes))
            self.bar.setValue(progress.tally.episodes)
            colour = {EvalState.FAILED: theme.ERROR_COLOUR, EvalState.CANCELLED: theme.WARN_COLOUR,
                      EvalState.FINISHED: theme.OK_COLOUR}.get(progress.state, theme.TEXT)
            self._say(progress.text, colour)
        self._update_controls()

    def _say(self, text: str, colour: str) -> None:
        self.result_label.setText(text)
        self.result_label.setStyleSheet(f"color: {colour}; font-weight: bold;")

    def _update_controls(self) -> None:
        running = self.running
        for widget in (self.start_button, self.episodes_spin, self.seed_spin, self.seconds_spin):
            widget.setEnabled(not running)
        self.cancel_button.setEnabled(running and not self._cancelled)
        self.review_button.setEnabled(not running and self.request is not None and self.request.save_dir is not None)
