"""The U-Net's source as one self-contained Python file, shipped in bioimage.io packages.

:func:`architecture_source` joins the top-level code of ``napari_unet.checks`` and
``napari_unet.model`` (the argument checks and the :class:`~napari_unet.model.UNet`), so a
bioimage.io consumer builds the net with ``UNet(**kwargs)`` without napari-unet installed.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

from . import __version__

__all__ = ["architecture_source"]

#: modules of napari_unet whose source makes up the architecture file, dependencies first
_ARCHITECTURE_MODULES = ("checks", "model")
_IMPORT = ("import ", "from ")


def _module_body(name: str) -> tuple[list[str], list[str]]:
    """The top-level statements of ``napari_unet.<name>`` without its docstring, ``__all__``,
    ``from __future__`` and relative imports (the latter returned as their module names)."""
    spec = importlib.util.find_spec(f"{__package__}.{name}")
    if spec is None or spec.origin is None:
        raise RuntimeError(f"cannot find the source of napari_unet.{name}")
    source = Path(spec.origin).read_text("utf-8")
    lines = source.splitlines()
    tree = ast.parse(source)
    kept: list[str] = []
    relative: list[str] = []
    for i, node in enumerate(tree.body):
        if i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # the docstring
        if isinstance(node, ast.ImportFrom) and (node.module == "__future__" or node.level):
            if node.level:
                relative.append(str(node.module))
            continue
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            continue
        first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
        text = "\n".join(lines[first - 1 : node.end_lineno])
        if kept and isinstance(node, ast.Import | ast.ImportFrom) and kept[-1].startswith(_IMPORT):
            kept[-1] += "\n" + text  # consecutive imports stay one block
        else:
            kept.append(text)
    return kept, relative


def architecture_source() -> str:
    """One self-contained Python file defining ``UNet`` (napari_unet.model) and what it uses."""
    parts = [
        f'"""The U-Net of napari-unet {__version__} (Ronneberger et al. 2015), for bioimage.io.\n\n'
        "Generated from napari_unet.checks and napari_unet.model; build it with\n"
        "``UNet(**kwargs)`` using the kwargs of the model description.\n"
        '"""\n\nfrom __future__ import annotations\n'
    ]
    for name in _ARCHITECTURE_MODULES:
        body, relative = _module_body(name)
        missing = [m for m in relative if m not in _ARCHITECTURE_MODULES]
        if missing:
            raise RuntimeError(
                f"napari_unet.{name} imports napari_unet.{missing[0]}, which the bioimage.io "
                "architecture file does not include"
            )
        parts.append(f"# ---- from napari_unet.{name}\n\n" + "\n\n\n".join(body))
    return "\n\n".join(parts) + "\n"
