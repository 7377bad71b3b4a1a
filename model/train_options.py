"""What a training run is asked to do, checked before any work starts, without torch:
`TrainHyper` (the optimisation schedule; one per preset in `TRAIN_PRESETS`), `TrainOptions` (the
whole run: data, model, initialisation, run folder, devices) and the `--set KEY=VALUE` model
config overrides.

`python run.py train` (`app.studio.jobs.train`) builds a `TrainOptions` from its flags; the
trainer (`model.trainer`) takes nothing else. Every value is checked here and a wrong one raises
`UsageError` naming the flag and the fix, so a mistake costs no torch start-up.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from model.config import PRESETS, FastWAMConfig, get_preset
from model.errors import UsageError
from recordings.metadata import validate_task

VARIANTS = ("fastwam", "joint", "no_video_cotraining")
PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")
STRATEGIES = ("auto", "ddp", "fsdp")


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

    @classmethod
    def for_preset(cls, preset: str, **changes: Any) -> "TrainHyper":
        """The preset's hyper-parameters with the fields in `changes` that are not None replaced."""
        if preset not in TRAIN_PRESETS:
            raise UsageError(f"--preset {preset!r} is unknown; choose one of {', '.join(TRAIN_PRESETS)}")
        try:
            return dataclasses.replace(TRAIN_PRESETS[preset], **{k: v for k, v in changes.items() if v is not None})
        except ValueError as error:
            raise UsageError(str(error)) from error


#: In the order the window offers them (the first is its default).
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
# The run
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainOptions:
    """One training run as asked for (the `run.py train` flags, parsed and checked).

    store: store folders and/or episode files; labels None = success plus unlabelled ALOHA/ACT
    files; deep_check: every selected episode read whole and every frame decoded before any
    work (remembered for unchanged files); skip_unreadable: leave out episodes that cannot be
    read, with a warning each, instead of refusing the run; camera_map: canvas camera -> the episodes' camera it reads; model_overrides: nested
    config fields (`parse_overrides`); out None = a new folder under the runs root (chosen by
    the caller); argv/program: the flags as given and what ran them (e.g. (".../run.py",
    "train")), recorded in run.json and job.json so the window can run the same again.
    """

    hyper: TrainHyper
    store: tuple[str, ...]
    cache_dir: str
    out: str
    preset: str = "tiny"
    labels: tuple[str, ...] | None = None
    tasks: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    control_sources: tuple[str, ...] = ()  # () = every step; else only steps of these sources
    default_task: str | None = None
    deep_check: bool = True
    skip_unreadable: bool = False
    camera_map: Mapping[str, str] = field(default_factory=dict)
    cache_max_gb: float = 50.0
    workers: int | None = None
    std_floor: float | None = None  # None: model.normalization's DEFAULT_STD_FLOOR
    model_overrides: Mapping[str, Any] = field(default_factory=dict)
    variant: str | None = None
    init_from_fastwam: str | None = None
    init_from_wan: str | None = None
    wan_vae_dir: str | None = None
    text_embeddings: str | None = None
    vae_from: str | None = None
    precision: str = "auto"
    seed: int = 0
    resume: bool = False
    stop_after_steps: int | None = None
    device: str = "auto"
    threads: int = 0
    strategy: str = "auto"
    argv: tuple[str, ...] = ()
    program: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise UsageError(f"--preset {self.preset!r} is unknown; choose one of {', '.join(TRAIN_PRESETS)}")
        for name, value, choices in (("--variant", self.variant, VARIANTS), ("--precision", self.precision, PRECISIONS),
                                     ("--device", self.device, DEVICES), ("--strategy", self.strategy, STRATEGIES)):
            if value is not None and value not in choices:
                raise UsageError(f"{name} {value!r} is unknown; choose one of {', '.join(choices)}")
        try:
            for task in self.tasks:
                validate_task(task, "--task")
            if self.default_task is not None:
                validate_task(self.default_task, "--default-task")
        except ValueError as error:
            raise UsageError(str(error)) from error
        if self.init_from_fastwam and self.init_from_wan:
            raise UsageError("--init-from-fastwam and --init-from-wan exclude each other: the Fast-WAM checkpoint "
                             "already contains a video expert")
        if self.cache_max_gb < 0:
            raise UsageError(f"--cache-max-gb must be 0 (never remove) or a size in GB, got {self.cache_max_gb}")
        if self.workers is not None and self.workers < 0:
            raise UsageError(f"--workers must be >= 0, got {self.workers}")
        if self.camera_map:
            views = self.model_config().camera_names
            unknown = [view for view in self.camera_map if view not in views]
            if unknown:
                raise UsageError(f"--camera-map names view(s) {unknown} the canvas does not have; its views are "
                                 f"{list(views)} (write VIEW=CAMERA, e.g. {views[0]}=top)")

    def model_config(self) -> FastWAMConfig:
        """The preset's model config with the overrides and the variant applied."""
        config = apply_overrides(get_preset(self.preset), self.model_overrides)
        return config.replace(variant=self.variant or config.variant)


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


def apply_overrides(config: FastWAMConfig, overrides: Mapping[str, Any]) -> FastWAMConfig:
    """The config with fields replaced; unknown keys and invalid values raise UsageError."""
    data = config.to_dict()

    def merge(base: dict, new: Mapping, prefix: str) -> None:
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


def parse_camera_map(items: Sequence[str]) -> dict[str, str]:
    """["cam_high=top"] -> {"cam_high": "top"}: the canvas view read from an episode camera."""
    out = {}
    for item in items:
        view, sep, source = item.partition("=")
        if not sep or not view or not source:
            raise UsageError(f"--camera-map takes VIEW=CAMERA pairs, e.g. cam_high=top; got {item!r}")
        if view in out and out[view] != source:
            raise UsageError(f"--camera-map gives view {view} twice ({out[view]} and {source}); give it once")
        out[view] = source
    return out
