"""The Episodes workbench: the store's table on top, the selected episode below, actions in a bar.

Standalone (`python run.py review --store DIR`, see `app.ui.workbench.main`) or inside the studio
window (the lead adds it as a tab or a dock; it needs only a store folder). Slow work (reading
the store, exports, replay) runs on one worker thread; a timer polls it, so the GUI thread never
waits on files. The store is re-checked every few seconds (new recordings, changes made by other
programs); `refresh()` checks at once (the studio calls it after saving an episode).
"""

from __future__ import annotations

import contextlib
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QListWidget,
    QMessageBox,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.studio.paths import DEFAULT_RIG_FILE
from app.studio.replay import ReplayRefused, replay_episode
from app.studio.workbench import Workbench
from app.ui import theme
from app.ui.workbench.episode_table import EpisodeTableWidget
from app.ui.workbench.episode_view import EpisodeViewWidget
from recordings.errors import RecordingError

log = logging.getLogger(__name__)

AUTO_REFRESH_MS = 5000
POLL_MS = 15  # how soon a finished job (a store refresh) reaches the table


class WorkbenchWidget(QWidget):
    """Find, watch, judge and export the episodes of one store (see the module doc)."""

    def __init__(self, store_dir: str | Path, rig_file: str | Path | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.workbench = Workbench(store_dir)
        self.rig_file = Path(rig_file) if rig_file else DEFAULT_RIG_FILE
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="workbench")
        self._jobs: list[tuple[Future, Callable, Callable, str]] = []
        self._refreshing = False
        self.loaded = False  # True once the first refresh against the files is done

        self.table = EpisodeTableWidget(self.workbench)
        self.view = EpisodeViewWidget()
        self.view.set_failure_reasons(self.workbench.failure_reasons)
        self.view.label_requested.connect(self._label_one)
        self.view.error.connect(self.show_status)
        self.table.current_changed.connect(self.open_episode)
        self.table.selection_changed.connect(self._update_count)

        self.reason = QComboBox()
        self.reason.setToolTip("Failure reason for 'Mark failure' (edit the list with Reasons…)")
        self._fill_reasons()
        buttons = QHBoxLayout()
        actions = (
            ("Mark success", "Label the selected episodes a success", lambda: self.label_selected("success")),
            ("Mark failure", "Label the selected episodes a failure with the reason beside", lambda: self.label_selected("failure")),
            ("Mark unknown", "Clear the selected episodes' label", lambda: self.label_selected("unknown")),
        )
        for text, tip, slot in actions:
            buttons.addWidget(self._button(text, tip, slot))
        buttons.addWidget(self.reason)
        buttons.addWidget(self._button("Reasons…", "Edit the store's list of failure reasons", self.edit_reasons))
        buttons.addSpacing(12)
        buttons.addWidget(self._button("Move to trash", "Move the selected episodes to the store's trash (restorable)", self.trash_selected))
        buttons.addWidget(self._button("Trash…", "See the trash and restore episodes", self.show_trash))
        buttons.addSpacing(12)
        buttons.addWidget(self._button("Export LeRobot…", "Export the selected episodes as a LeRobot v3.0 dataset", self.ask_export_lerobot))
        buttons.addWidget(self._button("Export MP4…", "Export the current episode as an MP4 with cameras and plots", self.ask_export_mp4))
        buttons.addWidget(self._button("Replay in sim", "Send the current episode's actions to the simulated rig", self.replay_current))
        buttons.addStretch(1)
        buttons.addWidget(self._button("Rebuild index", "Read every episode file again", lambda: self.refresh(rebuild=True)))
        self.status = QLabel("")
        self.status.setObjectName("hint")
        self.count = QLabel("")
        self.count.setObjectName("hint")

        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.table)
        splitter.addWidget(self.view)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 3)
        splitter.setSizes([260, 640])  # ten rows of the table, the episode below
        status_row = QHBoxLayout()
        status_row.addWidget(self.count)
        status_row.addStretch(1)
        status_row.addWidget(self.status)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(buttons)
        layout.addWidget(splitter, 1)
        layout.addLayout(status_row)

        self._poll = QTimer(self)
        self._poll.setInterval(POLL_MS)
        self._poll.timeout.connect(self._poll_jobs)
        self._auto = QTimer(self)
        self._auto.setInterval(AUTO_REFRESH_MS)
        self._auto.timeout.connect(lambda: self.refresh(quiet=True))

        cached = self.workbench.load_cached()  # instant; checked against the files right after
        if cached:
            self._rows_changed()
        self.refresh()
        self._auto.start()

    # ---- helpers ----
    @staticmethod
    def _button(text: str, tip: str, slot) -> QPushButton:
        button = QPushButton(text)
        button.setToolTip(tip)
        button.clicked.connect(slot)
        return button

    def show_status(self, text: str, error: bool = True) -> None:
        self.status.setStyleSheet(f"color: {theme.ERROR_COLOUR if error else theme.MUTED};")
        self.status.setText(text)
        if error:
            log.warning("%s", text)

    def _run(self, work: Callable, done: Callable, what: str) -> None:
        """Run `work()` on the worker; `done(result)` on the GUI thread; errors shown."""
        self._jobs.append((self._pool.submit(work), done, lambda e: self.show_status(f"{what} failed: {e}"), what))
        self._poll.start()

    def _poll_jobs(self) -> None:
        for job in [j for j in self._jobs if j[0].done()]:
            self._jobs.remove(job)
            future, done, failed, _ = job
            error = future.exception()
            if error is not None:
                failed(error)
            else:
                done(future.result())
        if not self._jobs:
            self._poll.stop()

    def wait_idle(self, timeout_s: float = 60.0) -> bool:
        """Tests and scripts: wait for the worker's jobs and deliver their results."""
        deadline = time.monotonic() + timeout_s
        while self._jobs and time.monotonic() < deadline:
            self._jobs[0][0].exception(timeout=max(deadline - time.monotonic(), 0.01))
            self._poll_jobs()
        return not self._jobs

    def _fill_reasons(self) -> None:
        self.reason.clear()
        self.reason.addItem("")
        self.reason.addItems(list(self.workbench.failure_reasons))

    # ---- the store ----
    def refresh(self, rebuild: bool = False, quiet: bool = False) -> None:
        """Bring the table in line with the files (on the worker)."""
        if self._refreshing:
            return
        self._refreshing = True
        if not quiet:
            self.show_status("Reading the store…" if not rebuild else "Rebuilding the index…", error=False)

        def done(result) -> None:
            self._refreshing = False
            self.loaded = True
            if result.reread or result.dropped or not quiet:
                self._rows_changed()
            if not quiet:
                self.show_status(f"{len(result.rows)} files, {len(result.reread)} read, {result.reused} from the index", error=False)
            if self.workbench.settings_problem:
                self.show_status(self.workbench.settings_problem)

        def work():
            self.workbench.reload_settings()
            return self.workbench.refresh(rebuild=rebuild)

        def failed(error: BaseException) -> None:
            self._refreshing = False
            self.show_status(f"Reading the store failed: {error}")

        self._jobs.append((self._pool.submit(work), done, failed, "refresh"))
        self._poll.start()

    def _rows_changed(self) -> None:
        self.table.refresh_choices()
        self.table.apply()
        self._update_count()
        if self.table.current_name() is None and self.table.model.rows and self.view.path is None:
            # After the table has painted: opening an episode reads its arrays and first frames.
            QTimer.singleShot(100, self._open_first)  # 100 ms: the table paints first

    def _open_first(self) -> None:
        if self.table.current_name() is None and self.table.model.rows and self.view.path is None:
            self.table.view.selectRow(0)

    def _update_count(self) -> None:
        shown, total, selected = len(self.table.model.rows), len(self.workbench.rows), len(self.table.selected_names())
        minutes = sum(r.duration_s for r in self.table.model.rows if r.usable) / 60
        self.count.setText(f"{shown} of {total} files shown ({minutes:.1f} min), {selected} selected  ·  {self.workbench.store_dir}")

    def open_episode(self, name: str) -> None:
        row = self.workbench.row(name)
        if row is None or not row.usable:
            self.view.close_episode()
            if row is not None:
                self.show_status(f"{name}: {row.problem}")
            return
        if self.view.path is not None and self.view.path.name == name:
            return
        self.view.open_episode(self.workbench.path(name), self.workbench.thresholds)

    # ---- actions ----
    def label_selected(self, label: str, reason: str | None = None) -> None:
        names = self.table.selected_names()
        if not names:
            self.show_status("Select episodes first (click, Shift+click, Ctrl+click).")
            return
        reason = self.reason.currentText() if reason is None else reason
        with self._released(names):
            errors = self.workbench.label(names, label, reason=reason)
        self._after_change(f"{len(names) - len(errors)} episode(s) marked {label}" + (f" ({reason})" if label == "failure" and reason else ""), errors)

    def _label_one(self, name: str, label: str, reason: str, notes: str) -> None:
        with self._released([name]):
            errors = self.workbench.label([name], label, reason=reason, notes=notes)
        self._after_change(f"{name} marked {label}", errors)

    @contextlib.contextmanager
    def _released(self, names: list[str]):
        """Close the played episode while its file is written (HDF5 refuses to open for writing
        a file this process has open for reading), then reopen it at the same step."""
        path = self.view.path
        if path is None or path.name not in names:
            yield
            return
        step = self.view.cursor
        self.view.close_episode()
        try:
            yield
        finally:
            if self.view.open_episode(path, self.workbench.thresholds):
                self.view.seek(step)

    def trash_selected(self) -> None:
        names = self.table.selected_names()
        if not names:
            self.show_status("Select episodes to move to the trash.")
            return
        if self.view.path is not None and self.view.path.name in names:
            self.view.close_episode()
        moved, errors = self.workbench.trash(names)
        self._after_change(f"{len(moved)} episode(s) moved to the trash (Trash… restores them)", errors)

    def restore(self, trash_name: str) -> None:
        try:
            path = self.workbench.restore(trash_name)
        except RecordingError as error:
            self._after_change("", [str(error)])
            return
        self._after_change(f"restored {path.name}", [])

    def _after_change(self, message: str, errors: list[str]) -> None:
        self._rows_changed()
        if errors:
            self.show_status("; ".join(errors))
        else:
            self.show_status(message, error=False)

    def edit_reasons(self) -> None:
        text, ok = QInputDialog.getMultiLineText(self, "Failure reasons", "One reason a line:", "\n".join(self.workbench.failure_reasons))
        if ok:
            self.workbench.set_failure_reasons(text.splitlines())
            self._fill_reasons()
            self.view.set_failure_reasons(self.workbench.failure_reasons)

    def show_trash(self) -> None:
        dialog = QDialog(self)
        dialog.setWindowTitle("Trash")
        items = QListWidget()
        trashed = self.workbench.trashed()
        for item in trashed:
            items.addItem(f"{item.original}   trashed {item.trashed_at:%Y-%m-%d %H:%M} UTC")
        restore = QPushButton("Restore")
        restore.clicked.connect(lambda: (self.restore(trashed[items.currentRow()].name), dialog.accept()) if items.currentRow() >= 0 else None)
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        close.rejected.connect(dialog.reject)
        layout = QVBoxLayout(dialog)
        layout.addWidget(QLabel(f"{len(trashed)} episode(s) in {self.workbench.store_dir / 'trash'}"))
        layout.addWidget(items)
        row = QHBoxLayout()
        row.addWidget(restore)
        row.addStretch(1)
        row.addWidget(close)
        layout.addLayout(row)
        dialog.resize(520, 360)
        dialog.exec()

    def ask_export_lerobot(self) -> None:
        names = [n for n in self.table.selected_names() if (r := self.workbench.row(n)) is not None and r.usable]
        if not names:
            self.show_status("Select the episodes to export.")
            return
        folder = QFileDialog.getSaveFileName(self, "LeRobot dataset folder (must not exist)", str(self.workbench.store_dir.parent / "lerobot_export"))[0]
        if folder:
            self.export_lerobot(names, Path(folder))

    def export_lerobot(self, names: list[str], folder: Path) -> None:
        self.show_status(f"Exporting {len(names)} episode(s) to {folder}…", error=False)
        self._run(lambda: self.workbench.export_lerobot(names, folder),
                  lambda result: self.show_status(f"LeRobot dataset {result.root}: {result.episodes} episodes, {result.frames} frames ({result.codec})", error=False),
                  "The LeRobot export")

    def ask_export_mp4(self) -> None:
        name = self.table.current_name()
        if name is None:
            self.show_status("Choose an episode to export.")
            return
        target = QFileDialog.getSaveFileName(self, "MP4 file", str(self.workbench.store_dir.parent / (Path(name).stem + ".mp4")), "MP4 (*.mp4)")[0]
        if target:
            self.export_mp4(name, Path(target))

    def export_mp4(self, name: str, target: Path) -> None:
        self.show_status(f"Exporting {name} to {target}…", error=False)
        self._run(lambda: self.workbench.export_mp4(name, target),
                  lambda path: self.show_status(f"Saved {path}", error=False), "The MP4 export")

    def replay_current(self) -> None:
        name = self.table.current_name()
        if name is None:
            self.show_status("Choose an episode to replay.")
            return
        answer = QMessageBox.question(self, "Replay", f"Replay {name} on the rig of {self.rig_file.name}?\n"
                                      "A real rig moves: keep the E-stop in reach and the workspace clear.")
        if answer != QMessageBox.StandardButton.Yes:
            return
        path = self.workbench.path(name)
        self.show_status(f"Replaying {name} on {self.rig_file.name}…", error=False)

        def done(result) -> None:
            self.show_status(f"Replayed {result.steps} steps of {name}; tracking error {result.tracking_rms_rad:.3f} rad RMS", error=False)

        def work():
            try:
                return replay_episode(path, self.rig_file, real_rig_confirmed=True)
            except ReplayRefused as error:
                raise RecordingError(str(error)) from error

        self._run(work, done, "The replay")

    def closeEvent(self, event) -> None:  # noqa: N802
        self._auto.stop()
        self.view.close_episode()
        self._pool.shutdown(wait=False, cancel_futures=True)
        super().closeEvent(event)

