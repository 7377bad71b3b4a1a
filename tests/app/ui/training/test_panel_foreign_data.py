"""The Training panel on episodes from ALOHA/ACT (issue 14), offscreen: what the ticked episodes
hold, the one-click camera mapping, the task of files without one, the warnings for mixed shapes,
and a real `run.py train` job started by the panel through that mapping to a checkpoint that
records it."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from act_episodes import ACT_REAL_HW, write_act_episode
from app.studio.training.job import out_arg, process_alive
from app.studio.training.run_state import Outcome
from app.ui.training.panel import TrainingPanelWidget
from model.run_folder import INPUTS_FILE, JobRecord

_spec = importlib.util.spec_from_file_location(
    "train_support", Path(__file__).resolve().parents[3] / "model" / "test_train_support.py")
support = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(support)

JOB_MS = 180_000  # a busy 2-core machine: python + torch start take seconds per job
WAIT_MS = 30_000
ACT_NAMES = ["episode_0.hdf5", "episode_1.hdf5", "episode_2.hdf5"]
VIEWS = ("cam_high", "cam_left_wrist", "cam_right_wrist")


@pytest.fixture
def started_pids():
    """Pids of the jobs a test started; any still alive at the end is killed (ours only)."""
    pids: list[tuple[int, str]] = []
    yield pids
    for pid, marker in pids:
        if process_alive(pid, marker):
            os.kill(pid, signal.SIGKILL)


def _panel(qtbot, store: Path, runs: Path) -> TrainingPanelWidget:
    panel = TrainingPanelWidget(runs_root=runs)
    qtbot.addWidget(panel)
    panel.resize(1500, 560)
    panel.show()
    panel.chooser.set_store(store, chosen=True)
    qtbot.waitUntil(lambda: bool(panel.chooser.rows), timeout=WAIT_MS)
    return panel


def _click(qtbot, button) -> None:
    assert button.isEnabled() and button.isVisible(), button.text()
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def test_act_episodes_train_from_the_panel_through_the_one_click_mapping(qtbot, act_store, tmp_path, started_pids):
    panel = _panel(qtbot, act_store, tmp_path / "runs")
    # Unlabelled ACT files are offered with the successes, as the trainer takes them.
    assert [r.name for r in panel.chooser.selected_rows()] == ACT_NAMES
    assert "3 ALOHA/ACT file(s) without a label are chosen" in panel.chooser.episode_hint.text()
    box = panel.inputs
    assert box.cameras_label.text() == "top 128x96 (3 episodes)"
    assert box.widths_label.text() == "14-D actions, 14-D state"
    assert box.tasks_label.text() == "none (3; trained as 'fold the towel')"
    assert box.shown_cameras() == {v: ("— choose —", True) for v in VIEWS}
    problem = ("3 ticked episode(s) have no camera cam_high, cam_left_wrist, cam_right_wrist (they have top). "
               'Choose a camera for each view, or press "Use top for every view".')
    assert box.problem_label.text() == problem and box.use_button.text() == "Use top for every view"

    panel.form.steps_spin.setValue(4)
    panel.form.batch_spin.setValue(4)
    panel.form.checkpoint_spin.setValue(4)
    flags = ["--log-every", "1", "--val-samples", "8", "--vae-steps", "2", "--vae-batch-size", "2", "--threads", "1",
             "--cache-dir", str(tmp_path / "cache")]
    for item in support.TEST_MODEL_OVERRIDES:
        flags += ["--set", item]
    panel.form.extra_edit.setText(" ".join(flags))
    _click(qtbot, panel.form.train_button)  # refused, saying what to press
    assert panel.form.message_label.text() == problem and panel.follower is None

    _click(qtbot, box.use_button)  # the one-click choice
    assert box.shown_cameras() == {v: ("top", True) for v in VIEWS}
    assert not box.use_button.isVisible() and not box.problem_label.isVisible()
    assert box.hint_label.text() == ("3 episode(s) name no task: they are trained as 'fold the towel' (the preset's "
                                     "task). Type their task if it is another.")
    qtbot.keyClicks(box.task_edit, "transfer the cube")
    assert box.hint_label.text() == "3 episode(s) name no task: they are trained as 'transfer the cube'."
    assert box.tasks_label.text() == "none (3; trained as 'transfer the cube')"

    _click(qtbot, panel.form.train_button)
    job = JobRecord.load(panel.follower.run_dir)
    started_pids.append((job.pid, out_arg(job.argv)))
    qtbot.waitUntil(panel.job_running, timeout=WAIT_MS)
    assert not box.task_edit.isEnabled() and box.shown_cameras()["cam_high"] == ("top", False)  # locked while it runs
    qtbot.waitUntil(lambda: panel.follower.state.outcome is not Outcome.RUNNING, timeout=JOB_MS)
    assert panel.follower.state.outcome is Outcome.FINISHED, panel.run_view.log_view.toPlainText()[-3000:]
    argv = list(job.argv)
    assert argv[argv.index("--camera-map") + 1 : argv.index("--camera-map") + 4] == \
        ["cam_high=top", "cam_left_wrist=top", "cam_right_wrist=top"]
    assert argv[argv.index("--default-task") + 1] == "transfer the cube" and argv[argv.index("--labels") + 1] == "unknown"
    assert "name no task (ALOHA/ACT files): they are trained as 'transfer the cube' (--default-task)" in \
        panel.run_view.log_view.toPlainText()
    inputs = json.loads((panel.follower.run_dir / "best" / INPUTS_FILE).read_text())
    assert inputs["cameras"] == {"cam_high": "top", "cam_left_wrist": "top", "cam_right_wrist": "top"}
    assert inputs["tasks"] == ["transfer the cube"] and inputs["image_sizes"] == {"top": [[96, 128]]}
    assert box.task_edit.isEnabled() and box.shown_cameras()["cam_high"] == ("top", True)  # back for the next run


def test_episodes_of_different_shapes_are_warned_and_files_with_no_common_camera_refused(qtbot, act_store, tmp_path):
    store = tmp_path / "mixed"
    shutil.copytree(act_store, store)
    write_act_episode(store / "episode_3.hdf5", length=10, hw=ACT_REAL_HW)
    panel = _panel(qtbot, store, tmp_path / "runs")
    box = panel.inputs
    assert box.cameras_label.text() == "top 128x96/640x480 (4 episodes)"
    box.set_view_camera("cam_high", "top")  # by hand: the other two views still read cameras the files lack
    assert box.shown_cameras()["cam_high"] == ("top", True) and box.problem_label.text().startswith("4 ticked episode(s)")
    _click(qtbot, box.use_button)
    assert "Camera 'top' has images of different sizes (3 at 128x96, 1 at 640x480)" in box.hint_label.text()
    assert panel.settings().camera_map == (("cam_high", "top"), ("cam_left_wrist", "top"), ("cam_right_wrist", "top"))

    # Our own episode beside ACT's: no camera is common, so no mapping reads them all.
    support.write_episode(store, 10)
    panel.chooser.rescan()
    qtbot.waitUntil(lambda: len(panel.chooser.selected_rows()) == 5, timeout=WAIT_MS)
    assert not box.use_button.isVisible()
    assert "these episodes share no camera, so tick episodes that have the same cameras" in box.problem_label.text()
    assert "Episodes with different cameras are mixed (4 with ['top']; 1 with ['cam_high'" in box.hint_label.text()
    with pytest.raises(ValueError, match="share no camera"):
        panel.settings()
    # Unticking our file leaves the ACT files, read through the mapping chosen before.
    panel.chooser.set_episode_ticked("episode_4.hdf5", False)
    assert panel.settings().camera_map == (("cam_high", "top"), ("cam_left_wrist", "top"), ("cam_right_wrist", "top"))
