"""Class names, colours and the named class presets of an annotation.

Class ``k`` (1..K) is channel ``k-1`` of the network; ``0`` means unlabelled.
The GUI, the trainer and the checkpoints take their defaults from here.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "CLASS_PRESETS",
    "DEFAULT_CLASS_NAMES",
    "PALETTE",
    "default_class_names",
    "default_colors",
    "reconcile_classes",
]

#: the EM membrane default (the synthetic sample and ISBI 2012 use it)
DEFAULT_CLASS_NAMES: tuple[str, ...] = ("membrane", "cell")

#: default colours of classes 1..K (class k gets PALETTE[(k - 1) % len])
PALETTE: tuple[str, ...] = (
    "#ff3b30",  # red
    "#1e90ff",  # blue
    "#34c759",  # green
    "#ffcc00",  # yellow
    "#af52de",  # purple
    "#00c7be",  # teal
    "#ff9500",  # orange
    "#8e8e93",  # grey
)

#: named class presets offered by the Annotate dock
CLASS_PRESETS: dict[str, tuple[str, ...]] = {
    "EM membranes (membrane, cell)": DEFAULT_CLASS_NAMES,
    "Mitochondria (background, mitochondria)": ("background", "mitochondria"),
}


def default_colors(n: int) -> list[str]:
    """Colours of classes 1..n."""
    return [PALETTE[i % len(PALETTE)] for i in range(int(n))]


def default_class_names(n: int) -> list[str]:
    """``n`` class names: the EM default for two classes, else ``class 1..n``."""
    n = int(n)
    if n == len(DEFAULT_CLASS_NAMES):
        return list(DEFAULT_CLASS_NAMES)
    return [f"class {k}" for k in range(1, n + 1)]


def reconcile_classes(
    n_classes: int,
    names: Sequence[str] | None = None,
    colors: Sequence[str] | None = None,
) -> tuple[list[str], list[str]]:
    """Names and colours for exactly ``n_classes`` classes.

    Given names and colours are kept in order; missing ones are filled with
    the defaults and extra ones dropped.
    """
    n = int(n_classes)
    got = [str(s) for s in (names or [])][:n]
    fill = default_class_names(n)
    out_names = got + [
        fill[k] if fill[k] not in got else f"class {k + 1}" for k in range(len(got), n)
    ]
    got_c = [str(c) for c in (colors or [])][:n]
    out_colors = got_c + default_colors(n)[len(got_c) :]
    return out_names, out_colors
