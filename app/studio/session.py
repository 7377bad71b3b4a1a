"""The one place where a rig, its control loop, the episode writer and the plot history are wired.

    session = open_session("configs/sim.toml", store="runs/demos")   # opened and connected
    session.loop.set_source(...); session.loop.start()
    session.writer.start(session.metadata("fold the towel", "ana"))
    ...
    loop = session.new_loop()        # a fresh loop (after a towel reset): same subscribers
    session.close()

The window's studio, every `run.py` job (demos, record, eval) and the benchmarks open their rig
this way, so what is recorded, plotted and listened to is the same whoever drives it.

Processes: the episode writer runs in a process of its own (`recordings.writer_process`, started
here, ended by `close`); its subscriber only copies each tick into shared
memory, so no HDF5 write or JPEG encoding holds this process's interpreter lock against the
control thread. `[recording] writer_process = false` keeps it on a thread of this process.
`open_session` also sets this process's interpreter switch interval (`[control]
switch_interval_ms`), so that no other thread keeps the lock long from the control thread.

Threads: `open_session`, `new_loop` and `close` belong to the owner (the studio's worker thread,
a job's main thread). The loop's subscribers (writer, history, any added with `subscribe`) and
event listeners run on the control thread and must only copy or enqueue.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from app.studio.history import TickHistory
from recordings.metadata import EpisodeMetadata
from recordings.store import EpisodeStore, StorePathError, require_store_dir
from recordings.writer import EpisodeWriter
from recordings.errors import RecordingError
from recordings.writer_process import ProcessEpisodeWriter
from robot.capabilities import Capabilities, Simulation
from robot.control_loop import ControlLoop
from robot.rig import Rig, RigError
from robot.rig_config import RigFile, RigFileError
from robot.rigs import open_rig
from robot.types import LoopEvent, TickRecord

log = logging.getLogger(__name__)

RigOpener = Callable[[Path], tuple[Rig, RigFile]]


class SessionError(RuntimeError):
    """The rig could not be opened; `message` says what happened, `what_to_do` the fix."""

    def __init__(self, message: str, what_to_do: str) -> None:
        super().__init__(message)
        self.message = message
        self.what_to_do = what_to_do

    def __str__(self) -> str:
        return f"{self.message} {self.what_to_do}".strip()


@dataclass
class Session:
    """A connected rig with its control loop (not started), its writer (None when not recording)
    and the plot history. `loop` changes when `new_loop()` replaces it."""

    rig: Rig
    rig_file: RigFile
    loop: ControlLoop
    history: TickHistory
    writer: ProcessEpisodeWriter | EpisodeWriter | None = None
    store: EpisodeStore | None = None
    capabilities: Capabilities = field(default_factory=Capabilities)
    _subscribers: list[Callable[[TickRecord], None]] = field(default_factory=list)
    _listeners: list[Callable[[LoopEvent], None]] = field(default_factory=list)
    _detach: list[Callable[[], None]] = field(default_factory=list)

    def subscribe(self, callback: Callable[[TickRecord], None]) -> None:
        """Call `callback(record)` after every tick of this loop and of every later one."""
        self._subscribers.append(callback)
        self._detach.append(self.loop.subscribe(callback))

    def add_event_listener(self, callback: Callable[[LoopEvent], None]) -> None:
        """Call `callback(event)` with every loop event, of this loop and of every later one."""
        self._listeners.append(callback)
        self._detach.append(self.loop.add_event_listener(callback))

    def new_loop(self) -> ControlLoop:
        """Stop the current loop and make a fresh one with the same subscribers and listeners.

        A loop's hold pose is the first reading it takes: after a towel reset a loop kept from
        before would hold (and pull the arms back to) the pose of the previous episode."""
        self.stop_loop()
        self.loop = ControlLoop(self.rig, self.rig_file.control)
        self._attach()
        return self.loop

    def stop_loop(self) -> None:
        """Stop the control thread and detach the subscribers (the rig stays connected)."""
        for detach in self._detach:
            detach()
        self._detach = []
        self.loop.stop()

    def _attach(self) -> None:
        self._detach = [self.loop.subscribe(c) for c in self._subscribers]
        self._detach += [self.loop.add_event_listener(c) for c in self._listeners]

    def metadata(self, task: str = "", operator: str = "", notes: str = "") -> EpisodeMetadata:
        """An episode's metadata on this rig (the rig file's task and operator by default)."""
        return EpisodeMetadata(
            task=task or self.rig_file.recording.task,
            operator=operator or self.rig_file.recording.operator,
            rig=self.rig.name,
            sim=self.rig.simulated,
            notes=notes,
            control_rate_hz=self.rig_file.control.rate_hz,
        )

    def close(self) -> None:
        """Stop the loop, end the writer process and disconnect the rig (which leaves it safe:
        torque off on hardware). A recording still open is the caller's to stop or discard first."""
        try:
            self.stop_loop()
        finally:
            try:
                if isinstance(self.writer, ProcessEpisodeWriter):
                    self.writer.close()
            finally:
                self.rig.disconnect()


def open_session(
    rig_file: Path | str,
    store: Path | str | None = None,
    *,
    record: bool = True,
    render_thread: bool | None = None,
    history_capacity: int = 750,
    rig_opener: RigOpener = open_rig,
) -> Session:
    """Open the rig of `rig_file`, connect it, and wire its control loop to a writer into `store`
    (default: the rig file's `[recording] store_dir`; `record=False`: no writer) and a plot
    history. The loop is not started.

    render_thread: simulated rigs only; False renders the cameras inside `read()`, in step with
    the simulation, which unpaced jobs need (every frame is the state at its tick). None keeps the
    rig file's choice. Raises SessionError with what to do; nothing is left open then.
    """
    path = Path(rig_file)
    try:
        rig, rig_file_ = rig_opener(path)
    except RigFileError as exc:
        raise SessionError(f"The rig file cannot be used: {exc}",
                           "Fix the rig file (the message names the line), then try again.") from exc
    except (RigError, OSError, ImportError) as exc:
        raise SessionError(f"The rig could not be built from {path}: {exc}",
                           "Check the rig file and that its packages are installed (./studio.sh setup).") from exc
    store_dir = Path(store) if store is not None else rig_file_.recording.store_dir
    if record:
        try:
            require_store_dir(store_dir, create=True)
        except StorePathError as exc:
            raise SessionError(str(exc), "Choose a writable folder with --store DIR, or fix the folder's permissions.") from exc
    if render_thread is not None and isinstance(rig, Simulation):
        rig.set_render_thread(render_thread)
    try:
        rig.connect()
    except Exception as exc:  # any driver failure: the user must see it, with what to do
        log.exception("rig.connect failed")
        try:
            rig.disconnect()
        except Exception:
            log.exception("rig.disconnect after a failed connect")
        raise SessionError(f"Connecting the rig {rig.name!r} failed: {exc}",
                           "Check power and cables (hardware) or the graphics set-up (sim: MUJOCO_GL), then try again.") from exc
    # The control thread must not wait long for the interpreter lock when it wakes: another
    # thread of this process (the window, a policy) gives it up after this long (issue 15).
    sys.setswitchinterval(rig_file_.control.switch_interval_ms / 1e3)
    try:
        loop = ControlLoop(rig, rig_file_.control)
        writer = None
        if record:
            try:
                writer = _writer_kind(rig_file_.recording.writer_process)(
                    store_dir, rig.camera_names, image_format=rig_file_.recording.image_format,
                    jpeg_quality=rig_file_.recording.jpeg_quality)
            except ValueError as exc:  # e.g. a rig without cameras: nothing to record from
                rig.disconnect()
                raise SessionError(f"{path} cannot record: {exc}", "Give the rig file at least one camera.") from exc
    except SessionError:
        raise
    except Exception as exc:
        log.exception("building the control loop failed")
        rig.disconnect()
        raise SessionError(f"The control loop could not be set up: {exc}", "Check the [control] table of the rig file.") from exc
    session = Session(rig, rig_file_, loop, TickHistory(history_capacity), writer,
                      EpisodeStore(store_dir) if record else None, Capabilities.of(rig))
    session.subscribe(session.history.on_tick)
    if writer is not None:
        session.subscribe(writer.on_tick)
        # The loop's events go into the episode too (/loop_events: why the arm held, E-stops).
        session.add_event_listener(writer.on_loop_event)
    if isinstance(writer, ProcessEpisodeWriter):
        # Now, not at the first Record: its start (imports of h5py and OpenCV, ~1 s of CPU) must
        # not compete with the control loop in the first seconds of an episode.
        try:
            writer.start_process()
        except RecordingError as exc:  # the first start() tries again and reports it
            log.warning("%s", exc)
    return session


def _writer_kind(writer_process: bool) -> type[ProcessEpisodeWriter] | type[EpisodeWriter]:
    """The writer in its own process (no HDF5 or JPEG work beside the control loop), unless the
    rig file asks for a thread or the OS has no memfd to share frames through."""
    if writer_process and not sys.platform.startswith("linux"):  # the tick ring is a Linux memfd
        log.info("the writer process needs Linux (memfd): episodes are written from a thread of this process")
        return EpisodeWriter
    return ProcessEpisodeWriter if writer_process else EpisodeWriter
