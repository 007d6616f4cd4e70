"""Qt widgets of napari-unet (the napari dock widgets and their helpers).

Thin widgets over the Qt-free core: they read layers, call the core in
``napari.qt.threading`` workers, and turn the results into layers, progress
bars, plots and notifications.  The eight docks of one viewer share a
:class:`~napari_unet._qt._state.UNetState` (layers, classes, augmentation,
model in memory).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import napari
    from qtpy.QtWidgets import QWidget

PLUGIN = "napari-unet"

#: the docks' keys, in the order of the manifest's widget contributions
DOCK_KEYS: tuple[str, ...] = (
    "annotate",
    "augmentation",
    "weightmap",
    "train",
    "predict",
    "correct",
    "export",
    "objects",
)


def _dock_names() -> dict[str, str]:
    """Dock key -> display name, read from the packaged napari.yaml (the one source)."""
    from importlib.resources import files

    import yaml

    manifest = yaml.safe_load(files("napari_unet").joinpath("napari.yaml").read_text("utf-8"))
    names = [w["display_name"] for w in manifest["contributions"]["widgets"]]
    return dict(zip(DOCK_KEYS, names, strict=True))


#: dock key -> display name in napari.yaml
WIDGETS: dict[str, str] = _dock_names()

__all__ = ["WIDGETS", "open_all_widgets"]


def open_all_widgets(viewer: napari.Viewer) -> dict[str, QWidget]:
    """Dock the eight napari-unet widgets, tabified in one dock area, Annotate in front.

    Returns
    -------
    dict
        Widget key (``"annotate"``, ``"augmentation"``, ``"weightmap"``,
        ``"train"``, ``"predict"``, ``"correct"``, ``"export"``) -> widget.
    """
    docks = {}
    widgets: dict[str, QWidget] = {}
    first = None
    for key, name in WIDGETS.items():
        dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name, tabify=first is not None)
        if first is None:
            first = dock
        docks[key] = dock
        widgets[key] = widget
    docks["annotate"].show()
    docks["annotate"].raise_()
    return widgets
