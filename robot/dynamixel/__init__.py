"""The real rig's servo side: Dynamixel Protocol 2.0 through dynamixel-sdk.

Modules, bottom up: `protocol` (framing, CRC), `control_table` (registers and units, shared by
the bus and the emulator), `layout` (which servo drives which joint), `bus` (the SDK behind a
small protocol, retries, typed errors, statistics), `calibration`, `arm` (follower/leader and the
ALOHA gripper mapping), `safe_start` (opening ceremony, watchdogs), `health`, and `emulator`
(a protocol-level servo bus on a pty that the tests and the emulated rig run against).
"""
