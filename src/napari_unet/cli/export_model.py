"""``napari-unet export-model``: a checkpoint as a bioimage.io model package (``.zip``).

Argument parsing and printing only; :mod:`napari_unet.bioimageio_export` writes the package.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import CLIError
from ._common import add_subcommand, open_image
from ._outputs import prepare_output

SUMMARY = "write a checkpoint as a bioimage.io model package (.zip)"

DESCRIPTION = """\
Write a napari-unet checkpoint as a bioimage.io model package (spec 0.5): PyTorch
state-dict weights with the U-Net's source, TorchScript weights, a test input cut from
--image (default: a synthetic EM slice) with its expected output, a cover image, a README,
the normalisation and the class names. bioimage.io consumers (bioimageio.core, ilastik,
deepImageJ, ...) run it without napari-unet; check it with `bioimageio test OUT.zip`.
"""

EPILOG = """\
examples:
  napari-unet export-model --model unet.pt --out unet.zip --image stack.tif
  napari-unet export-model --model unet.pt --out unet.zip --author "A. Person" --license MIT
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_subcommand(sub, "export-model", run, SUMMARY, DESCRIPTION, EPILOG)
    p.add_argument("--model", required=True, metavar="M.pt", help="napari-unet checkpoint")
    p.add_argument("--out", required=True, metavar="OUT.zip", help="package to write")
    p.add_argument(
        "--image",
        metavar="STACK",
        help="stack to cut the test input from: TIFF, OME-Zarr, zarr, N5 or HDF5 "
        "(file.h5:/path); default: a synthetic EM slice",
    )
    p.add_argument(
        "--slice",
        type=int,
        metavar="Z",
        help="slice of --image for the test input (default: middle)",
    )
    p.add_argument("--name", default="", help="model name (default: from the class names)")
    p.add_argument("--description", default="", help="one-paragraph description")
    p.add_argument(
        "--author",
        action="append",
        default=[],
        metavar="NAME",
        help="an author (repeat for several; default: 'napari-unet user')",
    )
    p.add_argument(
        "--license", default="CC-BY-4.0", help="SPDX licence id of the model (default: CC-BY-4.0)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def _image(path: str | None) -> object:
    """The --image array (any input the CLI reads: TIFF, OME-Zarr level 0, zarr, N5, HDF5)."""
    return None if path is None else open_image(path, "--image").data


def run(args: argparse.Namespace) -> int:
    if Path(args.out).suffix.lower() != ".zip":
        raise CLIError(f"--out {args.out}: a bioimage.io package is a .zip file")
    from ..bioimageio_export import PackageInfo, bioimageio_missing, export_bioimageio

    if (missing := bioimageio_missing()) is not None:
        raise CLIError(missing)
    from ..checkpoint import load_checkpoint

    model, metadata = load_checkpoint(args.model)
    image = _image(args.image)
    out = prepare_output(args.out, "--out", overwrite=args.overwrite)
    info = PackageInfo(
        name=args.name,
        description=args.description,
        authors=list(args.author),
        license=args.license,
        z=args.slice,
    )
    written = export_bioimageio(out, model, metadata, image, info)
    print(f"wrote {written} (bioimage.io model; check it with: bioimageio test {written})")
    return 0
