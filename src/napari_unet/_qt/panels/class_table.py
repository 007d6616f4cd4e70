"""The classes panel of the Annotate dock: presets and a table of the names and colours of 1..K.

Names are edited in place, a click on a colour opens a colour dialog; edits go to the shared classes.
Many or long names scroll and elide inside the panel: they never widen the dock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QAbstractScrollArea,
    QColorDialog,
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QStyledItemDelegate,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ...autosave import MAX_CLASSES, MAX_NAME_LENGTH
from ...classes import CLASS_PRESETS, PALETTE, default_colors


class ClassTable(QTableWidget):
    """One row per class: its value (1..K), its editable name and its colour."""

    #: (row, stripped new text) after the user edited a name (the text may be empty)
    name_edited = Signal(int, str)
    #: (class value 1..K, colour "#rrggbb") chosen in the colour dialog
    color_chosen = Signal(int, str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(0, 3, parent)
        self.setHorizontalHeaderLabels(["value", "name", "colour"])
        self.verticalHeader().setVisible(False)
        header = self.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Fixed)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Fixed)
        header.resizeSection(0, 48)
        header.resizeSection(2, 56)
        # the names never size the table (nor the dock): long ones are elided, many scroll
        self.setSizeAdjustPolicy(QAbstractScrollArea.SizeAdjustPolicy.AdjustIgnored)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.setWordWrap(False)
        self.setItemDelegateForColumn(1, _NameDelegate(self))
        self.setMaximumHeight(130)
        self._filling = False
        self.itemChanged.connect(self._on_item_changed)
        self.cellClicked.connect(self._on_cell_clicked)

    def fill(self, names: Sequence[str], colors: Sequence[str]) -> None:
        """Show ``names`` and ``colors`` (classes 1..K) without emitting ``name_edited``."""
        self._filling = True
        try:
            self.setRowCount(len(names))
            for r, (name, color) in enumerate(zip(names, colors)):
                self.setItem(r, 0, _fixed(str(r + 1)))
                item = QTableWidgetItem(name)
                item.setToolTip(name)
                self.setItem(r, 1, item)
                swatch = _fixed("")
                swatch.setBackground(QColor(color))
                swatch.setToolTip(f"{color} (click to change)")
                self.setItem(r, 2, swatch)
        finally:
            self._filling = False

    def _on_item_changed(self, item: QTableWidgetItem) -> None:
        if not self._filling and item.column() == 1:
            self.name_edited.emit(item.row(), item.text().strip())

    def _on_cell_clicked(self, row: int, col: int) -> None:
        if col != 2:
            return
        swatch = self.item(row, 2)
        current = swatch.background().color() if swatch is not None else QColor("#ffffff")
        color = QColorDialog.getColor(current, self, "Class colour")
        if color.isValid():
            self.color_chosen.emit(row + 1, color.name())


class _NameDelegate(QStyledItemDelegate):
    """Edits a class name in a line edit that takes at most :data:`MAX_NAME_LENGTH` characters."""

    def createEditor(self, parent: QWidget, option: Any, index: Any) -> QWidget:
        editor = super().createEditor(parent, option, index)
        if isinstance(editor, QLineEdit):
            editor.setMaxLength(MAX_NAME_LENGTH)
        return editor


def _fixed(text: str) -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
    return item


class ClassPanel(QGroupBox):
    """Class presets, the :class:`ClassTable` and the add / remove-last buttons.

    ``classes`` is the dock's shared state (``class_names``, ``class_colors``,
    ``set_classes``, ``classes_changed``); ``painted(k)`` counts the pixels of class ``k``.
    """

    #: ("warning" or "error", text) for the dock's status line
    message = Signal(str, str)

    def __init__(
        self, classes: Any, painted: Callable[[int], int], parent: QWidget | None = None
    ) -> None:
        super().__init__("Classes (0 = unlabelled)", parent)
        self._classes = classes
        self._painted = painted
        vb = QVBoxLayout(self)
        row = QHBoxLayout()
        self.preset_combo = QComboBox()
        self.preset_combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.preset_combo.setMinimumContentsLength(16)
        self.preset_combo.addItems(list(CLASS_PRESETS))
        self.preset_btn = QPushButton("Use preset")
        row.addWidget(self.preset_combo, 1)
        row.addWidget(self.preset_btn)
        vb.addLayout(row)
        self.table = ClassTable()
        vb.addWidget(self.table)
        row = QHBoxLayout()
        self.add_btn = QPushButton("Add class")
        self.remove_btn = QPushButton("Remove last")
        row.addWidget(self.add_btn)
        row.addWidget(self.remove_btn)
        vb.addLayout(row)
        self.preset_btn.clicked.connect(self._apply_preset)
        self.add_btn.clicked.connect(lambda: self.add_class())
        self.remove_btn.clicked.connect(self.remove_last_class)
        self.table.name_edited.connect(self._on_name_edited)
        self.table.color_chosen.connect(self.set_color)
        self.fill()

    def fill(self) -> None:
        self.table.fill(self._classes.class_names, self._classes.class_colors)

    def set_classes(self, names: Sequence[str], colors: Sequence[str] | None = None) -> None:
        names = list(names)
        self._classes.set_classes(names, list(colors) if colors else default_colors(len(names)))

    def set_color(self, value: int, color: str) -> None:
        colors = list(self._classes.class_colors)
        colors[value - 1] = color
        self._classes.set_classes(list(self._classes.class_names), colors)

    def add_class(self, name: str | None = None) -> None:
        names = list(self._classes.class_names)
        k = len(names) + 1
        if k > MAX_CLASSES:
            self.message.emit("error", f"at most {MAX_CLASSES} classes")
            return
        colors = [*self._classes.class_colors, PALETTE[(k - 1) % len(PALETTE)]]
        self._classes.set_classes([*names, name or f"class {k}"], colors)

    def remove_last_class(self) -> None:
        names = list(self._classes.class_names)
        if len(names) <= 1:
            self.message.emit("warning", "at least one class is needed")
            return
        k = len(names)
        count = self._painted(k)
        if count:
            text = f"class {k} ({names[-1]}) is painted on {count:,} pixels: erase them first"
            self.message.emit("warning", text)
            return
        self._classes.set_classes(names[:-1], list(self._classes.class_colors)[:-1])

    def _apply_preset(self) -> None:
        self.set_classes(CLASS_PRESETS[self.preset_combo.currentText()])

    def _on_name_edited(self, row: int, text: str) -> None:
        if not text:
            self.message.emit("warning", "a class needs a name")
            self.fill()
            return
        if len(text) > MAX_NAME_LENGTH:
            self.message.emit("warning", f"class names are cut to {MAX_NAME_LENGTH} characters")
            text = text[:MAX_NAME_LENGTH].rstrip()
        names = list(self._classes.class_names)
        names[row] = text
        self._classes.set_classes(names, list(self._classes.class_colors))
