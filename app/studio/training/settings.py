"""The Training panel's settings as a `python run.py train` command line, without Qt.

Only what the user set is passed (None = the preset's default: the flag is left out), so the
trainer's own defaults stay the one source of them; presets and devices are the trainer's
(`model.train_options`, torch-free).
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from model.run_folder import default_run_dir as run_dir_under
from model.train_options import DEVICES, TRAIN_PRESETS

from app.studio.paths import RUN_PY, RUNS_ROOT

#: The trainer's presets, in the order the panel offers them (the first is its default).
PRESETS: tuple[str, ...] = tuple(TRAIN_PRESETS)
PRESET_HINTS: dict[str, str] = {
    "tiny": "Small model from scratch; runs on this CPU (~30 min for 60 demos).",
    "small": "Larger model from scratch; needs a GPU (hours).",
    "fastwam-5b": "Fine-tunes the 5 B Fast-WAM; needs big GPUs and the Wan2.2 weights "
                  "(More options: --wan-vae-dir FOLDER).",
}

#: Flags the panel sets from its own fields; under "More options" they would contradict them.
PANEL_FLAGS = ("--store", "--episodes", "--labels", "--preset", "--out", "--resume")


@dataclass(frozen=True)
class TrainSettings:
    """What the user chose in the panel. None = the preset's default (the flag is not passed).

    episodes: the chosen episode files (passed one by one, so the run trains on exactly these);
    labels: their success labels, passed as --labels so the trainer keeps every chosen file;
    extra_args: further `run.py train` flags, passed as they are (e.g. --threads 1, --set k=v).
    """

    episodes: tuple[Path, ...]
    labels: tuple[str, ...]
    run_dir: Path
    preset: str = "tiny"
    steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    video_cotraining: bool = True
    checkpoint_every: int | None = None
    device: str = "auto"
    extra_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "episodes", tuple(Path(p) for p in self.episodes))
        object.__setattr__(self, "labels", tuple(sorted(set(self.labels))))
        object.__setattr__(self, "run_dir", Path(self.run_dir))
        object.__setattr__(self, "extra_args", tuple(self.extra_args))
        if not self.episodes:
            raise ValueError("No episodes are chosen: tick at least one episode in the list.")
        if not self.labels:
            raise ValueError("The chosen episodes' labels are unknown: press Refresh to read them again.")
        if self.preset not in PRESETS:
            raise ValueError(f"Unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}.")
        for name, value in (("steps", self.steps), ("batch size", self.batch_size),
                            ("checkpoint every", self.checkpoint_every)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be 1 or more (or empty for the preset's), got {value}.")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"The learning rate must be a positive number such as 1e-4 (or empty), got {self.lr}.")
        if self.device not in DEVICES:
            raise ValueError(f"Unknown device {self.device!r}; choose one of {', '.join(DEVICES)}.")
        for arg in self.extra_args:
            if arg.split("=", 1)[0] in PANEL_FLAGS:
                raise ValueError(f"{arg.split('=', 1)[0]} is set by the panel's own fields; remove it from More options.")


def parse_extra_args(text: str) -> tuple[str, ...]:
    """The "More options" field -> flags (shell quoting rules); ValueError says what is wrong."""
    try:
        args = tuple(shlex.split(text))
    except ValueError as error:
        raise ValueError(f"More options cannot be read ({error}); check the quotes.") from None
    if args and not args[0].startswith("-"):
        raise ValueError(f"More options must start with a flag such as --threads, not {args[0]!r}.")
    return args


def parse_lr(text: str) -> float | None:
    """The learning-rate field: empty = the preset's; ValueError with the fix otherwise."""
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"The learning rate {text!r} is not a number; write it like 1e-4 or 0.0005.") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"The learning rate must be a positive number such as 1e-4, got {text}.")
    return value


def train_argv(settings: TrainSettings, resume: bool = False) -> list[str]:
    """The arguments after the Python executable: [run.py, "train", ...] for `settings`."""
    argv = [str(RUN_PY), "train", "--store", *(str(p) for p in settings.episodes),
            "--labels", ",".join(settings.labels), "--preset", settings.preset, "--out", str(settings.run_dir)]
    for flag, value in (("--steps", settings.steps), ("--batch-size", settings.batch_size),
                        ("--lr", settings.lr), ("--checkpoint-every", settings.checkpoint_every)):
        if value is not None:
            argv += [flag, repr(value) if isinstance(value, float) else str(value)]
    if not settings.video_cotraining:
        argv.append("--no-video-cotraining")
    if settings.device != "auto":
        argv += ["--device", settings.device]
    argv += settings.extra_args
    if resume:
        argv.append("--resume")
    return argv


def resume_argv(argv: Sequence[str]) -> list[str]:
    """The same command plus --resume (once)."""
    return [a for a in argv if a != "--resume"] + ["--resume"]


def default_run_dir(preset: str, now: float | None = None, root: Path = RUNS_ROOT) -> Path:
    """runs/<preset>-<date-time>: where a run goes when no folder is named (the panel's
    suggestion and `run.py train` without --out)."""
    return run_dir_under(root, preset, now)
