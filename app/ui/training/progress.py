"""The Training panel's run view: which run is followed, its status and how it ended (with what to
do), the progress bar and ETA of the current stage, the loss curves, the checkpoints on disk and
the log. It paints a `RunFollower`'s state (`app.studio.training`); GUI thread only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pyqtgraph as pg
from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QColor, QDesktopServices, QGuiApplication
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.studio.training.follower import RunFollower
from app.studio.training.run_state import STAGE_TEXT, LogLine, Outcome, checkpoint_rows, format_duration
from app.ui import theme

CHECKPOINT_COLUMNS = ("Step", "Train", "Val action", "Sampled err.", "Best", "Path")  # losses; sampled-action error
CURVES = {  # name -> (colour, dashed)
    "train total": ("#60a5fa", False),
    "train action": ("#34d399", False),
    "train video": ("#fbbf24", True),
    "val total": ("#e5e7eb", False),
    "val action": ("#f472b6", False),
    "val sampled error": ("#a78bfa", False),  # what best/ is chosen by (model/validation.py)
}
LEVEL_PREFIX = {"info": "", "warning": "! ", "error": "✖ ", "stderr": "│ "}
PROBLEM_STYLE = {
    "error": "QLabel { background: #7f1d1d; color: white; padding: 8px; border-radius: 6px; font-weight: bold; }",
    "warning": "QLabel { background: #78350f; color: white; padding: 8px; border-radius: 6px; font-weight: bold; }",
    "ok": "QLabel { background: #14532d; color: white; padding: 8px; border-radius: 6px; font-weight: bold; }",
}
#: The status bar's line for each outcome (RUNNING says what runs).
STATUS_LINES = {
    Outcome.NONE: "Training: idle",
    Outcome.FINISHED: "Training: finished",
    Outcome.CANCELLED: "Training: stopped",
    Outcome.FAILED: "Training: failed",
    Outcome.CRASHED: "Training: crashed",
}


class RunProgressWidget(QGroupBox):
    """The "Run" box. `run_chosen` carries a run folder picked in the Run list;
    `checkpoint_selected` fires when the checkpoint selection changes."""

    run_chosen = Signal(Path)
    checkpoint_selected = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Run", parent)
        self._checkpoint_signature: object = None
        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        self.runs_combo = QComboBox()
        self.runs_combo.setToolTip("Runs in the runs folder, from this window or a terminal (newest first)")
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

        lower = QSplitter(Qt.Orientation.Horizontal)  # side by side: in a dock below the cameras height is short
        lower.addWidget(self._build_curves())
        self.detail_tabs = QTabWidget()
        self.detail_tabs.addTab(self._build_checkpoints(), "Checkpoints")
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(5000)
        self.log_view.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.log_view.setStyleSheet("font-family: monospace; font-size: 12px;")
        self.detail_tabs.addTab(self.log_view, "Log")
        lower.addWidget(self.detail_tabs)
        lower.setSizes([420, 380])
        lower.setChildrenCollapsible(False)
        layout.addWidget(lower, 1)

    def _build_curves(self) -> QWidget:
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
        return curves

    def _build_checkpoints(self) -> QWidget:
        self.checkpoint_table = QTableWidget(0, len(CHECKPOINT_COLUMNS))
        self.checkpoint_table.setHorizontalHeaderLabels(CHECKPOINT_COLUMNS)
        for column, tip in ((1, "mean train loss (total) logged at this step"),
                            (2, "validation flow loss of the actions"),
                            (3, "sampled-action error: the policy's own chunks against the held-out "
                                "demonstrations (mean end-point error, normalised units); best/ has the lowest")):
            self.checkpoint_table.horizontalHeaderItem(column).setToolTip(tip)
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
        self.checkpoint_table.itemSelectionChanged.connect(self._on_checkpoint_selection)
        checkpoints = QWidget()
        layout = QVBoxLayout(checkpoints)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.checkpoint_table, 1)
        row = QHBoxLayout()
        self.copy_path_button = QPushButton("Copy path")
        self.copy_path_button.clicked.connect(self.copy_checkpoint_path)
        self.open_folder_button = QPushButton("Open folder")
        self.open_folder_button.clicked.connect(self.open_checkpoint_folder)
        row.addWidget(self.copy_path_button)
        row.addWidget(self.open_folder_button)
        row.addStretch(1)
        layout.addLayout(row)
        self._on_checkpoint_selection()
        return checkpoints

    # ------------------------------------------------------------------ the run list

    def list_runs(self, runs: Sequence[Path], current: Path | None) -> None:
        """The Run list: `runs`, plus the followed run when it is not among them (e.g. a run
        folder opened from elsewhere)."""
        self.runs_combo.blockSignals(True)
        self.runs_combo.clear()
        for run_dir in runs:
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
        if path:
            self.run_chosen.emit(Path(path))

    # ------------------------------------------------------------------ painting

    def clear(self) -> None:
        """Before following another run: its log and curves are read from the start."""
        self.log_view.clear()
        for curve in self.curves.values():
            curve.setData([], [])
        self.checkpoint_table.setRowCount(0)
        self._checkpoint_signature = None

    def add_lines(self, lines: Sequence[LogLine]) -> None:
        self.log_view.appendPlainText("\n".join(LEVEL_PREFIX.get(line.level, "") + line.text for line in lines))

    def show_curves(self, follower: RunFollower) -> None:
        state = follower.state
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
        sampled = sorted((s, e) for s, e in state.sampled_error.items() if e > 0)
        self.curves["val sampled error"].setData([p[0] for p in sampled], [p[1] for p in sampled])

    def show_checkpoints(self, follower: RunFollower) -> bool:
        """The checkpoints on disk with the run's figures; True when the table changed."""
        state = follower.state
        signature = (tuple(state.checkpoints), state.best_step, state.outcome, state.attempts, len(state.val_loss))
        if signature == self._checkpoint_signature:
            return False
        self._checkpoint_signature = signature
        rows = checkpoint_rows(state, follower.run_dir)
        table = self.checkpoint_table
        table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            train = f"{row.train_loss[0]:.4g}" if row.train_loss else "—"
            val = f"{row.val_loss[2]:.4g}" if row.val_loss else "—"
            sampled = f"{row.sampled_error:.4g}" if row.sampled_error is not None else "—"
            best = "★ best" if row.best else ""
            step = f"{row.step}" + (" (best/)" if row.is_best_folder else "")
            for column, text in enumerate((step, train, val, sampled, best, str(row.path))):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, str(row.path))
                item.setToolTip(str(row.path))
                if row.best:
                    item.setForeground(QColor("#fbbf24"))
                table.setItem(i, column, item)
        return True

    def show_status(self, follower: RunFollower | None) -> str:
        """Status, bar, ETA and the how-it-ended box; returns the status bar's line."""
        if follower is None:
            status, line = "No training started yet.", STATUS_LINES[Outcome.NONE]
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
            stage = STAGE_TEXT.get(state.stage, state.stage)
            if fraction is not None and state.stage_done is not None and state.stage_total:
                self.progress_bar.setFormat(f"{stage} {state.stage_done}/{state.stage_total} (%p%)")
            else:
                self.progress_bar.setFormat(stage)
            self.eta_label.setText(state.eta_text())
            self._show_problem(follower)
            if state.outcome is Outcome.RUNNING:
                line = f"Training: {status[:1].lower()}{status[1:]}" + (f", {state.eta_text()}" if state.eta_text() else "")
            else:
                line = STATUS_LINES[state.outcome]
        if status != self.status_label.text():
            self.status_label.setText(status)
        return line

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
            text = f"Finished {s.get('steps')} steps in {format_duration(s.get('elapsed_s'))}. The policy to run: {best}"
            style = "ok"
        else:
            self.problem_label.hide()
            return
        if self.problem_label.text() != text:
            self.problem_label.setText(text)
            self.problem_label.setStyleSheet(PROBLEM_STYLE[style])
        self.problem_label.show()

    # ------------------------------------------------------------------ checkpoints

    def _on_checkpoint_selection(self) -> None:
        has_row = bool(self.checkpoint_table.selectedItems())
        self.copy_path_button.setEnabled(has_row)
        self.open_folder_button.setEnabled(has_row)
        self.checkpoint_selected.emit()

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
