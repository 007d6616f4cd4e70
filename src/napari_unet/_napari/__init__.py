"""npe2 contributions (reader, writer, sample data) over napari-unet's Qt-free I/O.

A bad file becomes a napari notification (:func:`notify_error`), never a traceback dialog.
"""

from __future__ import annotations


def notify_error(message: str) -> None:
    """Show ``message`` as a napari error notification."""
    from napari.utils.notifications import show_error

    show_error(message)
