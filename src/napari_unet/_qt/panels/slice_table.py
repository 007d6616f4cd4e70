"""The labelled-slice panel of the Annotate dock: labelled pixels and class balance per slice.

It keeps the per-slice counts (counted in a worker by :func:`count_slices`); a double click on
a row asks the dock to show that slice, and a line below sums up all slices.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHeaderView,
    QLabel,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ...slices import read_slice

#: label values counted one by one; larger ones (a crafted or instance file) are pooled
MAX_COUNTED_VALUE = 65535


def count_values(labels: Any, z: int, n_classes: int) -> np.ndarray:
    """Pixels of each value ``0..max(K, max value)`` on slice ``z``.

    Values above :data:`MAX_COUNTED_VALUE` are counted in the last bin, so a
    value near 2**32 cannot make the count allocate gigabytes.
    """
    values = read_slice(labels, z).ravel()
    if values.size and values.max() > MAX_COUNTED_VALUE:
        values = np.minimum(values, MAX_COUNTED_VALUE + 1)
    return np.bincount(values, minlength=n_classes + 1)


def count_slices(labels: Any, n_classes: int, chunk: int = 16) -> Iterator[dict[int, np.ndarray]]:
    """Worker: :func:`count_values` of every slice, ``chunk`` slices at a time."""
    n = int(labels.shape[0]) if len(labels.shape) >= 3 else 1
    for start in range(0, n, chunk):
        yield {z: count_values(labels, z, n_classes) for z in range(start, min(start + chunk, n))}


def _padded(counts: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=np.int64)
    m = min(n, len(counts))
    out[:m] = counts[:m]
    return out


def balance_summary(rows: Mapping[int, np.ndarray], names: Sequence[str]) -> str:
    """``"2 labelled slice(s), 1,234 px: membrane 40%, cell 60%"`` (or a hint to paint)."""
    total = np.zeros(len(names) + 1, dtype=np.int64)
    for counts in rows.values():
        total += _padded(counts, len(total))
    n_total = int(total[1:].sum())
    if not n_total:
        return "no labelled pixels yet: paint some slices"
    bal = ", ".join(f"{name} {100.0 * total[i + 1] / n_total:.0f}%" for i, name in enumerate(names))
    return f"{len(rows)} labelled slice(s), {n_total:,} px: {bal}"


class SliceRows(QTableWidget):
    """A read-only table of one row per slice; a double click on a row emits its slice."""

    #: the slice index of a double-clicked row
    slice_activated = Signal(int)
    #: the column that holds the slice index
    slice_column = 0

    def __init__(self, headers: Sequence[str], parent: QWidget | None = None) -> None:
        super().__init__(0, len(headers), parent)
        self.setHorizontalHeaderLabels(list(headers))
        self.verticalHeader().setVisible(False)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.horizontalHeader().setSectionResizeMode(
            len(headers) - 1, QHeaderView.ResizeMode.Stretch
        )
        self.cellDoubleClicked.connect(self._on_double_clicked)

    def slices(self) -> list[int]:
        """The slice of each row, top to bottom."""
        column = self.slice_column
        return [int(self.item(r, column).text()) for r in range(self.rowCount())]

    def _on_double_clicked(self, row: int, col: int) -> None:
        item = self.item(row, self.slice_column)
        if item is not None:
            self.slice_activated.emit(int(item.text()))


class SliceTable(SliceRows):
    """One row per labelled slice: its index, labelled pixels and class balance."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(["slice", "labelled px", "class balance"], parent)
        self.setMinimumHeight(120)

    def show_counts(self, rows: Mapping[int, np.ndarray], names: Sequence[str]) -> None:
        """One row per ``{z: counts of values 0..K}`` entry, in the order given."""
        self.setRowCount(len(rows))
        right = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
        for r, (z, counts) in enumerate(rows.items()):
            c = _padded(counts, len(names) + 1)
            n = int(counts[1:].sum())
            balance = " · ".join(
                f"{name} {100.0 * c[i + 1] / n:.0f}%" for i, name in enumerate(names) if c[i + 1]
            )
            for col, text in enumerate((str(z), f"{n:,}", balance)):
                item = QTableWidgetItem(text)
                if col < 2:
                    item.setTextAlignment(right)
                self.setItem(r, col, item)


class SlicePanel(QGroupBox):
    """The :class:`SliceTable` and the summary line under it, over the per-slice counts."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Labelled slices (double-click to go there)", parent)
        vb = QVBoxLayout(self)
        self.table = SliceTable()
        vb.addWidget(self.table)
        self.summary = QLabel("")
        # the class balance line lists every class: many or long names must not widen the dock
        self.summary.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        vb.addWidget(self.summary)
        #: ``{z: pixels of each value}`` of the slices counted so far
        self.counts: dict[int, np.ndarray] = {}

    def labelled(self) -> dict[int, np.ndarray]:
        """``{z: counts}`` of the slices with at least one labelled pixel, in slice order."""
        return {z: c for z, c in sorted(self.counts.items()) if c[1:].sum() > 0}

    def painted(self, k: int) -> int:
        """Pixels of value ``k`` on all counted slices."""
        return sum(int(c[k]) for c in self.counts.values() if len(c) > k)

    def refresh(self, names: Sequence[str]) -> dict[int, np.ndarray]:
        """Show the labelled slices with the class ``names``; return them."""
        rows = self.labelled()
        self.table.show_counts(rows, names)
        text = balance_summary(rows, names)
        self.summary.setText(text)
        self.summary.setToolTip(text)
        return rows
