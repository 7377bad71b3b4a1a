"""Encoded video latents, cached per episode on disk, so only the first epoch runs the encoder.

Why a cache is right here: the video encoder is frozen while the DiT trains (Fast-WAM freezes the
Wan2.2 VAE; our tiny/small autoencoder is pretrained first, then frozen - see `model.autoencoder_stage`), so an
episode's latents never change during a run, and across runs they change only when the frames or
the encoder do.

Key = (encoder key, frames key):
- encoder key: sha256 of the encoder's class, every weight and buffer (bytes, dtype, shape), the
  canvas layout (size, cameras, camera map) and the window layout (frame stride, groups).
- frames key: sha256 of the episode's frames for the cameras the canvas uses (dataset bytes,
  shapes, JPEG lengths). Not of the whole file: relabelling an episode or editing its notes
  rewrites its attributes but not its pictures, and must not cost a re-encode; re-recording,
  recovering or editing frames changes the key. A memo (`file_keys.json`) maps (path, size,
  mtime, inode) to the frames key, so unchanged files are not re-read on the next start.

Files: `<root>/<encoder key[:24]>/<frames key[:32]>.npy` (float32) and a `.json` beside it with
the layout; both are written under temporary names and renamed (the `.json` last, so a reader that
sees it sees a complete array). A killed run leaves at most a temporary file, never a bad entry.

Two layouts:
- "groups" (our `CausalVideoAutoencoder`, whose latent frames depend only on their own RGB
  frames): rows [0, T) are the current-frame latents of every step; then one row per end step e
  of a 4-frame group (frames e-12, e-8, e-4, e, clamped to the episode). A window at t takes the
  current latent of t and the groups ending at t+16 and t+32. Each *distinct* canvas and group
  is encoded once: cameras slower than the control rate (the sim renders at 25 fps for 50 Hz
  control) repeat frames, so about half the groups of a sim episode are duplicates.
- "clips" (any other encoder, e.g. Wan2.2's VAE, whose causal convolutions carry state across
  groups): one (C, F, h, w) clip per step.

`CanvasCache` keeps the decoded canvases of an episode (uint8 (T, H, W, 3), keyed by the frames
and the canvas layout) for the autoencoder stage, which would otherwise decode 27 JPEGs for every
clip it trains on; the latent encoder reads them too instead of decoding again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import h5py
import numpy as np
import torch

from model.data import CanvasSpec, EpisodeInfo, WindowSpec, episode_canvases, video_to_model
from model.encoders import CausalVideoAutoencoder
from model.errors import UnreadableEpisode
from recordings import schema
from recordings.hdf5_faults import READ_ERRORS, describe
from recordings.layout import camera_names_of
from recordings.reader import Episode

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
MEMO_FILE = "file_keys.json"

# ------------------------------------------------------------------------------------------------
# Keys
# ------------------------------------------------------------------------------------------------


def encoder_key(encoder: torch.nn.Module, canvas: CanvasSpec, window: WindowSpec) -> str:
    """sha256 hex identifying what the encoder makes of an episode (weights, canvas, window)."""
    h = hashlib.sha256()
    layout = {
        "format": CACHE_FORMAT,
        "class": f"{type(encoder).__module__}.{type(encoder).__qualname__}",
        "canvas": canvas.key(),
        "window": [window.frame_stride, window.temporal_compression, window.latent_frames],
    }
    h.update(json.dumps(layout, sort_keys=True).encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def frames_key(path: str | os.PathLike, cameras: Sequence[str]) -> str:
    """sha256 hex of an episode's frames of `cameras` (raw or JPEG bytes, shapes, JPEG lengths).
    UnreadableEpisode naming the file and the camera when the bytes do not read (a run started
    without the deep check meets a damaged frame here first)."""
    h = hashlib.sha256()
    what = "the file"
    try:
        with h5py.File(path, "r") as root:
            names = tuple(camera_names_of(root))
            h.update(json.dumps({"cameras": list(cameras)}).encode())
            for camera in cameras:
                what = f"the frames of camera {camera!r}"
                ds = root[schema.image_path(camera)]
                h.update(f"{camera}|{ds.dtype}|{ds.shape}".encode())
                step = max(1, (64 << 20) // max(1, int(np.prod(ds.shape[1:])) * ds.dtype.itemsize))
                for start in range(0, ds.shape[0], step):  # bounded memory for raw 640x480 episodes
                    h.update(np.ascontiguousarray(ds[start : start + step]).tobytes())
            what = "the JPEG lengths"
            if schema.COMPRESS_LEN in root and names:
                lengths = root[schema.COMPRESS_LEN][()]
                for camera in cameras:
                    if camera in names and names.index(camera) < len(lengths):
                        h.update(np.ascontiguousarray(lengths[names.index(camera)]).tobytes())
    except READ_ERRORS as error:
        raise UnreadableEpisode.at(Path(path), f"{what} cannot be read: {describe(error)}") from error
    return h.hexdigest()


class FramesKeyMemo:
    """(path, size, mtime, inode, cameras) -> frames key, kept in `<root>/file_keys.json`.

    Several processes (DDP ranks) may update it at once; each rewrites it atomically, so at worst
    an entry is lost and recomputed next time."""

    def __init__(self, root: Path):
        self.path = Path(root) / MEMO_FILE
        try:
            self._table: dict[str, dict] = json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            self._table = {}

    def key(self, path: str | os.PathLike, cameras: Sequence[str]) -> str:
        path = Path(path).resolve()
        st = path.stat()
        stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino, "cameras": list(cameras)}
        entry = self._table.get(str(path))
        if entry is not None and {k: entry.get(k) for k in stamp} == stamp:
            return entry["key"]
        key = frames_key(path, cameras)
        self._table[str(path)] = {**stamp, "key": key}
        self._save()
        return key

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write_bytes(self.path, json.dumps(self._table, indent=0).encode())


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------------------------------
# One episode's latents
# ------------------------------------------------------------------------------------------------


@dataclass
class _MappedArray:
    """A `.npy` file memory-mapped on first use in each process; picklable for loader workers
    (the map is not pickled: each worker opens its own)."""

    path: Path

    def __post_init__(self) -> None:
        self._array: np.ndarray | None = None
        self._pid: int | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_array"], state["_pid"] = None, None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def array(self) -> np.ndarray:
        if self._array is None or self._pid != os.getpid():
            self._array = np.load(self.path, mmap_mode="r")
            self._pid = os.getpid()
        return self._array


@dataclass
class EpisodeLatents(_MappedArray):
    """One cache entry (`path`: its `.npy`).

    layout "groups": rows [0, length) current-frame latents, rows [length, ...) the groups ending
    at steps group_first .. group_last. layout "clips": rows (length, C, F, h, w)."""

    layout: str
    length: int
    group_first: int = 0
    group_last: int = -1

    def current(self, t: int) -> np.ndarray:
        """(C, h, w) latent of step t's canvas alone (what the policy computes at run time)."""
        if self.layout == "clips":
            return np.asarray(self.array()[t, :, 0])
        return np.asarray(self.array()[t])

    def window(self, t: int, spec: WindowSpec) -> np.ndarray:
        """(C, latent_frames, h, w) float32 latents of the clip starting at step t (padding past
        the end repeats the last frame, as `WindowSpec.frame_indices` does)."""
        arr = self.array()
        if self.layout == "clips":
            return np.array(arr[t], dtype=np.float32)
        rows = [t]
        for j in range(1, spec.latent_frames):
            end = min(spec.group_end(t, j), self.group_last)
            rows.append(self.length + end - self.group_first)
        return np.stack([arr[r] for r in rows], axis=1).astype(np.float32, copy=False)


@dataclass
class EpisodeCanvases(_MappedArray):
    """An episode's canvases (length, H, W, 3) uint8."""

    length: int

    def frames(self, steps) -> np.ndarray:
        return np.asarray(self.array()[np.asarray(steps)])


def group_range(length: int, spec: WindowSpec) -> tuple[int, int]:
    """(first, last) end steps of the groups an episode of `length` steps needs. Beyond
    `last` every frame of a group is clamped to the last step, so all such groups are equal."""
    last = length - 1 + (spec.temporal_compression - 1) * spec.frame_stride
    return min(spec.group_span, last), last


def group_steps(end: int, length: int, spec: WindowSpec) -> np.ndarray:
    """(temporal_compression,) steps of the group ending at `end`, clamped to the episode."""
    steps = end - spec.frame_stride * np.arange(spec.temporal_compression - 1, -1, -1)
    return np.clip(steps, 0, length - 1)


# ------------------------------------------------------------------------------------------------
# Encoding
# ------------------------------------------------------------------------------------------------


def _distinct(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, ...) array -> (index of the first of each distinct row, inverse (N,) into those)."""
    seen: dict[bytes, int] = {}
    first, inverse = [], np.empty(len(rows), dtype=np.int64)
    for i, row in enumerate(rows):
        key = hashlib.blake2b(np.ascontiguousarray(row).tobytes(), digest_size=16).digest()
        if key not in seen:
            seen[key] = len(first)
            first.append(i)
        inverse[i] = seen[key]
    return np.asarray(first, dtype=np.int64), inverse


@torch.no_grad()
def encode_episode(
    episode: Episode,
    encoder: torch.nn.Module,
    canvas: CanvasSpec,
    spec: WindowSpec,
    device: torch.device | str = "cpu",
    chunk: int = 16,
    canvases: EpisodeCanvases | None = None,
) -> tuple[np.ndarray, dict]:
    """Encode one episode: (array float32, layout dict) for the cache (see the module docstring).
    `canvases`: the episode's cached canvases, read instead of decoding the frames again."""
    frames = canvases.array() if canvases is not None else episode_canvases(episode, canvas)  # (T, H, W, 3) uint8
    length = len(frames)
    params = list(encoder.parameters())
    dtype = params[0].dtype if params else torch.float32

    def to_model(steps) -> torch.Tensor:
        return video_to_model(torch.from_numpy(np.asarray(frames[np.asarray(steps)]))[None]).to(device=device, dtype=dtype)

    if not isinstance(encoder, CausalVideoAutoencoder):
        clips = []
        for t in range(length):
            steps, _ = spec.frame_indices(t, length)
            clips.append(encoder.encode(to_model(steps))[0].float().cpu().numpy())
        return np.stack(clips).astype(np.float32), {"layout": "clips", "length": length}

    def encode_groups(step_groups: np.ndarray) -> np.ndarray:
        """(G, 4) steps -> (G, C, h, w) latents, in chunks. The uint8 frames are gathered and
        converted straight into the (G, 4, 3, H, W) layout: one float copy, no intermediate
        permuted copies (memory traffic, not arithmetic, is what this costs on a busy CPU)."""
        out = []
        for c in range(0, len(step_groups), chunk):
            part = np.asarray(frames[np.asarray(step_groups[c : c + chunk])])  # (G, 4, H, W, 3) uint8
            x = torch.from_numpy(part).permute(0, 1, 4, 2, 3).to(device=device, dtype=dtype,
                                                                 memory_format=torch.contiguous_format)
            x.mul_(1.0 / 127.5).sub_(1.0)  # [-1, 1], as video_to_model
            out.append(encoder.encode_groups(x).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0,), np.float32)

    # Distinct canvases (a repeated camera frame is encoded once).
    firsts, canvas_id = _distinct(np.asarray(frames))
    current = encode_groups(np.repeat(firsts[:, None], 4, axis=1))[canvas_id]  # (T, C, h, w)
    first, last = group_range(length, spec)
    ends = np.arange(first, last + 1)
    steps = np.stack([group_steps(int(e), length, spec) for e in ends])  # (G, 4)
    group_first, group_id = _distinct(canvas_id[steps])  # groups of the same canvases are the same group
    grouped = encode_groups(steps[group_first])[group_id]
    array = np.concatenate([current, grouped]).astype(np.float32)
    return array, {"layout": "groups", "length": length, "group_first": first, "group_last": last}


# ------------------------------------------------------------------------------------------------
# The cache
# ------------------------------------------------------------------------------------------------


@dataclass
class CacheReport:
    hits: int = 0
    built: int = 0
    seconds: float = 0.0


class LatentCache:
    """The latents of one encoder (by key) under `root`. Any process may read; writers rename
    complete files into place, so concurrent builders of the same entry are harmless."""

    def __init__(self, root: str | os.PathLike, encoder_key_hex: str, memo: FramesKeyMemo | None = None):
        self.root = Path(root)
        self.encoder_key = encoder_key_hex
        self.folder = self.root / encoder_key_hex[:24]
        self.memo = memo or FramesKeyMemo(self.root)

    def _paths(self, key: str) -> tuple[Path, Path]:
        return self.folder / f"{key[:32]}.npy", self.folder / f"{key[:32]}.json"

    def get(self, key: str) -> EpisodeLatents | None:
        """The entry for a frames key, or None when absent (or left incomplete)."""
        array_path, meta_path = self._paths(key)
        try:
            meta = json.loads(meta_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        if meta.get("format") != CACHE_FORMAT or meta.get("frames_key") != key or not array_path.is_file():
            return None
        _mark_used(meta_path)
        return EpisodeLatents(array_path, meta["layout"], int(meta["length"]),
                              int(meta.get("group_first", 0)), int(meta.get("group_last", -1)))

    def put(self, key: str, array: np.ndarray, layout: dict, source: str = "") -> EpisodeLatents:
        self.folder.mkdir(parents=True, exist_ok=True)
        array_path, meta_path = self._paths(key)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{array_path.name}.", suffix=".npy")
        os.close(fd)
        try:
            np.save(tmp, np.ascontiguousarray(array, dtype=np.float32))
            os.replace(tmp, array_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        meta = {"format": CACHE_FORMAT, "frames_key": key, "encoder_key": self.encoder_key, "source": source,
                "shape": list(array.shape), **layout}
        _atomic_write_bytes(meta_path, json.dumps(meta, indent=1).encode())
        entry = self.get(key)
        assert entry is not None
        return entry

    def ensure(
        self,
        episodes: Sequence[EpisodeInfo],
        encoder: torch.nn.Module,
        canvas: CanvasSpec,
        spec: WindowSpec,
        device: torch.device | str = "cpu",
        share: tuple[int, int] = (0, 1),
        progress: Callable[[dict], None] | None = None,
        canvases: Sequence[EpisodeCanvases | None] | None = None,
    ) -> tuple[list[EpisodeLatents | None], CacheReport]:
        """The entry of every episode, building the missing ones among this process's share
        (episode i is built by rank i % world); others' entries are None if not there yet.
        canvases: cached canvases per episode (or None), read instead of decoding frames."""
        rank, world = share
        report = CacheReport()
        started = time.monotonic()
        entries: list[EpisodeLatents | None] = []
        was_training = encoder.training
        encoder.eval()
        try:
            for i, info in enumerate(episodes):
                key = self.memo.key(info.path, canvas.source_cameras)
                entry = self.get(key)
                if entry is not None and entry.length != info.length:
                    entry = None  # cannot happen with a frames key, but never serve a wrong shape
                if entry is None and i % world == rank:
                    t0 = time.monotonic()
                    with Episode.open(info.path) as episode:
                        array, layout = encode_episode(episode, encoder, canvas, spec, device,
                                                       canvases=canvases[i] if canvases else None)
                    entry = self.put(key, array, layout, source=str(info.path))
                    report.built += 1
                    if progress:
                        progress({"episode": info.name, "index": i, "of": len(episodes), "hit": False,
                                  "seconds": round(time.monotonic() - t0, 2)})
                elif entry is not None:
                    report.hits += 1
                entries.append(entry)
        finally:
            encoder.train(was_training)
        report.seconds = time.monotonic() - started
        return entries, report


class CanvasCache:
    """Decoded canvases per episode under `<root>/canvases/<canvas layout key>/`, same rules as
    `LatentCache` (frames key, atomic files, share of the building per rank)."""

    def __init__(self, root: str | os.PathLike, canvas: CanvasSpec, memo: FramesKeyMemo | None = None):
        self.root = Path(root)
        self.canvas = canvas
        layout = hashlib.sha256(json.dumps({"format": CACHE_FORMAT, **canvas.key()}, sort_keys=True).encode()).hexdigest()
        self.folder = self.root / "canvases" / layout[:24]
        self.memo = memo or FramesKeyMemo(self.root)

    def _paths(self, key: str) -> tuple[Path, Path]:
        return self.folder / f"{key[:32]}.npy", self.folder / f"{key[:32]}.json"

    def get(self, key: str) -> EpisodeCanvases | None:
        array_path, meta_path = self._paths(key)
        try:
            meta = json.loads(meta_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        if meta.get("frames_key") != key or not array_path.is_file():
            return None
        _mark_used(meta_path)
        return EpisodeCanvases(array_path, int(meta["length"]))

    def ensure(
        self,
        episodes: Sequence[EpisodeInfo],
        share: tuple[int, int] = (0, 1),
        progress: Callable[[dict], None] | None = None,
    ) -> tuple[list[EpisodeCanvases | None], CacheReport]:
        rank, world = share
        report = CacheReport()
        started = time.monotonic()
        entries: list[EpisodeCanvases | None] = []
        for i, info in enumerate(episodes):
            key = self.memo.key(info.path, self.canvas.source_cameras)
            entry = self.get(key)
            if entry is None and i % world == rank:
                t0 = time.monotonic()
                with Episode.open(info.path) as episode:
                    array = episode_canvases(episode, self.canvas)
                self.folder.mkdir(parents=True, exist_ok=True)
                array_path, meta_path = self._paths(key)
                fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{array_path.name}.", suffix=".npy")
                os.close(fd)
                try:
                    np.save(tmp, array)
                    os.replace(tmp, array_path)
                except BaseException:
                    Path(tmp).unlink(missing_ok=True)
                    raise
                _atomic_write_bytes(meta_path, json.dumps({"frames_key": key, "length": len(array),
                                                           "source": str(info.path)}).encode())
                entry = self.get(key)
                report.built += 1
                if progress:
                    progress({"episode": info.name, "index": i, "of": len(episodes), "hit": False,
                              "seconds": round(time.monotonic() - t0, 2), "what": "canvases"})
            elif entry is not None:
                report.hits += 1
            entries.append(entry)
        report.seconds = time.monotonic() - started
        return entries, report


# ------------------------------------------------------------------------------------------------
# Keeping the cache within a size
# ------------------------------------------------------------------------------------------------

#: A temporary file this old was left by a killed writer (a live one renames within seconds).
STALE_TEMP_S = 3600.0


def _mark_used(meta_path: Path) -> None:
    """Record a use in the entry's `.json` mtime: pruning removes the least recently used first."""
    try:
        os.utime(meta_path)
    except OSError:
        pass  # a read-only cache is still a cache; it just cannot be pruned by use


@dataclass
class PruneReport:
    removed: int = 0
    freed_bytes: int = 0
    kept: int = 0
    kept_bytes: int = 0


def prune_cache(root: str | os.PathLike, max_bytes: int, in_use: Sequence[Path] = ()) -> PruneReport:
    """Remove least-recently-used entries (latents of every encoder, and decoded canvases) under
    `root` until what is left takes at most `max_bytes`; never an entry in `in_use` (paths of
    `.npy` files the current run reads). Also removes temporary files a killed writer left and
    memo lines of episode files that no longer exist. An entry is its `.npy` and `.json`; the
    `.json` goes first, so a concurrent reader sees either the whole entry or none."""
    root = Path(root)
    report = PruneReport()
    if not root.is_dir():
        return report
    keep = {Path(p).resolve() for p in in_use}
    now = time.time()
    entries: list[tuple[float, int, Path, Path]] = []  # (last used, bytes, npy, json)
    for meta_path in root.rglob("*.json"):
        if meta_path.name.startswith(".") or meta_path.parent == root:
            continue
        array_path = meta_path.with_suffix(".npy")
        try:
            # Only our entries: a --cache-dir pointed at a folder holding anything else must not
            # lose it (every entry's .json names its frames key).
            if "frames_key" not in json.loads(meta_path.read_text()):
                continue
            size = array_path.stat().st_size + meta_path.stat().st_size
            used = meta_path.stat().st_mtime
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError, AttributeError, TypeError):
            continue
        entries.append((used, size, array_path, meta_path))
    for temp in root.rglob(".*"):
        # Our writers' temporary names: ".<entry>.npy.<random>.npy" and ".<entry>.json.<random>".
        if not (".npy." in temp.name or ".json." in temp.name):
            continue
        try:
            if temp.is_file() and now - temp.stat().st_mtime > STALE_TEMP_S:
                temp.unlink()
        except FileNotFoundError:
            pass
    total = sum(e[1] for e in entries)
    for used, size, array_path, meta_path in sorted(entries):
        if total <= max_bytes:
            break
        if array_path.resolve() in keep:
            continue
        meta_path.unlink(missing_ok=True)
        array_path.unlink(missing_ok=True)
        total -= size
        report.removed += 1
        report.freed_bytes += size
    report.kept = len(entries) - report.removed
    report.kept_bytes = total
    memo = FramesKeyMemo(root)
    gone = [path for path in memo._table if not Path(path).exists()]
    if gone:
        for path in gone:
            del memo._table[path]
        memo._save()
    if report.removed:
        log.info("latent cache: removed %d least recently used entries (%.2f GB); %.2f GB kept",
                 report.removed, report.freed_bytes / 1e9, report.kept_bytes / 1e9)
    return report
