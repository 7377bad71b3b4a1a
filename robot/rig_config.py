"""Rig files: TOML that names the rig kind and its settings, read into config dataclasses.

A rig file has one table per concern::

    [rig]        kind = "sim", name = "..."              -> RigSection
    [control]    rate_hz, blend_s, max_joint_speed_rad_s  -> robot.control_loop.LoopConfig
    [recording]  store_dir, image_format, jpeg_quality, task, operator -> RecordingConfig
    [sim]        fields of robot.sim.SimRigConfig         (read by the "sim" kind, robot.rigs)
    [[arms]], [[cameras]] ...                             (read by hardware kinds)

Tables become dataclasses generically, by field name (`RigFile.section(name, cls)`,
`RigFile.array(name, cls)`, `build_dataclass`): TOML values are converted to the field's type
(int -> float, list -> tuple, str -> Path or enum, nested table -> nested dataclass) and the
dataclass's own `__post_init__` checks the values. Every mistake - a TOML syntax error, an unknown
table or key (with "did you mean ...?"), a missing key, a wrong type, a value the dataclass
refuses - becomes a `RigFileError` naming the file, the line and the key. tomllib gives no line
numbers once a file parses, so `RigFile` finds them by scanning the text (`line_of`).

Relative paths in a rig file (`[recording] store_dir`) are relative to the rig file's folder.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from robot.control_loop import LoopConfig

#: Tables every rig file may have, whatever its kind.
COMMON_SECTIONS: tuple[str, ...] = ("rig", "control", "recording")

#: (table path, array index or None) -> the table's key path, e.g. ("arms", 1, "calibration").
TablePath = tuple[typing.Union[str, int], ...]


class RigFileError(ValueError):
    """A rig file that cannot be used. `str()` reads "FILE, line N: [table] key: what; fix"."""

    def __init__(self, path: Path | str, message: str, *, line: int | None = None, key: str | None = None) -> None:
        self.path = Path(path)
        self.line = line
        self.key = key
        self.detail = message
        where = f"{self.path}" + (f", line {line}" if line is not None else "")
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class RigSection:
    """The `[rig]` table. kind: which driver builds the rig (see `robot.rigs.rig_kinds()`);
    name: shown in the window and stored in each episode's metadata."""

    kind: str
    name: str = ""

    def __post_init__(self) -> None:
        if not self.kind.strip():
            raise ValueError('kind must name a rig kind, e.g. kind = "sim"')


@dataclass(frozen=True)
class RecordingConfig:
    """The `[recording]` table: defaults of the recording panel.

    store_dir: the episode store (relative to the rig file's folder in the file; absolute here).
    image_format: "jpeg" (compact, the ALOHA "compress" layout) or "raw" (exact pixels, ~10x larger).
    jpeg_quality: 1..100; 90 keeps the towel's fine texture (ALOHA uses 50).
    task / operator: written into every episode's metadata.
    writer_process: true (default) writes episodes from a process of their own, so HDF5 writes
    and JPEG encoding never hold the control process's interpreter lock
    (`recordings.writer_process`); false writes them from a thread of the studio's process (the
    only way where the OS has no memfd, e.g. macOS).
    """

    store_dir: Path = Path("../recordings/episodes")
    image_format: str = "jpeg"
    jpeg_quality: int = 90
    task: str = "fold the towel"
    operator: str = ""
    writer_process: bool = True

    def __post_init__(self) -> None:
        if self.image_format not in ("jpeg", "raw"):
            raise ValueError(f'image_format must be "jpeg" or "raw", got {self.image_format!r}')
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be within 1..100 (90 keeps fine texture), got {self.jpeg_quality}")
        if not self.task.strip():
            raise ValueError('task must describe the task, e.g. task = "fold the towel"')
        if not isinstance(self.writer_process, bool):
            raise ValueError(f"writer_process must be true or false, got {self.writer_process!r}")


_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=""")


def _split_dotted(text: str) -> list[str]:
    parts = re.findall(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""", text)
    return [p[1:-1] if p[:1] in "\"'" else p for p in parts]


def _index_lines(text: str) -> dict[TablePath, dict[str | None, int]]:
    """Map each table (with array indices) to its header line (key None) and its keys' lines.

    A light scanner, not a TOML parser: it runs only on text tomllib has already accepted, and
    skips the inside of multi-line strings and arrays so their contents are not taken for keys.
    """
    index: dict[TablePath, dict[str | None, int]] = {(): {}}
    array_counts: dict[tuple, int] = {}
    current: TablePath = ()
    depth = 0  # open brackets of a multi-line array or inline table
    in_string: str | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw
        if in_string:
            if in_string in line:
                in_string = None
            continue
        if depth == 0:
            header = _HEADER.match(line)
            if header:
                names = _split_dotted(header.group(2))
                path: list[str | int] = []
                for i, name in enumerate(names):
                    path.append(name)
                    is_last = i == len(names) - 1
                    if header.group(1) == "[[" and is_last:
                        count = array_counts.get(tuple(path), 0)
                        array_counts[tuple(path)] = count + 1
                        path.append(count)
                    elif tuple(path) in array_counts:
                        path.append(array_counts[tuple(path)] - 1)  # [a.b] after [[a]]: the last a
                current = tuple(path)
                index.setdefault(current, {})[None] = number
                continue
            key = _KEY.match(line)
            if key:
                parts = _split_dotted(key.group(1))
                table = current + tuple(parts[:-1])
                index.setdefault(table, {}).setdefault(parts[-1], number)
                value = line[key.end():]
            else:
                value = line
        else:
            value = line
        # Track what continues onto the next lines (outside of strings on this line).
        stripped = re.sub(r'"(?:\\.|[^"\\])*"|\'[^\']*\'', "", value.split('"""')[0].split("'''")[0])
        stripped = stripped.split("#")[0]
        depth += stripped.count("[") + stripped.count("{") - stripped.count("]") - stripped.count("}")
        depth = max(depth, 0)
        for quote in ('"""', "'''"):
            if value.count(quote) % 2 == 1:
                in_string = quote
    return index


def _table_label(path: TablePath) -> str:
    label = ""
    for part in path:
        label += f"[{part}]" if isinstance(part, int) else (f".{part}" if label else part)
    return f"[{label}]" if label else "the top level"


@dataclass(frozen=True)
class RigFile:
    """A parsed rig file: the common sections as dataclasses, the raw tables for the rest.

    The rig kind's builder (robot.rigs) reads its own sections with `section()` / `array()`,
    which give the same line-numbered errors.
    """

    path: Path
    text: str
    data: Mapping[str, Any]
    rig: RigSection
    control: LoopConfig
    recording: RecordingConfig
    _lines: dict = field(repr=False, compare=False, default_factory=dict)

    def line_of(self, table: TablePath | str, key: str | None = None) -> int | None:
        """The line of `key` in `table` (a name like "control" or a path like ("arms", 0)), or
        of the table's header when key is None or not written in the file."""
        path = tuple(table.split(".")) if isinstance(table, str) else tuple(table)
        lines = self._lines.get(path, {})
        if key is not None and key in lines:
            return lines[key]
        # A table written as dotted keys or inline has no header; fall back to its parent's.
        while path:
            if None in self._lines.get(path, {}):
                return self._lines[path][None]
            path = path[:-1]
        return None

    def error(self, message: str, table: TablePath | str, key: str | None = None) -> RigFileError:
        """A RigFileError naming the file, the line of `key` (or of the table) and the key."""
        path = tuple(table.split(".")) if isinstance(table, str) else tuple(table)
        label = _table_label(path)
        prefix = f"{label} {key}" if key else label
        return RigFileError(self.path, f"{prefix}: {message}", line=self.line_of(path, key), key=key)

    def has(self, name: str) -> bool:
        return name in self.data

    def section(self, name: str, cls: type, *, required: bool = False, defaults: Mapping[str, Any] | None = None,
                forbidden: Mapping[str, str] | None = None, origins: Mapping[str, tuple[TablePath, str]] | None = None):
        """Build `cls` from the table `[name]` (absent: from `defaults`, or an error if required)."""
        table = self.data.get(name)
        if table is None:
            if required:
                raise RigFileError(self.path, f"the table [{name}] is missing; add it (see configs/sim.toml for an example)")
            table = {}
        if not isinstance(table, dict):
            raise self.error(f"must be a table ([{name}]), not a single value", (), name)
        return build_dataclass(cls, table, self, (name,), defaults=defaults, forbidden=forbidden, origins=origins)

    def array(self, name: str, cls: type) -> list:
        """Build one `cls` per `[[name]]` table (an empty list when there are none)."""
        tables = self.data.get(name, [])
        if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
            raise self.error(f"must be written as [[{name}]] tables, one per item", (), name)
        return [build_dataclass(cls, table, self, (name, i)) for i, table in enumerate(tables)]

    def check_sections(self, allowed: Iterable[str], kind: str) -> None:
        """Every top-level entry is an allowed table; else an error with "did you mean ...?"."""
        allowed = tuple(allowed)
        for name, value in self.data.items():
            if name in allowed:
                continue
            if not isinstance(value, (dict, list)):
                raise self.error(
                    f"settings belong in a table; put it under one of {', '.join(f'[{a}]' for a in allowed)}", (), name
                )
            raise RigFileError(
                self.path,
                f"[{name}] is not a table a {kind!r} rig reads.{did_you_mean(name, allowed)} "
                f"Tables it reads: {', '.join(f'[{a}]' for a in allowed)}.",
                line=self.line_of((name,)) or self.line_of((name, 0)),
                key=name,
            )


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """" Did you mean X?" for the closest of `choices` (spelling, or one name inside the other), or ""."""
    choices = list(choices)
    close = difflib.get_close_matches(name, choices, n=2, cutoff=0.6)
    if not close:
        lowered = name.lower()
        close = [c for c in choices if len(c) >= 3 and (c.lower() in lowered or lowered in c.lower())][:2]
    return f" Did you mean {' or '.join(close)}?" if close else ""


def _type_name(tp: Any) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a quoted string", Path: "a quoted path"}
    if tp in names:
        return names[tp]
    origin = typing.get_origin(tp)
    if origin in (tuple, list):
        return "a list [...]"
    if dataclasses.is_dataclass(tp):
        return "a table"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in tp)
    return getattr(tp, "__name__", str(tp))


class _Mismatch(Exception):
    def __init__(self, expected: str) -> None:
        self.expected = expected


def _convert(value: Any, tp: Any, rig_file: RigFile, path: TablePath, key: str) -> Any:
    """Convert a TOML value to the annotated type `tp`, or raise _Mismatch."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]  # TOML has no null
        for option in options:
            try:
                return _convert(value, option, rig_file, path, key)
            except _Mismatch:
                continue
        raise _Mismatch(" or ".join(_type_name(o) for o in options))
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value in allowed:
            return value
        raise _Mismatch("one of " + ", ".join(repr(a) for a in allowed))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch(_type_name(tp))
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch(_type_name(tp))
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch(_type_name(tp))
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch(_type_name(tp))
    if tp is Path or (isinstance(tp, type) and issubclass(tp, Path)):
        if isinstance(value, str):
            return Path(value)
        raise _Mismatch(_type_name(Path))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise _Mismatch(_type_name(tp)) from None
    if origin in (tuple, list):
        if not isinstance(value, list):
            raise _Mismatch(_type_name(tp))
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise _Mismatch(f"a list of {len(args)} values")
            items = [_convert(v, a, rig_file, path, key) for v, a in zip(value, args)]
        else:
            item_type = args[0] if args else Any
            items = [_convert(v, item_type, rig_file, path, key) for v in value]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping) or tp is dict:
        if isinstance(value, dict):
            return value
        raise _Mismatch("a table")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, dict):
            return build_dataclass(tp, value, rig_file, path + (key,))
        raise _Mismatch("a table")
    return value


def build_dataclass(
    cls: type,
    table: Mapping[str, Any],
    rig_file: RigFile,
    path: TablePath,
    *,
    defaults: Mapping[str, Any] | None = None,
    forbidden: Mapping[str, str] | None = None,
    origins: Mapping[str, tuple[TablePath, str]] | None = None,
):
    """Build the dataclass `cls` from a TOML table, by field name.

    path: where the table sits in the file, for line numbers ("control",) or ("arms", 0).
    defaults: values used for fields the table leaves out (e.g. filled in from another table).
    forbidden: keys that must be set elsewhere -> where ("[control] rate_hz").
    origins: field filled from another table's key -> (that table, that key): a value the class
    refuses is then reported at the line the user wrote, under the name the user wrote.
    Every mistake raises `RigFileError` with the file, line and key.
    """
    hints = typing.get_type_hints(cls)
    settable = [f for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")]
    names = [f.name for f in settable]
    kwargs: dict[str, Any] = dict(defaults or {})
    for key, value in table.items():
        if forbidden and key in forbidden:
            raise rig_file.error(f"is set in {forbidden[key]}, not here; remove this line", path, key)
        if key not in names:
            raise rig_file.error(
                f"is not a setting of {_table_label(path)}.{did_you_mean(key, names)} "
                f"Settings: {', '.join(names)}.",
                path,
                key,
            )
        try:
            kwargs[key] = _convert(value, hints.get(key, Any), rig_file, path, key)
        except _Mismatch as mismatch:
            raise rig_file.error(f"must be {mismatch.expected}, got {value!r}", path, key) from None
    missing = [
        f.name
        for f in settable
        if f.name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise rig_file.error(f"is missing {', '.join(missing)}; add {missing[0]} = ... to {_table_label(path)}", path)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        for name, (where, user_key) in (origins or {}).items():
            if name not in table and re.search(rf"\b{re.escape(name)}\b", str(exc)):
                message = re.sub(rf"\b{re.escape(name)}\b", user_key, str(exc))
                message = message[len(user_key) + 1 :] if message.startswith(f"{user_key} ") else message
                raise rig_file.error(f"{message} (a limit of the {_table_label(path)} rig)", where, user_key) from None
        raise rig_file.error(str(exc), path, _culprit(cls, kwargs, table, names, str(exc))) from None


def _culprit(cls: type, kwargs: Mapping[str, Any], table: Mapping[str, Any], names: list[str], message: str) -> str | None:
    """The key of `table` a refused construction is about, or None (then the table is named).

    First the field the message names (longest first: "rate_hz" before "rate"); failing that,
    the one key whose removal (back to its default) makes the dataclass accept the rest.
    """
    for name in sorted(names, key=len, reverse=True):
        if name in table and re.search(rf"\b{re.escape(name)}\b", message):
            return name
    fixes = []
    for key in table:
        trial = {k: v for k, v in kwargs.items() if k != key}
        try:
            cls(**trial)
        except (ValueError, TypeError):
            continue
        fixes.append(key)
    return fixes[0] if len(fixes) == 1 else None


def load_rig_file(path: Path | str) -> RigFile:
    """Read and check a rig file's common tables ([rig], [control], [recording]).

    The kind's own tables are checked by `robot.rigs.open_rig`, which knows the kind.
    Raises RigFileError (a ValueError) for every problem, with file and line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RigFileError(path, "no such rig file; pass an existing one, e.g. --rig configs/sim.toml") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RigFileError(path, f"cannot read the rig file ({exc}); check its permissions and that it is UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        line = int(match.group(1)) if match else None
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise RigFileError(path, f"not valid TOML: {reason}; fix the syntax (strings need quotes, tables [brackets])", line=line) from None
    # A placeholder whose sections are filled below; its line index serves the errors meanwhile.
    lines = _index_lines(text)
    draft = RigFile(path, text, data, RigSection(kind="?"), LoopConfig(), RecordingConfig(), lines)
    if "rig" not in data:
        raise RigFileError(path, 'the [rig] table is missing; start the file with [rig] and kind = "sim" (or another kind)', line=1)
    rig = draft.section("rig", RigSection, required=True)
    control = draft.section("control", LoopConfig)
    recording = draft.section("recording", RecordingConfig)
    if not recording.store_dir.is_absolute():
        recording = dataclasses.replace(recording, store_dir=(path.parent / recording.store_dir).resolve())
    return RigFile(path, text, data, rig, control, recording, lines)
