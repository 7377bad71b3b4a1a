"""Episodes: the HDF5 format (ALOHA's layout plus our extras), the writer the control loop feeds,
the lazy reader, the store with its checks and crash recovery (`python run.py episodes` is
`app.studio.jobs.episodes`).

    schema     every path, attribute, dtype and file name of the format
    writer     EpisodeWriter: a control-loop subscriber recording to episode_{idx}.hdf5
    reader     Episode: lazy, picklable reading of ours and ALOHA/ACT files
    check      check_episode: is a file a valid episode, and if not, why
    recovery   recover_partial: a leftover of a killed recording -> an episode
    store      EpisodeStore: list, next index, check, recover, relabel

Names are importable from the package too (`from recordings import EpisodeWriter`); they load on
first use so that importing `recordings.schema` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "EpisodeWriter": "recordings.writer",
    "WriterConfig": "recordings.writer",
    "WriterState": "recordings.writer",
    "WriterStatus": "recordings.writer",
    "Episode": "recordings.reader",
    "EpisodeMetadata": "recordings.metadata",
    "EpisodeStore": "recordings.store",
    "EpisodeSummary": "recordings.store",
    "DEFAULT_STORE_DIR": "recordings.store",
    "set_label": "recordings.store",
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
