"""Typed errors of the model package. Each message says what happened and what to do."""

from __future__ import annotations

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
