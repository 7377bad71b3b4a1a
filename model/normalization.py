"""Normalisation statistics of the training data (z-score per joint).

`NormStats` itself lives in `model.checkpoint` (it is saved as `normalization.json` in every
checkpoint folder and the policy reads it from there); this module computes it from episodes.

Statistics come from the *training* episodes only (never validation), over every step's qpos and
action. The std is floored (`DEFAULT_STD_FLOOR`) where it is used, so a joint that hardly moved in
the demonstrations (a scripted wrist that stays put: std ~1e-6 rad) cannot turn sensor noise
into huge normalised values.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from model.checkpoint import NormStats
from recordings.reader import Episode

#: rad for joints, normalised units for grippers: 0.01 rad (0.6 deg) of spread is "did not move".
DEFAULT_STD_FLOOR = 1e-2

__all__ = ["DEFAULT_STD_FLOOR", "NormStats", "compute_norm_stats", "norm_stats_from_arrays"]


def norm_stats_from_arrays(qpos: np.ndarray, action: np.ndarray, std_floor: float = DEFAULT_STD_FLOOR) -> NormStats:
    """(N, D) qpos and (N, D) action arrays -> per-dimension mean/std (float64 sums, float32 out)."""
    if std_floor <= 0:
        raise ValueError(f"std_floor must be positive (e.g. {DEFAULT_STD_FLOOR}), got {std_floor}")
    qpos = np.asarray(qpos, dtype=np.float64)
    action = np.asarray(action, dtype=np.float64)
    if qpos.ndim != 2 or action.ndim != 2 or len(qpos) == 0 or len(action) == 0:
        raise ValueError(f"need non-empty (N, D) arrays, got qpos {qpos.shape} and action {action.shape}")
    for name, values in (("qpos", qpos), ("action", action)):
        if not np.all(np.isfinite(values)):
            rows = np.flatnonzero(~np.isfinite(values).all(axis=1))[:5].tolist()
            raise ValueError(f"{name} has NaN/inf values (rows {rows}); the episode is damaged - check it and leave it out")
    return NormStats(
        qpos_mean=qpos.mean(0).astype(np.float32),
        qpos_std=qpos.std(0).astype(np.float32),
        action_mean=action.mean(0).astype(np.float32),
        action_std=action.std(0).astype(np.float32),
        std_floor=float(std_floor),
    )


def compute_norm_stats(paths: Iterable, std_floor: float = DEFAULT_STD_FLOOR) -> NormStats:
    """Statistics over every step of the episodes at `paths` (reads qpos and action only)."""
    paths = list(paths)
    qpos, action = [], []
    for path in paths:
        with Episode.open(path) as episode:
            qpos.append(np.asarray(episode.qpos))
            action.append(np.asarray(episode.action))
    if not qpos:
        raise ValueError("compute_norm_stats needs at least one episode")
    try:
        return norm_stats_from_arrays(np.concatenate(qpos), np.concatenate(action), std_floor)
    except ValueError as error:
        raise ValueError(f"{error} (episodes: {[str(p) for p in paths][:10]})") from None
