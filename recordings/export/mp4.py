"""One episode as an MP4 to watch anywhere: every camera side by side above the joint plots
(measured qpos solid, commanded action thin, per arm), a cursor on the plots and a header with the
step, time, control source and label. One video frame per step, at the control rate.

Drawn with OpenCV (no Qt: this runs from the command line and in the window's worker alike); the
plot background is drawn once and only the cursor and header change per frame.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from recordings.errors import RecordingError
from recordings.export.video import VideoWriter
from recordings.reader import Episode
from robot.types import ARM_NAMES, JOINTS_PER_ARM

TILE_HEIGHT = 240
HEADER_HEIGHT = 28
PLOT_HEIGHT = 200
#: One colour per joint of an arm (waist .. gripper), RGB; the same hues as the studio's plots.
JOINT_RGB: tuple[tuple[int, int, int], ...] = (
    (96, 165, 250), (248, 113, 113), (52, 211, 153), (251, 191, 36), (192, 132, 252), (34, 211, 238), (244, 114, 182)
)
BACKGROUND_RGB = (17, 24, 39)
GRID_RGB = (55, 65, 81)
TEXT_RGB = (229, 231, 235)
CURSOR_RGB = (255, 255, 255)

Progress = Callable[[int, int], None]


def _tile_width(shape: tuple[int, ...]) -> int:
    height, width = shape[:2]
    return int(round(TILE_HEIGHT * width / height / 2)) * 2


def _plot_panel(qpos: np.ndarray, action: np.ndarray, width: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The plots without cursor: (PLOT_HEIGHT, width, 3) RGB and each arm panel's (x0, x1)."""
    panel = np.empty((PLOT_HEIGHT, width, 3), dtype=np.uint8)
    panel[:] = BACKGROUND_RGB
    n = len(qpos)
    spans = []
    half = width // len(ARM_NAMES)
    for a, arm in enumerate(ARM_NAMES):
        x0, x1 = a * half + 36, (a + 1) * half - 8
        y0, y1 = 18, PLOT_HEIGHT - 8
        spans.append((x0, x1))
        joints = slice(a * JOINTS_PER_ARM, (a + 1) * JOINTS_PER_ARM)
        values = np.concatenate([qpos[:, joints], action[:, joints]])
        low, high = float(np.nanmin(values)), float(np.nanmax(values))
        if not high > low:
            low, high = low - 1.0, high + 1.0
        cv2.rectangle(panel, (x0, y0), (x1, y1), GRID_RGB, 1)
        cv2.putText(panel, f"{arm} arm: qpos solid, action thin", (x0, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, TEXT_RGB, 1, cv2.LINE_AA)
        cv2.putText(panel, f"{high:.1f}", (a * half + 2, y0 + 8), cv2.FONT_HERSHEY_SIMPLEX, 0.3, TEXT_RGB, 1, cv2.LINE_AA)
        cv2.putText(panel, f"{low:.1f}", (a * half + 2, y1), cv2.FONT_HERSHEY_SIMPLEX, 0.3, TEXT_RGB, 1, cv2.LINE_AA)
        xs = x0 + (np.arange(n) / max(n - 1, 1)) * (x1 - x0)
        for j in range(JOINTS_PER_ARM):
            colour = JOINT_RGB[j % len(JOINT_RGB)]
            for series, thickness in ((qpos[:, a * JOINTS_PER_ARM + j], 2), (action[:, a * JOINTS_PER_ARM + j], 1)):
                ys = y1 - (series - low) / (high - low) * (y1 - y0)
                points = np.stack([xs, ys], axis=1).round().astype(np.int32)
                cv2.polylines(panel, [points], False, colour, thickness, cv2.LINE_AA)
    return panel, spans


def export_mp4(
    episode_path: str | os.PathLike,
    output: str | os.PathLike,
    codec: str | None = "h264",
    progress: Progress | None = None,
) -> Path:
    """Write the episode at `episode_path` as an MP4 at `output` (one frame per step). Written
    under a temporary name and renamed when complete. Returns `output`."""
    output = Path(output)
    temporary = output.with_name(output.name + ".partial.mp4")
    with Episode.open(episode_path) as episode:
        n = episode.length
        cameras = episode.camera_names
        first = {camera: episode.frame(camera, 0) for camera in cameras}
        widths = [_tile_width(first[camera].shape) for camera in cameras]
        width = max(sum(widths), 640)
        height = HEADER_HEIGHT + TILE_HEIGHT + PLOT_HEIGHT
        panel, spans = _plot_panel(episode.qpos, episode.action, width)
        sources = episode.control_sources
        times = episode.sim_times if episode.sim_times is not None else episode.timestamps
        rate = episode.metadata.control_rate_hz
        label = episode.metadata.label.value
        fps = int(round(rate))
        if abs(fps - rate) > 1e-6:
            raise RecordingError(f"{episode.path.name} runs at {rate} Hz; an MP4 needs a whole number of frames per second.")
        canvas = np.empty((height, width, 3), dtype=np.uint8)
        try:
            with VideoWriter(temporary, fps, width, height, codec) as video:
                for t in range(n):
                    canvas[:] = BACKGROUND_RGB
                    x = 0
                    for camera, tile_width in zip(cameras, widths):
                        frame = first[camera] if t == 0 else episode.frame(camera, t)
                        tile = cv2.resize(frame, (tile_width, TILE_HEIGHT), interpolation=cv2.INTER_AREA)
                        canvas[HEADER_HEIGHT : HEADER_HEIGHT + TILE_HEIGHT, x : x + tile_width] = tile
                        cv2.putText(canvas, camera, (x + 4, HEADER_HEIGHT + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, TEXT_RGB, 1, cv2.LINE_AA)
                        x += tile_width
                    plots = canvas[HEADER_HEIGHT + TILE_HEIGHT :]
                    plots[:] = panel
                    for x0, x1 in spans:
                        cx = int(round(x0 + t / max(n - 1, 1) * (x1 - x0)))
                        cv2.line(plots, (cx, 18), (cx, PLOT_HEIGHT - 8), CURSOR_RGB, 1)
                    seconds = (times[t] - times[0]) if times is not None else t / rate
                    source = sources[t].value if sources is not None else "unknown"
                    header = f"{episode.path.name}  step {t}/{n - 1}  {seconds:6.2f} s  source: {source}  label: {label}"
                    cv2.putText(canvas, header, (6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.5, TEXT_RGB, 1, cv2.LINE_AA)
                    video.write(canvas)
                    if progress is not None:
                        progress(t + 1, n)
            os.replace(temporary, output)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
    return output
