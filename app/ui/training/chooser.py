"""The Training panel's episode chooser: a store's episodes with their label, task and length, the
label and task filters, and the user's ticks (which survive a refresh). Summaries are read in a
worker thread (0.3-0.5 s for 60 episodes on the loaded 2-core machine); the panel's timer collects
the result (`poll`). GUI thread only, but for the scan itself.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.studio.paths import REPO_ROOT
from app.studio.training.episode_rows import (
    ALL_TASKS,
    LABEL_FILTERS,
    EpisodeRow,
    EpisodeScanner,
    default_store,
    select_rows,
    selection_text,
    tasks_of,
)
from app.ui import theme

log = logging.getLogger(__name__)

RESCAN_EVERY_POLLS = 12  # the store is looked at again every 3 s (at the panel's 4 Hz) while shown
EPISODE_COLUMNS = ("Episode", "Label", "Task", "Minutes")


class EpisodeChooserWidget(QGroupBox):
    """The "Episodes" box. `selection_changed` fires whenever the ticked set may have changed."""

    selection_changed = Signal()

    def __init__(self, store_dir_source: Callable[[], Path | None] | None = None,
                 parent: QWidget | None = None) -> None:
        """store_dir_source: the rig's store (followed until the user chooses one); None: the
        default store, recordings/episodes."""
        super().__init__("Episodes", parent)
        self._store_dir_source = store_dir_source
        self.store_dir: Path | None = None
        self.store_chosen = False  # the user picked a store: the rig's no longer applies
        self.rows: list[EpisodeRow] = []
        self._scanner = EpisodeScanner()
        self._scan_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="training-scan")
        self._scan_future: Future | None = None
        self._scan_store: Path | None = None
        self._rescan_wanted = False
        self._rescan_on_show = False
        self._scan_error = ""
        self._unchecked: set[Path] = set()  # the user's unticks survive refreshes
        self._polls = 0
        self._table_signature: object = None

        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        self.store_edit = QLineEdit()
        self.store_edit.setPlaceholderText("episode store folder")
        self.store_edit.editingFinished.connect(lambda: self.set_store(Path(self.store_edit.text()), chosen=True))
        self.browse_store_button = QPushButton("Browse…")
        self.browse_store_button.clicked.connect(self._browse_store)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.rescan)
        row.addWidget(self.store_edit, 1)
        row.addWidget(self.browse_store_button)
        row.addWidget(self.refresh_button)
        layout.addLayout(row)

        filters = QHBoxLayout()
        self.label_combo = QComboBox()
        self.label_combo.addItems(list(LABEL_FILTERS))
        self.label_combo.setToolTip("Which demonstrations to offer, by their success label")
        self.label_combo.currentIndexChanged.connect(self._show_rows)
        self.task_combo = QComboBox()
        self.task_combo.addItem("all tasks", ALL_TASKS)
        self.task_combo.currentIndexChanged.connect(self._show_rows)
        filters.addWidget(QLabel("Label"))
        filters.addWidget(self.label_combo)
        filters.addWidget(QLabel("Task"))
        filters.addWidget(self.task_combo, 1)
        layout.addLayout(filters)

        self.episode_table = QTableWidget(0, len(EPISODE_COLUMNS))
        self.episode_table.setHorizontalHeaderLabels(EPISODE_COLUMNS)
        self.episode_table.verticalHeader().setVisible(False)
        self.episode_table.verticalHeader().setDefaultSectionSize(20)
        self.episode_table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.episode_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        header = self.episode_table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.episode_table.itemChanged.connect(self._on_episode_ticked)
        layout.addWidget(self.episode_table, 1)

        row = QHBoxLayout()
        self.select_all_button = QPushButton("All")
        self.select_all_button.clicked.connect(lambda: self._tick_all(True))
        self.select_none_button = QPushButton("None")
        self.select_none_button.clicked.connect(lambda: self._tick_all(False))
        self.selection_label = QLabel("no episodes yet")
        row.addWidget(self.select_all_button)
        row.addWidget(self.select_none_button)
        row.addWidget(self.selection_label, 1)
        layout.addLayout(row)
        self.episode_hint = QLabel("")
        self.episode_hint.setObjectName("hint")
        self.episode_hint.setWordWrap(True)
        layout.addWidget(self.episode_hint)
        self.destroyed.connect(lambda *_: self._scan_pool.shutdown(wait=False))

    # ------------------------------------------------------------------ the store

    def set_store(self, path: Path, chosen: bool = False) -> None:
        """Show the episodes of `path` (read in the worker thread)."""
        path = Path(path).expanduser().absolute()
        if chosen:
            self.store_chosen = True
        if path == self.store_dir and self.rows:
            return
        self.store_dir = path
        if self.store_edit.text() != str(path):
            self.store_edit.setText(str(path))
        self.rows = []
        self._unchecked.clear()
        self._table_signature = None
        self.rescan()

    def _browse_store(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Episode store", str(self.store_dir or REPO_ROOT))
        if folder:
            self.set_store(Path(folder), chosen=True)

    def rescan(self) -> None:
        """Read the store again (new and changed files only); the result arrives in `poll`.
        A hidden chooser reads when it is shown: the window opens without this work."""
        if self.store_dir is None:
            return
        if not self.isVisible():
            self._rescan_on_show = True
            return
        if self._scan_future is not None and not self._scan_future.done():
            self._rescan_wanted = True
            return
        self._scan_store = self.store_dir
        self._scan_future = self._scan_pool.submit(self._scanner.scan, self.store_dir)
        if not self.rows:
            self.selection_label.setText("reading the episodes…")

    def showEvent(self, event) -> None:  # noqa: N802
        super().showEvent(event)
        if self._rescan_on_show:
            self._rescan_on_show = False
            self.rescan()

    def poll(self, rescan_allowed: bool) -> None:
        """The panel's timer: follow the rig's store (unless the user chose one), take a finished
        scan, and look at the store again now and then (`rescan_allowed`: no job is running)."""
        self._polls += 1
        if self._store_dir_source is not None and not self.store_chosen:
            wanted = default_store(self._store_dir_source())
            if wanted != self.store_dir:
                self.set_store(wanted)
        elif self.store_dir is None:
            self.set_store(default_store(None))
        self._take_scan()
        if self.isVisible() and self._polls % RESCAN_EVERY_POLLS == 0 and rescan_allowed:
            self.rescan()  # demos recorded meanwhile appear in the list

    def _take_scan(self) -> None:
        future = self._scan_future
        if future is None or not future.done():
            return
        self._scan_future = None
        try:
            rows = future.result()
        except Exception as error:  # noqa: BLE001 - any failure of the scan becomes a visible hint
            log.exception("scanning %s failed", self._scan_store)
            self._scan_error = f"The episodes in {self._scan_store} could not be read: {error}"
            self._show_selection()
            rows = None
        else:
            self._scan_error = ""
        if rows is not None and self._scan_store == self.store_dir:
            self._set_rows(rows)
        if self._rescan_wanted or self._scan_store != self.store_dir:
            self._rescan_wanted = False
            self.rescan()

    # ------------------------------------------------------------------ rows and ticks

    def _set_rows(self, rows: list[EpisodeRow]) -> None:
        signature = tuple((r.path, r.label, r.task, round(r.duration_s, 3), r.problem) for r in rows)
        if signature == self._table_signature:
            return
        self._table_signature = signature
        self.rows = rows
        current = self.task_combo.currentData()
        self.task_combo.blockSignals(True)
        self.task_combo.clear()
        self.task_combo.addItem("all tasks", ALL_TASKS)
        for task in tasks_of(rows):
            self.task_combo.addItem(task, task)
        index = self.task_combo.findData(current)
        self.task_combo.setCurrentIndex(max(0, index))
        self.task_combo.blockSignals(False)
        self._show_rows()

    def _filtered(self) -> list[EpisodeRow]:
        """The usable rows the label and task filters pass."""
        return select_rows(self.rows, LABEL_FILTERS[self.label_combo.currentText()],
                           self.task_combo.currentData() or ALL_TASKS)

    def shown_rows(self) -> list[EpisodeRow]:
        """The rows the filters pass, then the files that cannot be chosen (greyed)."""
        return self._filtered() + [r for r in self.rows if r.problem is not None]

    def selected_rows(self) -> list[EpisodeRow]:
        return [r for r in self._filtered() if r.path not in self._unchecked]

    def _show_rows(self) -> None:
        table = self.episode_table
        table.blockSignals(True)
        shown = self.shown_rows()
        table.setRowCount(len(shown))
        for i, row in enumerate(shown):
            name = QTableWidgetItem(row.name)
            name.setData(Qt.ItemDataRole.UserRole, str(row.path))
            if row.problem is None:
                name.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsUserCheckable)
                name.setCheckState(Qt.CheckState.Unchecked if row.path in self._unchecked else Qt.CheckState.Checked)
                cells = [name, QTableWidgetItem(row.label), QTableWidgetItem(row.task),
                         QTableWidgetItem(f"{row.minutes:.2f}")]
            else:
                name.setFlags(Qt.ItemFlag.NoItemFlags)
                cells = [name, QTableWidgetItem("—"), QTableWidgetItem(row.problem), QTableWidgetItem("")]
                for cell in cells:
                    cell.setForeground(QColor(theme.MUTED))
                    cell.setToolTip(row.problem)
            colour = {"success": theme.OK_COLOUR, "failure": theme.ERROR_COLOUR}.get(row.label)
            if colour and row.problem is None:
                cells[1].setForeground(QColor(colour))
            cells[3].setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            for column, cell in enumerate(cells):
                if column:
                    cell.setFlags(cell.flags() & ~Qt.ItemFlag.ItemIsEditable)
                table.setItem(i, column, cell)
        table.blockSignals(False)
        self._show_selection()

    def _on_episode_ticked(self, item: QTableWidgetItem) -> None:
        if item.column() != 0:
            return
        path = Path(item.data(Qt.ItemDataRole.UserRole))
        if item.checkState() == Qt.CheckState.Checked:
            self._unchecked.discard(path)
        else:
            self._unchecked.add(path)
        self._show_selection()

    def _tick_all(self, ticked: bool) -> None:
        shown = self._filtered()
        if ticked:
            self._unchecked -= {r.path for r in shown}
        else:
            self._unchecked |= {r.path for r in shown}
        self._show_rows()

    def set_episode_ticked(self, name: str, ticked: bool) -> None:
        """Tick or untick one shown episode by file name (as a click on its box does)."""
        for i in range(self.episode_table.rowCount()):
            item = self.episode_table.item(i, 0)
            if item.text() == name and item.flags() & Qt.ItemFlag.ItemIsUserCheckable:
                item.setCheckState(Qt.CheckState.Checked if ticked else Qt.CheckState.Unchecked)
                return
        raise KeyError(f"{name} is not among the episodes shown")

    def _show_selection(self) -> None:
        selected = self.selected_rows()
        self.selection_label.setText(selection_text(selected))
        hints = [self._scan_error] if self._scan_error else []
        if any(r.label == "failure" for r in selected):
            hints.append("Failed demonstrations are chosen: the policy learns from them as from the others.")
        if len(selected) == 1:
            hints.append("With one episode nothing is held out for validation.")
        if self.store_dir is not None and not self.store_dir.is_dir():
            hints.append(f"{self.store_dir} does not exist: Browse to the folder your episodes are in.")
        elif self._table_signature is not None and not self.rows:
            hints.append("No episodes in this folder yet: record demonstrations, or Browse to the folder that holds them.")
        waiting = [r for r in self.rows if r.problem is not None]
        if waiting:
            hints.append(f"{len(waiting)} file(s) cannot be used now (greyed; hover for why).")
        self.episode_hint.setText(" ".join(hints))
        self.selection_changed.emit()

    def set_editable(self, editable: bool) -> None:
        """Locked while a job runs: the run trains on what was chosen when it started."""
        for widget in (self.store_edit, self.browse_store_button, self.refresh_button, self.label_combo,
                       self.task_combo, self.episode_table, self.select_all_button, self.select_none_button):
            widget.setEnabled(editable)
