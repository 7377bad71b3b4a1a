"""The window's status bar: what drives the arm, the rig's phase, the loop's rate and jitter, the
cameras' frame rates, the simulation's real-time factor and the free disk. GUI thread only; it
paints snapshots (`show`), at the window's status rate."""

from __future__ import annotations

from PySide6.QtWidgets import QLabel, QStatusBar

from app.studio.monitor import LOW_DISK_BYTES
from app.studio.snapshot import Phase, StudioSnapshot
from app.ui import theme
from app.ui.widgets.control_panel import mode_words
from robot.aloha import MIN_ACCEPTABLE_LOOP_RATE_HZ


def format_bytes(count: int | None) -> str:
    if count is None:
        return "?"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if count < 1024 or unit == "TB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{count} B"
        count /= 1024
    return "?"


class StudioStatusBar(QStatusBar):
    """Labels: mode (in the words and colour of the control panel's mode badge), phase, loop,
    cameras, rtf (simulation only) and disk (permanent, on the right)."""

    def __init__(self) -> None:
        super().__init__()
        self.setSizeGripEnabled(False)
        self.mode = QLabel("—")
        self.phase = QLabel("starting…")
        self.loop = QLabel("loop —")
        self.cameras = QLabel("cameras —")
        self.rtf = QLabel("real-time —")
        self.disk = QLabel("disk —")
        for label in (self.mode, self.phase, self.loop, self.cameras, self.rtf):
            self.addWidget(label)
        self.addPermanentWidget(self.disk)
        self.updates = 0

    def show_mode(self, snap: StudioSnapshot) -> None:
        """Every paint: what drives the arm changes with a key press."""
        text, colour = mode_words(snap.mode, snap.autonomy.state)
        if self.mode.text() != text:
            self.mode.setText(text)
            self.mode.setStyleSheet(f"QLabel {{ background: {colour}; color: white; font-weight: bold; "
                                    "border-radius: 4px; padding: 0 8px; }")

    def show_real_rig(self, real: bool) -> None:
        self.rtf.setVisible(not real)  # real time is the only time a real rig has

    def show(self, snap: StudioSnapshot) -> None:  # noqa: A003 - a Qt-style verb, not QWidget.show
        self.updates += 1
        self.phase.setText({
            Phase.STARTING: f"starting {snap.rig_name}…",
            Phase.RUNNING: f"{snap.rig_name}",
            Phase.FAILED: "rig failed — see Events",
            Phase.STOPPING: "shutting down…",
            Phase.STOPPED: "stopped",
        }[snap.phase])
        stats = snap.loop_stats
        if stats is not None and stats.ticks > 1:
            slow = stats.achieved_rate_hz < MIN_ACCEPTABLE_LOOP_RATE_HZ
            self.loop.setText(
                f"loop {stats.achieved_rate_hz:5.1f} / {stats.target_rate_hz:g} Hz  jitter p99 {stats.jitter_p99_ms:4.1f} ms"
            )
            self.loop.setStyleSheet(f"color: {theme.WARN_COLOUR if slow else theme.TEXT};")
            self.loop.setToolTip(
                f"late ticks {stats.late_ticks}, missed deadlines {stats.missed_deadlines}; "
                f"ALOHA re-records episodes below {MIN_ACCEPTABLE_LOOP_RATE_HZ:g} Hz"
            )
        rig_status = snap.rig_status
        if rig_status is not None:
            if rig_status.camera_fps:
                fps = "  ".join(f"{name.removeprefix('cam_')} {value:4.1f}" for name, value in rig_status.camera_fps.items())
                self.cameras.setText(f"cameras fps: {fps}")
            if rig_status.real_time_factor is not None:
                self.rtf.setText(f"real-time {rig_status.real_time_factor:4.2f}×")
                self.rtf.setToolTip("Simulated seconds per wall-clock second; below 1 the sim runs slower than real time.")
        if snap.store_dir is not None:
            self.disk.setText(f"disk free {format_bytes(snap.disk_free_bytes)}")
            self.disk.setToolTip(f"Episode store: {snap.store_dir}")
            low = snap.disk_free_bytes is not None and snap.disk_free_bytes < LOW_DISK_BYTES
            self.disk.setStyleSheet(f"color: {theme.ERROR_COLOUR if low else theme.TEXT};")
