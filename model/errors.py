"""Typed errors of the model package. Each message says what happened and what to do."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from robot.types import SourceFault


class ModelError(RuntimeError):
    """Base class: something in `model/` failed in a way the user must act on."""


class CheckpointError(ModelError):
    """A checkpoint could not be read (missing, truncated, not a checkpoint, unsafe format)."""

    def __init__(self, path, reason: str, fix: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot load checkpoint {self.path}: {reason}. {fix}")


class CheckpointMismatch(CheckpointError):
    """A checkpoint's tensors do not match the model built from the config.

    missing: names the model has but the file lacks; unexpected: names the file has but the model
    lacks; shape_mismatches: (name, shape in file, shape in model).
    """

    def __init__(self, path, missing=(), unexpected=(), shape_mismatches=(), what: str = "the model"):
        self.missing = sorted(missing)
        self.unexpected = sorted(unexpected)
        self.shape_mismatches = sorted(shape_mismatches)
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing tensor(s) {_first(self.missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected tensor(s) {_first(self.unexpected)}")
        if self.shape_mismatches:
            shown = [f"{n}: file {tuple(a)} vs model {tuple(b)}" for n, a, b in self.shape_mismatches[:5]]
            more = "" if len(self.shape_mismatches) <= 5 else f" (+{len(self.shape_mismatches) - 5} more)"
            parts.append(f"{len(self.shape_mismatches)} shape mismatch(es) [{'; '.join(shown)}]{more}")
        super().__init__(
            path,
            f"it does not match {what}: " + ", ".join(parts),
            "Check that the checkpoint belongs to this preset/config (a different size or action "
            "dimension changes the tensors); a file cut short by an interrupted download or copy "
            "must be fetched again.",
        )


class OutputFolderError(ModelError):
    """The folder a run or export writes to cannot be used (read-only, a file, no permission):
    a problem with the command line, not a bug."""

    def __init__(self, path, flag: str, reason: str):
        self.path = str(path)
        self.flag = flag
        self.reason = reason
        super().__init__(f"{flag} {self.path}: {reason}. Pass a folder you can write to with {flag}")


class ModelTooLarge(ModelError):
    """A model config whose estimated memory does not fit where it would run (checked from the
    sizes, before anything is built)."""

    def __init__(self, name: str, parameters: int, needed_bytes: int, available_bytes: int, training: bool, where: str):
        self.parameters = parameters
        self.needed_bytes = needed_bytes
        self.available_bytes = available_bytes
        what = "training it (weights, gradients, AdamW moments)" if training else "its weights"
        super().__init__(
            f"the model {name!r} has {parameters / 1e9:.2f} B parameters; {what} needs about "
            f"{needed_bytes / 1e9:.1f} GB, but {where} has {available_bytes / 1e9:.1f} GB. Use a smaller preset "
            "(--preset small or tiny) or lower num_layers / the hidden and ffn widths (--set)"
        )


class MissingDependency(ModelError):
    """An optional package is needed for this feature (e.g. diffusers for the Wan2.2 VAE)."""

    def __init__(self, package: str, feature: str):
        self.package = package
        super().__init__(f"{feature} needs the `{package}` package, which is not installed: run `pip install {package}`")


class UnknownTask(ModelError):
    """The task string has no text embedding (learned table or precomputed file)."""

    def __init__(self, task: str, known: list[str], fix: str):
        self.task = task
        self.known = list(known)
        shown = ", ".join(repr(k) for k in self.known[:10]) + (" ..." if len(self.known) > 10 else "")
        super().__init__(f"no text embedding for task {task!r} (known: {shown or 'none'}). {fix}")


class MissingCamera(ModelError):
    """An observation lacks a camera the model's canvas needs."""

    def __init__(self, missing: list[str], available: list[str]):
        self.missing = list(missing)
        super().__init__(
            f"the observation has no image from camera(s) {self.missing} (it has {sorted(available)}); "
            "the model was trained on these cameras - check the rig's camera names or serials"
        )


class PolicyOutputInvalid(ModelError):
    """The policy produced NaN or inf actions; they were not returned (the arm should hold)."""

    def __init__(self, bad_steps: list[int], detail: str = ""):
        self.bad_steps = list(bad_steps)
        super().__init__(
            f"the policy produced non-finite actions at chunk steps {self.bad_steps[:10]}{detail}; "
            "the chunk was discarded. Hold the arm; if it repeats, the checkpoint or its "
            "normalisation statistics are broken (retrain or reload), or the input is corrupt."
        )


# ------------------------------------------------------------------------------------------------
# Training data and training runs
# ------------------------------------------------------------------------------------------------


class DataError(ModelError):
    """The training data cannot be used as asked; the message says what to do."""


class NoEpisodesMatch(DataError):
    """The selection left no episode to train on."""

    def __init__(self, sources: Sequence[str], found: int, why: str, fix: str):
        self.sources = list(sources)
        self.found = found
        super().__init__(f"no episodes to train on in {', '.join(self.sources) or '(no source given)'}: {why}. {fix}")


class CorruptEpisode(DataError):
    """An episode file cannot be read (damaged, unfinished, or missing a camera the model needs)."""

    def __init__(self, problems: Mapping[Path, str]):
        self.problems = {Path(p): r for p, r in problems.items()}
        shown = "; ".join(f"{p.name}: {r}" for p, r in list(self.problems.items())[:5])
        more = "" if len(self.problems) <= 5 else f" (+{len(self.problems) - 5} more)"
        names = " ".join(p.name for p in self.problems)
        super().__init__(
            f"{len(self.problems)} episode file(s) cannot be used - {shown}{more}. Run `python run.py episodes "
            "check --deep` on the store (and `episodes recover` for unfinished recordings), or leave the file(s) "
            f"out with --exclude ({names}), or train on the others with --skip-unreadable"
        )


class UnreadableEpisode(DataError):
    """An episode failed while being read for training (a frame or array that does not read).

    Built from its message alone, so that an error in a DataLoader worker process reaches the
    trainer as this type (PyTorch re-raises a worker's exception as `type(message)`)."""

    @classmethod
    def at(cls, path: Path, reason: str) -> "UnreadableEpisode":
        return cls(
            f"{Path(path).name} cannot be read while training: {reason}. Check it with `python run.py episodes "
            f"check --deep {path}`; leave it out with --exclude {Path(path).name}"
        )


class CameraMismatch(DataError):
    """Readable episode files that lack a camera the canvas reads: not damaged, their cameras are
    named otherwise (ACT's simulated tasks record one camera, `top`).

    files: path -> the cameras the file has; reads: the cameras the canvas reads (after any
    --camera-map); proposal_args: the `--camera-map ...` flags that read them all (None when the
    files share no camera), proposal_reason: how that map was chosen, proposal_button: the
    Training panel's button that chooses it."""

    def __init__(self, files: Mapping[Path, Sequence[str]], views: Sequence[str], reads: Sequence[str],
                 proposal_args: Sequence[str] | None, proposal_reason: str = "", proposal_button: str = ""):
        self.files = {Path(p): tuple(c) for p, c in files.items()}
        self.views = tuple(views)
        self.reads = tuple(reads)
        self.proposal_args = list(proposal_args) if proposal_args else None
        groups: dict[tuple[str, ...], list[str]] = {}
        for path, cameras in self.files.items():
            groups.setdefault(cameras, []).append(path.name)
        have = "; ".join(f"{list(cams)} ({', '.join(names[:4])}{f' and {len(names) - 4} more' if len(names) > 4 else ''})"
                         for cams, names in groups.items())
        through = "" if list(self.reads) == list(self.views) else f" (the views read cameras {list(self.reads)})"
        text = (f"{len(self.files)} episode file(s) are readable but lack camera(s) the canvas reads: the files have "
                f"cameras {have}; the model's canvas has the views {list(self.views)}{through}")
        if self.proposal_args:
            line = " ".join(self.proposal_args)
            text += f". They can be read through {line} ({proposal_reason})"
            sources = sorted({item.split("=", 1)[1] for item in self.proposal_args[1:]})
            self.what_to_do = (f"Add {line} to the command (in the window's Training panel: \"{proposal_button}\" "
                               f"under Cameras and task). The checkpoint records the mapping and runs only on a rig "
                               f"with camera(s) {sources}.")
        else:
            text += ". The files share no camera, so no one mapping reads them all"
            self.what_to_do = ("Train files with different cameras in separate runs (--include or --exclude names), "
                               "each with its own --camera-map VIEW=CAMERA for every view.")
        super().__init__(text)


class PolicyRigMismatch(ModelError):
    """A checkpoint was trained on inputs this rig does not give (other cameras, image sizes,
    action/state widths or task). mismatches: `model.compatibility.Mismatch` items, each naming
    the checkpoint's side and the rig's."""

    def __init__(self, checkpoint, rig: str, mismatches: Sequence, fix: str):
        self.checkpoint = str(checkpoint)
        self.rig = rig
        self.mismatches = tuple(mismatches)
        listed = "; ".join(m.message for m in self.mismatches)
        super().__init__(f"the checkpoint {self.checkpoint} does not fit the rig {rig}: {listed}. {fix}")


class UsageError(ValueError):
    """A training option is wrong or missing; the message names the flag and how to fix it."""


class RunFolderError(DataError):
    """The run folder does not fit what was asked (e.g. checkpoints there but no --resume)."""


class PolicyFault(SourceFault, ModelError):
    """The policy runner stops the policy on the control thread (the loop holds the arm within the
    tick). cause: a short stable name ("invalid_chunk", "out_of_range", "late", "stale_camera",
    "policy_error", "no_first_chunk"); message: what happened; what_to_do: the fix."""

    def __init__(self, cause: str, message: str, what_to_do: str):
        self.cause = cause
        SourceFault.__init__(self, message, what_to_do)


def _first(names: list[str], n: int = 5) -> str:
    more = "" if len(names) <= n else f" (+{len(names) - n} more)"
    return "[" + ", ".join(names[:n]) + "]" + more
