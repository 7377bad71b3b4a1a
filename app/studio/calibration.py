"""Step-by-step calibration of one arm of a `Calibratable` rig, while the control loop keeps running.

The procedure belongs to the studio's worker thread: the requests (`next`, `back`, `save`,
`cancel`, `refresh`; any thread) are queued there, and the window reads `status()`, a
`CalibrationStatus` copy. `Studio.begin_calibration` opens one (it knows whether the arms are
powered or a recording runs). The bus serialises whole transactions under
its lock, and the arm being calibrated is neither driven nor torqued: the studio refuses a
calibration while the arms are started or starting, and Start arms while a calibration is open.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Executor, Future
from typing import Callable

from app.studio.events import EventLog, Severity
from app.studio.snapshot import CalibrationStatus
from robot.capabilities import Calibratable
from robot.dynamixel.calibration import CalibrationError, CalibrationProcedure
from robot.dynamixel.errors import DynamixelError
from robot.rig import RigError

log = logging.getLogger(__name__)


class CalibrationControl:
    """The open calibration of a rig, if any."""

    def __init__(self, rig: Calibratable, events: EventLog, worker: Executor) -> None:
        self.rig = rig
        self.events = events
        self._worker = worker
        self._lock = threading.Lock()
        self._procedure: CalibrationProcedure | None = None  # worker thread
        self._status: CalibrationStatus | None = None
        self._refreshing = False

    def status(self) -> CalibrationStatus | None:
        with self._lock:
            return self._status

    @property
    def open(self) -> bool:
        status = self.status()
        return status is not None and not status.closed

    # ------------------------------------------------------------------ requests (any thread)

    def next(self) -> Future:
        """Take the reading for this step and go to the next (a refused step sets `error`)."""
        return self._worker.submit(self.call, lambda proc: proc.advance())

    def back(self) -> Future:
        return self._worker.submit(self.call, lambda proc: proc.back())

    def cancel(self) -> Future:
        """Close the calibration without saving; the calibration in use stays."""
        return self._worker.submit(self.call, self._cancel)

    def save(self) -> Future:
        """Write the result to the rig's calibration folder and put it in use."""
        return self._worker.submit(self.call, self._save)

    def refresh(self) -> None:
        """Ask for a fresh live reading (one sync read on the worker); skipped while one is under
        way, so a GUI timer may call it at any rate."""
        with self._lock:
            if self._procedure is None or self._refreshing:
                return
            self._refreshing = True
        self._worker.submit(self.call, lambda proc: proc.step(), True)

    # ------------------------------------------------------------------ worker thread

    def open_procedure(self, arm_id: str) -> bool:
        procedure = self.rig.calibration_procedure(arm_id)
        with self._lock:
            self._procedure = procedure
        self._publish(procedure)
        self.events.add(Severity.INFO, "rig", f"Calibrating {arm_id}: follow the steps in the calibration window.")
        return True

    def call(self, function: Callable[[CalibrationProcedure], object], refresh: bool = False) -> bool:
        """Run `function(procedure)` and publish its status. A refused step keeps the procedure on
        that step with the reason; a live-reading refresh keeps the last refusal on screen unless
        it fails itself."""
        try:
            procedure = self._procedure
            if procedure is None:
                return False
            previous = self.status()
            error = ""
            try:
                function(procedure)
            except CalibrationError as exc:
                error = str(exc)
            except (DynamixelError, RigError, OSError) as exc:
                log.warning("calibration of %s: %s", procedure.arm_id, exc)
                error = f"The arm did not answer: {exc}. Check its power and cable, then try again."
            if refresh and not error and previous is not None:
                error = previous.error
            if self._procedure is procedure:
                self._publish(procedure, error)
            return not error
        finally:
            if refresh:
                with self._lock:
                    self._refreshing = False

    def _cancel(self, procedure: CalibrationProcedure) -> None:
        procedure.cancel()
        self._publish(procedure)
        with self._lock:
            self._procedure = None
        self.events.add(Severity.INFO, "rig", procedure.prompt)

    def _save(self, procedure: CalibrationProcedure) -> None:
        result = procedure.result
        if result is None:
            raise CalibrationError("Nothing to save yet: go through the steps until the last one says the arm is calibrated.")
        path = self.rig.apply_calibration(result)
        self._publish(procedure, saved_path=str(path))
        with self._lock:
            self._procedure = None
        gripper = ""
        if result.gripper_open_rad is not None and result.gripper_closed_rad is not None:
            gripper = f" Gripper range measured: open {result.gripper_open_rad:.3f} rad, closed {result.gripper_closed_rad:.3f} rad."
        self.events.add(Severity.INFO, "rig", f"Saved the calibration of {result.arm_id} to {path}; it is in use now.{gripper}")

    def _publish(self, procedure: CalibrationProcedure, error: str = "", saved_path: str = "") -> None:
        live = procedure.live_rad
        status = CalibrationStatus(
            arm_id=procedure.arm_id,
            step=procedure.state.value,
            prompt=procedure.prompt,
            joint_names=tuple(j.name for j in procedure.layout.joints),
            live_rad=None if live is None else tuple(float(v) for v in live),
            error=error,
            saved_path=saved_path,
        )
        with self._lock:
            self._status = status
