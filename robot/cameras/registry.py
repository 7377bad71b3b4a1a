"""Camera kinds by name: config class and driver class, and building either from plain data.

A driver module registers itself with `@register_camera(ConfigClass)`; `ConfigClass.kind` is the
name a rig file uses (`kind = "realsense"` in a `[[cameras]]` table). The built-in drivers are
imported on first use, so importing this module alone pulls in no camera SDK.
"""

from __future__ import annotations

import dataclasses
import importlib
import threading
from typing import Any, Callable, Mapping, TypeVar

from robot.cameras.base import Camera, CameraConfig

_BUILTIN_DRIVER_MODULES = (
    "robot.cameras.realsense",
    "robot.cameras.realsense_emulated",
    "robot.cameras.opencv_camera",
)

_CameraClass = TypeVar("_CameraClass", bound=type)
_registry_lock = threading.Lock()
# kind -> (config class, camera class). One process-wide table, like the set of installed drivers.
_KINDS: dict[str, tuple[type[CameraConfig], type[Camera]]] = {}
# Fields that take Python objects (callables) and so cannot come from a rig file.
_CODE_ONLY_FIELDS = frozenset({"frame_fn", "depth_fn"})


def register_camera(config_class: type[CameraConfig]) -> Callable[[_CameraClass], _CameraClass]:
    """Class decorator: the decorated `Camera` is built for configs of exactly `config_class`."""
    kind = config_class.kind
    if not kind:
        raise ValueError(f"{config_class.__name__} must set the class attribute `kind` before it can be registered")

    def register(camera_class: _CameraClass) -> _CameraClass:
        with _registry_lock:
            known = _KINDS.get(kind)
            if known is not None and known != (config_class, camera_class):
                raise ValueError(f"camera kind {kind!r} is already registered to {known[1].__name__}")
            _KINDS[kind] = (config_class, camera_class)
        return camera_class

    return register


def _load_builtin_drivers() -> None:
    for module in _BUILTIN_DRIVER_MODULES:
        importlib.import_module(module)


def camera_kinds() -> tuple[str, ...]:
    """The registered kinds, e.g. ("opencv", "realsense", "realsense-emulated")."""
    _load_builtin_drivers()
    with _registry_lock:
        return tuple(sorted(_KINDS))


def config_class_for(kind: str) -> type[CameraConfig]:
    """The config dataclass of a kind. Raises ValueError naming the known kinds."""
    kinds = camera_kinds()
    with _registry_lock:
        entry = _KINDS.get(kind)
    if entry is None:
        raise ValueError(f"unknown camera kind {kind!r}: use one of {', '.join(kinds)}")
    return entry[0]


def camera_config_from_table(table: Mapping[str, Any]) -> CameraConfig:
    """Build a config from a rig file's `[[cameras]]` table (field names as keys, plus `kind`).

    Raises ValueError saying which key is missing or unknown; the config validates the values.
    """
    if "kind" not in table:
        raise ValueError(
            f"camera table {dict(table)!r} has no `kind`: add kind = one of {', '.join(camera_kinds())}"
        )
    config_class = config_class_for(str(table["kind"]))
    values = {key: value for key, value in table.items() if key != "kind"}
    fields = {field.name for field in dataclasses.fields(config_class) if field.init}
    settable = {name for name in fields if not name.startswith("_") and name not in _CODE_ONLY_FIELDS}
    unknown = sorted(set(values) - settable)
    name = values.get("name", "?")
    if unknown:
        raise ValueError(
            f"camera '{name}' (kind {config_class.kind!r}): unknown setting(s) {', '.join(unknown)}; "
            f"the settings are: {', '.join(sorted(settable))}"
        )
    if "name" not in values:
        raise ValueError(f"a camera of kind {config_class.kind!r} has no `name`: add e.g. name = \"cam_high\"")
    return config_class(**values)



def make_camera(config: CameraConfig) -> Camera:
    """The driver for `config` (not yet connected). Raises ValueError for an unregistered config type."""
    _load_builtin_drivers()
    with _registry_lock:
        entry = _KINDS.get(config.kind)
    if entry is None or type(config) is not entry[0]:
        raise ValueError(
            f"no camera driver is registered for {type(config).__name__} (kind {config.kind!r}); "
            f"known kinds: {', '.join(camera_kinds())}"
        )
    return entry[1](config)
