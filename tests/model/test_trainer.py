"""The trainer through `python run.py train`: a short tiny run end to end, resume after a cancel or
a crash, 2-process DDP/FSDP (gloo, torchrun) against one process, the no-video-co-training switch,
fine-tuning starts, and a cancel while caching. (The command line's own part - its errors, the
terminal display - is tests/app/studio/test_train_command.py.)

Runs are real: episodes written by the recordings writer, the autoencoder stage, the latent
cache on disk, the training loop, checkpoints in our format, and the policy loading the result.
The model is `tiny` shrunk by --set overrides (one layer, narrow) so a step takes milliseconds.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from app.studio.jobs.train import main as train_main
from model.policy import FastWAMPolicy, PolicyInput
from model.run_folder import EVENTS_FILE

_spec = importlib.util.spec_from_file_location("train_support", Path(__file__).with_name("test_train_support.py"))
support = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(support)

torch.set_num_threads(1)


def _args(store: Path, out: Path, cache: Path, *extra: str, steps: int = 6) -> list[str]:
    args = ["--store", str(store), "--out", str(out), "--cache-dir", str(cache), "--steps", str(steps),
            "--batch-size", "4", "--log-every", "1", "--val-every", "3", "--checkpoint-every", "3",
            "--val-samples", "8", "--seed", "3", *extra]
    for item in support.TEST_MODEL_OVERRIDES:
        args += ["--set", item]
    return args


def _run(capsys, args: list[str]) -> tuple[int, list[dict]]:
    code = train_main(args)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    return code, lines


def _losses(lines: list[dict]) -> dict[int, list[float]]:
    return {e["step"]: [e["loss"]["total"], e["loss"]["video"], e["loss"]["action"]] for e in lines if e["event"] == "progress"}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    return {"store": support.make_store(root), "cache": root / "cache", "root": root}


@pytest.fixture(scope="module")
def base_run(workspace):
    """The uninterrupted 6-step run the other tests compare with."""
    import io
    import contextlib

    out = workspace["root"] / "base"
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = train_main(_args(workspace["store"], out, workspace["cache"], "--vae-steps", "3",
                                       "--vae-batch-size", "2"))
    lines = [json.loads(line) for line in buffer.getvalue().splitlines() if line.startswith("{")]
    return code, lines, out


def test_short_training_run_produces_a_checkpoint_the_policy_loads(base_run):
    code, lines, out = base_run
    assert code == 0, lines[-1]
    events = [e["event"] for e in lines]
    for expected in ("episodes", "autoencoder", "autoencoder_ready", "cache", "cache_ready", "progress", "validation",
                     "checkpoint", "summary"):
        assert expected in events, expected
    summary = lines[-1]
    assert summary["event"] == "summary" and summary["steps"] == 6 and summary["val_episodes"] == 1
    progress = [e for e in lines if e["event"] == "progress"]
    assert [e["step"] for e in progress] == [1, 2, 3, 4, 5, 6]
    for e in progress:
        assert set(e["loss"]) == {"total", "video", "action"} and e["loss"]["video"] > 0
        assert e["samples_per_s"] > 0 and e["eta_s"] >= 0 and e["lr"] > 0
    assert progress[0]["lr"] > progress[-1]["lr"]  # the cosine decays
    cache_ready = next(e for e in lines if e["event"] == "cache_ready")
    assert cache_ready["built"] == 4 and cache_ready["hits"] == 0
    # The trainer keeps the same events in the run folder itself, whatever started it.
    logged = [json.loads(line) for line in (out / EVENTS_FILE).read_text().splitlines()]
    assert logged == lines and lines[0]["event"] == "started" and lines[0]["pid"] == os.getpid()

    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert checkpoints == ["step_00000003", "step_00000006"]
    for name in ("model.safetensors", "config.json", "normalization.json", "step.json", "training_state.pt", "trainer.json"):
        assert (out / "checkpoints" / "step_00000006" / name).is_file(), name
    # best/ is the checkpoint whose sampled chunks (the policy's own sampler, from noise) were
    # closest to the demonstrations, and validation.json says so with both measures.
    validations = [e for e in lines if e["event"] == "validation"]
    assert [e["selected_by"] for e in validations] == ["sampled_action_error"] * len(validations)
    for e in validations:
        sampled = e["sampled_action_error"]
        assert sampled["epe"] > 0 and len(sampled["mae"]) == len(sampled["bias"]) == 14
        assert all(m >= abs(b) for m, b in zip(sampled["mae"], sampled["bias"]))
    chosen = min(validations, key=lambda e: e["sampled_action_error"]["epe"])
    recorded = json.loads((out / "best" / "validation.json").read_text())
    assert recorded["step"] == chosen["step"] == summary["best_step"]
    assert recorded["sampled_action_error"] == chosen["sampled_action_error"] and recorded["val_loss"] == chosen["val_loss"]
    # What it was trained on, for the rig check (model/compatibility.py): our cameras as they are.
    inputs = json.loads((out / "best" / "inputs.json").read_text())
    assert inputs["cameras"] == {c: c for c in support.CAMERAS} and inputs["default_task"] is None
    assert inputs["image_sizes"] == {c: [[48, 64]] for c in support.CAMERAS} and inputs["tasks"] == ["fold the towel"]
    assert not any(e["event"] == "warning" for e in lines)  # every file names its task, one shape

    policy = FastWAMPolicy.from_checkpoint(out / "best", device="cpu")
    assert policy.config.action_horizon == 8 and policy.config.encoder.tasks == ("fold the towel",)
    images = {c: np.full((48, 64, 3), support.frame_value(5, k), np.uint8) for k, c in enumerate(support.CAMERAS)}
    chunk = policy.predict_chunk(PolicyInput(qpos=support.qpos_of(5), images=images, task="fold the towel"))
    assert chunk.shape == (8, 14) and np.isfinite(chunk).all()
    # De-normalised into the data's range (actions are ~1000 + step), not left z-scored.
    assert 900 < float(chunk.mean()) < 1100


def test_resume_after_cancel_or_crash_matches_the_uninterrupted_run(base_run, workspace, capsys, tmp_path):
    _, base_lines, base_out = base_run
    base_losses = _losses(base_lines)
    final = load_file(str(base_out / "checkpoints" / "step_00000006" / "model.safetensors"))

    # Cancel at step 4 (the same path as SIGTERM from the app): a checkpoint, exit 130, then --resume.
    out = tmp_path / "cancelled"
    args = _args(workspace["store"], out, workspace["cache"], "--vae-from", str(base_out))
    code, lines = _run(capsys, [*args, "--stop-after-steps", "4"])
    assert code == 130 and lines[-1]["event"] == "cancelled" and lines[-1]["step"] == 4
    code, lines = _run(capsys, args)
    assert code == 2 and lines[-1]["kind"] == "run_folder" and "--resume" in lines[-1]["message"]
    code, lines = _run(capsys, [*args, "--resume"])
    assert code == 0, lines[-1]
    assert next(e for e in lines if e["event"] == "resumed")["step"] == 4
    assert _losses(lines) == {s: base_losses[s] for s in (5, 6)}
    resumed = load_file(str(out / "checkpoints" / "step_00000006" / "model.safetensors"))
    assert resumed.keys() == final.keys()
    assert all(torch.equal(resumed[k], final[k]) for k in final), "weights differ from the uninterrupted run"

    # A crash after the step-3 checkpoint: whatever came later is lost; resuming redoes steps 4-6.
    crashed = tmp_path / "crashed"
    shutil.copytree(base_out, crashed)
    shutil.rmtree(crashed / "checkpoints" / "step_00000006")
    shutil.rmtree(crashed / "best")
    (crashed / "latest.json").unlink()
    code, lines = _run(capsys, [*_args(workspace["store"], crashed, workspace["cache"]), "--resume"])
    assert code == 0, lines[-1]
    assert _losses(lines) == {s: base_losses[s] for s in (4, 5, 6)}
    again = load_file(str(crashed / "checkpoints" / "step_00000006" / "model.safetensors"))
    assert all(torch.equal(again[k], final[k]) for k in final)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one_process(base_run, workspace, tmp_path, strategy):
    """torchrun --nproc-per-node 2 on gloo: DDP (tiny/small) and FSDP2 (the 5B's strategy) give
    the single-process losses and weights for the same global batch and seed."""
    _, base_lines, base_out = base_run
    out = tmp_path / strategy
    code, lines, stderr = support.run_train(
        _args(workspace["store"], out, workspace["cache"], "--vae-from", str(base_out), "--device", "cpu",
              "--strategy", strategy),
        torchrun=2, timeout_s=300)
    assert code == 0, stderr[-3000:]
    assert lines[-1]["event"] == "summary" and lines[-1]["rank"] == 0
    assert all(e.get("rank", 0) == 0 for e in lines)  # one voice on stdout
    logged = [json.loads(line) for line in (out / EVENTS_FILE).read_text().splitlines()]
    assert logged == lines  # rank 0 alone writes the run folder's events, each once
    ddp, single = _losses(lines), _losses(base_lines)
    assert ddp.keys() == single.keys()
    for step in single:
        np.testing.assert_allclose(ddp[step], single[step], rtol=1e-4, atol=1e-6, err_msg=f"step {step}")
    a = load_file(str(out / "checkpoints" / "step_00000006" / "model.safetensors"))
    b = load_file(str(base_out / "checkpoints" / "step_00000006" / "model.safetensors"))
    for key in b:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=lambda m: f"{key}: {m}")


def test_no_video_cotraining_switch(base_run, workspace, capsys, tmp_path):
    out = tmp_path / "novideo"
    code, lines = _run(capsys, _args(workspace["store"], out, workspace["cache"], "--vae-from", str(base_run[2]),
                                     "--no-video-cotraining", steps=2))
    assert code == 0, lines[-1]
    assert all(e["loss"]["video"] == 0.0 and e["loss"]["action"] > 0 for e in lines if e["event"] == "progress")
    assert next(e for e in lines if e["event"] == "cache_ready")["built"] == 0  # same encoder: all cached
    config = json.loads((out / "checkpoints" / "step_00000002" / "config.json").read_text())
    assert config["variant"] == "no_video_cotraining"


def test_fine_tuning_starts_from_a_fastwam_checkpoint_or_wan_weights(base_run, workspace, capsys, tmp_path):
    from safetensors.torch import save_file

    base_out = base_run[2]
    source = base_out / "checkpoints" / "step_00000006"
    start = load_file(str(source / "model.safetensors"))
    # A learning rate of ~0 leaves the weights where the initialisation put them.
    code, lines = _run(capsys, _args(workspace["store"], tmp_path / "ft", workspace["cache"], "--init-from-fastwam",
                                     str(source), "--lr", "1e-12", "--warmup-fraction", "0", steps=1))
    assert code == 0, lines[-1]
    assert next(e for e in lines if e["event"] == "initialised")["kind"] == "fastwam"
    assert next(e for e in lines if e["event"] == "autoencoder_ready")["source"] == str(source)  # its VAE, no stage 1
    after = load_file(str(tmp_path / "ft" / "checkpoints" / "step_00000001" / "model.safetensors"))
    for key in start:
        torch.testing.assert_close(after[key], start[key], atol=1e-6, rtol=0, msg=lambda m: f"{key}: {m}")

    # Wan2.2 DiT weights (original names, `model.` prefix) go into the video expert only.
    wan = {f"model.{k[len('mot.mixtures.video.'):]}": v for k, v in start.items() if k.startswith("mot.mixtures.video.")}
    save_file(wan, str(tmp_path / "wan_dit.safetensors"))
    code, lines = _run(capsys, _args(workspace["store"], tmp_path / "wan", workspace["cache"], "--vae-from", str(base_out),
                                     "--init-from-wan", str(tmp_path / "wan_dit.safetensors"), "--lr", "1e-12",
                                     "--warmup-fraction", "0", steps=1))
    assert code == 0, lines[-1]
    after = load_file(str(tmp_path / "wan" / "checkpoints" / "step_00000001" / "model.safetensors"))
    for key in (k for k in start if k.startswith("mot.mixtures.video.")):
        torch.testing.assert_close(after[key], start[key], atol=1e-6, rtol=0)
    code, lines = _run(capsys, _args(workspace["store"], tmp_path / "both", workspace["cache"], "--init-from-wan", "x",
                                     "--init-from-fastwam", str(source)))
    assert code == 2 and "exclude each other" in lines[-1]["message"]


def test_a_cancel_while_caching_stops_between_episodes_and_keeps_what_was_cached(base_run, workspace, capsys, tmp_path,
                                                                                 monkeypatch):
    from model import latent_cache

    real_encode = latent_cache.encode_episode
    encoded = []

    def encode_then_sigterm(*args, **kwargs):
        result = real_encode(*args, **kwargs)
        encoded.append(1)
        if len(encoded) == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # what the window's Cancel sends, mid-episode
        return result

    monkeypatch.setattr(latent_cache, "encode_episode", encode_then_sigterm)
    cache = tmp_path / "fresh_cache"
    args = _args(workspace["store"], tmp_path / "run", cache, "--vae-from", str(base_run[2]))
    code, lines = _run(capsys, args)
    assert code == 130 and lines[-1]["event"] == "cancelled", lines[-1]
    assert [e["event"] for e in lines].count("cache") == 1 and len(encoded) == 1
    assert "progress" not in [e["event"] for e in lines]
    code, lines = _run(capsys, args)  # started again: the cached episode is not encoded again
    assert code == 0, lines[-1]
    ready = next(e for e in lines if e["event"] == "cache_ready")
    assert ready["hits"] == 1 and ready["built"] >= 1 and len(encoded) == 1 + ready["built"]


def test_a_run_resumed_from_before_sampled_selection_keeps_comparing_fairly():
    """trainer.json of older runs keeps only the flow loss: a new validation is compared by that
    until a best with a score exists; then by the score."""
    from model.validation import ValidationResult, best_record, improves

    old = {"val_action_loss": 0.010, "step": 400}
    assert improves(old, ValidationResult((0.1, 0.09, 0.009), sampled_epe=0.5))
    assert not improves(old, ValidationResult((0.1, 0.09, 0.011), sampled_epe=0.1))
    best = best_record(ValidationResult((0.1, 0.09, 0.009), sampled_epe=0.5), 500)
    assert improves(best, ValidationResult((0.1, 0.09, 0.020), sampled_epe=0.4))  # lower error, higher loss
    assert not improves(best, ValidationResult((0.1, 0.09, 0.001), sampled_epe=0.6))
    assert improves({"val_action_loss": None, "step": None}, ValidationResult((1.0, 1.0, 1.0)))
