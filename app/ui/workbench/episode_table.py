"""The table of a store's episodes with its filter bar. A view over `app.studio.workbench`: the
rows, the cell texts, the filtering and the sorting all come from there."""

from __future__ import annotations

import datetime as _dt

from PySide6.QtCore import QAbstractTableModel, QDate, QModelIndex, Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDateEdit,
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app.studio.workbench import COLUMN_KEYS, COLUMNS, SOURCE_FILTERS, EpisodeFilter, Workbench
from app.ui import theme
from recordings.index import EpisodeRow

_QA_COLOURS = {"ok": theme.OK_COLOUR, "warn": theme.WARN_COLOUR, "bad": theme.ERROR_COLOUR, "invalid": theme.ERROR_COLOUR,
               "live": "#2563eb", "unfinished": theme.WARN_COLOUR}
_LABEL_COLOURS = {"success": theme.OK_COLOUR, "failure": theme.ERROR_COLOUR}


class EpisodeTableModel(QAbstractTableModel):
    """The shown rows of a Workbench (GUI thread). `set_rows` replaces them whole."""

    def __init__(self, workbench: Workbench, parent=None) -> None:
        super().__init__(parent)
        self.workbench = workbench
        self.rows: list[EpisodeRow] = []

    def set_rows(self, rows: list[EpisodeRow]) -> None:
        self.beginResetModel()
        self.rows = rows
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section].header
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        row = self.rows[index.row()]
        column = COLUMNS[index.column()]
        limits = self.workbench.thresholds
        if role == Qt.ItemDataRole.DisplayRole:
            return column.text(row, limits)
        if role == Qt.ItemDataRole.ToolTipRole:
            tip = column.tooltip(row, limits)
            return tip or (row.problem or None)
        if role == Qt.ItemDataRole.ForegroundRole:
            text = column.text(row, limits)
            if column.key == "qa":
                return QColor(_QA_COLOURS.get(text, theme.MUTED))
            if column.key == "label":
                return QColor(_LABEL_COLOURS.get(text, theme.TEXT))
            if text == "unknown" or row.problem is not None:
                return QColor(theme.MUTED)
        if role == Qt.ItemDataRole.TextAlignmentRole and column.key in ("index", "duration", "frames", "size"):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None


class EpisodeTableWidget(QWidget):
    """Filter bar above a sortable, multi-select table. Emits `current_changed(name)` when the
    current row changes and `selection_changed()`; `selected_names()` lists the selection."""

    current_changed = Signal(str)
    selection_changed = Signal()

    def __init__(self, workbench: Workbench, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.workbench = workbench
        self.sort_key, self.descending = "index", False
        self.search = QLineEdit()
        self.search.setPlaceholderText("search name, task, operator, notes, reason")
        self.label_filter = self._combo(["any label", "success", "failure", "unknown"])
        self.task_filter = self._combo(["any task"])
        self.operator_filter = self._combo(["any operator"])
        self.source_filter = self._combo(["any source", *SOURCE_FILTERS])
        self.qa_filter = self._combo(["any timing QA", "ok", "warn", "bad", "unknown", "ok or warn"])
        self.date_on = QCheckBox("from")
        self.date_from = QDateEdit(QDate.currentDate())
        self.date_to = QDateEdit(QDate.currentDate())
        for edit in (self.date_from, self.date_to):
            edit.setCalendarPopup(True)
            edit.setDisplayFormat("yyyy-MM-dd")
            edit.dateChanged.connect(self.apply)
        self.date_on.toggled.connect(self.apply)
        self.search.textChanged.connect(self.apply)
        bar = QHBoxLayout()
        bar.setContentsMargins(0, 0, 0, 0)
        bar.addWidget(self.search, 2)
        for text, widget in (("label", self.label_filter), ("task", self.task_filter), ("operator", self.operator_filter),
                             ("source", self.source_filter), ("QA", self.qa_filter)):
            widget.setToolTip(f"Show only episodes of this {text}")
            bar.addWidget(widget, 1)
        bar.addWidget(self.date_on)
        bar.addWidget(self.date_from)
        bar.addWidget(self.date_to)

        self.model = EpisodeTableModel(workbench, self)
        self.view = QTableView()
        self.view.setModel(self.model)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.view.setSortingEnabled(False)  # the workbench sorts; the header only asks
        self.view.verticalHeader().setVisible(False)
        self.view.verticalHeader().setDefaultSectionSize(22)
        self.view.setAlternatingRowColors(False)
        self.view.setWordWrap(False)
        header = self.view.horizontalHeader()
        header.setSectionsClickable(True)
        header.setSortIndicatorShown(True)
        header.setSortIndicator(0, Qt.SortOrder.AscendingOrder)
        header.sectionClicked.connect(self._sort_by)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(False)
        header.setSectionResizeMode(COLUMN_KEYS.index("cameras"), QHeaderView.ResizeMode.Stretch)
        for key, width in (("index", 48), ("created", 140), ("task", 130), ("operator", 80), ("duration", 70), ("frames", 60),
                           ("cameras", 200), ("label", 64), ("reason", 110), ("sources", 170), ("qa", 80), ("size", 72)):
            self.view.setColumnWidth(COLUMN_KEYS.index(key), width)
        self.view.setStyleSheet("QTableView { background: #111827; gridline-color: #374151; } "
                                "QHeaderView::section { background: #1f2937; color: #e5e7eb; padding: 3px; border: 0; }")
        self.view.selectionModel().currentRowChanged.connect(self._current_row_changed)
        self.view.selectionModel().selectionChanged.connect(lambda *_: self.selection_changed.emit())
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self.view)

    def _combo(self, items: list[str]) -> QComboBox:
        combo = QComboBox()
        combo.addItems(items)
        combo.currentIndexChanged.connect(self.apply)
        return combo

    def rules(self) -> EpisodeFilter:
        def chosen(combo: QComboBox) -> str:
            return "" if combo.currentIndex() <= 0 else combo.currentText()

        qa = chosen(self.qa_filter)
        qa_set = frozenset({"ok", "warn"}) if qa == "ok or warn" else (frozenset({qa}) if qa else frozenset())
        label = chosen(self.label_filter)
        dates: dict[str, _dt.date | None] = {"date_from": None, "date_to": None}
        if self.date_on.isChecked():
            dates = {"date_from": self.date_from.date().toPython(), "date_to": self.date_to.date().toPython()}
        return EpisodeFilter(
            text=self.search.text().strip(),
            labels=frozenset({label}) if label else frozenset(),
            task=chosen(self.task_filter),
            operator=chosen(self.operator_filter),
            source=chosen(self.source_filter),
            qa=qa_set,
            **dates,
        )

    def refresh_choices(self) -> None:
        """Task and operator choices from the rows (keeps the current choice)."""
        for combo, values in ((self.task_filter, self.workbench.tasks()), (self.operator_filter, self.workbench.operators())):
            current, first = combo.currentText(), combo.itemText(0)
            combo.blockSignals(True)
            combo.clear()
            combo.addItems([first, *values])
            combo.setCurrentText(current if current in values else first)
            combo.blockSignals(False)

    def apply(self, *_args) -> None:
        """Re-filter and re-sort the workbench's rows, keeping the selection by name."""
        selected = set(self.selected_names())
        current = self.current_name()
        rows = self.workbench.visible(self.rules(), self.sort_key, self.descending)
        self.model.set_rows(rows)
        selection = self.view.selectionModel()
        for i, row in enumerate(rows):
            if row.name in selected:
                selection.select(self.model.index(i, 0), selection.SelectionFlag.Select | selection.SelectionFlag.Rows)
            if row.name == current:
                selection.setCurrentIndex(self.model.index(i, 0), selection.SelectionFlag.NoUpdate)

    def _sort_by(self, section: int) -> None:
        key = COLUMNS[section].key
        self.descending = (not self.descending) if key == self.sort_key else False
        self.sort_key = key
        self.view.horizontalHeader().setSortIndicator(
            section, Qt.SortOrder.DescendingOrder if self.descending else Qt.SortOrder.AscendingOrder)
        self.apply()

    def selected_names(self) -> list[str]:
        rows = sorted({index.row() for index in self.view.selectionModel().selectedRows()})
        return [self.model.rows[i].name for i in rows if i < len(self.model.rows)]

    def current_name(self) -> str | None:
        index = self.view.currentIndex()
        if not index.isValid() or index.row() >= len(self.model.rows):
            return None
        return self.model.rows[index.row()].name

    def select_name(self, name: str) -> bool:
        for i, row in enumerate(self.model.rows):
            if row.name == name:
                self.view.selectRow(i)
                return True
        return False

    def _current_row_changed(self, current, _previous) -> None:
        if current.isValid() and current.row() < len(self.model.rows):
            self.current_changed.emit(self.model.rows[current.row()].name)
