"""What a checkpoint is, told without loading torch: for the window's chooser, for checking it
against the rig before loading, and for the attributes of the episodes it drives.

    info = describe_checkpoint("runs/tiny-1")      # a run folder (its best/) or a checkpoint folder
    info.preset, info.variant, info.cameras, info.val_action_loss, info.is_best, info.trained_on
    checkpoint_hash(info.path)                     # sha256 of weights, config and normalisation

The files and the rules for finding a run's checkpoint are `model.run_folder`'s (torch-free);
`model.resume` reads the weights themselves when the policy loads.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from model.run_folder import (
    CONFIG_FILE,
    MODEL_FILE,
    NORM_FILE,
    RUN_FILE,
    STEP_FILE,
    TRAINER_FILE,
    VALIDATION_FILE,
    best_checkpoint,
    is_checkpoint,
    latest_checkpoint,
)


class CheckpointUnreadable(ValueError):
    """The path is not a checkpoint (or a run folder with one); the message says what to do."""


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint as the chooser shows it.

    path: the checkpoint folder (a run folder resolves to its best/, else its newest checkpoint);
    run_dir: its run folder (None for a loose checkpoint); preset / variant / horizon / action_dim
    / proprio_dim / cameras / canvas_hw: from its config; step: training step; val_action_loss:
    the validation action loss it was kept for (None when not recorded); is_best: it is its run's
    best/; trained_on: what run.json says it trained on (e.g. "140 episodes from runs/demos150").
    """

    path: Path
    run_dir: Path | None
    preset: str
    variant: str
    horizon: int
    action_dim: int
    proprio_dim: int
    cameras: tuple[str, ...]
    canvas_hw: tuple[int, int]
    tasks: tuple[str, ...]
    step: int | None
    val_action_loss: float | None
    is_best: bool
    trained_on: str


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def resolve_checkpoint_folder(path: str | Path) -> Path:
    """A checkpoint folder as given, or a run folder's best/ (else its newest complete checkpoint)."""
    path = Path(path)
    if is_checkpoint(path):
        return path
    best = best_checkpoint(path)
    if best is not None and is_checkpoint(best[0]):
        return best[0]
    latest = latest_checkpoint(path)
    if latest is not None and is_checkpoint(latest):
        return latest
    raise CheckpointUnreadable(
        f"{path} is neither a checkpoint folder (config.json + model.safetensors) nor a run folder with one; "
        "choose a run folder written by `run.py train` (runs/...) or one of its checkpoints/step_* folders")


def describe_checkpoint(path: str | Path) -> CheckpointInfo:
    """The chooser's description of a checkpoint or run folder (reads a few JSON files)."""
    folder = resolve_checkpoint_folder(path)
    config = _read_json(folder / CONFIG_FILE)
    if not isinstance(config, dict):
        raise CheckpointUnreadable(f"{folder / CONFIG_FILE} cannot be read as JSON; the checkpoint is damaged - "
                                   "copy it again or choose another")
    run_dir = folder.parent if folder.name == "best" else (folder.parent.parent if folder.parent.name == "checkpoints" else None)
    if run_dir is not None and not (run_dir / RUN_FILE).is_file():
        run_dir = None
    step = (_read_json(folder / STEP_FILE) or {}).get("step")
    validation = _read_json(folder / VALIDATION_FILE) or {}
    val_action = (validation.get("val_loss") or {}).get("action")
    if val_action is None and (folder / TRAINER_FILE).is_file():
        best = (_read_json(folder / TRAINER_FILE) or {}).get("best") or {}
        if best.get("step") == step:
            val_action = best.get("val_action_loss")
    trained_on = ""
    if run_dir is not None:
        run = _read_json(run_dir / RUN_FILE) or {}
        episodes = list(run.get("train") or [])
        if episodes:
            folders = sorted({str(Path(e).parent) for e in episodes})
            trained_on = f"{len(episodes)} episodes from {', '.join(folders[:3])}" + (" ..." if len(folders) > 3 else "")
    encoder = config.get("encoder") or {}
    return CheckpointInfo(
        path=folder, run_dir=run_dir, preset=str(config.get("name", "?")), variant=str(config.get("variant", "fastwam")),
        horizon=int(config.get("action_horizon", 32)), action_dim=int(config.get("action_dim", 14)),
        proprio_dim=int(config.get("proprio_dim", 14)), cameras=tuple(config.get("camera_names", ())),
        canvas_hw=tuple(config.get("canvas_hw", (384, 320))), tasks=tuple(encoder.get("tasks", ())),
        step=None if step is None else int(step), val_action_loss=None if val_action is None else float(val_action),
        is_best=folder.name == "best", trained_on=trained_on,
    )


def checkpoint_hash(folder: str | Path) -> str:
    """sha256 (hex) over the weights, config and normalisation of a checkpoint folder: what an
    episode names so that the exact policy behind it can be found again. Reads the whole weights
    file (seconds for the 5B preset): call it off the GUI and control threads."""
    digest = hashlib.sha256()
    for name in (MODEL_FILE, CONFIG_FILE, NORM_FILE):
        path = Path(folder) / name
        digest.update(name.encode())
        try:
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        except FileNotFoundError:
            digest.update(b"<missing>")
    return digest.hexdigest()
