"""What the Policy panel's chooser is told about a checkpoint without loading torch weights
(app/studio/checkpoints.py); the fit check against a rig is model.compatibility's
(tests/model/test_compatibility.py, and the studio's refusal in test_autonomy.py)."""

from __future__ import annotations

import json
import shutil

import pytest

from app.studio.checkpoints import CheckpointUnreadable, checkpoint_hash, describe_checkpoint


@pytest.fixture
def run_dir(tmp_path, tiny_checkpoint_h32):
    """A run folder as `run.py train` leaves it: run.json, best/ with validation.json, checkpoints/."""
    run = tmp_path / "runs" / "tiny-1"
    shutil.copytree(tiny_checkpoint_h32, run / "best")
    (run / "best" / "validation.json").write_text(json.dumps({"step": 1, "val_loss": {"action": 0.0123}}))
    shutil.copytree(tiny_checkpoint_h32, run / "checkpoints" / "step_00000002")
    (run / "checkpoints" / "step_00000002" / "trainer.json").write_text(json.dumps({"step": 2, "best": {"step": 1}}))
    (run / "run.json").write_text(json.dumps({"train": [f"runs/demos/episode_{i}.hdf5" for i in range(12)]}))
    return run


def test_a_run_folder_is_described_by_its_best(run_dir):
    info = describe_checkpoint(run_dir)
    assert info.path == run_dir / "best" and info.is_best and info.run_dir == run_dir
    assert (info.preset, info.variant, info.horizon, info.action_dim) == ("tiny", "fastwam", 32, 14)
    assert info.cameras == ("cam_high", "cam_left_wrist", "cam_right_wrist") and info.canvas_hw == (128, 160)
    assert info.val_action_loss == pytest.approx(0.0123) and info.trained_on == "12 episodes from runs/demos"
    other = describe_checkpoint(run_dir / "checkpoints" / "step_00000002")
    assert not other.is_best and other.val_action_loss is None and other.run_dir == run_dir
    shutil.rmtree(run_dir / "best")  # no best/: the newest complete checkpoint
    assert describe_checkpoint(run_dir).path.name == "step_00000002"


def test_unreadable_folders_say_what_to_choose(tmp_path, run_dir):
    with pytest.raises(CheckpointUnreadable, match="neither a checkpoint folder"):
        describe_checkpoint(tmp_path / "nothing")
    (run_dir / "best" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointUnreadable, match="damaged"):
        describe_checkpoint(run_dir)


def test_the_hash_names_the_exact_weights(run_dir):
    best, step = run_dir / "best", run_dir / "checkpoints" / "step_00000002"
    assert checkpoint_hash(best) == checkpoint_hash(step) and len(checkpoint_hash(best)) == 64
    with open(step / "model.safetensors", "r+b") as handle:  # one byte of one weight changes
        handle.seek(-1, 2)
        last = handle.read(1)
        handle.seek(-1, 2)
        handle.write(bytes([last[0] ^ 1]))
    assert checkpoint_hash(best) != checkpoint_hash(step)
