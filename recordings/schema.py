"""The episode file format: every HDF5 path, attribute, dtype and file name, named once.

Layout (ALOHA's, see ALOHA.md, plus our extras marked +). T = number of steps, obs[t] is the
observation taken before action[t]:

    attrs: sim (bool), compress (bool)
           + schema_version, task, operator, rig, created, software_version, success_label,
             notes, label_reason, calibration_hash, control_rate_hz, camera_names,
             image_format, jpeg_quality, frames_dropped, finished, recovered
           (text attributes are fixed-length UTF-8, stored inside the checksummed root
           object header rather than in HDF5's unchecksummed global heap)
    /observations/qpos                (T, 14) float32
    /observations/qvel                (T, 14) float32
    /observations/effort              (T, 14) float32
    /observations/images/<cam>        raw: (T, H, W, 3) uint8, chunks (1, H, W, 3)
                                      JPEG: (T, padded_len) uint8, zero-padded JPEG bytes
    /compress_len                     (n_cams, T) int32, JPEG byte length (JPEG only; rows in
                                      the order of the `camera_names` attr)
    /action                           (T, 14) float32
  + /timestamp                        (T,) float64, host monotonic seconds of obs[t]
  + /observations/image_timestamps/<cam>  (T,) float64, host monotonic capture time of the frame
  + /control_source                   (T,) S16, `robot.types.ControlSource` value of action[t]
  + /tick_index                       (T,) int64, control-loop tick number (gaps = lost ticks)
  + /sim_time                         (T,) float64, simulated seconds (NaN on a real rig)
  + /label_record                     (2, 4096) uint8, contiguous: the label, failure reason and
                                      notes as edited after recording (`recordings.labels`); it
                                      wins over the attributes
  + /loop_mode                        (T,) uint8 HDF5 enum (`LOOP_MODE_CODES`: idle 0, teleop 1,
                                      policy 2, hold 3, estop 4): the control loop's
                                      `robot.types.Mode` at the tick of action[t]
  + /safety_clipped                   (T, 14) bool: True where the safety filter changed joint j
                                      of action[t] (position or speed limit; columns as qpos)
  + /loop_events                      (N,) compound `LOOP_EVENT_DTYPE`, one row per control-loop
                                      event (`robot.types.LoopEvent`) while recording, in the
                                      order emitted: tick (int64, the /tick_index value of the
                                      step it belongs to; a tick not recorded names the next),
                                      time_s (float64 host monotonic), severity (S8: info /
                                      warning / error), code (S24, e.g. "estop", "source_dry",
                                      "unsafe_action", "position_limit"), message (S400) and
                                      what_to_do (S240), UTF-8 cut at a character boundary

The three loop datasets are optional extras of format 1 (added for issue 11's timeline, so the
schema version stays 1): files without them (older ones, ALOHA's) read as "not recorded"
(None), never as a mode.
They are written with the other per-step columns at every flush, so a killed recording keeps
them up to its last complete step (`recordings.recovery` copies the events of the steps kept).

Integrity: files are written with HDF5's 1.10 format (checksummed superblock, object headers
and chunk indexes) and every chunked dataset carries the Fletcher-32 filter, so a changed byte
anywhere that matters fails a checksum when read instead of turning into a wrong value.

Image channel order (the ALOHA convention, which ACT, act-plus-plus and LeRobot's ALOHA import
rely on): JPEG bytes are `cv2.imencode` of the RGB array as it is, so `cv2.imdecode(row, 1)`
returns RGB again. A generic JPEG viewer therefore shows red and blue swapped; that is the price
of opening in their tools unchanged.

Nothing else may sit inside /observations/images: ALOHA tools treat every member as a camera.
"""

from __future__ import annotations

import enum
import re

import numpy as np

from robot.types import STATE_DIM

SCHEMA_VERSION = 1

# ---- datasets (ALOHA) ----
QPOS = "/observations/qpos"
QVEL = "/observations/qvel"
EFFORT = "/observations/effort"
IMAGES_GROUP = "/observations/images"
ACTION = "/action"
COMPRESS_LEN = "/compress_len"

# ---- datasets (ours) ----
TIMESTAMP = "/timestamp"
IMAGE_TIMES_GROUP = "/observations/image_timestamps"
CONTROL_SOURCE = "/control_source"
TICK_INDEX = "/tick_index"
#: (T,) float64 simulated seconds of each step; NaN on a real rig. A simulation stepped faster or
#: slower than real time keeps its exact timing here, while /timestamp stays host time.
SIM_TIME = "/sim_time"
#: (2, 4096) uint8 label slots; see `recordings.labels`.
LABEL_RECORD = "/label_record"
#: (T,) the loop's mode per step, codes in `LOOP_MODE_CODES` (an HDF5 enum: h5dump names them).
LOOP_MODE = "/loop_mode"
#: (T, 14) bool: the joints the safety filter limited in each step's action.
SAFETY_CLIPPED = "/safety_clipped"
#: (N,) `LOOP_EVENT_DTYPE`: the control loop's events while recording.
LOOP_EVENTS = "/loop_events"
#: Datasets that go together: a file has all three or none.
LOOP_DATASETS: tuple[str, ...] = (LOOP_MODE, SAFETY_CLIPPED, LOOP_EVENTS)

#: Per-step (T, 14) arrays every episode has (effort is optional in ALOHA files: sim has none).
STATE_DATASETS: tuple[str, ...] = (QPOS, QVEL, ACTION)
OPTIONAL_STATE_DATASETS: tuple[str, ...] = (EFFORT,)


def image_path(camera: str) -> str:
    """Dataset path of one camera's frames."""
    return f"{IMAGES_GROUP}/{camera}"


def image_time_path(camera: str) -> str:
    """Dataset path of one camera's capture times."""
    return f"{IMAGE_TIMES_GROUP}/{camera}"


# ---- root attributes ----
ATTR_SIM = "sim"
ATTR_COMPRESS = "compress"
ATTR_SCHEMA_VERSION = "schema_version"
ATTR_TASK = "task"
ATTR_OPERATOR = "operator"
ATTR_RIG = "rig"
ATTR_CREATED = "created"  # ISO 8601 wall-clock time (UTC) the recording started: for people
ATTR_SOFTWARE_VERSION = "software_version"
ATTR_LABEL = "success_label"
ATTR_NOTES = "notes"
ATTR_LABEL_REASON = "label_reason"  # why a demonstration failed (the lab's own list of reasons)
ATTR_CALIBRATION_HASH = "calibration_hash"
ATTR_CONTROL_RATE_HZ = "control_rate_hz"
ATTR_CAMERA_NAMES = "camera_names"
ATTR_IMAGE_FORMAT = "image_format"
ATTR_JPEG_QUALITY = "jpeg_quality"
ATTR_FRAMES_DROPPED = "frames_dropped"  # ticks the writer could not take (queue full)
ATTR_FINISHED = "finished"  # True once the writer closed the episode normally
ATTR_RECOVERED = "recovered"  # True when `episodes recover` rebuilt it from a leftover


class Label(str, enum.Enum):
    """Did the demonstration succeed? Set when the recording stops, changeable afterwards."""

    UNKNOWN = "unknown"
    SUCCESS = "success"
    FAILURE = "failure"

    @classmethod
    def parse(cls, value: "Label | str") -> "Label":
        try:
            return cls(value)
        except ValueError:
            choices = ", ".join(label.value for label in cls)
            raise ValueError(f"Unknown success label {value!r}; use one of: {choices}") from None


class ImageFormat(str, enum.Enum):
    JPEG = "jpeg"
    RAW = "raw"


def attr_text(value: object) -> str:
    """A text attribute as str, however it was stored (fixed or variable length, bytes or str)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


# ---- dtypes ----
STATE_DTYPE = np.dtype(np.float32)  # ALOHA's (h5py's default float)
TIME_DTYPE = np.dtype(np.float64)  # monotonic seconds need the precision
COMPRESS_LEN_DTYPE = np.dtype(np.int32)  # ALOHA writes float32 here; readers accept both
CONTROL_SOURCE_DTYPE = np.dtype("S16")  # fixed-length ASCII: readable by every HDF5 tool
TICK_INDEX_DTYPE = np.dtype(np.int64)
#: `robot.types.Mode` value -> the code stored in /loop_mode. Codes never change meaning; a new
#: mode gets a new code.
LOOP_MODE_CODES: dict[str, int] = {"idle": 0, "teleop": 1, "policy": 2, "hold": 3, "estop": 4}
LOOP_MODE_BASE_DTYPE = np.dtype(np.uint8)
CLIPPED_DTYPE = np.dtype(np.bool_)
EVENT_MESSAGE_BYTES = 400
EVENT_WHAT_TO_DO_BYTES = 240
LOOP_EVENT_DTYPE = np.dtype(
    [
        ("tick", np.int64),
        ("time_s", np.float64),
        ("severity", "S8"),
        ("code", "S24"),
        ("message", f"S{EVENT_MESSAGE_BYTES}"),
        ("what_to_do", f"S{EVENT_WHAT_TO_DO_BYTES}"),
    ]
)
IMAGE_DTYPE = np.dtype(np.uint8)
STATE_WIDTH = STATE_DIM

# ---- file names ----
EPISODE_SUFFIX = ".hdf5"
#: A recording in progress (or left by a crash) is `episode_{idx}.hdf5.partial`: ALOHA/ACT/LeRobot
#: globs (`episode_*.hdf5`, `*.hdf5`) never pick it up, and the index stays reserved.
PARTIAL_SUFFIX = ".partial"
#: `episodes recover` writes here first and renames when the copy checks out.
RECOVERING_SUFFIX = ".recovering"

_EPISODE_NAME = re.compile(r"^episode_(\d+)\.hdf5$")
_PARTIAL_NAME = re.compile(r"^episode_(\d+)\.hdf5\.partial$")


def episode_filename(index: int) -> str:
    """ALOHA's naming: `episode_{idx}.hdf5` (no zero padding)."""
    if index < 0:
        raise ValueError(f"Episode index must be >= 0, got {index}")
    return f"episode_{index}{EPISODE_SUFFIX}"


def partial_filename(index: int) -> str:
    return episode_filename(index) + PARTIAL_SUFFIX


def episode_index(name: str) -> int | None:
    """The index of a finished episode's file name, or None if the name is not one."""
    match = _EPISODE_NAME.match(name)
    return int(match.group(1)) if match else None


def partial_index(name: str) -> int | None:
    """The index of a leftover/in-progress file name, or None if the name is not one."""
    match = _PARTIAL_NAME.match(name)
    return int(match.group(1)) if match else None
