"""What episodes give a model (model/episode_inputs.py): their cameras and sizes read from real
files (ACT's layout and ours), the camera map proposed for them, and the warnings when episodes
of different shapes are mixed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from act_episodes import ACT_REAL_HW, ACT_SMALL_HW, write_act_episode
from model.episode_inputs import InputsSummary, propose_camera_map, read_episode_inputs

_spec = importlib.util.spec_from_file_location("train_support", Path(__file__).resolve().parent / "test_train_support.py")
support = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(support)

VIEWS = ("cam_high", "cam_left_wrist", "cam_right_wrist")


def test_one_camera_fills_every_view():
    proposal = propose_camera_map(VIEWS, ["top"])
    assert proposal.as_dict() == {"cam_high": "top", "cam_left_wrist": "top", "cam_right_wrist": "top"}
    assert proposal.line() == "--camera-map cam_high=top cam_left_wrist=top cam_right_wrist=top"
    assert proposal.short() == "top for every view" and "one camera, 'top'" in proposal.reason
    assert propose_camera_map(VIEWS, []) is None


@pytest.mark.parametrize("cameras, expected", [
    # Another lab's names: place words decide (overhead ~ high, hand ~ wrist), then spelling.
    (["overhead_rgb", "left_hand", "right_hand"], ["overhead_rgb", "left_hand", "right_hand"]),
    (["cam_right_wrist", "cam_low", "cam_left_wrist", "top"], ["top", "cam_left_wrist", "cam_right_wrist"]),
    (["wrist_1", "wrist_2", "main"], ["main", "wrist_1", "wrist_2"]),  # a camera not yet taken first
])
def test_several_cameras_are_matched_by_name(cameras, expected):
    proposal = propose_camera_map(VIEWS, cameras)
    assert [camera for _, camera in proposal.camera_map] == expected and not proposal.guessed


def test_a_view_no_name_resembles_reads_the_main_camera_and_says_so():
    proposal = propose_camera_map(VIEWS, ["front", "left_wrist"])
    assert proposal.as_dict() == {"cam_high": "front", "cam_left_wrist": "left_wrist", "cam_right_wrist": "front"}
    assert proposal.guessed == ("cam_high", "cam_right_wrist") and "check this" in proposal.reason


def test_the_users_map_is_kept_where_it_names_a_camera_the_files_have():
    proposal = propose_camera_map(VIEWS, ["top", "angle"], keep={"cam_high": "top", "cam_left_wrist": "angle",
                                                                 "cam_right_wrist": "nope"})
    # The wrist views are named like neither camera: they read the main view's, as the user chose it.
    assert proposal.as_dict() == {"cam_high": "top", "cam_left_wrist": "angle", "cam_right_wrist": "top"}
    assert proposal.guessed == ("cam_right_wrist",)


def test_inputs_of_act_and_of_our_files(tmp_path):
    act = read_episode_inputs(write_act_episode(tmp_path / "act" / "episode_0.hdf5", length=20))
    assert act.cameras == (("top", ACT_SMALL_HW),) and act.task == "" and not act.ours
    assert (act.action_dim, act.state_dim, act.length) == (14, 14, 20)
    ours = read_episode_inputs(support.write_episode(tmp_path / "ours", 10, task="fold the towel"))
    assert ours.camera_names == support.CAMERAS and ours.image_hw("cam_high") == (48, 64)
    assert ours.task == "fold the towel" and ours.ours


def test_mixed_shapes_are_warned_and_lacking_cameras_named(tmp_path):
    small = read_episode_inputs(write_act_episode(tmp_path / "a" / "episode_0.hdf5", length=8))
    real = read_episode_inputs(write_act_episode(tmp_path / "b" / "episode_0.hdf5", length=8, hw=ACT_REAL_HW))
    ours = read_episode_inputs(support.write_episode(tmp_path / "ours", 8))
    top_everywhere = {v: "top" for v in VIEWS}

    same = InputsSummary.of([small, small], VIEWS, top_everywhere)
    assert same.mixed_warnings() == [] and same.lacking == {} and same.untasked == 2
    assert same.camera_text() == "top 128x96 (2 episodes)" and same.width_text() == "14-D actions, 14-D state"

    sizes = InputsSummary.of([small, real], VIEWS, top_everywhere)
    [warning] = sizes.mixed_warnings()
    assert "'top' has images of different sizes (1 at 128x96, 1 at 640x480)" in warning

    mixed = InputsSummary.of([small, ours], VIEWS, top_everywhere)
    assert "different cameras are mixed (1 with ['top']; 1 with ['cam_high', 'cam_left_wrist', 'cam_right_wrist'])" \
        in mixed.mixed_warnings()[0]
    assert mixed.common_cameras == () and mixed.lacking == {ours.path: ("top",)}
    assert mixed.task_text("fold the towel") == "'fold the towel' (1), none (1; trained as 'fold the towel')"
