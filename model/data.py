"""Training data: which episodes, the train/validation split, and the per-step training windows.

Episodes are HDF5 files read through `recordings.Episode` (ours and ALOHA/ACT's). A training
sample is one step t of one episode:

- the current canvas (`model.encoders.make_canvas`) and the future canvases every
  `frame_stride` (4) steps up to t + 32: 9 RGB frames, which the 4x temporal causal encoder turns
  into 3 latent frames (the current one alone, then groups of 4);
- the action chunk action[t : t + 32] and the state qpos[t] (the proprio token);
- padding past the episode's end: the last frame/action is repeated and flagged in
  `image_is_pad` / `action_is_pad`, so the losses ignore it;
- the task string (as an index into the model's task list).

`EpisodeWindows` gives the indices; `WindowDataset` serves either decoded canvases
("frames": what the autoencoder trains on and what the latent cache encodes) or cached latents
("latents": what the DiT trains on, see `model.latent_cache`).

Workers: datasets hold `Episode` objects, which open their HDF5 file lazily in each process, and
cached latents are memory-mapped on first use per process - so a DataLoader's worker processes
never share a file handle and the parent opens nothing big.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from model.checkpoint import NormStats
from model.config import FastWAMConfig
from model.encoders import make_canvas
from model.episode_inputs import propose_camera_map
from model.errors import CameraMismatch, CorruptEpisode, NoEpisodesMatch, UnreadableEpisode
from recordings.check_memo import DeepCheckMemo, deep_check
from recordings.errors import EpisodeFormatError
from recordings.hdf5_faults import READ_ERRORS, describe
from recordings.reader import Episode
from recordings.schema import Label
from recordings.store import EpisodeStore
from robot.types import ControlSource

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------------
# Selecting episodes
# ------------------------------------------------------------------------------------------------

#: Labels taken when none are asked for: demonstrations known to have succeeded.
DEFAULT_LABELS: tuple[str, ...] = (Label.SUCCESS.value,)


@dataclass(frozen=True)
class EpisodeFilter:
    """Which episodes of the sources to use.

    labels: success labels to keep; None = the default, `success` for our files plus ALOHA/ACT
    files (they carry no label at all, and their tools keep only successful demonstrations).
    tasks: task strings to keep (empty = any). include: file names or paths to keep (empty = all).
    exclude: file names or paths to leave out (a damaged file, a bad demonstration).
    control_sources: train only on the steps whose action came from these sources
    (`robot.types.ControlSource` values; empty = every step). DAgger-style data from policy
    episodes is ("teleop", "intervention"): the person's corrections, not the policy's own
    actions. ALOHA/ACT files record no source: their steps count as "teleop".
    """

    labels: tuple[str, ...] | None = None
    tasks: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    control_sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(Label.parse(label).value for label in self.labels))
        for name in ("tasks", "include", "exclude", "control_sources"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        known = [source.value for source in ControlSource]
        unknown = [s for s in self.control_sources if s not in known]
        if unknown:
            raise ValueError(f"unknown control source(s) {unknown}; choose among {', '.join(known)} "
                             "(e.g. teleop,intervention for the corrections made during policy episodes)")


@dataclass(frozen=True)
class EpisodeInfo:
    """What selection learnt about one episode (no frames read). task: the episode's task, or
    the default task for files that have none (ALOHA/ACT; task_given is False then)."""

    path: Path
    length: int
    task: str
    label: str
    ours: bool
    cameras: tuple[str, ...]
    task_given: bool = True
    #: The steps to train on when the filter selects by control source (None: all `length` steps).
    steps: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def sample_count(self) -> int:
        """Training samples this episode gives (its selected steps)."""
        return self.length if self.steps is None else int(len(self.steps))


def _source_paths(sources: Sequence[str | os.PathLike]) -> list[Path]:
    paths: list[Path] = []
    for source in sources:
        source = Path(source)
        if source.is_dir():
            found = EpisodeStore(source).episode_paths()
            if not found:  # ALOHA-style names are what the store lists; take any *.hdf5 too
                found = sorted(source.glob("*.hdf5"))
            paths.extend(found)
        elif source.is_file():
            paths.append(source)
        else:
            raise NoEpisodesMatch([str(source)], 0, f"{source} does not exist",
                                  "Pass a store folder (e.g. recordings/episodes) or episode files.")
    # The same file reached twice (a folder and one of its files) counts once.
    unique: dict[Path, Path] = {}
    for path in paths:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def _matches(path: Path, patterns: Iterable[str]) -> bool:
    resolved = path.resolve()
    for pattern in patterns:
        candidate = Path(pattern)
        if path.name == pattern or path.stem == pattern or (candidate.exists() and candidate.resolve() == resolved):
            return True
    return False


def find_episodes(
    sources: Sequence[str | os.PathLike],
    episode_filter: EpisodeFilter | None = None,
    default_task: str = "",
    canvas: CanvasSpec | None = None,
    *,
    deep: bool = False,
    skip_unreadable: bool = False,
    on_skip: Callable[[Path, str], None] | None = None,
    check_memo: DeepCheckMemo | None = None,
) -> list[EpisodeInfo]:
    """The episodes of `sources` (store folders or files) that pass `episode_filter`, by path.

    Every candidate is opened (layout only); with `deep`, every selected episode is also read
    whole and every frame decoded (`recordings.check.check_episode(deep=True)`, remembered in
    `check_memo` for files that did not change), so a bad frame is found before training, not
    an hour into it. Files that cannot be used (unreadable, empty): by default `CorruptEpisode`
    names every one of them; with `skip_unreadable` each is left out with a warning (logged,
    and passed to `on_skip(path, reason)` for the caller to show). Valid files that lack a
    camera `canvas` reads are never skipped: `CameraMismatch` names them with a --camera-map
    that works, when there is one. Raises `NoEpisodesMatch` (saying what was there) when
    nothing passes.
    """
    flt = episode_filter or EpisodeFilter()
    names = [str(s) for s in sources]
    paths = _source_paths(sources)
    if flt.include:
        paths = [p for p in paths if _matches(p, flt.include)]
        missing = [pat for pat in flt.include if not any(_matches(p, [pat]) for p in paths)]
        if missing:
            raise NoEpisodesMatch(names, len(paths), f"the listed episode(s) {missing} are not there",
                                  "Check the names with `python run.py episodes list`.")
    if flt.exclude:
        before = len(paths)
        paths = [p for p in paths if not _matches(p, flt.exclude)]
        if before and not paths:
            raise NoEpisodesMatch(names, before, f"--exclude leaves nothing to train on: it excludes all {before} "
                                  "episode file(s) there", "Exclude fewer files, or point --store at other episodes.")
    if not paths:
        raise NoEpisodesMatch(names, 0, "there are no episode files (episode_N.hdf5)",
                              "Record demonstrations first, or point --episodes at the folder that holds them.")

    infos: list[EpisodeInfo] = []
    problems: dict[Path, str] = {}
    cameras = canvas.source_cameras if canvas is not None else ()
    lacking_cameras: dict[Path, tuple[str, ...]] = {}
    for path in paths:
        try:
            with Episode.open(path) as episode:
                meta = episode.metadata
                info = EpisodeInfo(
                    path=path, length=episode.length, task=meta.task or default_task,
                    label=meta.label.value, ours=episode.is_ours, cameras=tuple(episode.camera_names),
                    task_given=bool(meta.task),
                    steps=_steps_of(episode, flt.control_sources),
                )
        except EpisodeFormatError as error:
            problems[path] = "; ".join(error.reasons)
            continue
        except READ_ERRORS as error:
            problems[path] = f"cannot be read ({describe(error)})"
            continue
        if _selected(info, flt) and any(c not in info.cameras for c in cameras):
            lacking_cameras[path] = info.cameras  # a valid file whose cameras are named otherwise
        if info.length < 1:
            problems[path] = "has no steps"
            continue
        if deep and _selected(info, flt):
            reasons = deep_check(path, check_memo)
            if reasons:
                problems[path] = "; ".join(reasons)
                continue
        infos.append(info)
    selected = [info for info in infos if _selected(info, flt)]
    if problems and not skip_unreadable:
        raise CorruptEpisode(problems)
    for path, reason in problems.items():
        log.warning("Leaving out %s: %s", path.name, reason)
        if on_skip is not None:
            on_skip(path, reason)
    if lacking_cameras:
        raise _camera_mismatch(lacking_cameras, selected, canvas)
    if not selected:
        raise NoEpisodesMatch(names, len(infos), _describe_rejections(infos, flt), _fix_for(flt))
    return selected


def _camera_mismatch(lacking: Mapping[Path, tuple[str, ...]], selected: Sequence[EpisodeInfo],
                     canvas: CanvasSpec) -> CameraMismatch:
    """The error for selected files that lack a camera the canvas reads, with the map that reads
    every selected file (built from the cameras they all have, keeping the user's map where it
    works)."""
    common = [c for c in selected[0].cameras if all(c in info.cameras for info in selected)] if selected else []
    proposal = propose_camera_map(canvas.cameras, common, keep=dict(canvas.camera_map))
    if proposal is None:
        return CameraMismatch(lacking, canvas.cameras, canvas.source_cameras, None)
    return CameraMismatch(lacking, canvas.cameras, canvas.source_cameras, proposal.args(), proposal.reason,
                          f"Use {proposal.short()}")


def _steps_of(episode: Episode, sources: tuple[str, ...]) -> np.ndarray | None:
    """The steps of `episode` whose control source is one of `sources` (None: no selection)."""
    if not sources:
        return None
    recorded = episode.control_sources
    if recorded is None:  # ALOHA/ACT files: human demonstrations
        return np.arange(episode.length) if ControlSource.TELEOP.value in sources else np.zeros(0, np.int64)
    return np.flatnonzero([source.value in sources for source in recorded]).astype(np.int64)


def _selected(info: EpisodeInfo, flt: EpisodeFilter) -> bool:
    if flt.labels is None:
        label_ok = info.label in DEFAULT_LABELS or not info.ours
    else:
        label_ok = info.label in flt.labels
    task_ok = not flt.tasks or info.task in flt.tasks
    return label_ok and task_ok and info.sample_count > 0


def _describe_rejections(infos: Sequence[EpisodeInfo], flt: EpisodeFilter) -> str:
    labels: dict[str, int] = {}
    tasks: dict[str, int] = {}
    for info in infos:
        labels[info.label] = labels.get(info.label, 0) + 1
        tasks[info.task or "(none)"] = tasks.get(info.task or "(none)", 0) + 1
    wanted = "success" if flt.labels is None else "/".join(flt.labels)
    text = f"{len(infos)} episode(s) found, labelled {labels}, tasks {tasks}; wanted label {wanted}"
    if flt.tasks:
        text += f" and task {list(flt.tasks)}"
    if flt.control_sources:
        with_steps = sum(1 for info in infos if info.sample_count > 0)
        text += f" and steps from {'/'.join(flt.control_sources)} ({with_steps} episode(s) have any)"
    return text


def _fix_for(flt: EpisodeFilter) -> str:
    if flt.labels is None:
        return ("Label the good demonstrations 'success' (`python run.py episodes label N success`), or "
                "train on other labels with --labels success,unknown")
    return "Widen --labels / --task, or check the labels with `python run.py episodes list`."


def split_by_episode(
    episodes: Sequence[EpisodeInfo], val_fraction: float
) -> tuple[list[EpisodeInfo], list[EpisodeInfo]]:
    """(train, validation) by episode, fixed by the file names: an episode is in validation when
    the hash of its name falls below `val_fraction`, so adding episodes never moves an old one.
    With >= 2 episodes and val_fraction > 0 at least one (the lowest hash) is held out; with one
    episode there is no validation set."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be within 0 and 1 (0.1 holds out ~10% of episodes), got {val_fraction}")

    def unit_hash(info: EpisodeInfo) -> float:
        digest = hashlib.sha256(info.name.encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") / 2.0**64

    scored = sorted(episodes, key=lambda info: (unit_hash(info), str(info.path)))
    val = [info for info in scored if unit_hash(info) < val_fraction]
    if not val and val_fraction > 0 and len(scored) >= 2:
        val = [scored[0]]
    if len(val) == len(scored):  # never hold out everything
        val = val[:-1]
    val_paths = {info.path for info in val}
    train = [info for info in episodes if info.path not in val_paths]
    val = [info for info in episodes if info.path in val_paths]
    return train, val


# ------------------------------------------------------------------------------------------------
# Windows
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowSpec:
    """The time layout of one sample. frame_stride: steps between the RGB frames of the clip
    (= the temporal compression: 33 action-rate frames -> 9 RGB frames); latent_frames: 1
    current + future latent frames; action_horizon: actions per chunk."""

    action_horizon: int = 32
    frame_stride: int = 4
    latent_frames: int = 3
    temporal_compression: int = 4

    def __post_init__(self) -> None:
        if self.action_horizon < 1 or self.frame_stride < 1 or self.latent_frames < 1 or self.temporal_compression < 1:
            raise ValueError(f"WindowSpec values must be >= 1, got {self}")

    @classmethod
    def from_config(cls, config: FastWAMConfig) -> "WindowSpec":
        return cls(
            action_horizon=config.action_horizon,
            frame_stride=config.temporal_compression,
            latent_frames=config.latent_frames,
            temporal_compression=config.temporal_compression,
        )

    @property
    def video_frames(self) -> int:
        """RGB frames per clip: 1 + temporal_compression (latent_frames - 1) = 9."""
        return 1 + self.temporal_compression * (self.latent_frames - 1)

    @property
    def group_span(self) -> int:
        """Steps from the first to the last frame of one latent group, plus one stride: 16."""
        return self.frame_stride * self.temporal_compression

    def frame_indices(self, t: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        """Steps of the clip's RGB frames (video_frames,) clamped to the episode, and which are
        padding (past the last step)."""
        steps = t + self.frame_stride * np.arange(self.video_frames)
        return np.minimum(steps, length - 1), steps > length - 1

    def action_indices(self, t: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        """Steps of the action chunk (action_horizon,) clamped to the episode, and the padding."""
        steps = t + np.arange(self.action_horizon)
        return np.minimum(steps, length - 1), steps > length - 1

    def group_end(self, t: int, j: int) -> int:
        """Step of the last RGB frame of latent frame j >= 1 of the clip starting at t."""
        return t + j * self.group_span


# ------------------------------------------------------------------------------------------------
# Canvases
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CanvasSpec:
    """How episode frames become the model's canvas. camera_map: canvas camera -> the episode's
    camera name, for files whose cameras are named otherwise (e.g. cam_high=top)."""

    canvas_hw: tuple[int, int]
    cameras: tuple[str, ...]
    camera_map: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_config(cls, config: FastWAMConfig, camera_map: Mapping[str, str] | None = None) -> "CanvasSpec":
        return cls(tuple(config.canvas_hw), tuple(config.camera_names), tuple(sorted((camera_map or {}).items())))

    def source_camera(self, camera: str) -> str:
        return dict(self.camera_map).get(camera, camera)

    @property
    def source_cameras(self) -> tuple[str, ...]:
        return tuple(self.source_camera(c) for c in self.cameras)

    def canvas(self, episode: Episode, t: int) -> np.ndarray:
        """(H, W, 3) uint8 canvas of step t."""
        images = {c: episode.frame(self.source_camera(c), int(t)) for c in self.cameras}
        return make_canvas(images, self.canvas_hw, self.cameras)

    def key(self) -> dict:
        return {"canvas_hw": list(self.canvas_hw), "cameras": list(self.cameras), "camera_map": [list(p) for p in self.camera_map]}


def episode_canvases(episode: Episode, spec: CanvasSpec, steps: Iterable[int] | None = None) -> np.ndarray:
    """(N, H, W, 3) uint8 canvases of the given steps (all by default). A step whose frame repeats
    the previous step's (the sim renders at 25 fps for 50 Hz control) is decoded anyway: the
    cost is small next to encoding, and skipping would need frame identity we do not record."""
    steps = range(episode.length) if steps is None else list(steps)
    return np.stack([spec.canvas(episode, t) for t in steps])


# ------------------------------------------------------------------------------------------------
# The dataset
# ------------------------------------------------------------------------------------------------


@dataclass
class EpisodeSource:
    """One episode as the dataset sees it: the reader, its task index, and (latents mode) the
    cache file of its encoded latents (see `model.latent_cache.EpisodeLatents`)."""

    info: EpisodeInfo
    task_index: int
    latents: object | None = None  # model.latent_cache.EpisodeLatents
    canvases: object | None = None  # model.latent_cache.EpisodeCanvases: read instead of decoding
    episode: Episode | None = field(default=None, repr=False)

    def reader(self) -> Episode:
        if self.episode is None:
            self.episode = Episode(self.info.path)  # opened lazily, per process
        return self.episode


class WindowDataset(torch.utils.data.Dataset):
    """Every step of every episode (or the steps selected by control source, `EpisodeInfo.steps`)
    as a training sample (a map-style dataset).

    mode "frames": item["video"] (video_frames, H, W, 3) uint8 canvases at t, t+4, ..., t+32
    (from the sources' cached canvases when they have them, else decoded from the file).
    mode "latents": item["latents"] (C, latent_frames, h, w) float32 from the latent cache.
    Both: "action" (H, 14) float32 and "proprio" (14,) float32, z-scored with `norm_stats` when
    given (raw otherwise); "action_is_pad" (H,) bool; "image_is_pad" (video_frames,) bool;
    "task" () int64 index into the model's task list; "episode", "t" () int64 (for reports).
    """

    def __init__(
        self,
        sources: Sequence[EpisodeSource],
        window: WindowSpec,
        canvas: CanvasSpec | None = None,
        norm_stats: NormStats | None = None,
        mode: str = "latents",
    ):
        if mode not in ("frames", "latents"):
            raise ValueError(f"mode must be 'frames' or 'latents', got {mode!r}")
        if mode == "frames" and canvas is None:
            raise ValueError("mode 'frames' needs a CanvasSpec")
        if mode == "latents" and any(s.latents is None for s in sources):
            raise ValueError("mode 'latents' needs every episode's cached latents (model.latent_cache)")
        self.sources = list(sources)
        self.window = window
        self.canvas = canvas
        self.norm_stats = norm_stats
        self.mode = mode
        counts = np.array([s.info.sample_count for s in self.sources], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(counts)])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def close(self) -> None:
        """Close the episode files this process opened (they reopen on the next read)."""
        for source in self.sources:
            if source.episode is not None:
                source.episode.close()
                source.episode = None

    def locate(self, index: int) -> tuple[int, int]:
        """Sample index -> (episode index, step)."""
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} is outside the dataset's {len(self)} samples")
        e = int(np.searchsorted(self._starts, index, side="right") - 1)
        k = int(index - self._starts[e])
        steps = self.sources[e].info.steps
        return e, k if steps is None else int(steps[k])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        e, t = self.locate(int(index))
        try:
            return self._item(e, t)
        except EpisodeFormatError as error:  # damaged after the up-front check, or never checked
            raise UnreadableEpisode.at(self.sources[e].info.path, "; ".join(error.reasons)) from error

    def _item(self, e: int, t: int) -> dict[str, torch.Tensor]:
        source = self.sources[e]
        episode = source.reader()
        length = source.info.length
        a_idx, a_pad = self.window.action_indices(t, length)
        f_idx, f_pad = self.window.frame_indices(t, length)
        action = episode.action[a_idx]
        proprio = episode.qpos[t]
        if self.norm_stats is not None:
            action = self.norm_stats.normalize_action(action)
            proprio = self.norm_stats.normalize_qpos(proprio)
        item = {
            "action": torch.from_numpy(np.ascontiguousarray(action, dtype=np.float32)),
            "action_is_pad": torch.from_numpy(a_pad),
            "proprio": torch.from_numpy(np.ascontiguousarray(proprio, dtype=np.float32)),
            "image_is_pad": torch.from_numpy(f_pad),
            "task": torch.tensor(source.task_index, dtype=torch.int64),
            "episode": torch.tensor(e, dtype=torch.int64),
            "t": torch.tensor(t, dtype=torch.int64),
        }
        if self.mode == "frames":
            # Repeated steps (padding) are decoded once.
            unique, inverse = np.unique(f_idx, return_inverse=True)
            if source.canvases is not None:
                frames = source.canvases.frames(unique)
            else:
                frames = episode_canvases(episode, self.canvas, unique)
            item["video"] = torch.from_numpy(frames[inverse])
        else:
            item["latents"] = torch.from_numpy(source.latents.window(t, self.window))
        return item


def video_to_model(video_uint8: torch.Tensor) -> torch.Tensor:
    """(B, T, H, W, 3) uint8 canvases -> (B, 3, T, H, W) float in [-1, 1] (the autoencoders' input)."""
    return video_uint8.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0


# ------------------------------------------------------------------------------------------------
# Sample order
# ------------------------------------------------------------------------------------------------


class SampleStream:
    """The order in which training samples are visited: an endless concatenation of epochs, each
    a permutation of the dataset drawn from (seed, epoch). Global batch b takes stream positions
    [b * B, (b + 1) * B); rank r of W takes its contiguous slice of that. The order is a function
    of (seed, step) alone, so a resumed run sees exactly the batches an uninterrupted one would,
    and W processes together see exactly the single-process batch."""

    def __init__(self, num_samples: int, seed: int):
        if num_samples < 1:
            raise ValueError("SampleStream needs at least one sample")
        self.num_samples = num_samples
        self.seed = seed
        self._perm_epoch = -1
        self._perm = np.empty(0, dtype=np.int64)

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._perm = rng.permutation(self.num_samples)
            self._perm_epoch = epoch
        return self._perm

    def positions(self, start: int, count: int) -> np.ndarray:
        """Sample indices at stream positions [start, start + count)."""
        out = np.empty(count, dtype=np.int64)
        for i in range(count):
            epoch, offset = divmod(start + i, self.num_samples)
            out[i] = self._permutation(epoch)[offset]
        return out

    def batch(self, step: int, global_batch: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
        """The sample indices rank `rank` trains on at `step`."""
        if global_batch % world_size:
            raise ValueError(f"the batch size {global_batch} must divide evenly over {world_size} processes")
        per_rank = global_batch // world_size
        return self.positions(step * global_batch + rank * per_rank, per_rank)

    def epoch_of(self, step: int, global_batch: int) -> float:
        return step * global_batch / self.num_samples
