"""The ``napari-unet`` command: the window, or a headless subcommand on the Qt-free core.

Each subcommand module has ``add_parser(subparsers)`` and ``run(args)``; user errors are one line.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .. import __version__

#: Subcommand modules (relative to this package), in --help order.
SUBCOMMANDS: tuple[str, ...] = (
    "gui",
    "train",
    "predict",
    "objects",
    "evaluate",
    "export_model",
    "demo",
)


class CLIError(Exception):
    """An error worth one line on stderr and exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-unet",
        description=(
            "U-Net segmentation of EM stacks. Without a command, opens napari with the "
            "synthetic EM sample and the napari-unet docks."
        ),
    )
    parser.add_argument("--version", action="version", version=f"napari-unet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:  # a subcommand not written yet
            if exc.name == f"{__name__}.{name}":
                continue
            raise
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``napari-unet`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        from .gui import run as run_gui

        args = parser.parse_args(["gui", *([] if argv is None else argv)])
        handler = run_gui
    else:
        handler = args.handler
    try:
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        print("napari-unet: interrupted", file=sys.stderr)
        return 130
    except (CLIError, FileNotFoundError, ValueError, RuntimeError, OSError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"napari-unet: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
