"""``napari-unet [gui]``: open napari with a stack (default: the synthetic sample) and the docks.

The docks form one tab group with a vertical tab bar (:mod:`napari_unet._qt._dock_layout`).

The files are checked before Qt starts, so a bad path is one line on stderr.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import add_subcommand

SUMMARY = "open napari with the napari-unet docks (the default command)"
DESCRIPTION = (
    "Open napari with a stack (default: the synthetic EM sample) and all napari-unet docks."
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_subcommand(sub, "gui", run, SUMMARY, DESCRIPTION)
    p.add_argument("image", nargs="?", help="TIFF stack to open (default: the synthetic EM sample)")
    p.add_argument("--labels", help="a labels TIFF to open with the image")
    p.add_argument(
        "--screenshot",
        metavar="PNG",
        help="save a screenshot of the window to PNG and exit (for docs and smoke tests)",
    )


def run(args: argparse.Namespace) -> int:
    from ._common import open_image

    image = open_image(args.image, as_labels=None) if args.image else None
    labels = open_image(args.labels, "--labels", as_labels=True) if args.labels else None
    if image is not None and labels is not None:
        from ..io import check_same_shape

        check_same_shape(labels.shape, image.shape)

    import napari

    from .._napari.reader import layer_data_from_tiff
    from .._qt._dock_layout import open_docks

    viewer = napari.Viewer(title="napari-unet")
    if image is None:
        viewer.open_sample("napari-unet", "synthetic_em")
    else:
        for td, as_labels in ((image, False), (labels, True)):
            if td is None:
                continue
            data, meta, kind = layer_data_from_tiff(td, as_labels=as_labels)
            getattr(viewer, f"add_{kind}")(data, **meta)
    open_docks(viewer)  # one tab group, every title readable (vertical tabs)
    if args.screenshot:
        from qtpy.QtCore import QTimer

        def _shoot() -> None:
            viewer.window._qt_window.grab().save(str(Path(args.screenshot)))
            viewer.close()

        viewer.window._qt_window.resize(1500, 950)
        QTimer.singleShot(1500, _shoot)
    napari.run()
    return 0
