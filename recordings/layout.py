"""Creating the datasets of an episode file: one place, used by the writer and by recovery, so
both produce the same layout (`recordings.schema`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import h5py
import numpy as np

from recordings import schema
from recordings.attributes import root_attributes
from recordings.hdf5_faults import attribute, member
from recordings.labels import LabelState, create_label_record
from recordings.loop_record import LOOP_MODE_DTYPE
from recordings.metadata import EpisodeMetadata
from recordings.schema import ImageFormat, attr_text

__all__ = ["ImageLayout", "attr_text", "camera_names_of", "create_episode", "set_text_attr", "write_attrs"]

#: Rows per chunk of the per-step arrays: 5 s at 50 Hz, a few KiB, so appends touch few chunks.
STEP_CHUNK = 256
#: JPEG rows start this wide (bytes) at least; they grow when a frame is longer.
MIN_JPEG_WIDTH = 4096
#: libver bounds for files the writer keeps open: SWMR needs the 1.10 format, and pinning the
#: upper bound keeps the files readable by any HDF5 >= 1.10 (ACT/LeRobot environments).
SWMR_LIBVER = ("v110", "v110")


@dataclass(frozen=True)
class ImageLayout:
    """How one episode stores its camera frames.

    shapes: camera -> (H, W, 3) of its frames. jpeg_width: initial padded row length (bytes) and
    chunk width of JPEG datasets (rows may grow past it; chunks stay this wide).
    """

    camera_names: tuple[str, ...]
    image_format: ImageFormat
    shapes: Mapping[str, tuple[int, int, int]]
    jpeg_quality: int = 90
    jpeg_width: int = MIN_JPEG_WIDTH

    def __post_init__(self) -> None:
        missing = [name for name in self.camera_names if name not in self.shapes]
        if missing:
            raise ValueError(f"ImageLayout: no image shape for cameras {missing}")
        if len(set(self.camera_names)) != len(self.camera_names):
            raise ValueError(f"ImageLayout: camera names repeat: {list(self.camera_names)}")


def _step_dataset(parent: h5py.Group, name: str, length: int, width: int | None, dtype, fill=None) -> h5py.Dataset:
    shape = (length,) if width is None else (length, width)
    maxshape = (None,) if width is None else (None, width)
    chunks = (STEP_CHUNK,) if width is None else (STEP_CHUNK, width)
    kwargs: dict[str, Any] = {}
    if fill is not None:
        kwargs["fillvalue"] = fill
    return parent.create_dataset(
        name, shape=shape, maxshape=maxshape, chunks=chunks, dtype=dtype, fletcher32=True, **kwargs
    )


def create_episode(
    root: h5py.File,
    layout: ImageLayout,
    metadata: EpisodeMetadata,
    length: int = 0,
    jpeg_width: int | None = None,
    loop_record: bool = True,
    events: int = 0,
) -> None:
    """Create every dataset of an episode with `length` steps (all resizable along T) and write
    the root attributes. Unwritten timestamps read as NaN: the writer writes them last, which
    is how recovery tells complete steps from a crash's half-written ones.

    loop_record: create /loop_mode, /safety_clipped and /loop_events (`events` rows); False only
    when recovering a leftover written before they existed (its steps have no such record)."""
    write_attrs(root, layout, metadata)
    obs = root.require_group("observations")
    for path in (schema.QPOS, schema.QVEL, schema.EFFORT, schema.ACTION):
        _step_dataset(root, path, length, schema.STATE_WIDTH, schema.STATE_DTYPE)
    _step_dataset(root, schema.TIMESTAMP, length, None, schema.TIME_DTYPE, fill=np.nan)
    _step_dataset(root, schema.CONTROL_SOURCE, length, None, schema.CONTROL_SOURCE_DTYPE)
    _step_dataset(root, schema.TICK_INDEX, length, None, schema.TICK_INDEX_DTYPE, fill=-1)
    _step_dataset(root, schema.SIM_TIME, length, None, schema.TIME_DTYPE, fill=np.nan)
    if loop_record:
        _step_dataset(root, schema.LOOP_MODE, length, None, LOOP_MODE_DTYPE)
        _step_dataset(root, schema.SAFETY_CLIPPED, length, schema.STATE_WIDTH, schema.CLIPPED_DTYPE)
        # Events are rare (a few a minute): small chunks, so a flush rewrites little.
        root.create_dataset(schema.LOOP_EVENTS, shape=(events,), maxshape=(None,), chunks=(16,),
                            dtype=schema.LOOP_EVENT_DTYPE, fletcher32=True)
    images = obs.require_group("images")
    obs.require_group("image_timestamps")
    for camera in layout.camera_names:
        _step_dataset(root, schema.image_time_path(camera), length, None, schema.TIME_DTYPE, fill=np.nan)
        if layout.image_format is ImageFormat.RAW:
            height, width, channels = layout.shapes[camera]
            images.create_dataset(
                camera,
                shape=(length, height, width, channels),
                maxshape=(None, height, width, channels),
                chunks=(1, height, width, channels),  # ALOHA's: one frame per chunk
                dtype=schema.IMAGE_DTYPE,
                fletcher32=True,
            )
        else:
            width = max(int(jpeg_width or layout.jpeg_width), 1)
            chunk = max(min(layout.jpeg_width, width), 1)
            images.create_dataset(
                camera,
                shape=(length, width),
                maxshape=(None, None),
                chunks=(1, chunk),
                dtype=schema.IMAGE_DTYPE,
                fillvalue=0,
                fletcher32=True,
            )
    if layout.image_format is ImageFormat.JPEG:
        n_cams = len(layout.camera_names)
        root.create_dataset(
            schema.COMPRESS_LEN,
            shape=(n_cams, length),
            maxshape=(n_cams, None),
            chunks=(max(n_cams, 1), STEP_CHUNK),
            dtype=schema.COMPRESS_LEN_DTYPE,
            fletcher32=True,
        )
    create_label_record(root, LabelState(metadata.label, metadata.reason, metadata.notes))


def write_attrs(root: h5py.File, layout: ImageLayout, metadata: EpisodeMetadata) -> None:
    """Root attributes: metadata plus how the images are stored. All are created here, before
    SWMR starts (a SWMR writer cannot add attributes), and only rewritten at the end."""
    for name, value in metadata.to_attrs().items():
        if isinstance(value, str):
            set_text_attr(root.attrs, name, value)
        else:
            root.attrs[name] = value
    root.attrs[schema.ATTR_COMPRESS] = layout.image_format is ImageFormat.JPEG
    set_text_attr(root.attrs, schema.ATTR_CAMERA_NAMES, list(layout.camera_names))
    set_text_attr(root.attrs, schema.ATTR_IMAGE_FORMAT, layout.image_format.value)
    root.attrs[schema.ATTR_JPEG_QUALITY] = int(layout.jpeg_quality)
    root.attrs[schema.ATTR_FRAMES_DROPPED] = 0
    root.attrs[schema.ATTR_FINISHED] = False
    root.attrs[schema.ATTR_RECOVERED] = False


def set_text_attr(attrs: h5py.AttributeManager, name: str, value: str | Sequence[str]) -> None:
    """Store text (or a list of texts) as fixed-length UTF-8: it then lives inside the object
    header, which HDF5 checksums, and not in the global heap, which it does not (a flipped byte
    there would silently change a task or camera name)."""
    if isinstance(value, str):
        encoded = value.encode("utf-8")
        attrs.create(name, data=np.array(encoded, dtype=h5py.string_dtype("utf-8", max(len(encoded), 1))))
        return
    items = [str(item).encode("utf-8") for item in value]
    width = max([len(item) for item in items] + [1])
    attrs.create(name, data=np.array(items, dtype=h5py.string_dtype("utf-8", width)))


def camera_names_of(root: h5py.File, attrs: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    """Camera names in recorded order: the `camera_names` attr, else the images group's members
    (ALOHA files; h5py lists them alphabetically, which is ALOHA's own `compress_len` order only
    by accident, so ALOHA files are decoded without `compress_len`)."""
    names = attribute(root_attributes(root) if attrs is None else attrs, schema.ATTR_CAMERA_NAMES)
    if names is not None:
        listed = tuple(attr_text(name) for name in np.atleast_1d(names))
        if listed:
            return listed
    group = member(root, schema.IMAGES_GROUP)
    if isinstance(group, h5py.Group):
        return tuple(name for name, item in group.items() if isinstance(item, h5py.Dataset))
    return ()
