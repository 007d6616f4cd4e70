"""The dock widget classes napari.yaml names: napari-unet's widgets that join one tab group.

Each is a thin subclass of its widget in :mod:`napari_unet._qt` (same constructor, same
behaviour).  Once napari has docked one, however it was opened (Plugins > napari U-Net,
Layers > Segment > U-Net, ``viewer.window.add_plugin_dock_widget``, the ``napari-unet``
command), :func:`napari_unet._qt._dock_layout.join_tab_group` puts it into the tab group of
the napari-unet docks already open in its dock area, with vertical tabs and short titles, so
docks opened one by one read like those the ``napari-unet`` command opens.  The classes are
made on first use (module ``__getattr__``: ``AnnotateWidget`` ... ``ObjectsWidget``, the names
of :data:`napari_unet._qt._dock_layout.DOCK_CLASSES`): importing this module imports no widget.
"""

from __future__ import annotations

import importlib
from typing import Any

_made: dict[str, type] = {}


def _grouped(base: type) -> type:
    """``base`` whose instances join the napari-unet tab group once docked."""
    from qtpy.QtCore import QTimer

    from .._qt._dock_layout import join_tab_group

    def __init__(self: Any, napari_viewer: Any, parent: Any = None) -> None:
        base.__init__(self, napari_viewer, parent)
        # napari docks the widget after constructing it: join the group once it has
        QTimer.singleShot(0, lambda: join_tab_group(self))

    namespace = {"__init__": __init__, "__module__": __name__, "__doc__": base.__doc__}
    return type(base.__name__, (base,), {**namespace, "__qualname__": base.__name__})


def __getattr__(name: str) -> type:
    if name in _made:
        return _made[name]
    from .._qt._dock_layout import DOCK_CLASSES

    for module, cls in DOCK_CLASSES.values():
        if cls == name:
            base = getattr(importlib.import_module(f"napari_unet._qt.{module}"), cls)
            _made[name] = _grouped(base)
            return _made[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
