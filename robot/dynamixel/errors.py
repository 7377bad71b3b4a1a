"""Typed errors of the Dynamixel side. Each names the port, the servo and the register involved and
says what to do, because the message ends up in front of lab staff, not programmers."""

from __future__ import annotations

from robot.dynamixel.control_table import HardwareError
from robot.rig import RigError


class DynamixelError(RigError):
    """Base of every servo-bus error."""


class CommError(DynamixelError):
    """No valid reply from a servo (timeout, bad CRC, truncated packet) within the call's budget.

    servo_id is None when the failing servo could not be told apart (a sync read that failed as
    a whole). register names the control-table item being read or written ("" for ping).
    """

    def __init__(self, port: str, servo_id: int | None, register: str, detail: str) -> None:
        self.port = port
        self.servo_id = servo_id
        self.register = register
        self.detail = detail
        who = f"servo {servo_id}" if servo_id is not None else "a servo"
        what = f" ({register})" if register else ""
        super().__init__(
            f"No valid reply from {who} on {port}{what}: {detail}. Check that the arm is powered, "
            f"that the cable to {who} is seated, and that the port and baud rate in the rig file are right."
        )


class ServoNotResponding(CommError):
    """A servo that answered before has stopped answering (the rig holds the arm and keeps recording)."""

    def __init__(self, port: str, servo_id: int, register: str, detail: str, joint: str = "") -> None:
        self.joint = joint
        super().__init__(port, servo_id, register, detail)
        where = f" ({joint} joint)" if joint else ""
        self.args = (
            f"Servo {servo_id}{where} on {port} stopped answering while reading {register or 'it'}: {detail}. "
            f"The arm is held where it is. Check the power and the cable of servo {servo_id}, then reconnect the arm.",
        )


class ServoError(DynamixelError):
    """The servo answered but refused the instruction (the error number of its status packet)."""

    def __init__(self, port: str, servo_id: int, register: str, error_number: int, text: str) -> None:
        self.port = port
        self.servo_id = servo_id
        self.register = register
        self.error_number = error_number
        hint = " Turn the torque off first: EEPROM settings are locked while it is on." if error_number == 7 else ""
        super().__init__(f"Servo {servo_id} on {port} refused {register}: {text} (error {error_number}).{hint}")


class ServoHardwareError(DynamixelError):
    """A servo reports a hardware error (overload, overheating, ...) and has usually cut its torque."""

    def __init__(self, port: str, servo_id: int, bits: HardwareError, joint: str = "") -> None:
        self.port = port
        self.servo_id = servo_id
        self.bits = HardwareError(bits)
        self.joint = joint
        where = f" ({joint} joint)" if joint else ""
        advice = {
            HardwareError.OVERLOAD: "the load was too high for too long: free the arm from whatever blocks it",
            HardwareError.OVERHEATING: "let the servo cool down for a few minutes",
            HardwareError.INPUT_VOLTAGE: "check the power supply voltage",
            HardwareError.ELECTRICAL_SHOCK: "check the power supply and the wiring",
            HardwareError.MOTOR_ENCODER: "the servo may be damaged; contact the lab engineer",
        }
        tips = "; ".join(text for bit, text in advice.items() if bit in self.bits)
        super().__init__(
            f"Servo {servo_id}{where} on {port} reports a hardware error: {self.bits.describe()}. "
            f"To recover: {tips}, then reboot the servo from the rig panel."
        )


class ServoMismatch(DynamixelError):
    """The servos found on the bus are not the ones the rig file or the calibration expects."""

    def __init__(self, port: str, servo_id: int, expected: str, found: str) -> None:
        self.port = port
        self.servo_id = servo_id
        self.expected = expected
        self.found = found
        super().__init__(
            f"Servo {servo_id} on {port}: expected {expected}, found {found}. Is this the right arm on the "
            f"right port? Check the port names in the rig file, or recalibrate this arm if its servos were replaced."
        )


class BusWatchdogTripped(DynamixelError):
    """Servos stopped by their own Bus_Watchdog: no packet reached them for longer than its period.
    They hold where they are and ignore new goals until the watchdog is re-armed."""

    def __init__(self, port: str, servo_ids: tuple[int, ...], period_ms: int, joints: tuple[str, ...] = ()) -> None:
        self.port = port
        self.servo_ids = tuple(servo_ids)
        self.period_ms = period_ms
        self.joints = tuple(joints)
        which = ", ".join(joints) if joints else ", ".join(str(i) for i in servo_ids)
        super().__init__(
            f"The servos of {which} on {port} stopped themselves: the computer did not talk to them for more "
            f"than {period_ms} ms (a stalled control loop or an overloaded computer). They hold where they are. "
            f"Close other programs if the computer is busy, then restart the arms from the rig panel."
        )
