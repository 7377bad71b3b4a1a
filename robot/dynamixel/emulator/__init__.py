"""Dynamixel Protocol 2.0 servos emulated on pseudo-terminals, for the real dynamixel-sdk to talk to.

- `motions`: scripted hands that move a leader joint while its torque is off, and `Push`, a hand
  grabbing a joint whose torque is on.
- `servo`: one servo's control table, the rules the real device enforces, and its physics.
- `bus`: the half-duplex bus on a pty (packets, instructions, wire timing, the thread).
- `faults`: reply faults injected on request (dropped, corrupted, delayed; planned or random).
- `aloha`: the arms and the four buses of the bimanual ALOHA rig.
- `__main__`: `python -m robot.dynamixel.emulator` serves those four buses from a process of its own.
"""

from robot.dynamixel.emulator.aloha import aloha_buses, arm_servos, leader_motions
from robot.dynamixel.emulator.bus import EmulatorStats, ServoBusEmulator
from robot.dynamixel.emulator.motions import JointMotion, Push, Sinusoid, Squeeze, Trajectory
from robot.dynamixel.emulator.servo import EmulatedServo

__all__ = [
    "EmulatedServo",
    "EmulatorStats",
    "JointMotion",
    "Push",
    "ServoBusEmulator",
    "Sinusoid",
    "Squeeze",
    "Trajectory",
    "aloha_buses",
    "arm_servos",
    "leader_motions",
]
