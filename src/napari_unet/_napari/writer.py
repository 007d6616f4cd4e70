"""npe2 writer: Labels layers as Fiji-readable multipage TIFF (atomic).

A failed write becomes a notification and writes no file.
"""

from __future__ import annotations

from typing import Any

from ..io import InvalidImageError, write_labels_tiff
from . import notify_error


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one Labels layer; return ``[path]`` (or ``[]`` after a notified error)."""
    scale = meta.get("scale")
    units = meta.get("units")
    unit = "um"
    if units:
        u = str(units[-1])
        unit = "pixel" if u in ("pixel", "px") else ("um" if u in ("µm", "um", "micrometer") else u)
    try:
        written = write_labels_tiff(path, data, scale=scale, unit=unit)
    except InvalidImageError as exc:
        notify_error(f"could not save labels: {exc}")
        return []
    return [str(written)]
