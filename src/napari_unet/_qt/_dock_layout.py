"""How the ``napari-unet`` window arranges the eight docks so that every tab can be read.

One tab group on the right, in workflow order (1 Annotate ... 8 Objects), with the tabs
along its outer edge: a vertical tab bar has room for all eight full titles in a
1500 x 950 window (a horizontal one elides them to "1 A…", "4…"), every dock keeps the
full height, and each one, Train and Predict included, is one click away. The tabs show
the docks' names without napari's " (napari-unet)" suffix.

The same holds for docks opened one by one (napari's Plugins menu, Layers > Segment > U-Net,
``viewer.window.add_plugin_dock_widget``): the classes napari.yaml names
(:mod:`napari_unet._napari.docks`) call :func:`join_tab_group` once napari has docked them,
and a new dock joins the tab group of the napari-unet docks already open in its dock area.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QDockWidget, QMainWindow, QTabWidget, QWidget

from . import DOCK_KEYS, WIDGETS, open_all_widgets

if TYPE_CHECKING:
    import napari

__all__ = ["DOCK_CLASSES", "TAB_POSITION", "dock_of", "join_tab_group", "open_docks"]

#: where the right dock area's tabs go: its outer edge, titles read top-down
TAB_POSITION = QTabWidget.TabPosition.East
#: the outer edge of each side area (the left one's tabs face left)
_OUTER_EDGE = {
    Qt.DockWidgetArea.RightDockWidgetArea: QTabWidget.TabPosition.East,
    Qt.DockWidgetArea.LeftDockWidgetArea: QTabWidget.TabPosition.West,
}
#: dock key -> (module under napari_unet._qt, widget class)
DOCK_CLASSES: dict[str, tuple[str, str]] = {
    "annotate": ("annotate", "AnnotateWidget"),
    "augmentation": ("preview_augmentation", "AugmentationPreviewWidget"),
    "weightmap": ("preview_weights", "WeightMapPreviewWidget"),
    "train": ("train", "TrainWidget"),
    "predict": ("predict", "PredictWidget"),
    "correct": ("correct", "CorrectWidget"),
    "export": ("export", "ExportWidget"),
    "objects": ("objects", "ObjectsWidget"),
}
_KEY_OF_CLASS = {(f"napari_unet._qt.{m}", c): k for k, (m, c) in DOCK_CLASSES.items()}


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


def _widget_key(widget: QWidget | None) -> str | None:
    """The dock key of a napari-unet dock widget (or of a subclass of one), else None."""
    for cls in type(widget).__mro__ if widget is not None else ():
        key = _KEY_OF_CLASS.get((cls.__module__, cls.__name__))
        if key is not None:
            return key
    return None


def _dock_key(dock: QDockWidget) -> str | None:
    inner = dock.widget()
    key = _widget_key(inner)
    if key is None and inner is not None:  # wrapped by napari (scroll area, stretch)
        key = next(filter(None, map(_widget_key, inner.findChildren(QWidget))), None)
    return key


def _open_docks_of(window: QMainWindow, area: Qt.DockWidgetArea) -> dict[QDockWidget, str]:
    """The napari-unet docks docked (not floating, not closed) in ``area``, workflow order."""
    found = {}
    for dock in window.findChildren(QDockWidget):
        if dock.isFloating() or window.dockWidgetArea(dock) != area:
            continue
        if not dock.toggleViewAction().isChecked():  # closed by the user
            continue
        key = _dock_key(dock)
        if key is not None:
            found[dock] = key
    return dict(sorted(found.items(), key=lambda kv: DOCK_KEYS.index(kv[1])))


def join_tab_group(widget: QWidget) -> bool:
    """Put ``widget``'s dock into the tab group of the napari-unet docks open in its dock area
    (vertical tabs on the area's outer edge, the short title) and bring it to the front.

    Returns True when the dock moved into a group; False when it is not docked, is alone or
    already shares the group (only its title and the tab edge are set then).
    """
    try:
        dock = dock_of(widget)
        window = dock.parentWidget() if dock is not None else None
    except RuntimeError:  # deleted before the event loop ran
        return False
    if not isinstance(window, QMainWindow) or dock.isFloating():
        return False
    key = _widget_key(widget)
    if key is not None:
        dock.setWindowTitle(WIDGETS[key])
    area = window.dockWidgetArea(dock)
    if area in _OUTER_EDGE:
        window.setTabPosition(area, _OUTER_EDGE[area])
    others = [d for d in _open_docks_of(window, area) if d is not dock]
    if not others or set(others) <= set(window.tabifiedDockWidgets(dock)):
        return False
    window.tabifyDockWidget(others[0], dock)
    dock.show()
    dock.raise_()
    return True
