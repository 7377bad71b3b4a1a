"""The Episodes workbench window on real episode files, offscreen: the table fills, filters and
labels; an ALOHA/ACT file opens; the frame on screen is the frame at the cursor, stepping and
playing; trash and restore from the window."""

from __future__ import annotations

import numpy as np
import pytest

from app.ui.workbench.workbench_widget import WorkbenchWidget
from recordings.playback import decode_for_display
from recordings.reader import Episode
from review_fixtures import write_jpeg_store_episode


_open: dict = {}


@pytest.fixture(autouse=True)
def _close_episodes():
    yield
    while _open:
        _open.popitem()[1].close()


@pytest.fixture
def store(tmp_path, act_file):
    root = tmp_path / "store"
    write_jpeg_store_episode(root, 60, shape=(96, 128), label="success", operator="ann")
    write_jpeg_store_episode(root, 40, shape=(96, 128), seed=1, task="flatten")
    act_file(name="episode_2.hdf5", folder=root, n=30, shape=(96, 128))
    return root


@pytest.fixture
def bench(qtbot, store):
    widget = WorkbenchWidget(store)
    qtbot.addWidget(widget)
    widget.resize(1400, 900)
    widget.show()
    qtbot.waitUntil(lambda: widget.loaded, timeout=10000)
    return widget


def shown_matches_file(view, path) -> bool:
    """Every camera shows the file's frame at the view's cursor (decoded at the size it is shown)."""
    if path not in _open:  # opened once: a check per frame while playing must be quick under load
        _open[path] = Episode.open(path)
    episode = _open[path]
    for camera, widget in view.cameras.items():
        shown = widget._frame
        expected = episode.frame(camera, view.cursor)
        if shown.shape != expected.shape:
            size = (shown.shape[1], shown.shape[0])
            expected = decode_for_display(episode.encoded_frame(camera, view.cursor), size, expected.shape[1])
        if not np.array_equal(shown, expected):
            return False
    return True


def test_table_fills_and_filters(bench):
    table = bench.table
    assert [row.name for row in table.model.rows] == ["episode_0.hdf5", "episode_1.hdf5", "episode_2.hdf5"]
    assert table.model.data(table.model.index(2, 2)) == "unknown"  # ALOHA file: task unknown
    table.label_filter.setCurrentText("success")
    assert [row.name for row in table.model.rows] == ["episode_0.hdf5"]
    table.label_filter.setCurrentIndex(0)
    table.qa_filter.setCurrentText("unknown")
    assert [row.name for row in table.model.rows] == ["episode_2.hdf5"]
    table.qa_filter.setCurrentIndex(0)
    table.task_filter.setCurrentText("flatten")
    assert [row.name for row in table.model.rows] == ["episode_1.hdf5"]


def test_an_aloha_file_opens_in_the_view(bench, store, qtbot):
    bench.table.select_name("episode_2.hdf5")
    qtbot.waitUntil(lambda: bench.view.path is not None and bench.view.path.name == "episode_2.hdf5")
    view = bench.view
    assert list(view.cameras) == ["top"]
    assert view.timeline.bands[0].source == "unknown"
    assert view.label_combo.currentText() == "unknown"
    assert "not in this file" in view.plots.plots["effort"].titleLabel.text
    view.seek(17)
    assert view.cursor == 17 and view.timeline_widget.cursor == 17
    assert view.plots.cursor_time_s() == pytest.approx(17 / 50)
    assert shown_matches_file(view, store / "episode_2.hdf5")


def test_the_frame_on_screen_is_the_frame_at_the_cursor(bench, store, qtbot):
    view = bench.view
    qtbot.waitUntil(lambda: view.path is not None)  # the first row opens by itself
    path = store / "episode_0.hdf5"
    view.step_by(1)
    view.step_by(1)
    assert view.cursor == 2 and shown_matches_file(view, path)
    view.seek(50)
    view.step_by(-10)
    assert view.cursor == 40 and shown_matches_file(view, path)
    view.seek(0)
    view.speed.setCurrentIndex(2)  # 2x
    view.play()
    checked = set()
    while view.clock.playing or view.cursor < 59:
        qtbot.wait(15)
        assert shown_matches_file(view, path), f"step {view.cursor}"
        checked.add(view.cursor)
        if len(checked) > 200:
            break
    assert view.cursor == 59 and len(checked) > 5


def test_frames_shown_small_are_the_frames_at_the_cursor(qtbot, tmp_path):
    """480x640 frames in a small window: decoded at 1/2 size then shrunk, by the workers while
    playing and on this thread for seeks; the picture still follows the cursor step for step."""
    from app.ui.workbench.episode_view import EpisodeViewWidget

    path = write_jpeg_store_episode(tmp_path, 40, shape=(480, 640))
    view = EpisodeViewWidget()
    qtbot.addWidget(view)
    view.resize(900, 700)
    view.show()
    assert view.open_episode(path)
    view.seek(3)
    qtbot.wait(20)
    view.seek(4)
    width = next(iter(view.cameras.values()))._frame.shape[1]
    assert width * 2 <= 640 and view.prefetcher.size[0] == width  # the reduced decode is in use
    assert view.cursor == 4 and shown_matches_file(view, path)
    view.seek(30)
    view.step_by(-7)
    assert view.cursor == 23 and shown_matches_file(view, path)
    view.seek(0)
    view.play()
    checked = set()
    while view.clock.playing:
        qtbot.wait(15)
        assert shown_matches_file(view, path), f"step {view.cursor}"
        checked.add(view.cursor)
    assert view.cursor == 39 and len(checked) > 5
    view.close_episode()


def test_label_trash_and_restore_from_the_window(bench, store, qtbot):
    view = bench.view
    bench.table.select_name("episode_1.hdf5")
    qtbot.waitUntil(lambda: view.path is not None and view.path.name == "episode_1.hdf5")
    view.label_combo.setCurrentText("failure")
    view.reason_combo.setCurrentText("towel dropped")
    view.notes_edit.setText("corner slipped")
    view.save_label.click()
    with Episode.open(store / "episode_1.hdf5") as episode:
        assert (episode.label.value, episode.failure_reason, episode.metadata.notes) == ("failure", "towel dropped", "corner slipped")
    row = next(r for r in bench.table.model.rows if r.name == "episode_1.hdf5")
    assert (row.label, row.reason) == ("failure", "towel dropped")

    bench.table.view.selectAll()
    bench.reason.setCurrentText("missed grasp")
    bench.label_selected("failure")
    assert {r.reason for r in bench.workbench.rows} == {"missed grasp"}

    bench.table.view.clearSelection()
    bench.table.select_name("episode_0.hdf5")
    bench.trash_selected()
    assert [r.name for r in bench.table.model.rows] == ["episode_1.hdf5", "episode_2.hdf5"]
    bench.restore(bench.workbench.trashed()[0].name)
    assert [r.name for r in bench.table.model.rows] == ["episode_0.hdf5", "episode_1.hdf5", "episode_2.hdf5"]


def test_exports_from_the_window(bench, tmp_path):
    bench.export_mp4("episode_2.hdf5", tmp_path / "two.mp4")
    bench.export_lerobot(["episode_0.hdf5", "episode_1.hdf5"], tmp_path / "ds")
    assert bench.wait_idle(120)
    assert (tmp_path / "two.mp4").is_file() and (tmp_path / "ds" / "meta" / "info.json").is_file()
    assert "LeRobot dataset" in bench.status.text()
