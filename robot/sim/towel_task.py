"""The towel-fold task: did the two near corners end up on the two far corners?

Corners are named in the towel's own frame at reset: "near" is the edge facing the operator (low
world y, where cam_high stands), "left" is low world x. A fold is the near half laid over the far
half, so near_left must meet far_left and near_right must meet far_right.

Pure numpy on vertex arrays, so it evaluates recorded episodes and hand-built vertex sets alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

CORNER_NAMES = ("near_left", "near_right", "far_left", "far_right")


@dataclass(frozen=True)
class TowelFoldResult:
    """One evaluation of the towel.

    fold_error_m: mean of the two near-to-far corner distances (m), the continuous measure.
    corner_distances_m: (left, right) near-to-far corner distances (m).
    max_vertex_speed_m_s: fastest vertex (m/s), None when no velocities were given.
    far_edge_width_m: distance between the two far corners (m); a towel bunched up sideways has
    its corners close together without being folded, so success needs this to stay wide.
    """

    success: bool
    fold_error_m: float
    corner_distances_m: tuple[float, float]
    settled: bool
    max_vertex_speed_m_s: float | None
    far_edge_width_m: float


class TowelTask:
    """Success measure of the towel fold, from cloth vertex positions (and velocities).

    success = both near corners within `success_distance_m` of their far corners, the towel
    settled (every vertex slower than `settled_speed_m_s`) and the far edge still at least
    `min_width_fraction` of the towel's width.
    """

    def __init__(
        self,
        corner_ids: Mapping[str, int],
        towel_size_m: float,
        success_distance_m: float = 0.04,
        settled_speed_m_s: float = 0.05,
        min_width_fraction: float = 0.7,
        text: str = "fold the towel",
    ) -> None:
        missing = [c for c in CORNER_NAMES if c not in corner_ids]
        if missing:
            raise ValueError(f"TowelTask needs the vertex index of every corner; missing {missing}")
        if success_distance_m <= 0 or settled_speed_m_s <= 0 or towel_size_m <= 0:
            raise ValueError("TowelTask distances, speeds and sizes must be positive")
        self.corner_ids = {c: int(corner_ids[c]) for c in CORNER_NAMES}
        self.towel_size_m = float(towel_size_m)
        self.success_distance_m = float(success_distance_m)
        self.settled_speed_m_s = float(settled_speed_m_s)
        self.min_width_fraction = float(min_width_fraction)
        self.text = text

    def corners(self, vertices_m: np.ndarray) -> dict[str, np.ndarray]:
        """Corner name -> (3,) position (m)."""
        vertices = self._checked(vertices_m, "vertices_m")
        return {c: vertices[i].copy() for c, i in self.corner_ids.items()}

    def evaluate(self, vertices_m: np.ndarray, vertex_velocities_m_s: np.ndarray | None = None) -> TowelFoldResult:
        """vertices_m: (N, 3) world positions; vertex_velocities_m_s: (N, 3) or None.

        Without velocities the towel cannot be known to be settled, so success is False.
        """
        c = self.corners(vertices_m)
        left = float(np.linalg.norm(c["near_left"] - c["far_left"]))
        right = float(np.linalg.norm(c["near_right"] - c["far_right"]))
        width = float(np.linalg.norm(c["far_left"] - c["far_right"]))
        if vertex_velocities_m_s is None:
            speed = None
            settled = False
        else:
            velocities = self._checked(vertex_velocities_m_s, "vertex_velocities_m_s")
            if velocities.shape != np.shape(vertices_m):
                raise ValueError("vertex_velocities_m_s must have the same shape as vertices_m")
            speed = float(np.max(np.linalg.norm(velocities, axis=1)))
            settled = speed < self.settled_speed_m_s
        success = (
            max(left, right) <= self.success_distance_m
            and settled
            and width >= self.min_width_fraction * self.towel_size_m
        )
        return TowelFoldResult(
            success=bool(success),
            fold_error_m=0.5 * (left + right),
            corner_distances_m=(left, right),
            settled=settled,
            max_vertex_speed_m_s=speed,
            far_edge_width_m=width,
        )

    def _checked(self, array: np.ndarray, name: str) -> np.ndarray:
        values = np.asarray(array, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != 3:
            raise ValueError(f"{name} must have shape (N, 3), got {values.shape}")
        largest = max(self.corner_ids.values())
        if values.shape[0] <= largest:
            raise ValueError(f"{name} has {values.shape[0]} vertices but corner index {largest} is needed")
        if not np.all(np.isfinite(values)):
            raise ValueError(f"{name} contains NaN or infinity")
        return values
