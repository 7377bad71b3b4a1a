"""Data from ALOHA/ACT trains as easily as our own (issue 14), through the real commands: episodes
written the way ACT's record_sim_episodes.py writes them (tests/act_episodes.py), `run.py train`
refusing them with the mapping that works, training through that mapping, the checkpoint that
records it, and `run.py eval` refusing that checkpoint on the towel sim, whose cameras are others.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from act_episodes import ACT_REAL_HW, act_frame_value, act_qpos, write_act_episode
from app.studio.jobs.train import TrainingView, main as train_main
from model.run_folder import EVENTS_FILE, INPUTS_FILE

_spec = importlib.util.spec_from_file_location(
    "train_support", Path(__file__).resolve().parents[2] / "model" / "test_train_support.py")
support = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(support)

MAPPING = ["--camera-map", "cam_high=top", "cam_left_wrist=top", "cam_right_wrist=top"]


def _args(store: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    args = ["--store", str(store), "--out", str(out), "--cache-dir", str(cache), "--steps", "4", "--batch-size", "4",
            "--log-every", "1", "--val-every", "4", "--checkpoint-every", "4", "--val-samples", "8", "--seed", "5",
            "--vae-steps", "2", "--vae-batch-size", "2", "--threads", "1", *extra]
    for item in support.TEST_MODEL_OVERRIDES:
        args += ["--set", item]
    return args


def _run(capsys, main, args: list[str]) -> tuple[int, list[dict]]:
    code = main(args)
    return code, [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def act_run(act_store, tmp_path_factory):
    """`run.py train` on the ACT episodes, first as a lab would type it, then with the mapping
    its error proposes: (refusal lines, training exit code, training lines, run folder)."""
    import contextlib
    import io

    root = tmp_path_factory.mktemp("act_run")

    def run(args):
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            code = train_main(args)
        return code, [json.loads(line) for line in buffer.getvalue().splitlines() if line.startswith("{")]

    code, refused = run(_args(act_store, root / "first-try", root / "cache"))
    assert code == 3, refused[-1]
    proposed = refused[-1]["message"].split("read through ", 1)[1].split(" (", 1)[0].split()
    code, lines = run(_args(act_store, root / "mapped", root / "cache", *proposed))
    return refused, proposed, code, lines, root / "mapped"


def test_act_episodes_are_refused_with_their_cameras_the_views_and_the_mapping_that_works(act_run):
    refused, proposed, _, _, _ = act_run
    error = refused[-1]
    assert error["event"] == "error" and error["kind"] == "camera_mismatch"  # not "corrupt_episode"
    message = error["message"]
    assert "['top'] (episode_0.hdf5, episode_1.hdf5, episode_2.hdf5)" in message  # what the files have
    assert "['cam_high', 'cam_left_wrist', 'cam_right_wrist']" in message  # what the preset expects
    assert proposed == MAPPING  # the exact line: the one camera into every view
    assert "--camera-map cam_high=top cam_left_wrist=top cam_right_wrist=top" in error["what_to_do"]
    assert "episodes check" not in message + error["what_to_do"]  # the files are fine: no such advice


def test_a_partial_mapping_a_wrong_view_and_an_exclude_of_everything_say_what_to_do(act_store, tmp_path, capsys):
    cache = tmp_path / "cache"
    # The old --help example alone: two views still read cameras the files lack; the proposal keeps it.
    code, lines = _run(capsys, train_main, _args(act_store, tmp_path / "a", cache, "--camera-map", "cam_high=top"))
    assert code == 3 and lines[-1]["kind"] == "camera_mismatch"
    assert "(the views read cameras ['top', 'cam_left_wrist', 'cam_right_wrist'])" in lines[-1]["message"]
    assert " ".join(MAPPING) in lines[-1]["message"]
    code, lines = _run(capsys, train_main, _args(act_store, tmp_path / "b", cache, "--camera-map", "cam_hgh=top"))
    assert code == 2 and lines[-1]["kind"] == "invalid_argument"
    assert "cam_hgh" in lines[-1]["message"] and "['cam_high', 'cam_left_wrist', 'cam_right_wrist']" in lines[-1]["message"]
    code, lines = _run(capsys, train_main, _args(act_store, tmp_path / "c", cache, *MAPPING, "--exclude",
                                                 "episode_0", "episode_1", "episode_2"))
    assert code == 3 and lines[-1]["kind"] == "no_episodes"
    assert "--exclude leaves nothing to train on: it excludes all 3 episode file(s)" in lines[-1]["message"]
    assert "Record demonstrations first" not in lines[-1]["message"]


def test_training_through_the_proposed_mapping_records_it_in_the_checkpoint(act_run):
    from model.policy import FastWAMPolicy, PolicyInput

    _, _, code, lines, run_dir = act_run
    assert code == 0, lines[-1]
    assert lines[-1]["event"] == "summary" and lines[-1]["steps"] == 4
    warning = next(e for e in lines if e["event"] == "warning")
    assert warning["kind"] == "default_task" and "3 episode(s) name no task" in warning["message"]
    assert "'fold the towel'" in warning["message"] and "--default-task" in warning["message"]
    shown = TrainingView().show("warning", {k: v for k, v in warning.items() if k != "event"})
    assert shown.lines[0].level == "warning" and "name no task" in shown.lines[0].text  # the terminal's line
    assert [json.loads(line) for line in (run_dir / EVENTS_FILE).read_text().splitlines()] == lines

    for checkpoint in (run_dir / "best", run_dir / "checkpoints" / "step_00000004"):
        inputs = json.loads((checkpoint / INPUTS_FILE).read_text())
        assert inputs["cameras"] == {"cam_high": "top", "cam_left_wrist": "top", "cam_right_wrist": "top"}
        assert inputs["image_sizes"] == {"top": [[96, 128]]} and inputs["canvas_hw"] == [64, 96]
        assert inputs["action_dim"] == inputs["state_dim"] == 14
        assert inputs["tasks"] == ["fold the towel"] and inputs["default_task"] == "fold the towel"
    assert json.loads((run_dir / "run.json").read_text())["camera_map"] == dict(pair.split("=") for pair in MAPPING[1:])

    # The policy reads the rig's `top` into every view, as it was trained; a rig without it is named.
    policy = FastWAMPolicy.from_checkpoint(run_dir / "best", device="cpu")
    top = np.full((96, 128, 3), act_frame_value(5), np.uint8)
    chunk = policy.predict_chunk(PolicyInput(qpos=act_qpos(6)[5], images={"top": top}))
    assert chunk.shape == (8, 14) and np.isfinite(chunk).all()
    from model.errors import MissingCamera

    with pytest.raises(MissingCamera, match=r"camera\(s\) \['top'\]"):
        policy.predict_chunk(PolicyInput(qpos=act_qpos(6)[5], images={"cam_high": top}))


def test_the_checkpoint_is_refused_on_a_rig_with_other_cameras_unless_overridden(act_run, capsys):
    from app.studio.jobs.evaluate import main as eval_main

    run_dir = act_run[4]
    args = ["--checkpoint", str(run_dir), "--episodes", "1", "--seed", "3", "--max-seconds", "0.1",
            "--check-every-s", "0.1", "--device", "cpu"]
    code, lines = _run(capsys, eval_main, args)
    assert code == 4 and lines[-1]["event"] == "error" and lines[-1]["kind"] == "checkpoint_mismatch"
    message = lines[-1]["message"]
    assert "the checkpoint reads camera(s) ['top']" in message and "cam_high=top" in message  # its side
    assert "the rig has camera(s) ['cam_high', 'cam_left_wrist', 'cam_right_wrist']" in message  # the rig's
    assert "--allow-mismatch" in message and not any(e["event"] == "episode" for e in lines)

    code, lines = _run(capsys, eval_main, args + ["--allow-mismatch"])
    assert code == 0, lines[-1]
    assert lines[0]["event"] == "warning" and lines[0]["kind"] == "checkpoint_mismatch"
    assert [e["event"] for e in lines[1:]] == ["eval_start", "episode", "summary"]


def test_an_act_episode_at_its_real_size_makes_the_canvas_through_the_mapping(tmp_path):
    from model.config import get_preset
    from model.data import CanvasSpec, EpisodeSource, WindowDataset, WindowSpec, find_episodes
    from model.episode_inputs import read_episode_inputs

    path = write_act_episode(tmp_path / "episode_0.hdf5", length=12, hw=ACT_REAL_HW)
    assert read_episode_inputs(path).cameras == (("top", ACT_REAL_HW),) and not read_episode_inputs(path).ours
    config = get_preset("tiny")
    canvas = CanvasSpec.from_config(config, {view: "top" for view in config.camera_names})
    [info] = find_episodes([tmp_path], default_task="fold the towel", canvas=canvas)
    item = WindowDataset([EpisodeSource(info, 0)], WindowSpec(action_horizon=4, frame_stride=2, latent_frames=2,
                                                               temporal_compression=2), canvas, mode="frames")[3]
    video = item["video"].numpy()  # (3, 128, 160, 3): steps 3, 5, 7; every view of each is `top`
    assert video.shape == (3, *config.canvas_hw, 3)
    for frame, step in zip(video, (3, 5, 7)):
        assert np.all(frame == act_frame_value(step))
    np.testing.assert_allclose(item["proprio"].numpy(), act_qpos(12)[3])
    np.testing.assert_allclose(item["action"].numpy(), act_qpos(12)[3:7] + 0.01)
