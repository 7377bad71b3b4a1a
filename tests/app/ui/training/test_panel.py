"""The Training panel driving the real trainer: real episodes from the recordings writer, the real
`python run.py train` started detached by the panel, its real JSON lines and checkpoints.

The model is `tiny` shrunk by --set overrides (tests/model/test_train_support.py) and typed into
the panel's More options field, as a user would, so a job takes seconds. Crash, cancel and resume
are done to real processes; the window test closes a real StudioWindow (its rig not started).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from app.studio.training.follower import find_runs
from app.studio.training.job import out_arg, process_alive
from app.studio.training.run_state import Outcome
from app.ui.training.panel import TrainingPanelWidget
from model.run_folder import EVENTS_FILE, JobRecord, latest_checkpoint

_spec = importlib.util.spec_from_file_location(
    "train_support", Path(__file__).resolve().parents[3] / "model" / "test_train_support.py")
support = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(support)

JOB_MS = 180_000  # a busy 2-core machine: python + torch start take seconds per job
WAIT_MS = 30_000


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("training_panel")
    return {"store": support.make_store(root), "cache": root / "cache", "runs": root / "runs", "root": root}


@pytest.fixture
def started_pids():
    """Pids of the jobs a test started; any still alive at the end is killed (ours only)."""
    pids: list[tuple[int, str]] = []
    yield pids
    for pid, marker in pids:
        if process_alive(pid, marker):
            os.kill(pid, signal.SIGKILL)


def _panel(qtbot, workspace, store: Path | None = None) -> TrainingPanelWidget:
    panel = TrainingPanelWidget(runs_root=workspace["runs"])
    qtbot.addWidget(panel)
    panel.resize(1500, 500)
    panel.show()
    panel.chooser.set_store(store or workspace["store"], chosen=True)
    qtbot.waitUntil(lambda: bool(panel.chooser.rows), timeout=WAIT_MS)
    return panel


def _configure(panel: TrainingPanelWidget, workspace, steps: int, checkpoint_every: int, *extra: str) -> None:
    panel.form.steps_spin.setValue(steps)
    panel.form.batch_spin.setValue(4)
    panel.form.checkpoint_spin.setValue(checkpoint_every)
    flags = ["--log-every", "1", "--val-samples", "8", "--vae-steps", "3", "--vae-batch-size", "2", "--threads", "1",
             "--seed", "3", "--cache-dir", str(workspace["cache"]), *extra]
    for item in support.TEST_MODEL_OVERRIDES:
        flags += ["--set", item]
    panel.form.extra_edit.setText(" ".join(flags))


def _click(qtbot, button) -> None:
    assert button.isEnabled(), button.text()
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def _job(panel: TrainingPanelWidget, started_pids) -> JobRecord:
    job = JobRecord.load(panel.follower.run_dir)
    started_pids.append((job.pid, out_arg(job.argv)))
    return job


def _points(curve) -> int:
    x = curve.getData()[0]
    return 0 if x is None else len(x)


def _events(run_dir: Path) -> list[dict]:
    path = run_dir / EVENTS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")] if path.exists() else []


@pytest.fixture(scope="module")
def finished(workspace, qapp, request):
    """A 6-step tiny job driven to its end by the panel (the other tests reuse its autoencoder)."""
    from pytestqt.qtbot import QtBot

    qtbot = QtBot(request)
    panel = TrainingPanelWidget(runs_root=workspace["runs"])
    panel.resize(1500, 500)
    panel.show()
    panel.chooser.set_store(workspace["store"], chosen=True)
    qtbot.waitUntil(lambda: bool(panel.chooser.rows), timeout=WAIT_MS)
    _configure(panel, workspace, 6, 3, "--val-every", "3")
    statuses: list[str] = []
    panel.status_changed.connect(statuses.append)
    _click(qtbot, panel.form.train_button)
    running = {"settings_disabled": not panel.form.steps_spin.isEnabled(), "cancel_enabled": panel.form.cancel_button.isEnabled(),
               "train_disabled": not panel.form.train_button.isEnabled()}
    job = JobRecord.load(panel.follower.run_dir)
    qtbot.waitUntil(lambda: panel.follower.state.outcome is not Outcome.RUNNING, timeout=JOB_MS)
    yield panel, job, running, statuses
    panel.close()
    panel.deleteLater()


def test_panel_drives_a_tiny_job_to_its_end(finished, workspace, qtbot):
    panel, job, running, statuses = finished
    state = panel.follower.state
    assert state.outcome is Outcome.FINISHED, panel.run_view.log_view.toPlainText()[-3000:]
    assert running == {"settings_disabled": True, "cancel_enabled": True, "train_disabled": True}
    # The command: the ticked episodes one by one, their label, the panel's settings.
    episodes = sorted(str(p) for p in workspace["store"].glob("episode_*.hdf5"))
    assert job.argv[job.argv.index("--store") + 1 : job.argv.index("--labels")] == tuple(episodes)
    assert job.argv[job.argv.index("--labels") + 1] == "success" and "--resume" not in job.argv
    assert job.argv[job.argv.index("--steps") + 1] == "6" and job.argv[job.argv.index("--batch-size") + 1] == "4"
    qtbot.waitUntil(lambda: not process_alive(job.pid, out_arg(job.argv)), timeout=WAIT_MS)  # it exits

    assert state.summary["steps"] == 6 and state.summary["val_episodes"] == 1
    assert panel.run_view.progress_bar.value() == panel.run_view.progress_bar.maximum() and "6/6" in panel.run_view.progress_bar.text()
    assert panel.run_view.status_label.text() == "Finished."
    assert panel.status_line == "Training: finished" and statuses[-1] == "Training: finished"
    assert any(s not in ("Training: idle", "Training: finished") for s in statuses)  # while it ran
    x, y = panel.run_view.curves["train total"].getData()
    assert list(x) == [1, 2, 3, 4, 5, 6] and all(v > 0 for v in y)
    assert list(panel.run_view.curves["val action"].getData()[0]) == [3, 6]

    table = panel.run_view.checkpoint_table
    rows = [[table.item(r, c).text() for c in range(table.columnCount())] for r in range(table.rowCount())]
    assert [r[0] for r in rows] == ["6", "3", f"{state.best_step} (best/)"]
    best_rows = [r for r in rows if r[4] == "★ best"]
    assert len(best_rows) == 2 and best_rows[-1][5].endswith("best")
    assert all(Path(r[5]).is_dir() for r in rows)
    # Both measures of each validated checkpoint: the flow loss and the sampled-action error
    # (what best/ is chosen by), and the best has the lowest sampled error.
    sampled = {r[0].split()[0]: float(r[3]) for r in rows}
    assert sampled[str(state.best_step)] == min(sampled.values())
    assert rows[0][2] == f"{state.val_loss[6][2]:.4g}" and rows[0][1] == f"{state.train_loss[6][0]:.4g}"
    assert "Finished 6 steps" in panel.run_view.problem_label.text() and panel.run_view.problem_label.text().endswith("best")

    log_text = panel.run_view.log_view.toPlainText()
    assert "starting the training job" in log_text and "finished 6 steps" in log_text
    assert "checkpoint saved at step 3" in log_text
    # Settings are back for the next run, which gets a new folder.
    assert panel.form.train_button.isEnabled() and panel.form.steps_spin.isEnabled() and not panel.form.cancel_button.isEnabled()
    assert not panel.form.resume_button.isEnabled()
    assert panel.settings().run_dir != panel.follower.run_dir

    table.selectRow(0)
    assert panel.run_view.copy_path_button.isEnabled()
    panel.run_view.copy_checkpoint_path()
    from PySide6.QtGui import QGuiApplication

    assert QGuiApplication.clipboard().text() == rows[0][5]


def test_a_crash_shows_the_last_lines_and_resume_cancel_resume_finish_it(finished, workspace, qtbot, started_pids):
    vae_from = str(finished[0].follower.run_dir)
    panel = _panel(qtbot, workspace)
    _configure(panel, workspace, 100, 10, "--val-every", "50", "--vae-from", vae_from)
    _click(qtbot, panel.form.train_button)
    run_dir = panel.follower.run_dir
    job = _job(panel, started_pids)

    # Killed (-9) after its first checkpoint: no final line.
    qtbot.waitUntil(lambda: any(e["event"] == "checkpoint" for e in _events(run_dir)), timeout=JOB_MS)
    os.kill(job.pid, signal.SIGKILL)
    qtbot.waitUntil(lambda: panel.follower.state.outcome is Outcome.CRASHED, timeout=WAIT_MS)
    resume_from = latest_checkpoint(run_dir)
    assert resume_from is not None
    report = panel.run_view.problem_label.text()
    assert "stopped unexpectedly" in report and f"Resume continues from {resume_from}" in report
    last = list(panel.follower.state.last_lines)[-3:]
    assert last and all(line in report for line in last)  # the last lines of its log
    assert any(line.startswith("checkpoint saved") or line.startswith("step ") for line in last)
    assert panel.status_line == "Training: crashed" and panel.form.resume_button.isEnabled()
    assert panel.form.train_button.isEnabled() and not panel.form.cancel_button.isEnabled()

    # Resume: the same command plus --resume, from the checkpoint; then cancel it mid-run.
    _click(qtbot, panel.form.resume_button)
    job = _job(panel, started_pids)
    assert job.argv[-1] == "--resume" and job.argv[:-1] == JobRecord.load(run_dir).argv[:-1]
    resumed_step = int(resume_from.name.split("_")[1])

    def training_after_resume() -> bool:
        events = _events(run_dir)
        starts = [i for i, e in enumerate(events) if e["event"] == "resumed"]
        return bool(starts) and any(e["event"] == "progress" for e in events[starts[-1]:])

    qtbot.waitUntil(training_after_resume, timeout=JOB_MS)
    assert panel.cancel_training()
    assert "Stopping" in panel.form.message_label.text() and not panel.form.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: panel.follower.state.outcome is Outcome.CANCELLED, timeout=WAIT_MS)
    cancelled = panel.follower.state.cancelled
    assert cancelled["step"] > resumed_step and Path(cancelled["checkpoint"]).is_dir()
    assert f"Resume continues from {cancelled['checkpoint']}" in panel.run_view.problem_label.text()
    assert panel.status_line == "Training: stopped" and panel.form.resume_button.isEnabled()

    _click(qtbot, panel.form.resume_button)
    _job(panel, started_pids)
    qtbot.waitUntil(lambda: panel.follower.state.outcome is not Outcome.RUNNING, timeout=JOB_MS)
    state = panel.follower.state
    assert state.outcome is Outcome.FINISHED, panel.run_view.log_view.toPlainText()[-3000:]
    assert state.attempts == 3 and state.summary["steps"] == 100
    x, _ = panel.run_view.curves["train total"].getData()
    assert list(x) == list(range(1, 101))  # each step once, the resumed attempts' where they overlap
    assert panel.run_view.checkpoint_table.rowCount() >= 2


def test_a_run_folder_from_elsewhere_is_followed_and_listed(finished, qtbot, tmp_path):
    # `python run.py --training RUN_DIR`: a run outside the panel's runs folder.
    other = TrainingPanelWidget(runs_root=tmp_path / "no_runs_here")
    qtbot.addWidget(other)
    run_dir = finished[0].follower.run_dir
    other.attach(run_dir)
    assert other.run_view.runs_combo.currentData() == str(run_dir) and other.run_view.runs_combo.currentText() == run_dir.name
    assert other.follower.state.outcome is Outcome.FINISHED and other.run_view.checkpoint_table.rowCount() == 3


def test_a_new_panel_picks_up_a_running_job_and_the_window_asks_before_closing(finished, workspace, qtbot, tmp_path,
                                                                              monkeypatch, started_pids):
    """Close the studio while a job runs: "don't close" keeps the window, "keep training" closes it
    and the job goes on; a window opened later follows the job and can cancel it."""
    from app.studio.studio import Studio
    from app.ui.main_window import StudioWindow

    monkeypatch.setattr("app.ui.training.panel.RUNS_ROOT", workspace["runs"])
    rig_file = Path(__file__).resolve().parents[3] / "configs" / "sim.toml"
    window = StudioWindow(Studio(rig_file, tmp_path / "store"))
    qtbot.addWidget(window)
    window.show()
    panel = window.training_panel
    assert not window.training_dock.isVisible() and window.training_button.text() == panel.status_line
    _click(qtbot, window.training_button)
    assert window.training_dock.isVisible()
    panel.chooser.set_store(workspace["store"], chosen=True)
    qtbot.waitUntil(lambda: bool(panel.chooser.rows), timeout=WAIT_MS)
    _configure(panel, workspace, 100_000, 10, "--val-every", "100000", "--vae-from", str(finished[0].follower.run_dir))
    _click(qtbot, panel.form.train_button)
    run_dir = panel.follower.run_dir
    job = _job(panel, started_pids)
    qtbot.waitUntil(lambda: window.training_button.text().startswith("Training: training "), timeout=JOB_MS)

    asked = []
    panel.ask_keep_job = lambda: asked.append("asked")  # returns None: do not close
    window.close()
    assert asked and window.isVisible() and window._shutdown_future is None
    panel.ask_keep_job = lambda: "keep"
    window.close()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=WAIT_MS)
    assert process_alive(job.pid, str(run_dir))

    reopened = TrainingPanelWidget(runs_root=workspace["runs"])
    qtbot.addWidget(reopened)
    reopened.show()
    assert reopened.follower is not None and reopened.follower.run_dir == run_dir
    assert reopened.job_running() and reopened.form.cancel_button.isEnabled() and not reopened.form.train_button.isEnabled()
    qtbot.waitUntil(lambda: _points(reopened.run_view.curves["train total"]) > 0, timeout=WAIT_MS)
    assert reopened.follower.state.stage == "train"
    _click(qtbot, reopened.form.cancel_button)
    qtbot.waitUntil(lambda: reopened.follower.state.outcome is Outcome.CANCELLED, timeout=WAIT_MS)
    assert Path(reopened.follower.state.cancelled["checkpoint"]).is_dir()
    assert reopened.form.resume_button.isEnabled()


def test_a_trainer_error_shows_its_message_and_what_to_do(workspace, qtbot, tmp_path, started_pids):
    import shutil

    store = tmp_path / "store"
    shutil.copytree(workspace["store"], store)
    panel = _panel(qtbot, workspace, store)
    _configure(panel, workspace, 6, 3)
    # Damaged after the list was read (e.g. a disk problem): the trainer finds it.
    (store / "episode_2.hdf5").write_bytes(b"\0" * 4096)
    _click(qtbot, panel.form.train_button)
    _job(panel, started_pids)
    qtbot.waitUntil(lambda: panel.follower.state.outcome is not Outcome.RUNNING, timeout=JOB_MS)
    state = panel.follower.state
    assert state.outcome is Outcome.FAILED and state.error["kind"] == "corrupt_episode"
    text = panel.run_view.problem_label.text()
    assert "episode_2.hdf5" in text and f"What to do: {state.error['what_to_do']}" in text
    assert "episodes check" in text
    assert panel.run_view.problem_label.isVisible() and panel.status_line == "Training: failed"
    assert not panel.form.resume_button.isEnabled() and panel.form.train_button.isEnabled()
    # The next scan greys the damaged file out, with why.
    panel.chooser.rescan()
    qtbot.waitUntil(lambda: any(r.problem for r in panel.chooser.rows), timeout=WAIT_MS)
    assert [r.name for r in panel.chooser.selected_rows()] == ["episode_0.hdf5", "episode_1.hdf5", "episode_3.hdf5"]


def test_the_chooser_counts_filters_and_keeps_the_users_ticks(qtbot, tmp_path, workspace):
    from recordings.reader import Episode

    store = tmp_path / "store"
    for i, (label, task) in enumerate([("success", "fold the towel"), ("success", "fold the towel"),
                                       ("failure", "fold the towel"), ("unknown", "fold the towel"),
                                       ("success", "sort the socks")]):
        support.write_episode(store, 30 + 10 * i, label=label, task=task, offset=i)
    (store / "episode_7.hdf5.partial").write_bytes(b"\0" * 64)
    panel = _panel(qtbot, workspace, store)

    def minutes(names) -> float:
        total = 0.0
        for name in names:
            with Episode.open(store / name) as episode:
                total += episode.duration_s
        return total / 60

    table = panel.chooser.episode_table
    shown = [table.item(r, 0).text() for r in range(table.rowCount())]
    assert shown == ["episode_0.hdf5", "episode_1.hdf5", "episode_4.hdf5", "episode_7.hdf5.partial"]
    assert table.item(3, 0).flags() == Qt.ItemFlag.NoItemFlags and "recover" in table.item(3, 2).text()
    assert table.item(0, 3).text() == f"{minutes(['episode_0.hdf5']) * 60 / 60:.2f}"
    assert panel.chooser.selection_label.text() == \
        f"3 episodes, {minutes(['episode_0.hdf5', 'episode_1.hdf5', 'episode_4.hdf5']):.1f} minutes selected"
    assert [panel.chooser.task_combo.itemText(i) for i in range(panel.chooser.task_combo.count())] == \
        ["all tasks", "fold the towel", "sort the socks"]

    panel.chooser.task_combo.setCurrentIndex(2)
    assert [r.name for r in panel.chooser.selected_rows()] == ["episode_4.hdf5"]
    panel.chooser.task_combo.setCurrentIndex(0)
    panel.chooser.label_combo.setCurrentText("failures")
    assert [r.name for r in panel.chooser.selected_rows()] == ["episode_2.hdf5"] and "Failed demonstrations" in panel.chooser.episode_hint.text()
    panel.chooser.label_combo.setCurrentText("all")
    assert len(panel.chooser.selected_rows()) == 5 and panel.settings().labels == ("failure", "success", "unknown")

    # Unticked episodes stay unticked across a refresh; a demo recorded meanwhile appears ticked.
    panel.chooser.set_episode_ticked("episode_1.hdf5", False)
    assert "episode_1.hdf5" not in [r.name for r in panel.chooser.selected_rows()]
    assert panel.chooser.selection_label.text().startswith("4 episodes")
    support.write_episode(store, 25, label="success")
    panel.chooser.rescan()
    qtbot.waitUntil(lambda: len(panel.chooser.rows) == 7, timeout=WAIT_MS)
    assert [r.name for r in panel.chooser.selected_rows()] == \
        ["episode_0.hdf5", "episode_2.hdf5", "episode_3.hdf5", "episode_4.hdf5", "episode_5.hdf5"]

    _click(qtbot, panel.chooser.select_none_button)
    assert panel.chooser.selection_label.text() == "0 episodes, 0.0 minutes selected" and not panel.form.train_button.isEnabled()
    _click(qtbot, panel.chooser.select_all_button)
    assert len(panel.chooser.selected_rows()) == 6 and panel.form.train_button.isEnabled()


def test_settings_mistakes_are_caught_before_a_job_starts(finished, qtbot, workspace):
    panel = _panel(qtbot, workspace)
    runs_before = find_runs(workspace["runs"])
    panel.form.lr_edit.setText("fast")
    assert not panel.start_training() and "not a number" in panel.form.message_label.text()
    panel.form.lr_edit.setText("")
    panel.form.extra_edit.setText("--out somewhere")
    assert not panel.start_training() and "--out is set by the panel" in panel.form.message_label.text()
    panel.form.extra_edit.setText("")
    # The folder of a finished run: offered to resume, not overwritten.
    done = finished[0].follower.run_dir
    panel.form.run_dir_edit.setText(str(done))
    assert not panel.start_training() and "Resume" in panel.form.message_label.text()
    assert panel.follower.run_dir == done and panel.follower.state.outcome is Outcome.FINISHED
    assert find_runs(workspace["runs"]) == runs_before  # nothing was started
