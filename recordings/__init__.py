"""Episodes: the HDF5 format (ALOHA's layout plus our extras), the writer the control loop feeds,
the lazy reader, the store with its checks and crash recovery (`python run.py episodes` is
`app.studio.jobs.episodes`).

    schema       every path, attribute, dtype and file name of the format
    writer       EpisodeWriter: a control-loop subscriber recording to episode_{idx}.hdf5
    writer_process  ProcessEpisodeWriter: the same, with the file written by a process of its own
    tick_ring    the shared-memory ring the control thread copies ticks into for that process
    reader       Episode: lazy, picklable reading of ours and ALOHA/ACT files
    check        check_episode: is a file a valid episode, and if not, why (deep: every frame)
    check_memo   which episodes passed the deep check (training does not repeat it)
    recovery     recover_partial: a leftover of a killed recording -> an episode;
                 clear_open_for_write: a finished episode a killed process left marked open
    labels       label, failure reason and notes, edited without putting the frames at risk
    store        EpisodeStore: list, next index, check, recover, relabel
    hdf5_faults  what h5py raises for a damaged file, in the user's words
    attributes   root attributes, read so that a damaged older file cannot hang the studio
    superblock   HDF5's open-for-write flags, read and cleared without HDF5
    safe_text    strings from files made safe to print on a terminal

Names are importable from the package too (`from recordings import EpisodeWriter`); they load on
first use so that importing `recordings.schema` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "EpisodeWriter": "recordings.writer",
    "ProcessEpisodeWriter": "recordings.writer_process",
    "WriterProcessDied": "recordings.writer_process",
    "WriterConfig": "recordings.writer",
    "WriterState": "recordings.writer",
    "WriterStatus": "recordings.writer",
    "Episode": "recordings.reader",
    "EpisodeMetadata": "recordings.metadata",
    "EpisodeStore": "recordings.store",
    "EpisodeSummary": "recordings.store",
    "DEFAULT_STORE_DIR": "recordings.store",
    "set_label": "recordings.store",
    "require_store_dir": "recordings.store",
    "StorePathError": "recordings.store",
    "LabelState": "recordings.labels",
    "RepairResult": "recordings.recovery",
    "clear_open_for_write": "recordings.recovery",
    "LeftOpenForWrite": "recordings.errors",
    "check_episode": "recordings.check",
    "CheckResult": "recordings.check",
    "recover_partial": "recordings.recovery",
    "RecoveryResult": "recordings.recovery",
    "Label": "recordings.schema",
    "ImageFormat": "recordings.schema",
    "RecordingError": "recordings.errors",
    "RecordingWriteError": "recordings.errors",
    "FramesDropped": "recordings.errors",
    "InvalidTick": "recordings.errors",
    "EpisodeFormatError": "recordings.errors",
    "UnfinishedEpisode": "recordings.errors",
    "RecoveryError": "recordings.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'recordings' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
