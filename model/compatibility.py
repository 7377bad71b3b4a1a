"""Whether a checkpoint fits a rig, decided without torch: the inputs a checkpoint was trained on
(its `inputs.json`) against what the rig gives.

    inputs = read_policy_inputs(checkpoint_folder)                 # PolicyInputs
    rig = RigInputs.of_images("sim-aloha", observation.images, task="fold the towel")
    result = compare(inputs, rig)                                  # Compatibility
    result.ok, result.mismatches                                   # Mismatch: what, checkpoint, rig, message
    result.require(checkpoint_folder, allow_mismatch=False)        # PolicyRigMismatch unless it fits
    policy.camera_map = result.camera_feeds                        # view -> the rig camera it reads

What is compared: the cameras the checkpoint reads (through its camera map: a policy trained on
ACT's one `top` camera reads `top` into every view) against the rig's cameras; the image size it
was trained on per camera against the size the rig delivers (the canvas resizes any size, but a
policy has only learnt the one it saw); the action and state widths; and the rig's task against
the tasks trained on. Every mismatch names both sides. The expert override (`allow_mismatch`)
runs a mismatching checkpoint anyway: each view then reads its recorded camera when the rig has
it, else the rig camera of the view's own name; a view with neither still refuses.

Checkpoints written before inputs.json existed are described from their config.json: the
cameras by view name, no image sizes (not checked), the model's task list.

`run.py eval` (`app.studio.jobs.evaluate`) and the studio's policy loading call this; the
trainer writes inputs.json (`PolicyInputs.to_dict`) into every checkpoint.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from model.errors import CheckpointError, PolicyRigMismatch
from model.run_folder import CONFIG_FILE, INPUTS_FILE
from robot.types import STATE_DIM

ImageHW = tuple[int, int]

INPUTS_FORMAT = 1


def _hw_text(hw: ImageHW) -> str:
    return f"{hw[1]}x{hw[0]}"  # width x height, as cameras are described


@dataclass(frozen=True)
class PolicyInputs:
    """What a checkpoint was trained on.

    views: (canvas view, episode camera it read) in canvas order (cam_high=top, ...);
    image_sizes: episode camera -> the (height, width) sizes of its training frames (empty when
    unknown); canvas_hw: the canvas (H, W); action_dim / state_dim: widths (14 for ALOHA);
    tasks: the task strings of the training episodes; default_task: the task given to files that
    named none (None when every file named one); recorded: False for a checkpoint without
    inputs.json (described from its config)."""

    views: tuple[tuple[str, str], ...]
    image_sizes: tuple[tuple[str, tuple[ImageHW, ...]], ...] = ()
    canvas_hw: ImageHW = (0, 0)
    action_dim: int = STATE_DIM
    state_dim: int = STATE_DIM
    tasks: tuple[str, ...] = ()
    default_task: str | None = None
    recorded: bool = True

    @property
    def camera_map(self) -> dict[str, str]:
        """view -> camera for every view (the identity where a view read its own name)."""
        return dict(self.views)

    @property
    def cameras(self) -> tuple[str, ...]:
        """The distinct cameras read, in view order."""
        return tuple(dict.fromkeys(camera for _, camera in self.views))

    def sizes_of(self, camera: str) -> tuple[ImageHW, ...]:
        return dict(self.image_sizes).get(camera, ())

    def to_dict(self) -> dict[str, Any]:
        """inputs.json."""
        return {
            "format": INPUTS_FORMAT,
            "cameras": {view: camera for view, camera in self.views},
            "image_sizes": {camera: [list(hw) for hw in sizes] for camera, sizes in self.image_sizes},
            "canvas_hw": list(self.canvas_hw),
            "action_dim": self.action_dim,
            "state_dim": self.state_dim,
            "tasks": list(self.tasks),
            "default_task": self.default_task,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PolicyInputs":
        """Inverse of `to_dict`; ValueError/TypeError/KeyError on a malformed record."""
        if not isinstance(data, Mapping) or int(data.get("format", 0)) != INPUTS_FORMAT:
            raise ValueError(f"not an inputs record of format {INPUTS_FORMAT}")
        views = tuple((str(v), str(c)) for v, c in dict(data["cameras"]).items())
        sizes = tuple((str(c), tuple((int(h), int(w)) for h, w in hws)) for c, hws in dict(data.get("image_sizes", {})).items())
        canvas = data.get("canvas_hw") or (0, 0)
        default = data.get("default_task")
        return cls(views, sizes, (int(canvas[0]), int(canvas[1])), int(data["action_dim"]), int(data["state_dim"]),
                   tuple(str(t) for t in data.get("tasks", ())), None if default is None else str(default))

    @classmethod
    def of_config(cls, config: Mapping[str, Any]) -> "PolicyInputs":
        """A checkpoint without inputs.json: from its config.json (cameras by view name, sizes unknown)."""
        views = tuple((str(c), str(c)) for c in config.get("camera_names", ()))
        canvas = config.get("canvas_hw") or (0, 0)
        tasks = tuple(str(t) for t in (config.get("encoder") or {}).get("tasks", ()))
        return cls(views, (), (int(canvas[0]), int(canvas[1])), int(config.get("action_dim", STATE_DIM)),
                   int(config.get("proprio_dim", STATE_DIM)), tasks, None, recorded=False)


def read_policy_inputs(checkpoint: str | os.PathLike) -> PolicyInputs:
    """The inputs of a checkpoint folder (inputs.json, else described from config.json).
    CheckpointError when neither can be read."""
    folder = Path(checkpoint)
    path = folder / INPUTS_FILE
    if path.is_file():
        try:
            return PolicyInputs.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError, KeyError, IndexError) as error:
            raise CheckpointError(path, f"its record of the inputs it was trained on is damaged ({error})",
                                  "Copy the checkpoint folder again from where it was trained.") from error
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
    except FileNotFoundError as error:
        raise CheckpointError(folder, f"there is no {CONFIG_FILE}",
                              "Point to a checkpoint folder written by `python run.py train`.") from error
    except (OSError, ValueError) as error:
        raise CheckpointError(folder / CONFIG_FILE, f"it cannot be read ({error})",
                              "Copy the checkpoint folder again from where it was trained.") from error
    if not isinstance(config, dict):
        raise CheckpointError(folder / CONFIG_FILE, "it is not a config object", "Restore config.json from the run.")
    return PolicyInputs.of_config(config)


@dataclass(frozen=True)
class RigInputs:
    """What a rig gives a policy: name; cameras: (camera, (height, width) of its images, None
    when unknown) in the rig's order; action_dim / state_dim; task: the task it asks for ("" =
    none given)."""

    name: str
    cameras: tuple[tuple[str, ImageHW | None], ...]
    action_dim: int = STATE_DIM
    state_dim: int = STATE_DIM
    task: str = ""

    @classmethod
    def of_images(cls, name: str, images: Mapping[str, Any], task: str = "", action_dim: int = STATE_DIM,
                  state_dim: int = STATE_DIM) -> "RigInputs":
        """From one observation's images {camera: (H, W, 3) array} (their sizes are the rig's)."""
        cameras = tuple((camera, (int(image.shape[0]), int(image.shape[1]))) for camera, image in images.items())
        return cls(name, cameras, action_dim, state_dim, task or "")

    @property
    def camera_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.cameras)

    def size_of(self, camera: str) -> ImageHW | None:
        return dict(self.cameras).get(camera)


@dataclass(frozen=True)
class Mismatch:
    """One way a checkpoint does not fit a rig. what: "cameras" | "image_size" | "action_dim" |
    "state_dim" | "task"; checkpoint / rig: each side in words, completing "the checkpoint ..."
    and "the rig ..."."""

    what: str
    checkpoint: str
    rig: str

    @property
    def message(self) -> str:
        return f"the checkpoint {self.checkpoint}, the rig {self.rig}"


@dataclass(frozen=True)
class Compatibility:
    """The comparison of a checkpoint with a rig. camera_feeds: view -> the rig camera the policy
    reads for it (the recorded camera when the rig has it, else the view's own name when the rig
    has that, else None)."""

    checkpoint: PolicyInputs
    rig: RigInputs
    mismatches: tuple[Mismatch, ...]
    camera_feeds: tuple[tuple[str, str | None], ...]

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def unfed_views(self) -> list[str]:
        return [view for view, camera in self.camera_feeds if camera is None]

    def require(self, checkpoint_path: str | os.PathLike, allow_mismatch: bool = False,
                override: str = "--allow-mismatch") -> None:
        """Raise `PolicyRigMismatch` unless the checkpoint fits, or `allow_mismatch` (the expert
        override, named `override` in the message) and every view has a camera to read."""
        if self.ok:
            return
        unfed = self.unfed_views()
        if not allow_mismatch:
            fix = (f"Run it on a rig that gives these inputs, or train a policy on this rig's own episodes; to run it "
                   f"anyway (experts: the policy will see inputs it was not trained on), use {override}.")
        elif unfed:
            fix = (f"Even {override} cannot run it: the rig has no camera for view(s) {unfed} (neither the recorded "
                   "camera nor one of that name).")
        else:
            return
        raise PolicyRigMismatch(checkpoint_path, self.rig.name, self.mismatches, fix)


def compare(checkpoint: PolicyInputs, rig: RigInputs) -> Compatibility:
    """Every way `checkpoint` does not fit `rig` (see the module docstring), and the camera each
    view would read."""
    problems: list[Mismatch] = []
    rig_cameras = rig.camera_names
    missing = [c for c in checkpoint.cameras if c not in rig_cameras]
    if missing:
        problems.append(Mismatch("cameras", f"reads camera(s) {list(checkpoint.cameras)}{_mapping_text(checkpoint)}",
                                 f"has camera(s) {list(rig_cameras)}"))
    for camera in checkpoint.cameras:
        trained, live = checkpoint.sizes_of(camera), rig.size_of(camera)
        if trained and live is not None and tuple(live) not in trained:
            problems.append(Mismatch("image_size", f"was trained on '{camera}' images of "
                                                   f"{' or '.join(_hw_text(hw) for hw in trained)}",
                                     f"gives {_hw_text(live)}"))
    for what, words, ours, theirs in (("action_dim", "actions", checkpoint.action_dim, rig.action_dim),
                                      ("state_dim", "states", checkpoint.state_dim, rig.state_dim)):
        if ours != theirs:
            problems.append(Mismatch(what, f"takes {ours}-D {words}", f"has {theirs}-D {words}"))
    if rig.task and checkpoint.tasks and rig.task not in checkpoint.tasks:
        problems.append(Mismatch("task", f"was trained on task(s) {list(checkpoint.tasks)}", f"asks for '{rig.task}'"))
    feeds = []
    for view, camera in checkpoint.views:
        feeds.append((view, camera if camera in rig_cameras else view if view in rig_cameras else None))
    return Compatibility(checkpoint, rig, tuple(problems), tuple(feeds))


def _mapping_text(inputs: PolicyInputs) -> str:
    mapped = [(view, camera) for view, camera in inputs.views if view != camera]
    if not mapped:
        return ""
    if len(inputs.cameras) == 1 and len(inputs.views) > 1:
        return f" (into every view: trained with --camera-map {' '.join(f'{v}={c}' for v, c in inputs.views)})"
    return f" (trained with --camera-map {' '.join(f'{v}={c}' for v, c in mapped)})"
