"""The towel-fold measure on hand-built vertex sets."""

import numpy as np
import pytest

from robot.sim.towel_task import TowelTask

N = 20
SIZE = 0.35


def flat_towel(center=(0.0, 0.5)) -> tuple[np.ndarray, dict[str, int]]:
    """A flat N x N grid, vertex i*N + j at x = i, y = j (so near = low y, left = low x)."""
    coords = np.linspace(-SIZE / 2, SIZE / 2, N)
    xs, ys = np.meshgrid(coords, coords, indexing="ij")
    vertices = np.stack([xs.ravel() + center[0], ys.ravel() + center[1], np.full(N * N, 0.004)], axis=1)
    corners = {"near_left": 0, "far_left": N - 1, "near_right": (N - 1) * N, "far_right": N * N - 1}
    return vertices, corners


def folded(vertices: np.ndarray, center_y: float = 0.5) -> np.ndarray:
    """Near half mirrored over the fold line onto the far half, one layer higher."""
    out = vertices.copy()
    near = out[:, 1] < center_y
    out[near, 1] = 2 * center_y - out[near, 1]
    out[near, 2] += 0.008
    return out


def task(corners):
    return TowelTask(corners, towel_size_m=SIZE, success_distance_m=0.04, settled_speed_m_s=0.05)


def test_flat_towel_is_not_folded_and_its_error_is_the_towel_length():
    vertices, corners = flat_towel()
    result = task(corners).evaluate(vertices, np.zeros_like(vertices))
    assert not result.success
    assert result.fold_error_m == pytest.approx(SIZE, abs=1e-9)


def test_folded_and_settled_towel_succeeds():
    vertices, corners = flat_towel()
    result = task(corners).evaluate(folded(vertices), np.zeros_like(vertices))
    assert result.success and result.settled
    assert result.fold_error_m == pytest.approx(0.008, abs=1e-6)  # just the layer height
    assert result.far_edge_width_m == pytest.approx(SIZE)


def test_corners_a_little_off_still_count_but_beyond_the_threshold_do_not():
    vertices, corners = flat_towel()
    near_miss = folded(vertices)
    near_miss[corners["near_left"], 1] -= 0.03
    assert task(corners).evaluate(near_miss, np.zeros_like(vertices)).success
    far_miss = folded(vertices)
    far_miss[corners["near_right"], 1] -= 0.06
    result = task(corners).evaluate(far_miss, np.zeros_like(vertices))
    assert not result.success
    assert result.corner_distances_m[1] > 0.06


def test_a_moving_towel_is_not_yet_a_success():
    vertices, corners = flat_towel()
    velocities = np.zeros_like(vertices)
    velocities[5] = [0.0, 0.0, -0.2]
    result = task(corners).evaluate(folded(vertices), velocities)
    assert not result.success and not result.settled
    assert result.max_vertex_speed_m_s == pytest.approx(0.2)
    assert not task(corners).evaluate(folded(vertices)).success  # unknown speed: not settled


def test_a_towel_bunched_sideways_is_not_a_fold():
    vertices, corners = flat_towel()
    bunched = folded(vertices)
    bunched[:, 0] *= 0.3  # corners meet, but the towel is scrunched to a third of its width
    result = task(corners).evaluate(bunched, np.zeros_like(vertices))
    assert result.fold_error_m < 0.04 and not result.success


def test_bad_vertex_arrays_are_rejected():
    vertices, corners = flat_towel()
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        task(corners).evaluate(vertices[:, :2])
    with pytest.raises(ValueError, match="corner index"):
        task(corners).evaluate(vertices[:10])
    with pytest.raises(ValueError, match="missing"):
        TowelTask({"near_left": 0}, towel_size_m=SIZE)
