"""Fine-tune Fast-WAM on recorded episodes: `python run.py train ...` -> `main(argv) -> int`.

What a run does (each stage prints JSON lines on stdout, one object per line, `"event"` first):

1. select   episodes by label/task/list from store folders or files; split train/validation by
            episode (fixed by the file names); z-score statistics from the training episodes.
2. encoder  tiny/small: our causal video autoencoder is *pretrained first* on the training
            episodes' canvases (reconstruction), its latent statistics fitted, then frozen - as
            Fast-WAM freezes the Wan2.2 VAE. Training it jointly with the DiT would move the
            DiT's targets under it and make every epoch re-encode every frame. The result is
            kept in the run folder (`autoencoder/`), so a restarted run does not redo it, and
            `--vae-from` reuses another run's. fastwam-5b: the Wan2.2 VAE from `--wan-vae-dir`.
3. cache    every episode's latents, encoded once and kept on disk (`model.latent_cache`),
            keyed by the episode's frames and the encoder's weights.
4. train    AdamW (0.9, 0.95), cosine schedule with linear warm-up, gradient clipping, bf16
            autocast on CUDA, optional gradient checkpointing; validation on held-out
            episodes; checkpoints every N steps and at the end; the best by validation action
            loss in `best/`; a summary line at the end.

Determinism and resume: the samples of step s are a function of (seed, s) (`SampleStream`), and
so is every sample's noise and timestep (drawn from a generator seeded by (seed, s, position in
the global batch)). A resumed run therefore trains on exactly the batches and noise an
uninterrupted one would, and N processes under torchrun together see exactly the
single-process batch. The learning rate is a function of the step; the optimizer state and the
torch/numpy/python RNG states are saved with each checkpoint and restored.

Cancel (SIGTERM from the app's QProcess, or Ctrl-C): the current step finishes, a checkpoint is
written, `{"event": "cancelled"}` is printed and the exit code is 130; `--resume` continues.
Errors print `{"event": "error", "kind": ..., "message": ..., "what_to_do": ...}` and exit non-zero:
2 bad arguments, 3 unusable data, 4 model/checkpoint problem, 5 out of memory, 1 anything else.

Run folder (`--out`): run.json (arguments, episodes, model config), autoencoder/,
checkpoints/step_XXXXXXXX/ (our checkpoint format + training_state.pt + trainer.json),
latest.json, best/.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

from model import distributed as dist_utils
from model.checkpoint import (
    CONFIG_FILE,
    MODEL_FILE,
    NormStats,
    check_state_dict,
    load_checkpoint,
    load_released_checkpoint,
    load_wan_dit_into_video_expert,
    save_checkpoint,
)
from model.config import PRESETS, FastWAMConfig, get_preset
from model.data import (
    CanvasSpec,
    CorruptEpisode,
    DataError,
    EpisodeFilter,
    EpisodeInfo,
    EpisodeSource,
    NoEpisodesMatch,
    SampleStream,
    WindowDataset,
    WindowSpec,
    find_episodes,
    split_by_episode,
    video_to_model,
)
from model.distributed import DistContext
from model.encoders import CausalVideoAutoencoder, PrecomputedTextEmbeddings, TaskEmbedding, WanVideoEncoder
from model.errors import CheckpointError, ModelError, UnknownTask
from model.fastwam import FastWAM
from model.flow import shifted_sigma, training_loss
from model.latent_cache import CanvasCache, FramesKeyMemo, LatentCache, encoder_key, prune_cache
from model.normalization import DEFAULT_STD_FLOOR, compute_norm_stats
from recordings.errors import EpisodeFormatError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_EPISODES = REPO_ROOT / "recordings" / "episodes"
DEFAULT_CACHE = REPO_ROOT / "runs" / "latent_cache"
RUN_FILE = "run.json"
LATEST_FILE = "latest.json"
TRAINER_FILE = "trainer.json"
TRAINING_STATE_FILE = "training_state.pt"
AUTOENCODER_DIR = "autoencoder"
EXIT_CANCELLED = 130

# ------------------------------------------------------------------------------------------------
# Hyper-parameters
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainHyper:
    """Training hyper-parameters; each preset has its own (`TRAIN_PRESETS`), flags override them.

    lr/betas/weight_decay/warmup/grad_clip follow Fast-WAM (AdamW (0.9, 0.95), wd 1e-2, cosine
    with 5% warm-up, clip 1.0); tiny trains from scratch, so a higher lr.
    """

    steps: int
    batch_size: int
    lr: float
    weight_decay: float = 1e-2
    warmup_fraction: float = 0.05
    min_lr_fraction: float = 0.0  # the cosine ends at lr * this
    grad_clip: float = 1.0
    grad_checkpointing: bool = False
    val_fraction: float = 0.1
    val_every: int = 250
    val_samples: int = 256
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    # Stage 1 (tiny/small): the causal autoencoder.
    vae_steps: int = 0
    vae_batch_size: int = 8
    vae_lr: float = 1e-3

    def __post_init__(self) -> None:
        checks = [
            (self.steps >= 1, f"--steps must be >= 1, got {self.steps}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (math.isfinite(self.lr) and self.lr > 0, f"--lr must be a positive number (e.g. 1e-4), got {self.lr}"),
            (self.weight_decay >= 0, f"--weight-decay must be >= 0 (e.g. 0.01), got {self.weight_decay}"),
            (0 <= self.warmup_fraction < 1, f"--warmup-fraction must be within [0, 1) (e.g. 0.05), got {self.warmup_fraction}"),
            (0 <= self.min_lr_fraction <= 1, f"min_lr_fraction must be within [0, 1], got {self.min_lr_fraction}"),
            (self.grad_clip > 0, f"--grad-clip must be positive (e.g. 1.0), got {self.grad_clip}"),
            (0 <= self.val_fraction < 1, f"--val-fraction must be within [0, 1) (e.g. 0.1), got {self.val_fraction}"),
            (self.val_every >= 1 and self.checkpoint_every >= 1 and self.log_every >= 1,
             "--val-every, --checkpoint-every and --log-every must be >= 1"),
            (self.val_samples >= 1, f"--val-samples must be >= 1, got {self.val_samples}"),
            (self.keep_checkpoints >= 1, f"--keep-checkpoints must be >= 1, got {self.keep_checkpoints}"),
            (self.vae_steps >= 0 and self.vae_batch_size >= 1 and self.vae_lr > 0,
             "--vae-steps must be >= 0, --vae-batch-size >= 1 and --vae-lr positive"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def lr_at(self, step: int) -> float:
        """Learning rate of optimizer step `step` (0-based): linear warm-up, then cosine."""
        warmup = int(round(self.warmup_fraction * self.steps))
        if warmup and step < warmup:
            return self.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, self.steps - warmup)
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return self.lr * (self.min_lr_fraction + (1.0 - self.min_lr_fraction) * cosine)


TRAIN_PRESETS: dict[str, TrainHyper] = {
    # The 2-core CPU, one thread: a step at batch 32 takes ~1 s with the machine to itself and
    # 3-4 s when other jobs load it (0.2-0.7 s without video co-training). Measured on 60 sim
    # demonstrations (load 3-5): canvases + autoencoder 2 min, latent cache 1.8 min, 1500 steps
    # at 0.84 s (1.8 epochs), 32 min in all; without video co-training 8 min.
    "tiny": TrainHyper(steps=1500, batch_size=32, lr=5e-4, val_every=100, checkpoint_every=100,
                       vae_steps=400, vae_batch_size=8, vae_lr=1e-3),
    "small": TrainHyper(steps=30000, batch_size=16, lr=2e-4, val_every=1000, checkpoint_every=2000,
                        vae_steps=5000, vae_batch_size=16, vae_lr=5e-4),
    # Fast-WAM's fine-tuning recipe (per-GPU batch 16 with torchrun; global = 16 x GPUs).
    "fastwam-5b": TrainHyper(steps=20000, batch_size=16, lr=1e-4, grad_checkpointing=True, val_every=1000,
                             checkpoint_every=1000, vae_steps=0),
}

# ------------------------------------------------------------------------------------------------
# Errors and output
# ------------------------------------------------------------------------------------------------


class UsageError(ValueError):
    """A flag is wrong or missing; the message says which and how to fix it."""


class RunFolderError(DataError):
    """The run folder does not fit what was asked (e.g. checkpoints there but no --resume)."""


class Emitter:
    """JSON lines on stdout (progress from rank 0 only; errors from any rank)."""

    def __init__(self, ctx: DistContext | None = None, stream=None):
        self.ctx = ctx
        self.stream = stream

    def __call__(self, event: str, force: bool = False, **fields: Any) -> None:
        if not force and self.ctx is not None and not self.ctx.is_main:
            return
        record = {"event": event, **fields}
        if self.ctx is not None and self.ctx.distributed:
            record["rank"] = self.ctx.rank
        stream = self.stream or sys.stdout
        stream.write(json.dumps(record, default=_json_default) + "\n")
        stream.flush()


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _r(value: float, digits: int = 6) -> float:
    return float(f"{value:.{digits}g}") if math.isfinite(value) else value


# ------------------------------------------------------------------------------------------------
# Arguments
# ------------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # noqa: D401 - argparse's hook
        raise UsageError(f"{message} (see `python run.py train --help`)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python run.py train",
        description="Fine-tune Fast-WAM on recorded episodes. Progress is printed as JSON lines.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = p.add_argument_group("data")
    data.add_argument("--episodes", nargs="+", default=[str(DEFAULT_EPISODES)],
                      help="store folders and/or episode files")
    data.add_argument("--labels", default=None,
                      help="comma-separated labels to use (default: success, plus unlabelled ALOHA/ACT files)")
    data.add_argument("--task", action="append", default=[], help="only episodes of this task (repeatable)")
    data.add_argument("--include", nargs="+", default=[], help="only these episodes (names or paths)")
    data.add_argument("--exclude", nargs="+", default=[], help="leave these episodes out (names or paths)")
    data.add_argument("--control-sources", default=None,
                      help="train only on steps from these comma-separated control sources, e.g. teleop,intervention "
                           "for the corrections made in policy episodes (DAgger); default: every step")
    data.add_argument("--default-task", default=None,
                      help="task of files that name none (ALOHA/ACT); default: the preset's first task")
    data.add_argument("--camera-map", nargs="+", default=[], metavar="CANVAS=EPISODE",
                      help="read a canvas camera from another episode camera, e.g. cam_high=top")
    data.add_argument("--val-fraction", type=float, default=None, help="share of episodes held out for validation")
    data.add_argument("--val-samples", type=int, default=None, help="validation windows evaluated each time")
    data.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help="where encoded latents are kept")
    data.add_argument("--cache-max-gb", type=float, default=50.0,
                      help="keep the cache under this size, removing the least recently used entries of other "
                           "episodes and encoders after the cache stage (0: never remove)")
    data.add_argument("--workers", type=int, default=None, help="data loader processes (default: 0 on CPU, 4 on GPU)")
    data.add_argument("--std-floor", type=float, default=DEFAULT_STD_FLOOR, help="smallest std used to z-score a joint")

    model = p.add_argument_group("model")
    model.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    model.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a model config field, e.g. num_layers=2 or video.hidden_dim=128 (JSON values)")
    model.add_argument("--variant", choices=("fastwam", "joint", "no_video_cotraining"), default=None)
    model.add_argument("--no-video-cotraining", action="store_true",
                       help="ablation: train on the action loss only (same as --variant no_video_cotraining)")
    model.add_argument("--init-from-fastwam", default=None, metavar="PATH",
                       help="start from a Fast-WAM checkpoint: the released training file or one of our folders")
    model.add_argument("--init-from-wan", default=None, metavar="PATH",
                       help="start the video expert from Wan2.2-TI2V-5B DiT weights (safetensors file/folder); "
                            "the action expert is interpolated from it")
    model.add_argument("--wan-vae-dir", default=None, help="local Wan2.2-TI2V-5B folder (fastwam-5b: the VAE)")
    model.add_argument("--text-embeddings", default=None, help="precomputed umT5 task embeddings (fastwam-5b)")
    model.add_argument("--vae-from", default=None, metavar="PATH",
                       help="reuse a trained autoencoder: a run folder, its autoencoder/ folder or a checkpoint")

    opt = p.add_argument_group("optimisation (defaults from the preset)")
    opt.add_argument("--steps", type=int, default=None)
    opt.add_argument("--batch-size", type=int, default=None, help="global batch (split over torchrun processes)")
    opt.add_argument("--lr", type=float, default=None)
    opt.add_argument("--weight-decay", type=float, default=None)
    opt.add_argument("--warmup-fraction", type=float, default=None)
    opt.add_argument("--grad-clip", type=float, default=None)
    opt.add_argument("--grad-checkpointing", action=argparse.BooleanOptionalAction, default=None)
    opt.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                     help="auto = bf16 autocast on CUDA, fp32 on CPU")
    opt.add_argument("--vae-steps", type=int, default=None)
    opt.add_argument("--vae-batch-size", type=int, default=None)
    opt.add_argument("--vae-lr", type=float, default=None)
    opt.add_argument("--seed", type=int, default=0)

    run = p.add_argument_group("run")
    run.add_argument("--out", default=None, help="run folder (default: runs/<preset>-<date-time>)")
    run.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    run.add_argument("--checkpoint-every", type=int, default=None)
    run.add_argument("--keep-checkpoints", type=int, default=None)
    run.add_argument("--val-every", type=int, default=None)
    run.add_argument("--log-every", type=int, default=None)
    run.add_argument("--stop-after-steps", type=int, default=None,
                     help="stop (like a cancel, with a checkpoint) once this step is reached")
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    run.add_argument("--threads", type=int, default=0, help="torch CPU threads per process (0 = torch's default)")
    run.add_argument("--strategy", choices=("auto", "ddp", "fsdp"), default="auto",
                     help="under torchrun: ddp (tiny/small) or fsdp (fastwam-5b) by default")
    return p


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """["num_layers=2", "video.hidden_dim=64"] -> nested dict; values are JSON (else strings)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set takes KEY=VALUE, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def apply_overrides(config: FastWAMConfig, overrides: dict[str, Any]) -> FastWAMConfig:
    """The config with fields replaced; unknown keys and invalid values raise UsageError."""
    data = config.to_dict()

    def merge(base: dict, new: dict, prefix: str) -> None:
        for key, value in new.items():
            if key not in base:
                raise UsageError(f"--set {prefix}{key}: no such config field; known: {sorted(base)}")
            if isinstance(value, dict):
                if not isinstance(base[key], dict):
                    raise UsageError(f"--set {prefix}{key} is not a group of fields")
                merge(base[key], value, f"{prefix}{key}.")
            else:
                base[key] = value

    merge(data, overrides, "")
    try:
        return FastWAMConfig.from_dict(data)
    except (TypeError, ValueError) as error:
        raise UsageError(f"--set gives an invalid model config: {error}") from error


def hyper_from_args(args: argparse.Namespace) -> TrainHyper:
    base = TRAIN_PRESETS[args.preset]
    fields = {
        "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "weight_decay": args.weight_decay,
        "warmup_fraction": args.warmup_fraction, "grad_clip": args.grad_clip,
        "grad_checkpointing": args.grad_checkpointing, "val_fraction": args.val_fraction,
        "val_every": args.val_every, "val_samples": args.val_samples, "checkpoint_every": args.checkpoint_every,
        "keep_checkpoints": args.keep_checkpoints, "log_every": args.log_every, "vae_steps": args.vae_steps,
        "vae_batch_size": args.vae_batch_size, "vae_lr": args.vae_lr,
    }
    try:
        return dataclasses.replace(base, **{k: v for k, v in fields.items() if v is not None})
    except ValueError as error:
        raise UsageError(str(error)) from error


def _camera_map(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in items:
        canvas, sep, source = item.partition("=")
        if not sep or not canvas or not source:
            raise UsageError(f"--camera-map takes CANVAS=EPISODE camera names, e.g. cam_high=top; got {item!r}")
        out[canvas] = source
    return out


# ------------------------------------------------------------------------------------------------
# The trainable part, as DDP/FSDP see it
# ------------------------------------------------------------------------------------------------


class TrainModule(nn.Module):
    """The network plus the trainable text side; forward returns the losses (total, video, action).

    text: a learned `TaskEmbedding` (tiny/small, trained) or precomputed umT5 contexts (frozen,
    held as buffers indexed by task).
    """

    def __init__(self, fastwam: FastWAM, tasks: Sequence[str], text: TaskEmbedding | PrecomputedTextEmbeddings):
        super().__init__()
        self.fastwam = fastwam
        self.tasks = list(tasks)
        if isinstance(text, TaskEmbedding):
            self.task_embedding = text
        else:
            self.task_embedding = None
            ctx, mask = text(self.tasks)
            self.register_buffer("context_table", ctx, persistent=False)  # (n_tasks, L, text_dim)
            self.register_buffer("context_mask", mask, persistent=False)  # (n_tasks, L)

    def context(self, task: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """task (B,) int64 -> context (B, L, text_dim), mask (B, L)."""
        if self.task_embedding is not None:
            return self.task_embedding([self.tasks[i] for i in task.tolist()])
        return self.context_table[task], self.context_mask[task]

    def forward(self, latents, proprio, action, action_is_pad, image_is_pad, task, noise_video, noise_action,
                t_video, t_action) -> torch.Tensor:
        ctx, mask = self.context(task)
        out = training_loss(self.fastwam, latents, ctx, mask, proprio, action, action_is_pad=action_is_pad,
                            image_is_pad=image_is_pad, noise_video=noise_video, noise_action=noise_action,
                            t_video=t_video, t_action=t_action)
        return torch.stack([out.total, out.video.to(out.total.dtype), out.action])


def sample_draws(config: FastWAMConfig, seed: int, step: int, positions: Sequence[int],
                 latent_shape: tuple[int, ...], action_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """Noise and timesteps of the samples at `positions` of the global batch of `step`: each from
    its own generator seeded by (seed, step, position), so they do not depend on how the batch
    is split over processes or where a run was resumed."""
    nv, na, tv, ta = [], [], [], []
    for pos in positions:
        digest = hashlib.sha256(f"{seed}:{step}:{pos}".encode()).digest()
        g = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
        u = torch.rand(2, generator=g)
        nv.append(torch.randn(latent_shape, generator=g))
        na.append(torch.randn(action_shape, generator=g))
        tv.append(u[0])
        ta.append(u[1])
    scale = float(config.num_train_timesteps)
    return {
        "noise_video": torch.stack(nv), "noise_action": torch.stack(na),
        "t_video": shifted_sigma(torch.stack(tv), config.shift) * scale,
        "t_action": shifted_sigma(torch.stack(ta), config.shift) * scale,
    }


class _StateView:
    """Something with `state_dict()` for `save_checkpoint`: a slice of a (gathered) state dict."""

    def __init__(self, state: dict[str, torch.Tensor], prefix: str):
        self._state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._state


class _StepBatches(torch.utils.data.Sampler):
    """Batch sampler: the index lists of steps [start, stop) for this rank (see SampleStream)."""

    def __init__(self, stream: SampleStream, start: int, stop: int, global_batch: int, ctx: DistContext):
        self.stream, self.start, self.stop, self.global_batch, self.ctx = stream, start, stop, global_batch, ctx

    def __iter__(self):
        for step in range(self.start, self.stop):
            yield self.stream.batch(step, self.global_batch, self.ctx.rank, self.ctx.world_size).tolist()

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


# ------------------------------------------------------------------------------------------------
# Small file helpers
# ------------------------------------------------------------------------------------------------


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=1, default=_json_default)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run folder (one whose trainer.json was written)."""
    pointer = run_dir / LATEST_FILE
    candidates = []
    if pointer.is_file():
        try:
            candidates.append(run_dir / json.loads(pointer.read_text())["path"])
        except (json.JSONDecodeError, KeyError):
            pass
    folder = run_dir / "checkpoints"
    if folder.is_dir():
        candidates += sorted(folder.glob("step_*"), reverse=True)
    complete = [c for c in candidates if (c / TRAINER_FILE).is_file() and (c / MODEL_FILE).is_file()]
    if not complete:
        return None
    return max(complete, key=lambda c: json.loads((c / TRAINER_FILE).read_text())["step"])


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint folder, or a run folder (-> best/ if there, else the latest checkpoint)."""
    path = Path(path)
    if (path / CONFIG_FILE).is_file() and (path / MODEL_FILE).is_file():
        return path
    if (path / "best" / MODEL_FILE).is_file():
        return path / "best"
    latest = latest_checkpoint(path)
    if latest is None:
        raise CheckpointError(path, "it is neither a checkpoint folder nor a run folder with checkpoints",
                              "Point to a run folder (runs/...) or one of its checkpoints/step_* folders.")
    return latest


def _rng_states() -> dict[str, Any]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def _restore_rng(states: dict[str, Any], torch_state: torch.Tensor | None, cuda_states) -> None:
    n = states["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    p = states["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    if torch_state is not None:
        torch.set_rng_state(torch_state)
    if cuda_states is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)


# ------------------------------------------------------------------------------------------------
# Stage 2: the autoencoder
# ------------------------------------------------------------------------------------------------


def save_autoencoder(folder: Path, vae: CausalVideoAutoencoder, meta: dict) -> None:
    from safetensors.torch import save_file

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in vae.state_dict().items()}, str(tmp / "vae.safetensors"))
    _write_json(tmp / "autoencoder.json", meta)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def load_autoencoder(path: str | os.PathLike, config: FastWAMConfig) -> CausalVideoAutoencoder:
    """From a run folder, its autoencoder/ folder, or a checkpoint folder (tensors `vae.*`)."""
    from safetensors import safe_open

    path = Path(path)
    vae = CausalVideoAutoencoder(config.video.in_dim, config.encoder.vae_channels)
    for candidate in (path / AUTOENCODER_DIR / "vae.safetensors", path / "vae.safetensors"):
        if candidate.is_file():
            from safetensors.torch import load_file

            state = load_file(str(candidate))
            break
    else:
        ckpt = path / MODEL_FILE if (path / MODEL_FILE).is_file() else resolve_checkpoint(path) / MODEL_FILE
        with safe_open(str(ckpt), framework="pt") as handle:
            state = {k[len("vae."):]: handle.get_tensor(k) for k in handle.keys() if k.startswith("vae.")}
        if not state:
            raise CheckpointError(ckpt, "it holds no autoencoder (vae.*) tensors",
                                  "Pass a run folder or a tiny/small checkpoint to --vae-from.")
        candidate = ckpt
    check_state_dict(candidate, vae.state_dict(), state, "this preset's causal autoencoder")
    vae.load_state_dict(state)
    return vae


def pretrain_autoencoder(
    vae: CausalVideoAutoencoder,
    episodes: Sequence[EpisodeInfo],
    canvases: Sequence,
    canvas: CanvasSpec,
    window: WindowSpec,
    hyper: TrainHyper,
    seed: int,
    device: torch.device,
    workers: int,
    emit: Emitter,
    cancelled: Callable[[], bool],
) -> dict:
    """Stage 1: train the autoencoder to reconstruct training clips (the first 5 frames of the
    windows the DiT will see), then fit its per-channel latent statistics on whole windows. Returns a summary for the run folder.
    canvases: each episode's cached canvases (or None to decode its frames for every clip)."""
    dataset = WindowDataset([EpisodeSource(info, 0, canvases=c) for info, c in zip(episodes, canvases)], window,
                            canvas, mode="frames")
    stream = SampleStream(len(dataset), seed + 7919)  # its own order, not the DiT's
    steps, batch = hyper.vae_steps, hyper.vae_batch_size
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=_StepBatches(stream, 0, steps, batch, DistContext()),
                                         num_workers=workers, persistent_workers=False)
    vae.to(device).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=hyper.vae_lr, betas=(0.9, 0.95), weight_decay=0.0)
    schedule = dataclasses.replace(hyper, steps=max(1, steps), lr=hyper.vae_lr, min_lr_fraction=0.1)
    started = time.monotonic()
    window_loss, window_n, last_log = 0.0, 0, started
    loss_value = float("nan")
    for step, item in enumerate(loader):
        for group in opt.param_groups:
            group["lr"] = schedule.lr_at(step)
        # The current frame's group and the first future group: the two kinds of group the DiT
        # sees, for 2/3 of the price of the whole 9-frame window.
        video = video_to_model(item["video"][:, : 1 + window.temporal_compression]).to(device)
        loss = vae.reconstruction_loss(video)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        loss_value = float(loss.item())
        window_loss += loss_value
        window_n += 1
        if (step + 1) % hyper.log_every == 0 or step + 1 == steps:
            now = time.monotonic()
            rate = window_n * batch / max(1e-9, now - last_log)
            emit("autoencoder", step=step + 1, steps=steps, loss=_r(window_loss / window_n), samples_per_s=_r(rate, 4),
                 eta_s=round((steps - step - 1) * batch / max(rate, 1e-9), 1))
            window_loss, window_n, last_log = 0.0, 0, now
        if cancelled():
            raise KeyboardInterrupt
    # Latent statistics from a fixed sample of training windows.
    vae.eval()
    picks = np.linspace(0, len(dataset) - 1, num=min(len(dataset), 64)).astype(int)
    clips = torch.stack([dataset[int(i)]["video"] for i in picks])
    vae.fit_latent_stats(video_to_model(clips).to(device))
    dataset.close()
    return {"steps": steps, "batch_size": batch, "final_loss": loss_value, "seconds": round(time.monotonic() - started, 1),
            "episodes": [info.name for info in episodes]}


# ------------------------------------------------------------------------------------------------
# The trainer
# ------------------------------------------------------------------------------------------------


class Trainer:
    """One training run; `run()` returns the exit code. Owns the process's main thread."""

    def __init__(self, args: argparse.Namespace, emit: Emitter):
        self.args = args
        self.emit = emit
        self.hyper = hyper_from_args(args)
        self._cancel = threading.Event()

    # -- cancel -------------------------------------------------------------------------------
    def request_cancel(self, *_: Any) -> None:
        self._cancel.set()

    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def _cache_progress(self, progress: dict) -> None:
        """Report one cached episode; a cancel stops here, between episodes (each cache entry is
        written whole, so what was cached is kept for the next start)."""
        self.emit("cache", **progress)
        if self.cancelled():
            raise KeyboardInterrupt

    # -- stages -------------------------------------------------------------------------------
    def run(self) -> int:
        args, hyper = self.args, self.hyper
        ctx = self.ctx = dist_utils.init_distributed(None if args.device == "auto" else args.device)
        self.emit.ctx = ctx
        try:
            return self._run(ctx, args, hyper)
        finally:
            dist_utils.shutdown(ctx)

    def _run(self, ctx: DistContext, args: argparse.Namespace, hyper: TrainHyper) -> int:
        started = time.monotonic()
        if args.threads > 0:
            torch.set_num_threads(args.threads)
        if args.init_from_fastwam and args.init_from_wan:
            raise UsageError("--init-from-fastwam and --init-from-wan exclude each other: the Fast-WAM checkpoint "
                             "already contains a video expert")
        for flag, value in (("--init-from-fastwam", args.init_from_fastwam), ("--init-from-wan", args.init_from_wan),
                            ("--vae-from", args.vae_from)):
            if value and not Path(value).exists():
                raise UsageError(f"{flag} {value}: no such file or folder")
        if args.cache_max_gb < 0:
            raise UsageError(f"--cache-max-gb must be 0 (never remove) or a size in GB, got {args.cache_max_gb}")
        if hyper.batch_size % ctx.world_size:
            raise UsageError(f"--batch-size {hyper.batch_size} must divide evenly over {ctx.world_size} processes")
        run_dir = Path(args.out) if args.out else REPO_ROOT / "runs" / f"{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir = self.run_dir = Path(dist_utils.broadcast_object(ctx, str(run_dir)))
        resume_from = latest_checkpoint(run_dir)
        if resume_from is not None and not args.resume:
            raise RunFolderError(f"{run_dir} already holds checkpoints (latest {resume_from.name}); pass --resume to "
                                 "continue that run, or choose a new --out folder")
        random.seed(args.seed)
        np.random.seed(args.seed)
        torch.manual_seed(args.seed)

        # 1. Episodes, split, statistics, model config.
        config = apply_overrides(get_preset(args.preset), parse_overrides(args.overrides))
        variant = "no_video_cotraining" if args.no_video_cotraining else (args.variant or config.variant)
        if args.no_video_cotraining and args.variant not in (None, "no_video_cotraining"):
            raise UsageError("--no-video-cotraining contradicts --variant " + args.variant)
        config = config.replace(variant=variant)
        canvas = CanvasSpec.from_config(config, _camera_map(args.camera_map))
        window = WindowSpec.from_config(config)
        default_task = args.default_task or (config.encoder.tasks[0] if config.encoder.tasks else "")
        labels = tuple(x.strip() for x in args.labels.split(",") if x.strip()) if args.labels else None
        sources = tuple(x.strip() for x in args.control_sources.split(",") if x.strip()) if args.control_sources else ()
        try:
            flt = EpisodeFilter(labels=labels, tasks=tuple(args.task), include=tuple(args.include),
                                exclude=tuple(args.exclude), control_sources=sources)
        except ValueError as error:
            raise UsageError(f"--labels/--control-sources: {error}") from None
        self.emit("stage", stage="select", message="finding episodes")
        episodes = find_episodes(args.episodes, flt, default_task, cameras=canvas.source_cameras)
        train_eps, val_eps = split_by_episode(episodes, hyper.val_fraction)
        tasks = list(config.encoder.tasks)
        tasks += sorted({e.task for e in episodes} - set(tasks))
        if config.encoder.text == "learned":
            config = config.replace(encoder=dataclasses.replace(config.encoder, tasks=tuple(tasks)))
        norm = compute_norm_stats([e.path for e in train_eps], std_floor=args.std_floor)
        run_record = {
            "format": 1, "preset": args.preset, "config": config.to_dict(), "hyper": dataclasses.asdict(hyper),
            "seed": args.seed, "world_size": ctx.world_size, "tasks": tasks,
            "train": [str(e.path) for e in train_eps], "val": [str(e.path) for e in val_eps],
            "argv": list(self.argv),
        }
        run_record = json.loads(json.dumps(run_record, default=_json_default))  # tuples -> lists, as on disk
        if resume_from is not None:
            self._check_resumable(run_dir, run_record)
        elif args.resume:
            self.emit("note", message=f"--resume: {run_dir} has no checkpoint yet, so training starts from step 0")
        self.emit("episodes", train=len(train_eps), val=len(val_eps), train_steps=sum(e.sample_count for e in train_eps),
                  val_steps=sum(e.sample_count for e in val_eps), tasks=tasks, variant=variant,
                  val_names=[e.name for e in val_eps])

        # 2. The video encoder (frozen from here on) and the text side.
        self.memo = FramesKeyMemo(Path(args.cache_dir))
        self.canvases = None
        video_encoder = self._video_encoder(ctx, config, args, hyper, run_dir, train_eps, canvas, window, resume_from)
        text = self._text_side(config, args, tasks)

        # 3. Latents of every episode, each rank encoding its share.
        self.emit("stage", stage="cache", message="encoding episodes (cached after the first time)")
        cache = LatentCache(args.cache_dir, encoder_key(video_encoder, canvas, window), self.memo)
        everything = list(train_eps) + list(val_eps)
        canvases = list(self.canvases) + [None] * len(val_eps) if self.canvases else None
        _, mine = cache.ensure(everything, video_encoder, canvas, window, ctx.device, share=(ctx.rank, ctx.world_size),
                               progress=self._cache_progress, canvases=canvases)
        dist_utils.barrier(ctx)
        entries, _ = cache.ensure(everything, video_encoder, canvas, window, ctx.device)
        built = int(dist_utils.all_reduce_sum(ctx, torch.tensor([float(mine.built)], device=ctx.device)).item())
        self.emit("cache_ready", folder=str(cache.folder), built=built, hits=len(everything) - built,
                  seconds=round(mine.seconds, 1))
        if ctx.is_main and args.cache_max_gb > 0:
            in_use = [e.path for e in entries if e is not None]
            in_use += [c.path for c in (self.canvases or []) if c is not None]
            pruned = prune_cache(args.cache_dir, int(args.cache_max_gb * 1e9), in_use)
            if pruned.removed:
                self.emit("cache_pruned", removed=pruned.removed, freed_gb=round(pruned.freed_bytes / 1e9, 3),
                          kept_gb=round(pruned.kept_bytes / 1e9, 3), max_gb=args.cache_max_gb)
        task_index = {t: i for i, t in enumerate(tasks)}
        sources = [EpisodeSource(info, task_index[info.task], entry) for info, entry in zip(everything, entries)]
        train_ds = WindowDataset(sources[: len(train_eps)], window, norm_stats=norm, mode="latents")
        val_ds = WindowDataset(sources[len(train_eps):], window, norm_stats=norm, mode="latents") if val_eps else None

        # 4. The network, its initialisation, the optimizer, and the resume state.
        torch.manual_seed(args.seed)  # the same initial weights whatever ran before (e.g. stage 1 on rank 0)
        fastwam = FastWAM(config)
        self._initialise(fastwam, args, config, text, tasks)
        fastwam.gradient_checkpointing = hyper.grad_checkpointing
        module = TrainModule(fastwam, tasks, text).to(ctx.device)
        start_step, best = 0, {"val_action_loss": None, "step": None}
        trainer_state = None
        if resume_from is not None:
            start_step, best, trainer_state = self._load_weights(module, resume_from)
        strategy = dist_utils.default_strategy(args.preset) if args.strategy == "auto" else args.strategy
        use_bf16 = args.precision == "bf16" or (args.precision == "auto" and ctx.device.type == "cuda")
        if use_bf16 and ctx.device.type != "cuda":
            raise UsageError("--precision bf16 needs a CUDA GPU (bf16 on this CPU is slower than fp32); use --precision fp32")
        wrapped = dist_utils.wrap_model(module, ctx, strategy, find_unused_parameters=(variant == "no_video_cotraining"),
                                        bf16=use_bf16 and strategy == "fsdp")
        optimizer = self._optimizer(wrapped, hyper)
        if trainer_state is not None:
            dist_utils.load_optimizer_state(wrapped, optimizer, trainer_state["optimizer"])
            _restore_rng(json.loads((resume_from / TRAINER_FILE).read_text())["rng"], trainer_state.get("torch_rng"),
                         trainer_state.get("cuda_rng"))
            self.emit("resumed", step=start_step, checkpoint=str(resume_from))
        if ctx.is_main:
            _write_json(run_dir / RUN_FILE, run_record)

        return self._train_loop(ctx, wrapped, module, optimizer, config, hyper, norm, video_encoder, train_ds, val_ds,
                                run_dir, start_step, best, use_bf16, started, tasks)

    # -- stage helpers --------------------------------------------------------------------------
    argv: Sequence[str] = ()

    def _check_resumable(self, run_dir: Path, record: dict) -> None:
        try:
            saved = json.loads((run_dir / RUN_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError) as error:
            raise RunFolderError(f"{run_dir / RUN_FILE} is missing or damaged ({error}); the run cannot be resumed "
                                 "exactly - start a new run with another --out") from None
        for key, what in (("train", "training episodes"), ("val", "validation episodes"), ("config", "model config"),
                          ("seed", "seed"), ("world_size", "number of processes")):
            if saved.get(key) != record[key]:
                raise RunFolderError(
                    f"cannot resume {run_dir}: the {what} differ from when the run started; resume with the same "
                    "episodes and flags (and the same torchrun process count), or start a new run with another --out")
        for key in ("batch_size", "steps", "lr", "weight_decay", "warmup_fraction", "grad_clip"):
            if saved["hyper"].get(key) != record["hyper"][key]:
                raise RunFolderError(f"cannot resume {run_dir}: {key} was {saved['hyper'].get(key)} and is now "
                                     f"{record['hyper'][key]}; pass the original value or start a new run")

    def _video_encoder(self, ctx, config, args, hyper, run_dir, train_eps, canvas, window, resume_from) -> nn.Module:
        if config.encoder.vae == "wan2.2":
            if not args.wan_vae_dir:
                raise UsageError("the fastwam-5b preset encodes frames with the Wan2.2 VAE: pass --wan-vae-dir "
                                 "(the local Wan2.2-TI2V-5B folder)")
            return WanVideoEncoder.from_pretrained(args.wan_vae_dir, device=ctx.device)
        folder = run_dir / AUTOENCODER_DIR
        if (folder / "vae.safetensors").is_file():
            vae = load_autoencoder(folder, config)
            self.emit("autoencoder_ready", source=str(folder), trained=False)
        elif args.vae_from:
            vae = load_autoencoder(args.vae_from, config)
            self.emit("autoencoder_ready", source=str(args.vae_from), trained=False)
        elif args.init_from_fastwam and Path(args.init_from_fastwam).is_dir() and _has_vae(args.init_from_fastwam):
            vae = load_autoencoder(args.init_from_fastwam, config)
            self.emit("autoencoder_ready", source=str(args.init_from_fastwam), trained=False)
        else:
            if hyper.vae_steps < 1:
                raise UsageError("this preset's autoencoder must be trained first: set --vae-steps (e.g. 600) or "
                                 "reuse one with --vae-from RUN_FOLDER")
            # Canvases decoded once for the autoencoder's many clips (each rank decodes its share).
            self.emit("stage", stage="canvases", message="decoding the training episodes' frames once")
            canvas_cache = CanvasCache(args.cache_dir, canvas, self.memo)
            canvas_cache.ensure(train_eps, share=(ctx.rank, ctx.world_size), progress=self._cache_progress)
            dist_utils.barrier(ctx)
            self.canvases, _ = canvas_cache.ensure(train_eps)
            if ctx.is_main:
                self.emit("stage", stage="autoencoder", message=f"pretraining the video autoencoder ({hyper.vae_steps} steps)")
                torch.manual_seed(args.seed + 1)
                vae = CausalVideoAutoencoder(config.video.in_dim, config.encoder.vae_channels)
                workers = self._workers(ctx)
                meta = pretrain_autoencoder(vae, train_eps, self.canvases, canvas, window, hyper, args.seed, ctx.device,
                                            workers, self.emit, self.cancelled)
                save_autoencoder(folder, vae.cpu(), meta)
                self.emit("autoencoder_ready", source=str(folder), trained=True, loss=_r(meta["final_loss"]),
                          seconds=meta["seconds"])
            dist_utils.barrier(ctx)
            vae = load_autoencoder(folder, config)
        return vae.to(ctx.device).eval().requires_grad_(False)

    def _text_side(self, config, args, tasks):
        if config.encoder.text == "learned":
            torch.manual_seed(args.seed + 2)
            return TaskEmbedding(tasks, config.encoder.tokens_per_task, config.text_dim)
        if not args.text_embeddings:
            raise UsageError("the fastwam-5b preset reads precomputed umT5 task embeddings: pass --text-embeddings FILE")
        table = PrecomputedTextEmbeddings.load(args.text_embeddings)
        missing = [t for t in tasks if t not in table.table]
        if missing:
            raise UnknownTask(missing[0], sorted(table.table), "Precompute the umT5 embedding of every task in the "
                              "episodes and add it to the --text-embeddings file.")
        return table

    def _initialise(self, fastwam: FastWAM, args, config, text, tasks) -> None:
        if args.init_from_fastwam:
            path = Path(args.init_from_fastwam)
            if path.is_dir():
                loaded = load_checkpoint(path)
                check_state_dict(path, fastwam.state_dict(), loaded.model.state_dict(), f"a {config.name} Fast-WAM")
                fastwam.load_state_dict(loaded.model.state_dict())
                emb = loaded.extra_state.get("task_embedding")
                if emb is not None and isinstance(text, TaskEmbedding):
                    # Rows by task name: tasks new to this run keep their fresh init.
                    with torch.no_grad():
                        old = emb["embedding.weight"]
                        for i, task in enumerate(loaded.config.encoder.tasks):
                            if task in tasks and old.shape[1] == text.embedding.weight.shape[1]:
                                text.embedding.weight[tasks.index(task)] = old[i]
            else:
                released, _ = load_released_checkpoint(path, config)
                fastwam.load_state_dict(released.state_dict())
            self.emit("initialised", source=str(path), kind="fastwam")
        elif args.init_from_wan:
            load_wan_dit_into_video_expert(fastwam, args.init_from_wan)
            self.emit("initialised", source=str(args.init_from_wan), kind="wan2.2")

    def _load_weights(self, module: TrainModule, checkpoint: Path):
        from safetensors.torch import load_file

        tensors = load_file(str(checkpoint / MODEL_FILE))
        state = {f"fastwam.{k}": v for k, v in tensors.items() if k.split(".", 1)[0] in ("mot", "proprio_encoder")}
        if module.task_embedding is not None:
            state.update({f"task_embedding.{k[len('task_embedding.'):]}": v for k, v in tensors.items()
                          if k.startswith("task_embedding.")})
        check_state_dict(checkpoint, module.state_dict(), state, "this run's model")
        module.load_state_dict(state)
        trainer = json.loads((checkpoint / TRAINER_FILE).read_text())
        training_state = torch.load(checkpoint / TRAINING_STATE_FILE, map_location="cpu", weights_only=True)
        return int(trainer["step"]), trainer["best"], training_state

    def _optimizer(self, wrapped: nn.Module, hyper: TrainHyper) -> torch.optim.Optimizer:
        # No decay on gains, biases and the (1, 6, D) modulation tables' siblings of rank < 2.
        decay, no_decay = [], []
        for name, param in wrapped.named_parameters():
            if not param.requires_grad:
                continue
            (decay if param.ndim >= 2 and "modulation" not in name else no_decay).append(param)
        groups = [{"params": decay, "weight_decay": hyper.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=hyper.lr, betas=(0.9, 0.95), eps=1e-8)

    def _workers(self, ctx: DistContext) -> int:
        if self.args.workers is not None:
            if self.args.workers < 0:
                raise UsageError(f"--workers must be >= 0, got {self.args.workers}")
            return self.args.workers
        # CPU: cached latents and canvases load in microseconds (memory-mapped), and worker
        # processes would only take cores from the model (benchmarks/loader.py). GPU: load ahead.
        return 4 if ctx.device.type == "cuda" else 0

    # -- the loop -----------------------------------------------------------------------------
    def _train_loop(self, ctx, wrapped, module, optimizer, config, hyper, norm, video_encoder, train_ds, val_ds,
                    run_dir, start_step, best, use_bf16, started, tasks) -> int:
        args = self.args
        stream = SampleStream(len(train_ds), args.seed)
        stop_step = hyper.steps if args.stop_after_steps is None else min(hyper.steps, args.stop_after_steps)
        workers = self._workers(ctx)
        loader = torch.utils.data.DataLoader(
            train_ds, batch_sampler=_StepBatches(stream, start_step, stop_step, hyper.batch_size, ctx),
            num_workers=workers, pin_memory=ctx.device.type == "cuda", persistent_workers=False,
            prefetch_factor=4 if workers else None,
        )
        per_rank = hyper.batch_size // ctx.world_size
        latent_shape = (config.video.in_dim, config.latent_frames, *config.latent_hw)
        action_shape = (config.action_horizon, config.action_dim)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()
        extra = {"vae": video_encoder} if isinstance(video_encoder, CausalVideoAutoencoder) else {}
        self.emit("stage", stage="train", message=f"training steps {start_step}..{hyper.steps}", steps=hyper.steps,
                  batch_size=hyper.batch_size, world_size=ctx.world_size, device=str(ctx.device),
                  precision="bf16" if use_bf16 else "fp32", start_step=start_step)

        window = torch.zeros(3, dtype=torch.float64)
        window_steps, window_start = 0, time.monotonic()
        step_times: list[float] = []
        last_loss = [float("nan")] * 3
        step = start_step
        wrapped.train()
        cancelled = False
        last_saved: Path | None = None
        for step, batch in enumerate(loader, start=start_step):
            t0 = time.monotonic()
            positions = range(ctx.rank * per_rank, (ctx.rank + 1) * per_rank)
            draws = sample_draws(config, args.seed, step, positions, latent_shape, action_shape)
            inputs = {k: v.to(ctx.device, non_blocking=True) for k, v in batch.items()}
            draws = {k: v.to(ctx.device) for k, v in draws.items()}
            lr = hyper.lr_at(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast:
                losses = wrapped(inputs["latents"], inputs["proprio"], inputs["action"], inputs["action_is_pad"],
                                 inputs["image_is_pad"], inputs["task"], **draws)
            if not torch.isfinite(losses[0]):
                raise FloatingPointError(f"the loss became {losses[0].item()} at step {step}")
            optimizer.zero_grad(set_to_none=True)
            losses[0].backward()
            # Under FSDP the gradients are DTensors and the norm is taken over all shards.
            torch.nn.utils.clip_grad_norm_(wrapped.parameters(), hyper.grad_clip)
            optimizer.step()
            window += losses.detach().double().cpu()
            window_steps += 1
            done = step + 1
            step_times.append(time.monotonic() - t0)

            if done % hyper.log_every == 0 or done == stop_step:
                mean = dist_utils.all_reduce_mean(ctx, window.to(ctx.device)).cpu() / window_steps
                elapsed = time.monotonic() - window_start
                rate = window_steps * hyper.batch_size / max(elapsed, 1e-9)
                recent = np.mean(step_times[-50:])
                last_loss = mean.tolist()
                self.emit("progress", step=done, steps=hyper.steps, epoch=_r(stream.epoch_of(done, hyper.batch_size), 4),
                          loss={"total": _r(last_loss[0]), "video": _r(last_loss[1]), "action": _r(last_loss[2])},
                          lr=_r(lr), samples_per_s=_r(rate, 4), eta_s=round((hyper.steps - done) * recent, 1),
                          elapsed_s=round(time.monotonic() - started, 1))
                window.zero_()
                window_steps, window_start = 0, time.monotonic()

            val_now = val_ds is not None and (done % hyper.val_every == 0 or done == hyper.steps)
            if val_now:
                val = self._validate(ctx, wrapped, config, val_ds, hyper, per_rank, latent_shape, action_shape, autocast)
                is_best = best["val_action_loss"] is None or val[2] < best["val_action_loss"]
                if is_best:
                    best = {"val_action_loss": val[2], "step": done}
                    self._save_best(ctx, wrapped, config, norm, done, extra, val)
                self.emit("validation", step=done, val_loss={"total": _r(val[0]), "video": _r(val[1]), "action": _r(val[2])},
                          best=is_best, best_step=best["step"])
                wrapped.train()

            cancelled = dist_utils.any_rank(ctx, self.cancelled()) or (args.stop_after_steps is not None and done >= stop_step
                                                                        and done < hyper.steps)
            if done % hyper.checkpoint_every == 0 or done == hyper.steps or cancelled:
                last_saved = self._save(ctx, wrapped, optimizer, config, norm, done, extra, best, run_dir, hyper)
                self.emit("checkpoint", step=done, path=str(last_saved))
            if cancelled:
                break

        if cancelled:
            self.emit("cancelled", step=step + 1, checkpoint=str(last_saved),
                      message="stopped; continue with the same command plus --resume")
            return EXIT_CANCELLED
        if start_step >= hyper.steps:
            last_saved = latest_checkpoint(run_dir)
        self.emit("summary", steps=hyper.steps, final_loss={"total": _r(last_loss[0]), "video": _r(last_loss[1]),
                                                            "action": _r(last_loss[2])},
                  best_val_action_loss=None if best["val_action_loss"] is None else _r(best["val_action_loss"]),
                  best_step=best["step"], checkpoint=str(last_saved),
                  best_checkpoint=str(run_dir / "best") if best["step"] is not None else None,
                  run_dir=str(run_dir), elapsed_s=round(time.monotonic() - started, 1),
                  train_step_s=_r(float(np.median(step_times)), 4) if step_times else None,
                  samples_per_s=_r(hyper.batch_size / float(np.median(step_times)), 4) if step_times else None,
                  train_episodes=len(train_ds.sources), val_episodes=len(val_ds.sources) if val_ds else 0, tasks=tasks)
        return 0

    @torch.no_grad()
    def _validate(self, ctx, wrapped, config, val_ds, hyper, per_rank, latent_shape, action_shape, autocast) -> list[float]:
        """Mean (total, video, action) loss over a fixed set of validation windows with fixed noise,
        so values are comparable from one validation to the next. The windows are spread evenly
        over the validation episodes and trimmed to a multiple of the process count, so every rank
        runs the same batches (FSDP gathers parameters in each forward)."""
        wrapped.eval()
        n = len(val_ds)
        picks = np.unique(np.linspace(0, n - 1, num=min(n, hyper.val_samples)).astype(np.int64))
        count = max(1, len(picks) // ctx.world_size)
        picks = np.resize(picks, count * ctx.world_size)  # (repeats only when fewer windows than ranks)
        mine = picks[ctx.rank * count : (ctx.rank + 1) * count]
        sums = torch.zeros(4, dtype=torch.float64)
        for start in range(0, count, per_rank):
            idx = [int(i) for i in mine[start : start + per_rank]]
            batch = torch.utils.data.default_collate([val_ds[i] for i in idx])
            draws = sample_draws(config, self.args.seed, -1, idx, latent_shape, action_shape)
            inputs = {k: v.to(ctx.device) for k, v in batch.items()}
            with autocast:
                losses = wrapped(inputs["latents"], inputs["proprio"], inputs["action"], inputs["action_is_pad"],
                                 inputs["image_is_pad"], inputs["task"], **{k: v.to(ctx.device) for k, v in draws.items()})
            sums[:3] += losses.double().cpu() * len(idx)  # batch mean x samples = sum
            sums[3] += len(idx)
        total = dist_utils.all_reduce_sum(ctx, sums.to(ctx.device)).cpu()
        return (total[:3] / total[3].clamp(min=1)).tolist()

    def _gather(self, ctx, wrapped) -> dict[str, torch.Tensor] | None:
        return dist_utils.full_state_dict(wrapped, ctx)

    def _save_best(self, ctx, wrapped, config, norm, step, extra, val) -> None:
        state = self._gather(ctx, wrapped)
        if ctx.is_main:
            run_dir = Path(self._run_dir(ctx))
            tmp = run_dir / ".best.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            modules = dict(extra)
            text = _StateView(state, "task_embedding.")
            if text.state_dict():
                modules["task_embedding"] = text
            save_checkpoint(tmp, _StateView(state, "fastwam."), config, norm, step, modules)
            _write_json(tmp / "validation.json", {"step": step, "val_loss": {"total": val[0], "video": val[1], "action": val[2]}})
            old = run_dir / ".best.old"
            shutil.rmtree(old, ignore_errors=True)
            if (run_dir / "best").exists():
                os.replace(run_dir / "best", old)
            os.replace(tmp, run_dir / "best")
            shutil.rmtree(old, ignore_errors=True)
        dist_utils.barrier(ctx)

    def _run_dir(self, ctx) -> str:
        return str(self.run_dir)

    def _save(self, ctx, wrapped, optimizer, config, norm, step, extra, best, run_dir: Path, hyper: TrainHyper) -> Path:
        """A full checkpoint (weights, optimizer, RNG, best-so-far) written by rank 0; every rank
        takes part in gathering. trainer.json is written last: it marks the folder complete."""
        state = self._gather(ctx, wrapped)
        opt_state = dist_utils.optimizer_state(wrapped, optimizer, ctx)
        folder = run_dir / "checkpoints" / f"step_{step:08d}"
        if ctx.is_main:
            modules = dict(extra)
            text = _StateView(state, "task_embedding.")
            if text.state_dict():
                modules["task_embedding"] = text
            (folder / TRAINER_FILE).unlink(missing_ok=True)
            save_checkpoint(folder, _StateView(state, "fastwam."), config, norm, step, modules)
            payload = {"optimizer": opt_state, "torch_rng": torch.get_rng_state()}
            if torch.cuda.is_available():
                payload["cuda_rng"] = torch.cuda.get_rng_state_all()
            tmp = folder / f".{TRAINING_STATE_FILE}.tmp"
            torch.save(payload, tmp)
            os.replace(tmp, folder / TRAINING_STATE_FILE)
            _write_json(folder / TRAINER_FILE, {"format": 1, "step": step, "seed": self.args.seed, "best": best,
                                                "rng": _rng_states(), "world_size": ctx.world_size,
                                                "global_batch": hyper.batch_size})
            _write_json(run_dir / LATEST_FILE, {"step": step, "path": str(folder.relative_to(run_dir))})
            self._prune(run_dir, hyper.keep_checkpoints)
        dist_utils.barrier(ctx)
        return folder

    @staticmethod
    def _prune(run_dir: Path, keep: int) -> None:
        folders = sorted((run_dir / "checkpoints").glob("step_*"))
        for old in folders[:-keep]:
            shutil.rmtree(old, ignore_errors=True)


def _has_vae(path: str | os.PathLike) -> bool:
    from safetensors import safe_open

    weights = Path(path) / MODEL_FILE
    if not weights.is_file():
        return False
    with safe_open(str(weights), framework="pt") as handle:
        return any(k.startswith("vae.") for k in handle.keys())


# ------------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------------


def _is_oom(error: BaseException) -> bool:
    if isinstance(error, MemoryError):
        return True
    if torch.cuda.is_available() and isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def main(argv: Sequence[str] | None = None) -> int:
    """`python run.py train ...`; returns the process exit code (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    emit = Emitter()
    if any(a in ("-h", "--help") for a in argv):
        build_parser().print_help()
        return 0
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    trainer: Trainer | None = None
    previous: dict[int, Any] = {}
    try:
        args = build_parser().parse_args(argv)
        trainer = Trainer(args, emit)
        trainer.argv = argv
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, trainer.request_cancel)
        return trainer.run()
    except UsageError as error:
        emit("error", force=True, kind="invalid_argument", message=str(error),
             what_to_do="Fix the flag named above; `python run.py train --help` lists them all.")
        return 2
    except RunFolderError as error:
        emit("error", force=True, kind="run_folder", message=str(error),
             what_to_do="Add --resume to continue the run, or pass a new --out folder to start another.")
        return 2
    except NoEpisodesMatch as error:
        emit("error", force=True, kind="no_episodes", message=str(error),
             what_to_do="Record or label demonstrations, or widen the selection (--labels, --task, --episodes).")
        return 3
    except CorruptEpisode as error:
        emit("error", force=True, kind="corrupt_episode", message=str(error),
             what_to_do="Check the store with `python run.py episodes check`, recover or remove the file, or --exclude it.")
        return 3
    except EpisodeFormatError as error:
        emit("error", force=True, kind="corrupt_episode", message=str(error),
             what_to_do=f"{error.path.name} could not be read while training; check it with `python run.py episodes "
                        f"check {error.path}` and --exclude it or recover it.")
        return 3
    except DataError as error:
        emit("error", force=True, kind="data", message=str(error), what_to_do="See the message.")
        return 3
    except KeyboardInterrupt:
        emit("cancelled", force=True, step=None, checkpoint=None,
             message="stopped before training began; starting again skips what was done (a finished autoencoder, "
                     "the episodes already cached)")
        return EXIT_CANCELLED
    except (ModelError, CheckpointError) as error:
        emit("error", force=True, kind="model", message=str(error), what_to_do="See the message.")
        return 4
    except FloatingPointError as error:
        emit("error", force=True, kind="diverged", message=str(error),
             what_to_do="Lower --lr (e.g. by 3x) and resume from the last checkpoint with --resume, or start again.")
        return 4
    except BaseException as error:  # noqa: BLE001 - everything left becomes a JSON line too
        if isinstance(error, SystemExit):
            raise
        if _is_oom(error):
            batch = trainer.hyper.batch_size if trainer else "?"
            emit("error", force=True, kind="out_of_memory", message=f"out of memory: {str(error)[:300]}",
                 what_to_do=f"Lower --batch-size (now {batch}), switch on --grad-checkpointing, or use a smaller "
                            "--preset; then continue with --resume from the last checkpoint.")
            return 5
        log.exception("training failed")
        emit("error", force=True, kind="internal", message=f"{type(error).__name__}: {str(error)[:500]}",
             what_to_do="This is a bug or an unexpected environment problem; the traceback is on stderr. "
                        "Continue with --resume once fixed.")
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
