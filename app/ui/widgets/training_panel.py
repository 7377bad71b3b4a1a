"""The Training panel: choose episodes, set the few settings that matter, start, follow, cancel
and resume a `python run.py train` job while the rest of the window keeps collecting demos.

The job runs detached from the window's process (QProcess.startDetached), writing its JSON lines
and its stderr into the run folder (`app.studio.training`). A 4 Hz timer reads what it appended, checks
that the process lives, and paints the stage, progress bar and ETA, loss curves, log and
checkpoints. Closing the window therefore need not stop the job, and a window opened later finds
it again through the run folder's job.json. Episode summaries are read in a worker thread (0.3-0.5 s
for 60 episodes here); everything else is small file reads on the GUI thread.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import pyqtgraph as pg
from PySide6.QtCore import QProcess, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QColor, QDesktopServices, QGuiApplication
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.ui import theme
from app.studio import training as tr
from app.studio.training import EpisodeRow, Outcome, RunFollower

log = logging.getLogger(__name__)

POLL_MS = 250  # the job logs every few seconds at most; 4 Hz keeps the bar lively and costs nothing
RESCAN_EVERY_POLLS = 12  # the store is looked at again every 3 s while the panel is visible
EPISODE_COLUMNS = ("Episode", "Label", "Task", "Minutes")
CHECKPOINT_COLUMNS = ("Step", "Train loss", "Val action loss", "Best", "Path")
CURVES = {  # name -> (colour, dashed)
    "train total": ("#60a5fa", False),
    "train action": ("#34d399", False),
    "train video": ("#fbbf24", True),
    "val total": ("#e5e7eb", False),
    "val action": ("#f472b6", False),
}
LEVEL_PREFIX = {"info": "", "warning": "! ", "error": "✖ ", "stderr": "│ "}
PROBLEM_STYLE = {
    "error": "QLabel { background: #7f1d1d; color: white; padding: 8px; border-radius: 6px; font-weight: bold; }",
    "warning": f"QLabel {{ background: #78350f; color: white; padding: 8px; border-radius: 6px; font-weight: bold; }}",
    "ok": f"QLabel {{ background: #14532d; color: white; padding: 8px; border-radius: 6px; font-weight: bold; }}",
}


def _spin(special: str, maximum: int) -> QSpinBox:
    """A spin box whose 0 reads as `special` (the preset's value: the flag is not passed)."""
    box = QSpinBox()
    box.setRange(0, maximum)
    box.setSpecialValueText(special)
    box.setValue(0)
    return box


class TrainingPanelWidget(QWidget):
    """The whole panel. GUI thread only. `status_changed` carries one line for a status bar."""

    status_changed = Signal(str)

    def __init__(
        self,
        store_dir_source: Callable[[], Path | None] | None = None,
        runs_root: Path | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.runs_root = Path(runs_root) if runs_root is not None else tr.RUNS_ROOT
        self._store_dir_source = store_dir_source
        self._store_chosen = False  # the user picked a store: the rig's no longer applies
        self.store_dir: Path | None = None
        self.follower: RunFollower | None = None
        self.rows: list[EpisodeRow] = []
        self._scanner = tr.EpisodeScanner()
        self._scan_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="training-scan")
        self._scan_future: Future | None = None
        self._scan_store: Path | None = None
        self._rescan_wanted = False
        self._rescan_on_show = False
        self._scan_error = ""
        self._unchecked: set[Path] = set()  # the user's unticks survive refreshes
        self._auto_run_dir = True
        self._polls = 0
        self._last_status = ""
        self._table_signature: object = None
        self._checkpoint_signature: object = None

        episodes = self._build_episodes()
        # The settings scroll rather than squeeze when the dock is short.
        settings = QScrollArea()
        settings.setWidget(self._build_settings())
        settings.setWidgetResizable(True)
        settings.setFrameShape(QScrollArea.Shape.NoFrame)
        settings.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        progress = self._build_progress()
        splitter = QSplitter(Qt.Orientation.Horizontal)
        for part in (episodes, settings, progress):
            splitter.addWidget(part)
        splitter.setSizes([380, 300, 820])
        splitter.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(splitter)

        self.timer = QTimer(self)
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self.poll)
        self.timer.start()
        self._refresh_runs()
        self._attach_on_open()
        self._update_controls()
        self.destroyed.connect(lambda *_: self._scan_pool.shutdown(wait=False))

    # ------------------------------------------------------------------ construction

    def _build_episodes(self) -> QGroupBox:
        box = QGroupBox("Episodes")
        layout = QVBoxLayout(box)
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
        self.label_combo.addItems(list(tr.LABEL_FILTERS))
        self.label_combo.setToolTip("Which demonstrations to offer, by their success label")
        self.label_combo.currentIndexChanged.connect(self._show_rows)
        self.task_combo = QComboBox()
        self.task_combo.addItem("all tasks", tr.ALL_TASKS)
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
        return box

    def _build_settings(self) -> QGroupBox:
        box = QGroupBox("Settings")
        layout = QVBoxLayout(box)
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.preset_combo = QComboBox()
        self.preset_combo.addItems(list(tr.PRESETS))
        self.preset_combo.currentTextChanged.connect(self._on_preset)
        form.addRow("Preset", self.preset_combo)
        self.preset_hint = QLabel("")
        self.preset_hint.setObjectName("hint")
        self.preset_hint.setWordWrap(True)
        form.addRow("", self.preset_hint)
        self.steps_spin = _spin("preset default", 10_000_000)
        form.addRow("Steps", self.steps_spin)
        self.batch_spin = _spin("preset default", 65_536)
        form.addRow("Batch size", self.batch_spin)
        self.lr_edit = QLineEdit()
        self.lr_edit.setPlaceholderText("preset default (e.g. 1e-4)")
        form.addRow("Learning rate", self.lr_edit)
        self.video_check = QCheckBox("video co-training")
        self.video_check.setChecked(True)
        self.video_check.setToolTip("Off: the action loss only (Fast-WAM's ablation); faster, usually worse")
        form.addRow("", self.video_check)
        self.checkpoint_spin = _spin("preset default", 10_000_000)
        form.addRow("Checkpoint every", self.checkpoint_spin)
        self.device_combo = QComboBox()
        self.device_combo.addItems(list(tr.DEVICES))
        form.addRow("Device", self.device_combo)
        self.run_dir_edit = QLineEdit()
        self.run_dir_edit.textEdited.connect(lambda *_: setattr(self, "_auto_run_dir", False))
        form.addRow("Run folder", self.run_dir_edit)
        self.extra_edit = QLineEdit()
        self.extra_edit.setPlaceholderText("more flags of run.py train, e.g. --threads 2")
        form.addRow("More options", self.extra_edit)
        layout.addLayout(form)

        buttons = QHBoxLayout()
        self.train_button = QPushButton("Train")
        self.train_button.setStyleSheet(f"QPushButton:enabled {{ background: {theme.OK_COLOUR}; color: white; }}")
        self.train_button.clicked.connect(self.start_training)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the job; it finishes its step and saves a checkpoint first")
        self.cancel_button.clicked.connect(self.cancel_training)
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Continue this run from its latest checkpoint")
        self.resume_button.clicked.connect(self.resume_training)
        for button in (self.train_button, self.cancel_button, self.resume_button):
            buttons.addWidget(button)
        layout.addLayout(buttons)
        self.message_label = QLabel("")
        self.message_label.setWordWrap(True)
        self.message_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.message_label)
        layout.addStretch(1)
        self._on_preset(self.preset_combo.currentText())
        return box

    def _build_progress(self) -> QGroupBox:
        box = QGroupBox("Run")
        layout = QVBoxLayout(box)
        row = QHBoxLayout()
        self.runs_combo = QComboBox()
        self.runs_combo.setToolTip("Runs started from this window (newest first)")
        self.runs_combo.activated.connect(self._on_run_chosen)
        self.runs_combo.setMinimumContentsLength(18)
        self.status_label = QLabel("No training started yet.")
        self.status_label.setStyleSheet("font-size: 15px; font-weight: bold;")
        row.addWidget(QLabel("Run"))
        row.addWidget(self.runs_combo)
        row.addWidget(self.status_label, 1)
        layout.addLayout(row)
        # How the run ended (or what went wrong) and what to do; the whole log is in the Log tab.
        self.problem_label = QLabel("")
        self.problem_label.setWordWrap(True)
        self.problem_label.setTextFormat(Qt.TextFormat.PlainText)
        self.problem_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.problem_label.hide()
        layout.addWidget(self.problem_label)
        row = QHBoxLayout()
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setValue(0)
        self.progress_bar.setTextVisible(True)
        self.eta_label = QLabel("")
        row.addWidget(self.progress_bar, 1)
        row.addWidget(self.eta_label)
        layout.addLayout(row)

        pg.setConfigOptions(antialias=False, background=theme.BACKGROUND, foreground=theme.TEXT)
        self.loss_plot = pg.PlotWidget()
        self.loss_plot.setLabel("bottom", "step")
        self.loss_plot.setLabel("left", "loss (log)")
        self.loss_plot.setLogMode(x=False, y=True)
        self.loss_plot.showGrid(x=True, y=True, alpha=0.2)
        self.loss_plot.setMenuEnabled(False)
        self.loss_plot.setMinimumHeight(120)
        self.curves: dict[str, pg.PlotDataItem] = {}
        legend = []
        for name, (colour, dashed) in CURVES.items():
            pen = pg.mkPen(colour, width=2 if name.startswith("train") else 1,
                           style=Qt.PenStyle.DashLine if dashed else Qt.PenStyle.SolidLine)
            symbol = dict(symbol="o", symbolSize=6, symbolBrush=colour, symbolPen=None) if name.startswith("val") else {}
            self.curves[name] = self.loss_plot.plot([], [], pen=pen, name=name, **symbol)
            mark = "●" if name.startswith("val") else ("╌" if dashed else "━")
            legend.append(f'<span style="color:{colour}">{mark} {name}</span>')
        # The legend sits above the plot, not on it: a legend inside covers the newest points.
        self.legend_label = QLabel("&nbsp;&nbsp;".join(legend))
        self.legend_label.setTextFormat(Qt.TextFormat.RichText)
        self.legend_label.setStyleSheet("font-size: 12px;")
        curves = QWidget()
        curves_layout = QVBoxLayout(curves)
        curves_layout.setContentsMargins(0, 0, 0, 0)
        curves_layout.setSpacing(2)
        curves_layout.addWidget(self.legend_label)
        curves_layout.addWidget(self.loss_plot, 1)

        self.checkpoint_table = QTableWidget(0, len(CHECKPOINT_COLUMNS))
        self.checkpoint_table.setHorizontalHeaderLabels(CHECKPOINT_COLUMNS)
        self.checkpoint_table.verticalHeader().setVisible(False)
        self.checkpoint_table.verticalHeader().setDefaultSectionSize(20)
        self.checkpoint_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.checkpoint_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.checkpoint_table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.checkpoint_table.setTextElideMode(Qt.TextElideMode.ElideLeft)  # a path's end names it
        self.checkpoint_table.setWordWrap(False)
        header = self.checkpoint_table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(len(CHECKPOINT_COLUMNS) - 1, QHeaderView.ResizeMode.Stretch)
        self.checkpoint_table.itemSelectionChanged.connect(self._update_controls)
        checkpoints = QWidget()
        cp_layout = QVBoxLayout(checkpoints)
        cp_layout.setContentsMargins(0, 0, 0, 0)
        cp_layout.addWidget(self.checkpoint_table, 1)
        row = QHBoxLayout()
        self.copy_path_button = QPushButton("Copy path")
        self.copy_path_button.clicked.connect(self.copy_checkpoint_path)
        self.open_folder_button = QPushButton("Open folder")
        self.open_folder_button.clicked.connect(self.open_checkpoint_folder)
        row.addWidget(self.copy_path_button)
        row.addWidget(self.open_folder_button)
        row.addStretch(1)
        cp_layout.addLayout(row)
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(5000)
        self.log_view.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.log_view.setStyleSheet("font-family: monospace; font-size: 12px;")
        self.detail_tabs = QTabWidget()
        self.detail_tabs.addTab(checkpoints, "Checkpoints")
        self.detail_tabs.addTab(self.log_view, "Log")
        # Side by side: in a dock below the cameras height is what is short.
        lower = QSplitter(Qt.Orientation.Horizontal)
        lower.addWidget(curves)
        lower.addWidget(self.detail_tabs)
        lower.setSizes([420, 380])
        lower.setChildrenCollapsible(False)
        layout.addWidget(lower, 1)
        return box

    # ------------------------------------------------------------------ episodes

    def set_store(self, path: Path, chosen: bool = False) -> None:
        """Show the episodes of `path` (read in the worker thread)."""
        path = Path(path).expanduser().absolute()
        if chosen:
            self._store_chosen = True
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
        folder = QFileDialog.getExistingDirectory(self, "Episode store", str(self.store_dir or tr.REPO_ROOT))
        if folder:
            self.set_store(Path(folder), chosen=True)

    def rescan(self) -> None:
        """Read the store again (new and changed files only); the result arrives in `poll`.
        A hidden panel reads when it is shown: the window opens without this work."""
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

    def _set_rows(self, rows: list[EpisodeRow]) -> None:
        signature = tuple((r.path, r.label, r.task, round(r.duration_s, 3), r.problem) for r in rows)
        if signature == self._table_signature:
            return
        self._table_signature = signature
        self.rows = rows
        current = self.task_combo.currentData()
        tasks = tr.tasks_of(rows)
        self.task_combo.blockSignals(True)
        self.task_combo.clear()
        self.task_combo.addItem("all tasks", tr.ALL_TASKS)
        for task in tasks:
            self.task_combo.addItem(task, task)
        index = self.task_combo.findData(current)
        self.task_combo.setCurrentIndex(max(0, index))
        self.task_combo.blockSignals(False)
        self._show_rows()

    def shown_rows(self) -> list[EpisodeRow]:
        """The rows the filters pass, then the files that cannot be chosen (greyed)."""
        labels = tr.LABEL_FILTERS[self.label_combo.currentText()]
        task = self.task_combo.currentData() or tr.ALL_TASKS
        return tr.select_rows(self.rows, labels, task) + [r for r in self.rows if r.problem is not None]

    def selected_rows(self) -> list[EpisodeRow]:
        return [r for r in tr.select_rows(self.rows, tr.LABEL_FILTERS[self.label_combo.currentText()],
                                          self.task_combo.currentData() or tr.ALL_TASKS)
                if r.path not in self._unchecked]

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
        shown = tr.select_rows(self.rows, tr.LABEL_FILTERS[self.label_combo.currentText()],
                               self.task_combo.currentData() or tr.ALL_TASKS)
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
        self.selection_label.setText(tr.selection_text(selected))
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
        self._update_controls()

    # ------------------------------------------------------------------ settings

    def _on_preset(self, preset: str) -> None:
        self.preset_hint.setText(tr.PRESET_HINTS.get(preset, ""))
        if self._auto_run_dir:
            self.run_dir_edit.setText(self._display_path(tr.default_run_dir(preset, root=self.runs_root)))

    def _display_path(self, path: Path) -> str:
        try:
            return str(path.relative_to(tr.REPO_ROOT))
        except ValueError:
            return str(path)

    def _run_dir_from_field(self) -> Path:
        text = self.run_dir_edit.text().strip()
        if not text:
            raise ValueError("Name a run folder (e.g. runs/tiny-first-try).")
        path = Path(text).expanduser()
        return path if path.is_absolute() else tr.REPO_ROOT / path

    def settings(self) -> tr.TrainSettings:
        """The settings of the fields; ValueError says what to fix."""
        selected = self.selected_rows()
        return tr.TrainSettings(
            episodes=tuple(r.path for r in selected),
            labels=tuple({r.label for r in selected}),
            run_dir=self._run_dir_from_field(),
            preset=self.preset_combo.currentText(),
            steps=self.steps_spin.value() or None,
            batch_size=self.batch_spin.value() or None,
            lr=tr.parse_lr(self.lr_edit.text()),
            video_cotraining=self.video_check.isChecked(),
            checkpoint_every=self.checkpoint_spin.value() or None,
            device=self.device_combo.currentText(),
            extra_args=tr.parse_extra_args(self.extra_edit.text()),
        )

    # ------------------------------------------------------------------ the job

    @property
    def status_line(self) -> str:
        """The one line `status_changed` last carried (for a status bar made after the panel)."""
        return self._last_status or "Training: idle"

    def job_running(self) -> bool:
        return self.follower is not None and self.follower.state.outcome is Outcome.RUNNING

    def start_training(self) -> bool:
        """Train: a new run with the panel's settings. False (with the reason shown) if refused."""
        if self.job_running():
            return self._say("A training job is running; cancel it first or wait for it to finish.", "warning")
        try:
            settings = self.settings()
        except ValueError as error:
            return self._say(str(error), "error")
        run_dir = settings.run_dir
        if RunFollower(run_dir).job_alive():  # e.g. started from another window
            self.attach(run_dir)
            return self._say(f"A job is already running in {self._display_path(run_dir)}; it is shown here now.",
                             "warning")
        existing = tr.latest_complete_checkpoint(run_dir)
        if existing is not None:
            self.attach(run_dir)
            return self._say(f"{self._display_path(run_dir)} already holds a run (checkpoint {existing.name}). "
                             "Press Resume to continue it, or name another run folder.", "warning")
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            return self._say(f"The run folder {run_dir} cannot be created: {error}. Choose another one.", "error")
        started = self._launch(run_dir, tr.train_argv(settings), resume=False)
        if started and self._auto_run_dir:
            # The next Train makes a new run; the folder of this one is in the Run list.
            self.run_dir_edit.setText(self._display_path(tr.default_run_dir(settings.preset, time.time() + 1,
                                                                            root=self.runs_root)))
        return started

    def resume_training(self) -> bool:
        """Resume: the same command as the run's last start, plus --resume."""
        follower = self.follower
        if follower is None or follower.job is None or self.job_running():
            return self._say("There is no stopped run to resume here.", "warning")
        return self._launch(follower.run_dir, tr.resume_argv(follower.job.argv), resume=True)

    def cancel_training(self) -> bool:
        follower = self.follower
        if follower is None or not self.job_running():
            return False
        try:
            sent = follower.cancel()
        except OSError as error:
            return self._say(f"The job could not be asked to stop: {error}", "error")
        if sent:
            self._say("Stopping: the job finishes its current step and saves a checkpoint first. "
                      "(Before training begins, it stops after the episode or autoencoder step in hand; "
                      "what was done is kept for the next start.)", "info")
        self._update_controls()
        return sent

    def _launch(self, run_dir: Path, argv: list[str], resume: bool) -> bool:
        try:
            tr.append_event(run_dir, tr.started_marker(argv, resume))
        except OSError as error:
            return self._say(f"Cannot write into the run folder {run_dir}: {error}", "error")
        program, arguments = tr.launch_command(run_dir, argv)
        ok, pid = QProcess.startDetached(program, arguments, str(tr.REPO_ROOT))
        if not ok or not pid:
            tr.append_event(run_dir, {"event": "error", "kind": "launch",
                                      "message": f"the training process could not be started ({program})",
                                      "what_to_do": "Check that the studio's Python environment is intact "
                                                    "(`python run.py train --help` in a terminal)."})
        else:
            tr.JobRecord(int(pid), tuple(argv), program, time.time(), tr.this_host(), str(tr.REPO_ROOT)).save(run_dir)
            log.info("training job %s started in %s: %s", pid, run_dir, " ".join(argv))
        self.attach(run_dir)
        self._refresh_runs()
        self._say("", "info")
        return bool(ok and pid)

    def attach(self, run_dir: Path) -> None:
        """Follow `run_dir` (a live job or a finished run): its log is read from the start."""
        self.follower = RunFollower(run_dir)
        self.log_view.clear()
        for curve in self.curves.values():
            curve.setData([], [])
        self.checkpoint_table.setRowCount(0)
        self._checkpoint_signature = None
        self._refresh_runs()  # a run folder outside the runs root is listed too
        self.poll()

    def _attach_on_open(self) -> None:
        """A window opened while a job runs follows it; otherwise it shows the newest run."""
        runs = tr.find_runs(self.runs_root)
        for run_dir in runs:
            follower = RunFollower(run_dir)
            if follower.job_alive():
                self.attach(run_dir)
                return
        if runs:
            self.attach(runs[0])

    def _refresh_runs(self) -> None:
        current = self.follower.run_dir if self.follower else None
        self.runs_combo.blockSignals(True)
        self.runs_combo.clear()
        for run_dir in tr.find_runs(self.runs_root):
            self.runs_combo.addItem(run_dir.name, str(run_dir))
        if current is not None:
            index = self.runs_combo.findData(str(current))
            if index < 0:
                self.runs_combo.addItem(current.name, str(current))
                index = self.runs_combo.count() - 1
            self.runs_combo.setCurrentIndex(index)
        self.runs_combo.blockSignals(False)

    def _on_run_chosen(self, index: int) -> None:
        path = self.runs_combo.itemData(index)
        if path and not self.job_running() and (self.follower is None or str(self.follower.run_dir) != path):
            self.attach(Path(path))
            self._update_controls()

    # ------------------------------------------------------------------ polling and painting

    def poll(self) -> None:
        """The timer's slot: the scan's result, the job's new lines, and what changed on screen."""
        self._polls += 1
        if self._store_dir_source is not None and not self._store_chosen:
            wanted = tr.default_store(self._store_dir_source())
            if wanted != self.store_dir:
                self.set_store(wanted)
        elif self.store_dir is None:
            self.set_store(tr.default_store(None))
        self._take_scan()
        if self.isVisible() and self._polls % RESCAN_EVERY_POLLS == 0 and not self.job_running():
            self.rescan()  # demos recorded meanwhile appear in the list
        follower = self.follower
        if follower is None:
            self._show_status()
            return
        lines = follower.poll()
        if lines:
            text = "\n".join(LEVEL_PREFIX.get(line.level, "") + line.text for line in lines)
            self.log_view.appendPlainText(text)
            self._show_curves()
        self._show_checkpoints()
        self._show_status()
        if follower.loading:
            QTimer.singleShot(0, self.poll)  # a long finished run: read the rest at once, in slices

    def _show_curves(self) -> None:
        state = self.follower.state
        steps = sorted(state.train_loss)
        val_steps = sorted(state.val_loss)
        for name, index, source, keys in (
            ("train total", 0, state.train_loss, steps), ("train video", 1, state.train_loss, steps),
            ("train action", 2, state.train_loss, steps), ("val total", 0, state.val_loss, val_steps),
            ("val action", 2, state.val_loss, val_steps),
        ):
            # Log scale: a zero loss (video off) has no place on it.
            points = [(s, source[s][index]) for s in keys if source[s][index] > 0]
            self.curves[name].setData([p[0] for p in points], [p[1] for p in points])

    def _show_checkpoints(self) -> None:
        follower = self.follower
        state = follower.state
        signature = (tuple(state.checkpoints), state.best_step, state.outcome, state.attempts, len(state.val_loss))
        if signature == self._checkpoint_signature:
            return
        self._checkpoint_signature = signature
        rows = tr.checkpoint_rows(state, follower.run_dir)
        table = self.checkpoint_table
        table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            train = f"{row.train_loss[0]:.4g}" if row.train_loss else "—"
            val = f"{row.val_loss[2]:.4g}" if row.val_loss else "—"
            best = "★ best" if row.best else ""
            step = f"{row.step}" + (" (best/)" if row.path.name == tr.BEST_DIR else "")
            for column, text in enumerate((step, train, val, best, str(row.path))):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, str(row.path))
                item.setToolTip(str(row.path))
                if row.best:
                    item.setForeground(QColor("#fbbf24"))
                table.setItem(i, column, item)
        self._update_controls()

    def _show_status(self) -> None:
        follower = self.follower
        if follower is None:
            status, line = "No training started yet.", "Training: idle"
            self.progress_bar.setValue(0)
            self.progress_bar.setFormat("")
            self.eta_label.setText("")
        else:
            state = follower.state
            status = state.status_text()
            if follower.cancel_requested and state.outcome is Outcome.RUNNING:
                status += " — stopping…"
            fraction = state.fraction
            if fraction is None:
                self.progress_bar.setRange(0, 0 if state.outcome is Outcome.RUNNING else 1000)
            else:
                self.progress_bar.setRange(0, 1000)
                self.progress_bar.setValue(int(round(fraction * 1000)))
            stage = tr.STAGE_TEXT.get(state.stage, state.stage)
            if fraction is not None and state.stage_done is not None and state.stage_total:
                self.progress_bar.setFormat(f"{stage} {state.stage_done}/{state.stage_total} (%p%)")
            else:
                self.progress_bar.setFormat(stage)
            self.eta_label.setText(state.eta_text())
            self._show_problem(follower)
            line = {
                Outcome.NONE: "Training: idle",
                Outcome.RUNNING: f"Training: {status[:1].lower()}{status[1:]}" + (f", {state.eta_text()}" if state.eta_text() else ""),
                Outcome.FINISHED: "Training: finished",
                Outcome.CANCELLED: "Training: stopped",
                Outcome.FAILED: "Training: failed",
                Outcome.CRASHED: "Training: crashed",
            }[state.outcome]
        if status != self.status_label.text():
            self.status_label.setText(status)
        if line != self._last_status:
            self._last_status = line
            self.status_changed.emit(line)
            self._update_controls()

    def _show_problem(self, follower: RunFollower) -> None:
        state = follower.state
        if state.outcome is Outcome.FAILED and state.error:
            text = f"{state.error.get('message', '')}\n\nWhat to do: {state.error.get('what_to_do', '')}"
            style = "error"
        elif state.outcome is Outcome.CRASHED:
            text = "The training process stopped unexpectedly (no final message).\n" + follower.crash_report()
            style = "error"
        elif state.outcome is Outcome.CANCELLED:
            checkpoint = follower.resume_checkpoint()
            text = (f"Stopped. Resume continues from {checkpoint}." if checkpoint
                    else "Stopped before the first checkpoint; Resume starts the training again.")
            style = "warning"
        elif state.outcome is Outcome.FINISHED and state.summary:
            s = state.summary
            best = s.get("best_checkpoint") or s.get("checkpoint")
            text = f"Finished {s.get('steps')} steps in {tr.format_duration(s.get('elapsed_s'))}. The policy to run: {best}"
            style = "ok"
        else:
            self.problem_label.hide()
            return
        if self.problem_label.text() != text:
            self.problem_label.setText(text)
            self.problem_label.setStyleSheet(PROBLEM_STYLE[style])
        self.problem_label.show()

    def _update_controls(self) -> None:
        running = self.job_running()
        for widget in (self.store_edit, self.browse_store_button, self.refresh_button, self.label_combo,
                       self.task_combo, self.episode_table, self.select_all_button, self.select_none_button,
                       self.preset_combo, self.steps_spin, self.batch_spin, self.lr_edit, self.video_check,
                       self.checkpoint_spin, self.device_combo, self.run_dir_edit, self.extra_edit, self.runs_combo):
            widget.setEnabled(not running)
        self.train_button.setEnabled(not running and bool(self.selected_rows()))
        cancelling = self.follower is not None and self.follower.cancel_requested
        self.cancel_button.setEnabled(running and not cancelling)
        resumable = (
            not running and self.follower is not None and self.follower.job is not None
            and (self.follower.state.outcome in (Outcome.CANCELLED, Outcome.CRASHED)
                 or (self.follower.state.outcome is Outcome.FAILED and self.follower.resume_checkpoint() is not None))
        )
        self.resume_button.setEnabled(resumable)
        has_row = bool(self.checkpoint_table.selectedItems())
        self.copy_path_button.setEnabled(has_row)
        self.open_folder_button.setEnabled(has_row)

    def _say(self, text: str, level: str) -> bool:
        colour = {"error": theme.ERROR_COLOUR, "warning": theme.WARN_COLOUR}.get(level, theme.MUTED)
        self.message_label.setStyleSheet(f"color: {colour}; font-weight: {'bold' if level != 'info' else 'normal'};")
        self.message_label.setText(text)
        return False

    # ------------------------------------------------------------------ checkpoints

    def selected_checkpoint(self) -> Path | None:
        items = self.checkpoint_table.selectedItems()
        return Path(items[0].data(Qt.ItemDataRole.UserRole)) if items else None

    def copy_checkpoint_path(self) -> None:
        path = self.selected_checkpoint()
        if path is not None:
            QGuiApplication.clipboard().setText(str(path))

    def open_checkpoint_folder(self) -> None:
        path = self.selected_checkpoint()
        if path is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))

    # ------------------------------------------------------------------ closing the window

    def ask_keep_job(self) -> str | None:
        """Asked when the window closes during a job: "keep" it running, "stop" it, or None to
        not close. Tests replace this method."""
        box = QMessageBox(self)
        box.setWindowTitle("Training is running")
        box.setText("A training job is running. Keep it running after the window closes?\n"
                    "You can follow it again when you reopen the studio.")
        keep = box.addButton("Keep training", QMessageBox.ButtonRole.AcceptRole)
        stop = box.addButton("Stop training", QMessageBox.ButtonRole.DestructiveRole)
        box.addButton("Don't close", QMessageBox.ButtonRole.RejectRole)
        box.exec()
        clicked = box.clickedButton()
        if clicked is keep:
            return "keep"
        if clicked is stop:
            return "stop"
        return None

    def confirm_close(self) -> bool:
        """The window's closeEvent asks this first: False = do not close."""
        if not self.job_running():
            return True
        choice = self.ask_keep_job()
        if choice is None:
            return False
        if choice == "stop":
            self.cancel_training()
        return True
