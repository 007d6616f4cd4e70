"""Small helpers shared by the napari-unet docks (GUI thread only, no heavy work).

Notifications, error messages, slice ranges, z <-> world conversions, label colour maps, throttles.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QObject, QTimer
from qtpy.QtWidgets import QLabel

# re-exported for docks that still import them from here (their home is napari_unet.classes)
from ..classes import CLASS_PRESETS, PALETTE, default_colors  # noqa: F401
from ..slices import parse_slices

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

logger = logging.getLogger("napari_unet")

# ----------------------------------------------------------------------------- notifications


def _set_status(label: QLabel | None, text: str, color: str | None) -> None:
    if label is None:
        return
    try:
        label.setText(text)
        label.setStyleSheet(f"color: {color};" if color else "")
    except RuntimeError:  # the label was deleted (widget closed)
        pass


def notify_error(message: str, status: QLabel | None = None) -> None:
    """An error notification (napari toast, no traceback dialog) + the widget's status line."""
    from napari.utils.notifications import show_error

    logger.error(message)
    _set_status(status, message, "#ff6b6b")
    show_error(message)


def notify_warning(message: str, status: QLabel | None = None) -> None:
    from napari.utils.notifications import show_warning

    logger.warning(message)
    _set_status(status, message, "#ffcc00")
    show_warning(message)


def notify_info(message: str, status: QLabel | None = None) -> None:
    from napari.utils.notifications import show_info

    logger.info(message)
    _set_status(status, message, None)
    show_info(message)


def friendly_error(exc: BaseException, context: str) -> str:
    """A one-line, actionable message for ``exc`` (the traceback goes to the log only)."""
    logger.debug("%s: %s", context, "".join(traceback.format_exception(exc)))
    text = str(exc).strip() or type(exc).__name__
    low = text.lower()
    if "out of memory" in low or type(exc).__name__ == "OutOfMemoryError":
        return (
            f"{context}: the device ran out of memory; reduce the batch size, the patch "
            "or tile size, or use the 'small' model / the CPU"
        )
    if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        reason = exc.strerror or text
        if getattr(exc, "errno", None) == 28:
            reason = "no space left on the disk"
        return f"{context}: {reason}{where}; choose another folder or free some space"
    if isinstance(exc, ValueError | TypeError | KeyError | FileNotFoundError):
        return f"{context}: {text}"
    return f"{context}: {type(exc).__name__}: {text}"


# ----------------------------------------------------------------------------- parsing


def parse_slice_ranges(text: str | None, n_slices: int | None = None) -> list[int]:
    """Parse ``"20-22,25"`` into ``[20, 21, 22, 25]`` (:func:`napari_unet.slices.parse_slices`).

    Raises
    ------
    ValueError
        For bad syntax, reversed ranges or slices outside ``0..n_slices-1``.
    """
    try:
        return parse_slices(text, n_slices)
    except ValueError as exc:  # the docks' wording ("reversed") where the CLI's differs
        text = str(exc).replace("goes backwards", "is reversed")
        raise ValueError(text.replace("cannot read ", "cannot read slice range ")) from None


# ----------------------------------------------------------------------------- geometry


def n_slices(layer: Layer) -> int:
    """Number of z slices of a (Z, Y, X) layer (1 for a 2D layer)."""
    return int(layer.data.shape[0]) if layer.ndim >= 3 else 1


def current_z(viewer: napari.Viewer, layer: Layer) -> int:
    """Index (data coordinates) of the slice of ``layer`` the viewer shows."""
    if layer.ndim < 3:
        return 0
    point = np.asarray(viewer.dims.point, dtype=float)
    data = layer.world_to_data(point[-layer.ndim :])
    z = round(float(data[-3]))
    return int(np.clip(z, 0, layer.data.shape[-3] - 1))


def set_current_z(viewer: napari.Viewer, layer: Layer, z: int) -> None:
    """Move the viewer to slice ``z`` (data coordinates) of ``layer``."""
    if layer.ndim < 3:
        return
    coords = np.zeros(layer.ndim)
    coords[-3] = z
    world = layer.data_to_world(coords)
    axis = viewer.dims.ndim - layer.ndim + (layer.ndim - 3)
    viewer.dims.set_point(axis, float(world[-3]))


def visible_z_range(viewer: napari.Viewer, layer: Layer) -> list[int]:
    """Slices of ``layer`` shown now: the current one in 2D, all of them in 3D."""
    if layer.ndim < 3:
        return [0]
    if viewer.dims.ndisplay == 3:
        return list(range(layer.data.shape[-3]))
    return [current_z(viewer, layer)]


def spatial_kwargs(layer: Layer, ndim: int | None = None) -> dict[str, Any]:
    """``scale``/``translate``/``units`` of ``layer`` restricted to its last ``ndim`` axes."""
    ndim = layer.ndim if ndim is None else ndim
    out: dict[str, Any] = {
        "scale": tuple(float(s) for s in layer.scale[-ndim:]),
        "translate": tuple(float(t) for t in layer.translate[-ndim:]),
    }
    units = getattr(layer, "units", None)
    if units is not None:
        try:
            out["units"] = tuple(str(u) for u in units[-ndim:])
        except TypeError:
            pass
    return out


def slice_placement(layer: Layer, z: int | None = None) -> dict[str, tuple[float, ...]]:
    """``scale``/``translate`` that put a one-slice ``(1, H, W)`` layer on slice ``z`` of ``layer``.

    ``z=None`` (or a 2D layer): aligned with the whole of ``layer``.
    """
    scale = tuple(float(s) for s in layer.scale)
    trans = np.asarray(layer.translate, dtype=float).copy()
    if z is not None and layer.ndim >= 3:
        trans[-3] += int(z) * scale[-3]
    return {"scale": scale, "translate": tuple(float(t) for t in trans)}


def label_colormap(colors: Sequence[str]) -> Any:
    """A napari DirectLabelColormap: 0 transparent, class k -> ``colors[k-1]``."""
    from napari.utils.colormaps import DirectLabelColormap
    from napari.utils.colormaps.standardize_color import transform_color

    color_dict: dict[int | None, Any] = {None: np.array([0.6, 0.6, 0.6, 1.0]), 0: np.zeros(4)}
    for k, c in enumerate(colors, start=1):
        color_dict[k] = transform_color(c)[0]
    return DirectLabelColormap(color_dict=color_dict)


def sanitize_name(name: str) -> str:
    """A file-name-safe version of a layer name."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return out or "image"


# ----------------------------------------------------------------------------- throttle


class Throttle(QObject):
    """Call ``fn`` at most once every ``interval_ms`` (leading and trailing edge).

    ``trigger()`` calls ``fn`` at once when idle; further triggers within the
    interval collapse into one call at its end.  GUI thread only.
    """

    def __init__(self, fn: Callable[[], None], interval_ms: int, parent: QObject | None = None):
        super().__init__(parent)
        self._fn = fn
        self._pending = False
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(int(interval_ms))
        self._timer.timeout.connect(self._on_timeout)

    def trigger(self) -> None:
        if self._timer.isActive():
            self._pending = True
            return
        self._pending = False
        self._timer.start()
        self._fn()

    def flush(self) -> None:
        """Run a pending call now."""
        if self._pending:
            self._pending = False
            self._fn()

    def _on_timeout(self) -> None:
        if self._pending:
            self._pending = False
            self._timer.start()
            self._fn()


class Debounce(QObject):
    """Call ``fn`` once, ``delay_ms`` after the last ``trigger()``."""

    def __init__(self, fn: Callable[[], None], delay_ms: int, parent: QObject | None = None):
        super().__init__(parent)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(int(delay_ms))
        self._timer.timeout.connect(fn)

    def trigger(self, *_: Any) -> None:
        self._timer.start()

    def cancel(self) -> None:
        self._timer.stop()

    @property
    def pending(self) -> bool:
        return self._timer.isActive()


# ----------------------------------------------------------------------------- layers


def put_layer(
    viewer: napari.Viewer, existing: Any, name: str, kind: str, data: Any, **kwargs: Any
) -> Any:
    """Update ``existing`` (if still in the viewer, same ndim) with ``data``, else add a layer.

    ``kind`` is "image" or "labels"; ``kwargs`` are layer attributes (set on an update) or
    ``add_<kind>`` arguments.  Adding a layer keeps the active layer (painting continues).
    """
    layers = viewer.layers
    if existing is not None and existing in layers and existing.ndim == data.ndim:
        kwargs.pop("units", None)
        kwargs.pop("metadata", None)
        existing.data = data
        for key, value in kwargs.items():
            try:
                setattr(existing, key, value)
            except (AttributeError, ValueError, TypeError):
                pass
        return existing
    if existing is not None and existing in layers:
        layers.remove(existing)
    active = layers.selection.active
    kwargs.setdefault("metadata", {"napari_unet": {"generated": True}})
    layer = getattr(viewer, f"add_{kind}")(data, name=name, **kwargs)
    if active is not None and active in layers:
        layers.selection.active = active
    return layer
