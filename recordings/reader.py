"""Reading episodes lazily: ours and those written by ALOHA/ACT's own tools.

`Episode.open(path)` reads the layout (no data); arrays are read on first use and cached (they
are small), frames are read and decoded one at a time. The object is picklable and opens its
file handle on first use in each process, so a DataLoader's workers each get their own.

Whatever is wrong with the file, a read raises `EpisodeFormatError` naming the file and what
could not be read (the dataset; for a frame, the camera and the step) - never HDF5's own
exceptions.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from recordings import schema
from recordings.attributes import root_attributes
from recordings.check import Structure, open_readonly, structure_problems
from recordings.errors import EpisodeFormatError
from recordings.hdf5_faults import READ_ERRORS, describe, member
from recordings.images import decode_jpeg
from recordings.labels import LabelState, read_label_state
from recordings.layout import attr_text
from recordings.loop_record import RecordedEvent, mode_of, read_loop_events
from recordings.metadata import EpisodeMetadata
from recordings.policy_tables import PolicyRecord, read_policy
from recordings.schema import Label
from robot.types import ControlSource, Mode

log = logging.getLogger(__name__)


class Episode:
    """One episode file, read on demand.

    Arrays: qpos/qvel/effort/action (T, 14) float32; timestamps (T,) float64 host monotonic
    seconds (None for ALOHA files); frame(cam, t) (H, W, 3) uint8 RGB. Not thread-safe: give
    each thread (or process) its own object, or a copy made with pickle.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._structure: Structure | None = None
        self._attrs: dict[str, Any] = {}
        self._cache: dict[str, Any] = {}
        self._root: h5py.File | None = None
        self._pid: int | None = None
        self._datasets: dict[str, h5py.Dataset] = {}
        self._label: LabelState | None = None
        self._label_warning: str | None = None

    @classmethod
    def open(cls, path: str | os.PathLike) -> "Episode":
        """Read the layout of `path`; raises EpisodeFormatError (UnfinishedEpisode for a leftover
        recording) with the reasons when it is not an episode."""
        episode = cls(path)
        episode._describe()
        return episode

    def _describe(self) -> None:
        root = open_readonly(self.path)
        try:
            try:
                reasons, structure = structure_problems(root)
                if reasons:
                    raise EpisodeFormatError(self.path, reasons)
                attrs = root_attributes(root)
                label, label_warning = read_label_state(root)
            except EpisodeFormatError:
                raise
            except READ_ERRORS as error:
                raise EpisodeFormatError(self.path, [describe(error)]) from error
            self._structure = structure
            self._attrs = attrs
            self._label, self._label_warning = label, label_warning
        except BaseException:
            root.close()
            raise
        self._root, self._pid, self._datasets = root, os.getpid(), {}

    # ---- file handle (lazy, per process) ----
    def _file(self) -> h5py.File:
        if self._structure is None:
            self._describe()
        if self._root is None or self._pid != os.getpid():
            # After a fork the parent's handle must not be used (nor closed) here.
            self._root, self._pid = open_readonly(self.path), os.getpid()
            self._datasets = {}
        return self._root

    def _dataset(self, path: str) -> h5py.Dataset:
        """Dataset handles are cached: a path lookup costs more than reading a small frame."""
        root = self._file()
        dataset = self._datasets.get(path)
        if dataset is None:
            dataset = self._datasets[path] = root[path]
        return dataset

    def close(self) -> None:
        root, self._root = self._root, None
        self._datasets = {}
        if root is not None and self._pid == os.getpid():
            root.close()

    def __enter__(self) -> "Episode":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_root"], state["_pid"], state["_cache"], state["_datasets"] = None, None, {}, {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        length = self._structure.length if self._structure else "?"
        return f"Episode({str(self.path)!r}, length={length})"

    # ---- layout and metadata ----
    def _ensure_described(self) -> Structure:
        if self._structure is None:
            self._describe()
        assert self._structure is not None
        return self._structure

    @property
    def structure(self) -> Structure:
        """Shapes and kind of file (read once, no data)."""
        return self._ensure_described()

    @property
    def length(self) -> int:
        return self.structure.length

    def __len__(self) -> int:
        return self.length

    @property
    def camera_names(self) -> tuple[str, ...]:
        return self.structure.camera_names

    @property
    def compressed(self) -> bool:
        return self.structure.compressed

    @property
    def is_ours(self) -> bool:
        """Written by this studio (has timestamps, control sources and metadata)."""
        return self.structure.has_extras

    @property
    def metadata(self) -> EpisodeMetadata:
        self._ensure_described()
        if "metadata" not in self._cache:
            meta = EpisodeMetadata.from_attrs(self._attrs)
            if self._label is not None:  # the label record wins over the attributes
                meta = dataclasses.replace(meta, label=self._label.label, notes=self._label.notes, reason=self._label.reason)
            self._cache["metadata"] = meta
        return self._cache["metadata"]

    @property
    def label_warning(self) -> str | None:
        """Set when the last label edit did not complete (the label shown is the one before)."""
        self._ensure_described()
        return self._label_warning

    @property
    def label(self) -> Label:
        return self.metadata.label

    @property
    def failure_reason(self) -> str:
        """Why a failure failed ("" when none was given): the label record's, else the attribute."""
        return self.metadata.reason

    @property
    def attrs(self) -> dict[str, Any]:
        """The file's root attributes as read at open (a copy)."""
        self._ensure_described()
        return dict(self._attrs)

    @property
    def sim(self) -> bool:
        return self.metadata.sim

    @property
    def frames_dropped(self) -> int:
        self._ensure_described()
        return int(self._attrs.get(schema.ATTR_FRAMES_DROPPED, 0))

    @property
    def recovered(self) -> bool:
        self._ensure_described()
        return bool(self._attrs.get(schema.ATTR_RECOVERED, False))

    @property
    def duration_s(self) -> float:
        """Time from the first to the last step: simulated time for a simulation, host time for a
        real rig; ALOHA files: steps / control rate."""
        stamps = self.sim_times if self.sim_times is not None else self.timestamps
        if stamps is not None and len(stamps) > 1:
            return float(stamps[-1] - stamps[0])
        return self.length / self.metadata.control_rate_hz

    # ---- per-step arrays (read once, cached) ----
    def _array(self, path: str, dtype: np.dtype | None = None) -> np.ndarray | None:
        if path not in self._cache:
            root = self._file()
            try:
                item = member(root, path)  # arrays are read whole once: no handle to cache
                values = None if item is None else item[()]
            except READ_ERRORS as error:
                raise EpisodeFormatError(self.path, [f"{path} cannot be read: {describe(error)}"]) from error
            if values is None:
                self._cache[path] = None
            else:
                self._cache[path] = values.astype(dtype, copy=False) if dtype is not None else values
        return self._cache[path]

    @property
    def qpos(self) -> np.ndarray:
        return self._array(schema.QPOS, schema.STATE_DTYPE)

    @property
    def qvel(self) -> np.ndarray:
        return self._array(schema.QVEL, schema.STATE_DTYPE)

    @property
    def effort(self) -> np.ndarray | None:
        """(T, 14) float32, or None when the file has none (ALOHA sim)."""
        return self._array(schema.EFFORT, schema.STATE_DTYPE)

    @property
    def action(self) -> np.ndarray:
        return self._array(schema.ACTION, schema.STATE_DTYPE)

    @property
    def timestamps(self) -> np.ndarray | None:
        """(T,) float64 host monotonic seconds of each observation; None for ALOHA files."""
        if not self.is_ours:
            return None
        return self._array(schema.TIMESTAMP, schema.TIME_DTYPE)

    def image_times(self, camera: str) -> np.ndarray | None:
        """(T,) float64 host monotonic capture time of each frame of `camera`; None for ALOHA files."""
        self._camera_index(camera)
        if not self.is_ours:
            return None
        return self._array(schema.image_time_path(camera), schema.TIME_DTYPE)

    @property
    def sim_times(self) -> np.ndarray | None:
        """(T,) float64 simulated seconds of each step; None for real rigs and ALOHA files."""
        if not self.is_ours:
            return None
        try:
            present = schema.SIM_TIME in self._file()
        except READ_ERRORS as error:
            raise EpisodeFormatError(self.path, [f"{schema.SIM_TIME} cannot be read: {describe(error)}"]) from error
        if not present:
            return None
        times = self._array(schema.SIM_TIME, schema.TIME_DTYPE)
        return times if np.all(np.isfinite(times)) else None

    @property
    def tick_indices(self) -> np.ndarray | None:
        """(T,) int64 control-loop tick of each step (gaps are ticks not recorded); None for ALOHA."""
        if not self.is_ours:
            return None
        return self._array(schema.TICK_INDEX, schema.TICK_INDEX_DTYPE)

    @property
    def control_sources(self) -> tuple[ControlSource, ...] | None:
        """Who produced each action; None for ALOHA files."""
        if not self.is_ours:
            return None
        if "control_sources" not in self._cache:
            raw = self._array(schema.CONTROL_SOURCE)
            known = {source.value: source for source in ControlSource}
            values = []
            for item in raw:
                text = attr_text(item)
                if text not in known:
                    log.warning("%s: unknown control source %r read as 'none'", self.path.name, text)
                values.append(known.get(text, ControlSource.NONE))
            self._cache["control_sources"] = tuple(values)
        return self._cache["control_sources"]

    # ---- what the control loop knew (None: the file did not record it) ----
    def _has_loop_record(self) -> bool:
        if not self.is_ours:
            return False
        try:
            return schema.LOOP_MODE in self._file()
        except READ_ERRORS as error:
            raise EpisodeFormatError(self.path, [f"{schema.LOOP_MODE} cannot be read: {describe(error)}"]) from error

    @property
    def loop_modes(self) -> tuple[Mode | None, ...] | None:
        """The control loop's mode at each step (None for a code this studio does not know);
        None for files that did not record it (older ones, ALOHA's)."""
        if not self._has_loop_record():
            return None
        if "loop_modes" not in self._cache:
            self._cache["loop_modes"] = tuple(mode_of(code) for code in self._array(schema.LOOP_MODE))
        return self._cache["loop_modes"]

    @property
    def safety_clipped(self) -> np.ndarray | None:
        """(T, 14) bool: the joints the safety filter limited in each step's action (columns as
        qpos); None for files that did not record it."""
        if not self._has_loop_record():
            return None
        return self._array(schema.SAFETY_CLIPPED, schema.CLIPPED_DTYPE)

    @property
    def loop_events(self) -> tuple[RecordedEvent, ...] | None:
        """The control loop's events while recording, oldest first, each on its step; None for
        files that did not record them."""
        if not self._has_loop_record():
            return None
        if "loop_events" not in self._cache:
            table = self._array(schema.LOOP_EVENTS)
            self._cache["loop_events"] = read_loop_events(table, self.tick_indices, self.length)
        return self._cache["loop_events"]

    @property
    def policy(self) -> PolicyRecord | None:
        """The policy that drove the episode (its settings and latency tables,
        `recordings.policy_tables`); None when none did."""
        if "policy" not in self._cache:
            self._cache["policy"] = read_policy(self._file())
        return self._cache["policy"]

    # ---- frames (read on demand) ----
    def _camera_index(self, camera: str) -> int:
        try:
            return self.camera_names.index(camera)
        except ValueError:
            raise KeyError(f"{self.path.name} has no camera {camera!r}; it has {list(self.camera_names)}") from None

    def frame(self, camera: str, t: int) -> np.ndarray:
        """The (H, W, 3) uint8 RGB frame of `camera` at step `t` (negative counts from the end)."""
        row = self.encoded_frame(camera, t)
        if row.ndim == 3:
            return row
        try:
            return decode_jpeg(row)
        except ValueError:
            raise EpisodeFormatError(self.path, [f"frame {t} of camera {camera!r} is not a decodable JPEG image"]) from None

    def encoded_frame(self, camera: str, t: int) -> np.ndarray:
        """The frame as stored: (H, W, 3) uint8 RGB for raw files, else the (n_bytes,) uint8 JPEG
        row (padding dropped where the length is known), to decode elsewhere (another thread)."""
        c = self._camera_index(camera)
        n = self.length
        if not -n <= t < n:
            raise IndexError(f"step {t} is outside {self.path.name}'s {n} steps")
        t = int(t) % n
        try:
            dataset = self._dataset(schema.image_path(camera))
            if dataset.ndim == 4:
                return np.ascontiguousarray(dataset[t])
            if not self.is_ours:
                return dataset[t]  # ALOHA's compress_len rows follow a camera order we cannot know
            # Our rows are in `camera_names` order; read only the JPEG's bytes, not the padding.
            length = int(self._array(schema.COMPRESS_LEN)[c, t])
            return dataset[t, :length] if 0 < length <= dataset.shape[1] else dataset[t]
        except EpisodeFormatError:
            raise
        except READ_ERRORS as error:
            raise EpisodeFormatError(
                self.path, [f"frame {t} of camera {camera!r} cannot be read: {describe(error)}"]
            ) from error
