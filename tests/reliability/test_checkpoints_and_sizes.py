"""Fault 6: a poisoned or truncated latest checkpoint was reported as `kind: internal` ("This is a
bug...") naming no file, torch's advice to set weights_only=False reached the user, `--resume`
did not fall back to the previous complete checkpoint, and half-written temporary files stayed
in checkpoint folders. Fault 7: absurd model sizes in a checkpoint's config.json or `--set`
(num_layers 10^6) started building and grew without bound instead of being refused.

Run folders here have the trainer's layout, written with the same functions; the kill test
kills a real process in the middle of real saves."""

from __future__ import annotations

import json
import os
import pickle
import random
import resource
import time
from pathlib import Path

import pytest
import torch

from model.checkpoint import NormStats, load_checkpoint, load_config, read_tensors, save_checkpoint
from model.config import PRESETS, FastWAMConfig, VideoExpertConfig, check_fits_in_memory, get_preset
from model.errors import CheckpointError, ModelTooLarge
from model.fastwam import FastWAM
from model.resume import (
    checkpoint_problem,
    load_training_state,
    loadable_checkpoints,
    read_resume_state,
    remove_partial_files,
    resolve_checkpoint,
    resume_from_newest_loadable,
)
from model.run_folder import BEST_DIR, TRAINER_FILE, TRAINING_STATE_FILE, VALIDATION_FILE


def _save_step(run: Path, model: FastWAM, optimizer, step: int) -> Path:
    """One checkpoint as the trainer writes it (trainer.json last)."""
    folder = run / "checkpoints" / f"step_{step:08d}"
    save_checkpoint(folder, model, model.config, NormStats.identity(), step)
    torch.save({"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state()}, folder / TRAINING_STATE_FILE)
    (folder / TRAINER_FILE).write_text(json.dumps({"format": 1, "step": step, "best": {"val_action_loss": None, "step": None},
                                                   "rng": {"numpy": [], "python": []}}))
    return folder


@pytest.fixture(scope="module")
def tiny_model():
    """The tiny preset with a narrow video expert: 0.4 M parameters, files of a few MB."""
    torch.manual_seed(0)
    return FastWAM(get_preset("tiny").replace(video=VideoExpertConfig(hidden_dim=96, ffn_dim=192, in_dim=16, freq_dim=64)))


@pytest.fixture
def run(tmp_path, tiny_model):
    optimizer = torch.optim.AdamW(tiny_model.parameters(), lr=1e-3)
    for param in tiny_model.parameters():  # one step, so the optimizer has state to save
        param.grad = torch.zeros_like(param)
    optimizer.step()
    folders = [_save_step(tmp_path / "run", tiny_model, optimizer, step) for step in (100, 200, 300)]
    return tmp_path / "run", folders


def _load(folder: Path):
    """What the trainer's resume reads: the weights and the optimizer/RNG payload."""
    return read_tensors(folder / "model.safetensors"), load_training_state(folder / TRAINING_STATE_FILE)


class _Payload:
    """Would create a file when unpickled (what a poisoned checkpoint does, harmlessly here)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_poisoned_latest_checkpoint_is_named_never_unpickled_and_the_resume_falls_back(run, tmp_path):
    run_dir, folders = run
    marker = tmp_path / "PWNED"
    with open(folders[-1] / TRAINING_STATE_FILE, "wb") as handle:  # a pickle, not a torch zip
        pickle.dump({"optimizer": _Payload(marker)}, handle)
    with pytest.raises(CheckpointError) as info:
        load_training_state(folders[-1] / TRAINING_STATE_FILE)
    message = str(info.value)
    assert str(folders[-1] / TRAINING_STATE_FILE) in message and "internal" not in message.lower()
    assert "weights_only=False" not in message and "weights_only" not in message.replace("weights_only=True", "")
    assert not marker.exists()

    torch.save({"optimizer": {"state": _Payload(marker)}}, folders[-1] / TRAINING_STATE_FILE)  # poisoned torch zip
    with pytest.raises(CheckpointError, match="never unpickled") as info:
        load_training_state(folders[-1] / TRAINING_STATE_FILE)
    assert "weights_only=False" not in str(info.value) and not marker.exists()

    skipped = []
    found = resume_from_newest_loadable(run_dir, _load, on_skip=lambda f, why: skipped.append((f, why)))
    assert found is not None and found[0] == folders[1]  # step 200: the newest that loads
    assert [f for f, _ in skipped] == [folders[-1]] and "never unpickled" in skipped[0][1]
    assert not marker.exists()


def test_a_truncated_or_half_saved_checkpoint_is_skipped_with_the_reason(run):
    run_dir, folders = run
    weights = folders[-1] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    (folders[1] / TRAINER_FILE).unlink()  # the save of step 200 did not finish
    assert "model.safetensors is truncated or corrupt" in checkpoint_problem(folders[-1])
    assert "did not finish" in checkpoint_problem(folders[1])
    with pytest.raises(CheckpointError, match="model.safetensors: the file is truncated or corrupt"):
        read_tensors(weights)
    skipped = []
    assert list(loadable_checkpoints(run_dir, lambda f, why: skipped.append(f))) == [folders[0]]
    assert skipped == [folders[2], folders[1]]
    state = folders[0] / TRAINING_STATE_FILE
    state.write_bytes(state.read_bytes()[:-100])
    assert "training_state.pt is truncated" in checkpoint_problem(folders[0])
    assert resume_from_newest_loadable(run_dir, _load) is None


def test_the_resume_state_is_read_whole_and_a_trainer_record_without_rng_falls_back(run):
    run_dir, folders = run
    state = read_resume_state(folders[-1])
    assert state.folder == folders[-1] and state.step == 300 and "optimizer" in state.training_state
    assert set(state.tensors) == set(read_tensors(folders[-1] / "model.safetensors"))
    (folders[-1] / TRAINER_FILE).write_text(json.dumps({"format": 1, "step": 300}))  # an older or foreign record
    with pytest.raises(CheckpointError, match=r"trainer.json: it lacks the best-so-far record or the RNG states"):
        read_resume_state(folders[-1])
    skipped = []
    folder, state = resume_from_newest_loadable(run_dir, read_resume_state, lambda f, why: skipped.append(f))
    assert folder == folders[1] and state.step == 200 and skipped == [folders[-1]]


def test_eval_resolves_a_run_folder_to_a_loadable_checkpoint_and_names_what_it_passed_over(run, tiny_model, tmp_path):
    run_dir, folders = run
    assert resolve_checkpoint(folders[0]) == folders[0]  # a checkpoint folder is taken as it is
    assert resolve_checkpoint(run_dir) == folders[-1]  # no best/ yet: the newest complete one
    best = run_dir / BEST_DIR
    save_checkpoint(best, tiny_model, tiny_model.config, NormStats.identity(), 200)
    (best / VALIDATION_FILE).write_text(json.dumps({"step": 200}))
    assert resolve_checkpoint(run_dir) == best
    weights = best / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a copy cut short
    skipped = []
    assert resolve_checkpoint(run_dir, lambda f, why: skipped.append((f, why))) == folders[-1]
    assert skipped[0][0] == best and "model.safetensors is truncated or corrupt" in skipped[0][1]
    for folder in folders:
        (folder / "config.json").write_text("{damaged")
    with pytest.raises(CheckpointError, match="none of its checkpoints is complete"):
        resolve_checkpoint(run_dir)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="neither a checkpoint folder nor a run folder"):
        resolve_checkpoint(tmp_path / "empty")


def test_a_killed_save_leaves_temporary_files_that_are_removed(tmp_path, fork_child, tiny_model):
    """Real kills in the middle of real saves (the model's file is 1.6 MB)."""
    model, config = tiny_model, tiny_model.config
    folder = tmp_path / "run" / "checkpoints" / "step_00000001"
    save_checkpoint(folder, model, config, NormStats.identity(), 1)

    def save_forever():
        while True:
            save_checkpoint(folder, model, config, NormStats.identity(), 1)

    rng = random.Random(3)
    seen_temporary = 0
    for _ in range(12):
        child = fork_child(save_forever)
        time.sleep(rng.uniform(0.005, 0.1))
        child.kill()
        leftovers = [p for p in folder.iterdir() if p.name.startswith(".")]
        seen_temporary += bool(leftovers)
        removed = remove_partial_files(tmp_path / "run")
        assert sorted(removed) == sorted(leftovers)
        assert not [p for p in folder.iterdir() if p.name.startswith(".")]
        assert load_checkpoint(folder).step == 1  # every file replaced whole: still loads
    assert seen_temporary > 0  # the kills did land in the middle of writes


def test_an_interrupted_swap_of_best_is_undone(tmp_path, tiny_model):
    run_dir = tmp_path / "run"
    save_checkpoint(run_dir / ".best.old", tiny_model, tiny_model.config, NormStats.identity(), 5)
    save_checkpoint(run_dir / ".best.tmp", tiny_model, tiny_model.config, NormStats.identity(), 9)
    remove_partial_files(run_dir)  # killed between "best -> .best.old" and ".best.tmp -> best"
    assert load_checkpoint(run_dir / "best").step == 5 and not (run_dir / ".best.tmp").exists()


def test_absurd_sizes_in_a_checkpoint_config_are_refused_before_anything_is_built(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    data = PRESETS["tiny"].to_dict()
    data["num_layers"] = 10**6
    (folder / "config.json").write_text(json.dumps(data))
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    with pytest.raises(CheckpointError) as info:
        load_config(folder)
    assert time.monotonic() - started < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 50_000  # kB: nothing was built
    assert "config.json" in str(info.value) and "num_layers must be within 1..200" in str(info.value)
    data["num_layers"], data["video"]["hidden_dim"], data["video"]["ffn_dim"] = 200, 65_536, 262_144
    (folder / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"B parameters .* GB in fp32\), more than the 50 B"):
        load_config(folder)
    data["num_layers"] = 1e6  # JSON numbers may arrive as floats (`--set num_layers=1e6`)
    with pytest.raises(ValueError, match="num_layers must be a whole number"):
        FastWAMConfig.from_dict(data)


def test_the_parameter_estimate_is_exact_and_checked_against_the_memory_there_is(tiny_model):
    assert tiny_model.config.parameter_count == sum(p.numel() for p in tiny_model.parameters())
    with torch.device("meta"):
        tiny = FastWAM(PRESETS["tiny"])
    assert PRESETS["tiny"].parameter_count == sum(p.numel() for p in tiny.parameters())
    with torch.device("meta"):
        small = FastWAM(PRESETS["small"])
    assert PRESETS["small"].parameter_count == sum(p.numel() for p in small.parameters())
    assert PRESETS["fastwam-5b"].parameter_count == 6_020_749_518  # the released model's count
    with pytest.raises(ModelTooLarge) as info:
        check_fits_in_memory(PRESETS["fastwam-5b"], available_bytes=24 * 10**9, where="this GPU")
    text = str(info.value)
    assert "6.02 B parameters" in text and "96.3 GB" in text and "this GPU has 24.0 GB" in text and "--preset" in text
    assert check_fits_in_memory(PRESETS["tiny"], available_bytes=24 * 10**9) == 16 * 4_328_494
    assert check_fits_in_memory(PRESETS["fastwam-5b"], 24 * 10**9, training=False, bytes_per_parameter=2) < 24 * 10**9


def test_a_read_error_never_mentions_weights_only_false(tmp_path):
    path = tmp_path / TRAINING_STATE_FILE
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError) as info:
        load_training_state(path)
    assert "weights_only=False" not in str(info.value) and str(path) in str(info.value)
    assert os.path.basename(path) in str(info.value)
