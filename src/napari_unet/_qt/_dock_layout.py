"""How the ``napari-unet`` window arranges the eight docks so that every tab can be read.

One tab group on the right, in workflow order (1 Annotate ... 8 Objects), with the tabs
along its outer edge: a vertical tab bar has room for all eight full titles in a
1500 x 950 window (a horizontal one elides them to "1 A…", "4…"), every dock keeps the
full height, and each one, Train and Predict included, is one click away. The tabs show
the docks' names without napari's " (napari-unet)" suffix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QDockWidget, QTabWidget

from . import WIDGETS, open_all_widgets

if TYPE_CHECKING:
    import napari
    from qtpy.QtWidgets import QWidget

__all__ = ["TAB_POSITION", "dock_of", "open_docks"]

#: where the right dock area's tabs go: its outer edge, titles read top-down
TAB_POSITION = QTabWidget.TabPosition.East


def dock_of(widget: QWidget) -> QDockWidget | None:
    """The dock widget that holds ``widget`` (None when it is not docked)."""
    parent = widget
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parentWidget()
    return parent


def open_docks(viewer: napari.Viewer) -> dict[str, QWidget]:
    """Dock the eight widgets (:func:`napari_unet._qt.open_all_widgets`) with readable tabs.

    Returns
    -------
    dict
        Widget key (``"annotate"`` ... ``"objects"``) -> widget.
    """
    widgets = open_all_widgets(viewer)
    window = viewer.window._qt_window
    window.setTabPosition(Qt.DockWidgetArea.RightDockWidgetArea, TAB_POSITION)
    for key, widget in widgets.items():
        dock = dock_of(widget)
        if dock is not None:
            dock.setWindowTitle(
                WIDGETS[key]
            )  # the tab text: "4 Train", not "4 Train (napari-unet)"
    return widgets
