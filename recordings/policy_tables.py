"""What a policy did during an episode: its settings and per-chunk / per-step latency tables.

Layout (an extra group; ALOHA/ACT tools ignore it, `episodes check` accepts files with and
without it):

    /policy                 attrs: checkpoint, checkpoint_hash, preset, variant, strategy, every,
                            delay_ms, device, ... (whatever the runner's owner set, all scalars)
    /policy/chunks/<column> (C,) one row per chunk the policy made (`CHUNK_COLUMNS`)
    /policy/steps/<column>  (S,) one row per executed policy action (`STEP_COLUMNS`); joins the
                            episode's steps on obs_time_s == /timestamp

Which steps were the policy's, a human's intervention or teleoperation is the per-step
/control_source every episode has (`recordings.schema`).

Writing: the episode writer collects rows handed over by the control thread
(`EpisodeWriter.on_policy_row`, a deque append) and writes the tables when it finishes the file
(an HDF5 file in SWMR mode cannot gain new datasets while it is written). A recording cut short
by a crash keeps its frames and control sources but not these tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import h5py
import numpy as np

POLICY_GROUP = "/policy"
CHUNKS = "chunks"
STEPS = "steps"

_F8, _I8 = np.dtype(np.float64), np.dtype(np.int64)

#: One row per chunk (see `model.runner.ChunkRecord`); seconds unless the name says ticks.
CHUNK_COLUMNS: dict[str, np.dtype] = {
    "index": _I8,
    "obs_tick": _I8,
    "obs_time_s": _F8,
    "obs_age_s": _F8,
    "image_age_s": _F8,
    "encode_s": _F8,
    "action_s": _F8,
    "inference_s": _F8,
    "queue_depth": _I8,
    "apply_tick": _I8,  # -1: the chunk arrived too late and was dropped
    "skipped": _I8,
    "obs_to_command_s": _F8,
    "delay_ticks": _I8,
    "guided": np.dtype(np.bool_),
}
#: One row per executed policy action (see `model.runner.StepRecord`).
STEP_COLUMNS: dict[str, np.dtype] = {
    "obs_time_s": _F8,
    "chunk_index": _I8,
    "staleness_s": _F8,
}
TABLES: dict[str, dict[str, np.dtype]] = {CHUNKS: CHUNK_COLUMNS, STEPS: STEP_COLUMNS}


@dataclass
class PolicyTables:
    """Rows collected for one episode (writer thread). `add` takes a row as a mapping of column ->
    value; unknown columns are an error (a typo must not vanish), missing ones are written as
    NaN/-1/False."""

    rows: dict[str, list[Mapping[str, Any]]] = field(default_factory=lambda: {CHUNKS: [], STEPS: []})

    def add(self, table: str, row: Mapping[str, Any]) -> None:
        columns = TABLES.get(table)
        if columns is None:
            raise ValueError(f"unknown policy table {table!r}; the tables are {sorted(TABLES)}")
        unknown = set(row) - set(columns)
        if unknown:
            raise ValueError(f"policy table {table!r} has no column(s) {sorted(unknown)}; its columns: {list(columns)}")
        self.rows[table].append(row)

    def __bool__(self) -> bool:
        return any(self.rows.values())

    def write(self, root: h5py.File, attrs: Mapping[str, Any]) -> None:
        """Create /policy with `attrs` and the two tables in `root` (opened for writing, not SWMR)."""
        if POLICY_GROUP in root:
            del root[POLICY_GROUP]  # a finalise retried after a failure starts clean
        group = root.create_group(POLICY_GROUP)
        for key, value in attrs.items():
            group.attrs[key] = value
        for table, columns in TABLES.items():
            rows = self.rows[table]
            sub = group.create_group(table)
            for name, dtype in columns.items():
                values = np.array([row.get(name, _missing(dtype)) for row in rows], dtype=dtype)
                sub.create_dataset(name, data=values, maxshape=(None,))


def _missing(dtype: np.dtype):
    return np.nan if dtype.kind == "f" else (False if dtype.kind == "b" else -1)


@dataclass(frozen=True)
class PolicyRecord:
    """What an episode says about the policy that drove it: attrs, and each table as column ->
    (N,) array."""

    attrs: dict[str, Any]
    chunks: dict[str, np.ndarray]
    steps: dict[str, np.ndarray]


def read_policy(root: h5py.File) -> PolicyRecord | None:
    """The /policy group of an open episode, or None when no policy drove it."""
    group = root.get(POLICY_GROUP)
    if not isinstance(group, h5py.Group):
        return None
    attrs = {k: (v.decode("utf-8", "replace") if isinstance(v, bytes) else v) for k, v in group.attrs.items()}
    tables = {}
    for table, columns in TABLES.items():
        sub = group.get(table)
        tables[table] = {name: sub[name][()] for name in columns if isinstance(sub, h5py.Group) and name in sub}
    return PolicyRecord(attrs, tables[CHUNKS], tables[STEPS])
