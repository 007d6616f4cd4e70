"""The one-way architecture of docs/ARCHITECTURE.md, checked on the source files.

The core never imports Qt or napari; a dock never imports another dock; panels import no dock.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "napari_unet"
GUI_ROOTS = {
    "qtpy",
    "PyQt5",
    "PyQt6",
    "PySide2",
    "PySide6",
    "napari",
    "magicgui",
    "superqt",
    "vispy",
}
FRONT_ENDS = ("_qt", "_napari")
#: the ``napari-unet`` command that opens the window is a front end too
GUI_LAUNCHERS = {"cli/gui.py"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str | None = None) -> set[str]:
    """Absolute names of every module ``path`` imports, at any depth (lazy imports too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = (module or _module_name(path)).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _core_files() -> list[Path]:
    return [
        p
        for p in sorted(PACKAGE.rglob("*.py"))
        if p.relative_to(PACKAGE).parts[0] not in FRONT_ENDS
        and p.relative_to(PACKAGE).as_posix() not in GUI_LAUNCHERS
    ]


def _is_shim(path: Path) -> bool:
    """A module that only re-exports names (docstring, imports, ``__all__``)."""
    body = ast.parse(path.read_text(encoding="utf-8")).body
    allowed = (ast.Import, ast.ImportFrom, ast.Expr, ast.Assign, ast.AnnAssign)
    return all(isinstance(node, allowed) for node in body) and not any(
        isinstance(node, ast.Assign)
        and not all(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
        for node in body
    )


def _docks() -> set[str]:
    qt = PACKAGE / "_qt"
    return {
        _module_name(p) for p in qt.glob("*.py") if not p.name.startswith("_") and not _is_shim(p)
    }


@pytest.mark.parametrize("path", _core_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_core_module_imports_no_gui(path: Path) -> None:
    gui = sorted(name for name in _imports(path) if name.split(".")[0] in GUI_ROOTS)
    assert not gui, f"core module {path.name} imports {gui}"


def test_core_imports_no_front_end() -> None:
    bad = {}
    for path in _core_files():
        front = sorted(
            n for n in _imports(path) if n.startswith(("napari_unet._qt", "napari_unet._napari"))
        )
        if front:
            bad[str(path.relative_to(PACKAGE))] = front
    assert not bad, f"core modules import the front ends: {bad}"


def test_no_dock_imports_another_dock() -> None:
    docks = _docks()
    assert {"napari_unet._qt.train", "napari_unet._qt.annotate"} <= docks
    panels = sorted((PACKAGE / "_qt").rglob("*.py"))
    bad = {}
    for path in panels:
        me = _module_name(path)
        hits = sorted(
            d
            for d in docks
            if d != me and any(n == d or n.startswith(d + ".") for n in _imports(path))
        )
        if hits and not _is_shim(path):
            bad[me] = hits
    assert not bad, f"GUI modules import dock modules (talk through _qt._state instead): {bad}"


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    """The import scanner itself finds lazy and relative imports (so the tests above can fail)."""
    fake = tmp_path / "probe.py"
    fake.write_text(
        "def f():\n    from .train import TrainWidget\n    import qtpy.QtCore\n", encoding="utf-8"
    )
    names = _imports(fake, "napari_unet._qt.probe")
    assert "napari_unet._qt.train" in names
    assert "qtpy.QtCore" in names
