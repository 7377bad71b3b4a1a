"""What episodes give a model to read, and how their cameras become the canvas's views (no torch).

A canvas has fixed views (`FastWAMConfig.camera_names`, ALOHA's cam_high, cam_left_wrist,
cam_right_wrist). Episodes from other rigs name their cameras otherwise: ACT's simulated tasks
record one camera, `top`; other labs use `overhead`, `left_wrist`, ... A camera map (view ->
episode camera, `--camera-map cam_high=top ...`) says which camera fills each view. This module:

- `read_episode_inputs(path)`: a file's cameras with their image sizes, its task (if any) and its
  action/state widths, reading one frame per camera;
- `propose_camera_map(views, cameras)`: a map that works - the single camera into every view, or
  each view from the camera whose name is most like it;
- `InputsSummary`: what a set of episodes holds together (camera sets, image sizes, tasks, widths),
  the files a map leaves without a camera, and the warnings when episodes of different shapes are
  mixed.

The trainer (`model.data.find_episodes`, `model.trainer`) and the window's Training panel
(`app.studio.training.inputs`) use the same rules, so the command line and the panel propose
the same map.
"""

from __future__ import annotations

import difflib
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from model.compatibility import PolicyInputs
from model.config import FastWAMConfig
from recordings.reader import Episode

ImageHW = tuple[int, int]


@dataclass(frozen=True)
class EpisodeInputs:
    """One episode file as a model input (one frame per camera read, no other data).

    cameras: (camera name, (height, width) of its frames) in the file's order; task: the file's
    task, "" when it names none (ALOHA/ACT files); action_dim / state_dim: widths of /action and
    /observations/qpos; length: steps; ours: written by this studio (False: ALOHA/ACT's tools,
    which keep only successful demonstrations and write no label)."""

    path: Path
    cameras: tuple[tuple[str, ImageHW], ...]
    task: str
    action_dim: int
    state_dim: int
    length: int
    ours: bool = True

    @property
    def camera_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.cameras)

    def image_hw(self, camera: str) -> ImageHW | None:
        return dict(self.cameras).get(camera)


def read_episode_inputs(path: str | os.PathLike) -> EpisodeInputs:
    """The inputs of the episode at `path`. Raises what `recordings.reader.Episode` raises for a
    file that is not an episode (EpisodeFormatError, OSError)."""
    with Episode.open(path) as episode:
        cameras = tuple((name, _frame_hw(episode, name)) for name in episode.camera_names)
        return EpisodeInputs(
            path=Path(path), cameras=cameras, task=episode.metadata.task, action_dim=int(episode.action.shape[1]),
            state_dim=int(episode.qpos.shape[1]), length=episode.length, ours=episode.is_ours,
        )


def _frame_hw(episode: Episode, camera: str) -> ImageHW:
    # A JPEG row says nothing of its size: decoding the first frame is the one way that fits
    # raw and compressed files alike (a few ms for 480x640).
    if episode.length < 1:
        return (0, 0)
    height, width = episode.frame(camera, 0).shape[:2]
    return (int(height), int(width))


def format_hw(hw: ImageHW) -> str:
    """(480, 640) -> "640x480" (width x height, as cameras are described)."""
    return f"{hw[1]}x{hw[0]}"


# ------------------------------------------------------------------------------------------------
# Camera maps
# ------------------------------------------------------------------------------------------------

#: Parts of camera names that say nothing of where a camera looks from.
_NOISE_WORDS = frozenset({"cam", "camera", "rgb", "color", "colour", "image", "images", "img", "view", "realsense"})
#: Words that name the same place on the rig.
_SAME_PLACE = {
    "top": "high", "overhead": "high", "high": "high", "above": "high", "main": "high",
    "low": "low", "bottom": "low", "below": "low",
    "wrist": "wrist", "hand": "wrist", "gripper": "wrist",
    "left": "left", "l": "left", "right": "right", "r": "right",
}


def _place_words(name: str) -> set[str]:
    words = [w for w in re.split(r"[^a-z0-9]+|(?<=[a-z])(?=[0-9])", name.lower()) if w]
    return {_SAME_PLACE.get(w, w) for w in words if w not in _NOISE_WORDS}


#: Place words that rule each other out: a right-wrist view never reads a left-wrist camera.
_OPPOSITES = (frozenset({"left", "right"}), frozenset({"high", "low"}))


def _likeness(view: str, camera: str) -> tuple[int, float]:
    """(shared place words, spelling likeness 0..1): the first decides, the second breaks ties;
    names with opposite place words (left/right, high/low) share nothing."""
    ours, theirs = _place_words(view), _place_words(camera)
    if any(ours & pair and theirs & pair and ours & pair != theirs & pair for pair in _OPPOSITES):
        return 0, 0.0
    return len(ours & theirs), difflib.SequenceMatcher(None, view.lower(), camera.lower()).ratio()


@dataclass(frozen=True)
class CameraProposal:
    """A camera map that gives every view a camera the episodes have.

    camera_map: view -> episode camera, every view (in view order); reason: how it was chosen, in
    words; guessed: views no camera's name resembles (they read the main view's camera too, which
    the user should look at)."""

    camera_map: tuple[tuple[str, str], ...]
    reason: str
    guessed: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, str]:
        return dict(self.camera_map)

    def args(self) -> list[str]:
        """["--camera-map", "cam_high=top", ...]: the flags of `run.py train`."""
        return ["--camera-map", *camera_map_items(self.as_dict())]

    def line(self) -> str:
        return " ".join(self.args())

    def short(self) -> str:
        """For a button: "top for every view" or "cam_high ← top, ..."."""
        sources = {camera for _, camera in self.camera_map}
        if len(sources) == 1 and len(self.camera_map) > 1:
            return f"{next(iter(sources))} for every view"
        return ", ".join(f"{view} ← {camera}" for view, camera in self.camera_map)


def camera_map_items(camera_map: Mapping[str, str]) -> list[str]:
    """{"cam_high": "top"} -> ["cam_high=top"] (the values of --camera-map)."""
    return [f"{view}={camera}" for view, camera in camera_map.items()]


def source_camera(view: str, camera_map: Mapping[str, str]) -> str:
    """The episode camera that fills `view` (the view's own name when the map leaves it out)."""
    return camera_map.get(view, view)


def propose_camera_map(views: Sequence[str], cameras: Sequence[str],
                       keep: Mapping[str, str] | None = None) -> CameraProposal | None:
    """A map from the canvas `views` to `cameras` (those every chosen episode has), or None when
    there are no cameras. `keep`: the user's map so far; its entries naming one of `cameras` are
    kept. One camera fills every view; otherwise each view takes the camera whose name is most
    like it (its own name first; `top`/`overhead` are like `high`, `hand` like `wrist`); a view
    no name resembles reads the camera of the first view (the main one)."""
    cameras = list(dict.fromkeys(cameras))
    if not cameras or not views:
        return None
    keep = {v: c for v, c in (keep or {}).items() if v in views and c in cameras}
    if len(cameras) == 1:
        only = cameras[0]
        return CameraProposal(tuple((view, keep.get(view, only)) for view in views),
                              f"the episodes have one camera, '{only}': it fills every view of the canvas")
    chosen: dict[str, str] = {}
    guessed: list[str] = []
    for view in views:
        if view in keep:
            chosen[view] = keep[view]
        elif view in cameras:
            chosen[view] = view
        else:
            # Shared place words decide; then a camera no view took yet; then the spelling.
            best = max(cameras, key=lambda c: (_likeness(view, c)[0], c not in chosen.values(), _likeness(view, c)[1]))
            if _likeness(view, best)[0] > 0:
                chosen[view] = best
            else:
                guessed.append(view)
    main = chosen.get(views[0]) or cameras[0]
    for view in guessed:
        chosen[view] = main
    pairs = tuple((view, chosen[view]) for view in views)
    reason = "each view from the camera whose name is most like it"
    if guessed:
        reason += f"; no camera is named like {', '.join(guessed)}, so it reads '{main}' too - check this"
    return CameraProposal(pairs, reason, tuple(guessed))


# ------------------------------------------------------------------------------------------------
# A set of episodes together
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputsSummary:
    """What chosen episodes hold together, and what a camera map makes of them.

    camera_sets: camera names -> episodes with exactly those; image_sizes: camera -> (H, W) ->
    episodes; tasks: task -> episodes ("" = the file names none); widths: (action_dim, state_dim)
    -> episodes; common_cameras: cameras every episode has (file order of the first); lacking:
    path -> the cameras the map reads that the file lacks."""

    episodes: int
    camera_sets: dict[tuple[str, ...], int]
    image_sizes: dict[str, dict[ImageHW, int]]
    tasks: dict[str, int]
    widths: dict[tuple[int, int], int]
    common_cameras: tuple[str, ...]
    lacking: dict[Path, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, inputs: Iterable[EpisodeInputs], views: Sequence[str] = (),
           camera_map: Mapping[str, str] | None = None) -> "InputsSummary":
        inputs = list(inputs)
        needed = tuple(dict.fromkeys(source_camera(v, camera_map or {}) for v in views))
        sizes: dict[str, Counter] = {}
        for item in inputs:
            for name, hw in item.cameras:
                sizes.setdefault(name, Counter())[hw] += 1
        common = [c for c in (inputs[0].camera_names if inputs else ()) if all(c in i.camera_names for i in inputs)]
        lacking = {i.path: tuple(c for c in needed if c not in i.camera_names) for i in inputs}
        return cls(
            episodes=len(inputs),
            camera_sets=dict(Counter(i.camera_names for i in inputs)),
            image_sizes={name: dict(counter) for name, counter in sizes.items()},
            tasks=dict(Counter(i.task for i in inputs)),
            widths=dict(Counter((i.action_dim, i.state_dim) for i in inputs)),
            common_cameras=tuple(common),
            lacking={path: missing for path, missing in lacking.items() if missing},
        )

    @property
    def untasked(self) -> int:
        """Episodes whose file names no task."""
        return self.tasks.get("", 0)

    def camera_text(self) -> str:
        """E.g. "top 640x480 (3 episodes)" or "cam_high 320x240, cam_left_wrist 320x240 (...)"."""
        parts = []
        for names, count in self.camera_sets.items():
            cams = ", ".join(f"{n} {self._sizes_text(n)}" for n in names) or "no cameras"
            parts.append(f"{cams} ({count} episode{'s' if count != 1 else ''})")
        return "; ".join(parts)

    def _sizes_text(self, camera: str) -> str:
        return "/".join(format_hw(hw) for hw in sorted(self.image_sizes.get(camera, {})))

    def task_text(self, default_task: str) -> str:
        parts = [f"'{t}' ({n})" for t, n in sorted(self.tasks.items()) if t]
        if self.untasked:
            parts.append(f"none ({self.untasked}; trained as '{default_task}')")
        return ", ".join(parts)

    def width_text(self) -> str:
        """E.g. "14-D actions, 14-D state"."""
        return "; ".join(f"{a}-D actions, {s}-D state" + ("" if len(self.widths) == 1 else f" ({n} episodes)")
                         for (a, s), n in sorted(self.widths.items()))

    def mixed_warnings(self) -> list[str]:
        """One sentence per way the episodes differ in shape (none when they agree)."""
        warnings = []
        if len(self.camera_sets) > 1:
            groups = "; ".join(f"{n} with {list(names)}" for names, n in self.camera_sets.items())
            warnings.append(f"Episodes with different cameras are mixed ({groups}): one run reads the same cameras "
                            "from every file, so choose episodes that share them.")
        resized = {c: s for c, s in self.image_sizes.items() if len(s) > 1}
        for camera, sizes in resized.items():
            groups = ", ".join(f"{n} at {format_hw(hw)}" for hw, n in sorted(sizes.items()))
            warnings.append(f"Camera '{camera}' has images of different sizes ({groups}): each is resized to the "
                            "canvas, but a policy runs on one size; train on one size if you can.")
        return warnings


# ------------------------------------------------------------------------------------------------
# What a training run records
# ------------------------------------------------------------------------------------------------


def training_inputs(paths: Sequence[Path], task_given: Sequence[bool], views: Sequence[tuple[str, str]],
                    config: FastWAMConfig, default_task: str, default_task_chosen: bool
                    ) -> tuple[PolicyInputs, list[tuple[str, str, str]]]:
    """What a run's checkpoints record they were trained on (`PolicyInputs`: one frame per camera
    of every episode is read for the image sizes), and the notices that go with it as (level
    "warning"|"note", kind, message): episodes of different shapes; files that name no task and
    are trained under `default_task` (a warning, a note when the user chose it with
    --default-task). views: (view, camera read) in canvas order; task_given: per path."""
    read = [read_episode_inputs(path) for path in paths]
    summary = InputsSummary.of(read, [v for v, _ in views], {v: c for v, c in views})
    notices = [("warning", "mixed_episodes", warning) for warning in summary.mixed_warnings()]
    untasked = sum(1 for given in task_given if not given)
    if untasked:
        said = f"{untasked} episode(s) name no task (ALOHA/ACT files): they are trained as '{default_task}'"
        if default_task_chosen:
            notices.append(("note", "default_task", f"{said} (--default-task)"))
        else:
            notices.append(("warning", "default_task", f"{said} (the preset's first task); if that is not their "
                                                       "task, pass --default-task 'TASK'"))
    sources = dict.fromkeys(camera for _, camera in views)
    inputs = PolicyInputs(
        views=tuple(views), image_sizes=tuple((c, tuple(sorted(summary.image_sizes.get(c, {})))) for c in sources),
        canvas_hw=tuple(config.canvas_hw), action_dim=config.action_dim, state_dim=config.proprio_dim,
        tasks=tuple(sorted({i.task or default_task for i in read})), default_task=default_task if untasked else None)
    return inputs, notices
