"""A selection of episodes as a LeRobot dataset, format v3.0, for teams that train with LeRobot.

Layout and fields follow LeRobot's own definitions (lerobot/datasets: utils.py, dataset_metadata.py,
dataset_writer.py, compute_stats.py, video_utils.py, the v2.1 -> v3.0 converter), restated here:

    meta/info.json        codebase_version "v3.0", fps (int), robot_type, total_episodes,
                          total_frames, total_tasks, chunks_size, data_files_size_in_mb,
                          video_files_size_in_mb, data_path, video_path, splits, features
    meta/stats.json       per feature: min, max, mean, std, count, q01, q10, q50, q90, q99;
                          vectors per dimension, scalars as (1,), videos per channel (3, 1, 1) in
                          [0, 1]; episodes combined by count-weighted mean and variance, min/max,
                          and the envelope of the quantiles (min for <= q50, max above)
    meta/tasks.parquet    one row per task: column task_index, indexed by the task text
    meta/episodes/chunk-000/file-000.parquet
                          per episode: episode_index, tasks (list), length, data/chunk_index,
                          data/file_index, dataset_from_index, dataset_to_index (frames
                          [from, to) of the whole dataset), per camera videos/<key>/chunk_index,
                          file_index, from_timestamp, to_timestamp (s within its video file),
                          meta/episodes/chunk_index, file_index, stats/<feature>/<stat>
    data/chunk-XXX/file-YYY.parquet
                          per frame: the features below plus timestamp (frame_index / fps,
                          float32), frame_index, episode_index, index (frame in the dataset),
                          task_index (int64)
    videos/<key>/chunk-XXX/file-YYY.mp4
                          per camera, the episodes one after another, yuv420p, AV1 (or H.264)

Features: observation.state (qpos), observation.velocity (qvel), observation.effort (when every
episode has it), action - float32 (14,) named by joint - and observation.images.<camera> (video,
(H, W, 3)). Our extras as extra features (strings, one per frame): control_source (who produced
the action: teleop/scripted/policy/intervention/hold/none, "unknown" for ALOHA files) and label
(the episode's success label). The episodes table also carries the failure reason, notes and the
source file of each episode.

Data and video files roll over to the next file index past LeRobot's default sizes (100 MB and
200 MB), and to the next chunk after 1000 files, as LeRobot does. The dataset is written into
`<output>.partial` and renamed when complete, so a failed export leaves no half dataset behind.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recordings.errors import EpisodeFormatError, RecordingError
from recordings.export.video import CODEC_OPTIONS, VideoWriter, pick_codec
from recordings.reader import Episode
from robot.types import JOINT_NAMES, STATE_DIM

log = logging.getLogger(__name__)

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_FILE_SIZE_MB = 100
VIDEO_FILE_SIZE_MB = 200
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
EPISODES_PATH = "meta/episodes/" + CHUNK_FILE + ".parquet"
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
#: LeRobot computes image stats on ~100 frames of an episode, downsampled to ~150 px.
STATS_FRAMES = 100
STATS_IMAGE_PX = 150

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ExportResult:
    root: Path
    episodes: int
    frames: int
    codec: str
    cameras: tuple[str, ...]


def camera_key(camera: str) -> str:
    return f"observation.images.{camera}"


def next_file(chunk_index: int, file_index: int) -> tuple[int, int]:
    """LeRobot's numbering: files 0..chunks_size-1 in a chunk, then the next chunk."""
    if file_index == CHUNKS_SIZE - 1:
        return chunk_index + 1, 0
    return chunk_index, file_index + 1


# ---------------------------------------------------------------------------------------- stats


def feature_stats(values: np.ndarray, image: bool = False) -> dict[str, np.ndarray]:
    """One episode's stats of one feature.

    values: (N,) or (N, D) numbers, or for images (S, H, W, 3) uint8 sampled frames.
    Vectors give (D,) per stat, scalars (1,), images (3, 1, 1) scaled to [0, 1]; count is (1,).
    """
    if image:
        pixels = values.reshape(-1, values.shape[-1]).astype(np.float64) / 255.0  # (S*H*W, 3)
        reshape = lambda stat: stat.reshape(3, 1, 1)  # noqa: E731
        count = values.shape[0]
    else:
        pixels = np.asarray(values, dtype=np.float64)
        if pixels.ndim == 1:
            pixels = pixels[:, None]
        reshape = lambda stat: stat  # noqa: E731
        count = pixels.shape[0]
    stats = {
        "min": reshape(pixels.min(axis=0)),
        "max": reshape(pixels.max(axis=0)),
        "mean": reshape(pixels.mean(axis=0)),
        "std": reshape(pixels.std(axis=0)),
        "count": np.array([count], dtype=np.int64),
    }
    quantiles = np.quantile(pixels, QUANTILES, axis=0)
    for q, value in zip(QUANTILES, quantiles):
        stats[f"q{int(round(q * 100)):02d}"] = reshape(value)
    return stats


def combine_stats(per_episode: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Episodes' stats of one feature -> the dataset's (see the module doc)."""
    counts = np.array([s["count"][0] for s in per_episode], dtype=np.float64)
    total = counts.sum()
    means = np.stack([s["mean"] for s in per_episode])
    weights = counts.reshape((-1,) + (1,) * (means.ndim - 1))
    mean = (means * weights).sum(axis=0) / total
    variance = ((np.stack([s["std"] for s in per_episode]) ** 2 + (means - mean) ** 2) * weights).sum(axis=0) / total
    combined = {
        "min": np.min(np.stack([s["min"] for s in per_episode]), axis=0),
        "max": np.max(np.stack([s["max"] for s in per_episode]), axis=0),
        "mean": mean,
        "std": np.sqrt(variance),
        "count": np.array([int(total)], dtype=np.int64),
    }
    for q in QUANTILES:
        key = f"q{int(round(q * 100)):02d}"
        stacked = np.stack([s[key] for s in per_episode])
        combined[key] = stacked.min(axis=0) if q <= 0.5 else stacked.max(axis=0)
    return combined


def _sample_steps(length: int) -> np.ndarray:
    count = min(length, STATS_FRAMES)
    return np.unique(np.round(np.linspace(0, length - 1, count)).astype(int))


def _downsample(image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    if max(height, width) < 2 * STATS_IMAGE_PX:
        return image
    step = int(max(height, width) / STATS_IMAGE_PX)
    return image[::step, ::step]


# --------------------------------------------------------------------------------------- export


class _Files:
    """The current data file (a ParquetWriter) and video file per camera, with roll-over."""

    def __init__(self, root: Path, fps: int, codec: str, cameras: tuple[str, ...], shapes: dict[str, tuple[int, int, int]]):
        self.root, self.fps, self.codec = root, fps, codec
        self.cameras, self.shapes = cameras, shapes
        self.data_at = (0, 0)
        self.data_writer: pq.ParquetWriter | None = None
        self.videos: dict[str, VideoWriter] = {}
        self.video_at: dict[str, tuple[int, int]] = {camera: (0, 0) for camera in cameras}
        self.first_video: dict[str, Path] = {}

    def data_path(self) -> Path:
        chunk, file = self.data_at
        return self.root / DATA_PATH.format(chunk_index=chunk, file_index=file)

    def write_data(self, table: pa.Table) -> tuple[int, int]:
        """Append one episode's rows; returns the (chunk, file) they went to."""
        path = self.data_path()
        if self.data_writer is not None and path.stat().st_size >= DATA_FILE_SIZE_MB * 1024**2:
            self.data_writer.close()
            self.data_writer = None
            self.data_at = next_file(*self.data_at)
            path = self.data_path()
        if self.data_writer is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.data_writer = pq.ParquetWriter(path, table.schema, compression="snappy")
        self.data_writer.write_table(table)
        return self.data_at

    def video(self, camera: str) -> tuple[VideoWriter, tuple[int, int]]:
        """The video to append the next episode of `camera` to (rolled over when full)."""
        writer = self.videos.get(camera)
        if writer is not None and writer.size_bytes() >= VIDEO_FILE_SIZE_MB * 1024**2:
            writer.close()
            writer = None
            self.video_at[camera] = next_file(*self.video_at[camera])
        if writer is None:
            chunk, file = self.video_at[camera]
            path = self.root / VIDEO_PATH.format(video_key=camera_key(camera), chunk_index=chunk, file_index=file)
            height, width, _ = self.shapes[camera]
            writer = self.videos[camera] = VideoWriter(path, self.fps, width, height, self.codec)
            self.first_video.setdefault(camera, path)
        return writer, self.video_at[camera]

    def close(self) -> None:
        if self.data_writer is not None:
            self.data_writer.close()
            self.data_writer = None
        for writer in self.videos.values():
            writer.close()
        self.videos = {}


def _check_selection(paths: Sequence[Path]) -> tuple[int, tuple[str, ...], dict[str, tuple[int, int, int]], bool]:
    """(fps, cameras, frame shapes, every episode has effort) of a selection that can share one
    dataset; raises RecordingError saying which episode differs and how."""
    if not paths:
        raise RecordingError("Nothing to export: select at least one episode.")
    fps = None
    cameras: tuple[str, ...] | None = None
    shapes: dict[str, tuple[int, int, int]] = {}
    has_effort = True
    for path in paths:
        with Episode.open(path) as episode:
            rate = episode.metadata.control_rate_hz
            if abs(rate - round(rate)) > 1e-6:
                raise RecordingError(f"{path.name} runs at {rate} Hz; a LeRobot dataset needs a whole number of frames per second.")
            if fps is None:
                fps, cameras = int(round(rate)), episode.camera_names
                shapes = {camera: tuple(episode.frame(camera, 0).shape) for camera in cameras}
            elif int(round(rate)) != fps:
                raise RecordingError(f"{path.name} runs at {rate:g} Hz but {paths[0].name} at {fps} Hz; export them separately.")
            elif episode.camera_names != cameras:
                raise RecordingError(f"{path.name} has cameras {list(episode.camera_names)} but {paths[0].name} has {list(cameras)}; export them separately.")
            else:
                for camera in cameras:
                    shape = tuple(episode.frame(camera, 0).shape)
                    if shape != shapes[camera]:
                        raise RecordingError(f"{path.name}: camera {camera} is {shape}, {paths[0].name}'s is {shapes[camera]}; export them separately.")
            has_effort = has_effort and episode.effort is not None
    for camera, (height, width, _) in shapes.items():
        if height % 2 or width % 2:
            raise RecordingError(f"Camera {camera} frames are {width}x{height}; video needs an even width and height.")
    return fps, cameras, shapes, has_effort


def _features(cameras: tuple[str, ...], shapes, has_effort: bool, codec: str) -> dict[str, dict[str, Any]]:
    vector = {"dtype": "float32", "shape": [STATE_DIM], "names": list(JOINT_NAMES)}
    features: dict[str, dict[str, Any]] = {"observation.state": dict(vector), "observation.velocity": dict(vector)}
    if has_effort:
        features["observation.effort"] = dict(vector)
    features["action"] = dict(vector)
    for camera in cameras:
        features[camera_key(camera)] = {"dtype": "video", "shape": list(shapes[camera]), "names": ["height", "width", "channels"], "info": None}
    features["control_source"] = {"dtype": "string", "shape": [1], "names": None}
    features["label"] = {"dtype": "string", "shape": [1], "names": None}
    for name, dtype in (("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"), ("index", "int64"), ("task_index", "int64")):
        features[name] = {"dtype": dtype, "shape": [1], "names": None}
    return features


def _video_info(path: Path, codec: str) -> dict[str, Any]:
    """info of a video feature, read back from its first file as LeRobot does."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        info = {
            "video.height": stream.height,
            "video.width": stream.width,
            "video.codec": stream.codec_context.codec.canonical_name,
            "video.pix_fmt": stream.pix_fmt,
            "video.fps": int(stream.base_rate),
            "video.channels": 3,
            "has_audio": False,
        }
    options = CODEC_OPTIONS.get(codec, {})
    if "g" in options:
        info["video.g"] = int(options["g"])
    if "crf" in options:
        info["video.crf"] = int(options["crf"])
    info["is_depth_map"] = False
    return info


def _tasks_table(tasks: list[str]) -> pa.Table:
    """tasks.parquet as pandas writes LeRobot's DataFrame (index 'task', column 'task_index'),
    so `pandas.read_parquet` gives the task text back as the index."""
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks, pa.string())})
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64", "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def _stat_columns(stats: dict[str, dict[str, np.ndarray]]) -> dict[str, Any]:
    return {f"stats/{feature}/{name}": value.tolist() for feature, values in stats.items() for name, value in values.items()}


def _json_stats(stats: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, Any]]:
    return {feature: {name: value.tolist() for name, value in values.items()} for feature, values in stats.items()}


def export_lerobot(
    episode_paths: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    default_task: str = "unknown task",
    robot_type: str = "aloha",
    codec: str | None = None,
    progress: Progress | None = None,
) -> ExportResult:
    """Write the episodes, in the order given, as a LeRobot v3.0 dataset at `output` (which must
    not exist). progress(done_frames, total_frames). Raises RecordingError with what to do."""
    paths = [Path(p) for p in episode_paths]
    root = Path(output)
    if root.exists():
        raise RecordingError(f"{root} already exists; choose a new folder for the dataset (LeRobot datasets are written whole).")
    try:
        fps, cameras, shapes, has_effort = _check_selection(paths)
    except EpisodeFormatError as error:
        raise RecordingError(f"Cannot export: {error}") from error
    codec = pick_codec(codec)
    building = root.with_name(root.name + ".partial")
    if building.exists():
        shutil.rmtree(building)
    building.mkdir(parents=True)
    try:
        result = _write(paths, building, fps, cameras, shapes, has_effort, codec, default_task, robot_type, progress)
        os.rename(building, root)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return ExportResult(root, result[0], result[1], codec, cameras)


def _write(paths, root, fps, cameras, shapes, has_effort, codec, default_task, robot_type, progress) -> tuple[int, int]:
    features = _features(cameras, shapes, has_effort, codec)
    files = _Files(root, fps, codec, cameras, shapes)
    lengths = []
    for path in paths:
        with Episode.open(path) as episode:
            lengths.append(episode.length)
    total_frames, done = sum(lengths), 0
    tasks: list[str] = []
    episode_rows: list[dict[str, Any]] = []
    all_stats: list[dict[str, dict[str, np.ndarray]]] = []
    try:
        for episode_index, path in enumerate(paths):
            with Episode.open(path) as episode:
                n = episode.length
                meta = episode.metadata
                task = meta.task or default_task
                if task not in tasks:
                    tasks.append(task)
                task_index = tasks.index(task)
                sources = [s.value for s in episode.control_sources] if episode.control_sources is not None else ["unknown"] * n
                frame_index = np.arange(n, dtype=np.int64)
                columns: dict[str, np.ndarray] = {
                    "observation.state": episode.qpos,
                    "observation.velocity": episode.qvel,
                }
                if has_effort:
                    columns["observation.effort"] = episode.effort
                columns["action"] = episode.action
                numbers = dict(columns)
                numbers.update({
                    "timestamp": (frame_index / fps).astype(np.float32),
                    "frame_index": frame_index,
                    "episode_index": np.full(n, episode_index, dtype=np.int64),
                    "index": np.arange(done, done + n, dtype=np.int64),
                    "task_index": np.full(n, task_index, dtype=np.int64),
                })
                arrays = {}
                for name, values in numbers.items():
                    if values.ndim == 2:
                        flat = pa.array(np.ascontiguousarray(values, dtype=np.float32).reshape(-1), pa.float32())
                        arrays[name] = pa.FixedSizeListArray.from_arrays(flat, STATE_DIM)
                    else:
                        arrays[name] = pa.array(values)
                arrays["control_source"] = pa.array(sources, pa.string())
                arrays["label"] = pa.array([meta.label.value] * n, pa.string())
                order = [name for name in features if features[name]["dtype"] != "video"]
                table = pa.table({name: arrays[name] for name in order})
                data_chunk, data_file = files.write_data(table)
                stats = {name: feature_stats(values) for name, values in numbers.items()}
                row: dict[str, Any] = {
                    "episode_index": episode_index,
                    "tasks": [task],
                    "length": n,
                    "data/chunk_index": data_chunk,
                    "data/file_index": data_file,
                    "dataset_from_index": done,
                    "dataset_to_index": done + n,
                }
                sampled = set(_sample_steps(n).tolist())
                for camera in cameras:
                    writer, (chunk, file) = files.video(camera)
                    start_s = writer.frames / fps
                    samples = []
                    for t in range(n):
                        frame = episode.frame(camera, t)
                        writer.write(frame)
                        if t in sampled:
                            samples.append(_downsample(frame))
                    stats[camera_key(camera)] = feature_stats(np.stack(samples), image=True)
                    key = camera_key(camera)
                    row[f"videos/{key}/chunk_index"] = chunk
                    row[f"videos/{key}/file_index"] = file
                    row[f"videos/{key}/from_timestamp"] = start_s
                    row[f"videos/{key}/to_timestamp"] = start_s + n / fps
                row["meta/episodes/chunk_index"] = 0
                row["meta/episodes/file_index"] = 0
                row.update(_stat_columns(stats))
                row["label"] = meta.label.value
                row["failure_reason"] = episode.failure_reason
                row["notes"] = meta.notes
                row["source_file"] = path.name
                episode_rows.append(row)
                all_stats.append(stats)
                done += n
                if progress is not None:
                    progress(done, total_frames)
    finally:
        files.close()
    for camera in cameras:
        features[camera_key(camera)]["info"] = _video_info(files.first_video[camera], codec)
    episodes_path = root / EPISODES_PATH.format(chunk_index=0, file_index=0)
    episodes_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(episode_rows), episodes_path, compression="snappy")
    pq.write_table(_tasks_table(tasks), root / "meta" / "tasks.parquet")
    dataset_stats = {name: combine_stats([s[name] for s in all_stats]) for name in all_stats[0]}
    (root / "meta" / "stats.json").write_text(json.dumps(_json_stats(dataset_stats), indent=4))
    info = {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": robot_type,
        "total_episodes": len(paths),
        "total_frames": done,
        "total_tasks": len(tasks),
        "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": DATA_FILE_SIZE_MB,
        "video_files_size_in_mb": VIDEO_FILE_SIZE_MB,
        "fps": fps,
        "splits": {"train": f"0:{len(paths)}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH,
        "features": features,
    }
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    return len(paths), done
