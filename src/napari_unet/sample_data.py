"""Sample data: a synthetic EM-like stack with exact labels (demo and test fixture), and ISBI 2012.

Labels follow napari-unet's convention: 1 = membrane, 2 = cell (3 = mitochondrion if asked);
``classes="mitochondria"`` gives the two-class mitochondria task instead (1 = background,
2 = mitochondrion), and ``return_mitochondria=True`` the mitochondrion instances (the same id
through the stack) for per-object scores.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from .classes import DEFAULT_CLASS_NAMES

MEMBRANE = 1
CELL = 2
MITOCHONDRION = 3
CLASS_NAMES = DEFAULT_CLASS_NAMES

#: the sample's class layouts: ``classes=`` -> the names of classes 1..K
SAMPLE_CLASSES: dict[str, tuple[str, ...]] = {
    "membranes": DEFAULT_CLASS_NAMES,
    "membranes+mitochondria": (*DEFAULT_CLASS_NAMES, "mitochondrion"),
    "mitochondria": ("background", "mitochondria"),
}
#: the mitochondrion's class value in each layout
MITOCHONDRION_CLASS: dict[str, int] = {
    "membranes+mitochondria": MITOCHONDRION,
    "mitochondria": 2,
}

#: The EMBL copy of the ISBI 2012 training set (HDF5, as used by torch-em).
ISBI_URL = "https://oc.embl.de/index.php/s/h0TkwqxU0PJDdMd/download"
ISBI_SHA256 = "0e10fe909a1243084d91773470856993b7d40126a12e85f0f1345a7a9e512f29"
ISBI_FILENAME = "isbi2012.h5"


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Low-frequency random field in [0, 1] (Gaussian-filtered white noise)."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=scale, mode="wrap")
    f -= f.min()
    peak = f.max()
    return f / peak if peak > 0 else f


def _voronoi_cells(
    pts: np.ndarray, pix: np.ndarray, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Distance of every pixel to its cell border (the bisector) and its cell id (1..n)."""
    _, idx = cKDTree(pts).query(pix, k=2)
    p1, p2 = pts[idx[:, 0]], pts[idx[:, 1]]
    d1sq = np.sum((pix - p1) ** 2, axis=1)
    d2sq = np.sum((pix - p2) ** 2, axis=1)
    sep = np.sqrt(np.sum((p2 - p1) ** 2, axis=1)) + 1e-9
    border = ((d2sq - d1sq) / (2 * sep)).reshape(shape)
    inst = (idx[:, 0].reshape(shape) + 1).astype(np.int32)
    return border, inst


def _paint_mitochondria(
    img: np.ndarray,
    lab: np.ndarray | None,
    inst: np.ndarray,
    border: np.ndarray,
    thick_field: np.ndarray,
    pts: np.ndarray,
    mito: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    mito_ids: np.ndarray,
) -> None:
    """Dark textured ellipses inside some cells, off the membranes (and class 3 in ``lab``).

    ``mito_ids`` gets mitochondrion ``k``'s id ``k + 1`` on its pixels.
    """
    ny, nx = img.shape
    seeds, shapes, angles, offsets = mito
    for k, cell in enumerate(seeds):
        cy, cx = pts[cell] + offsets[k]
        a, b = shapes[k]
        c, s = np.cos(angles[k]), np.sin(angles[k])
        r = 2 * int(max(a, b)) + 2
        y0, y1 = max(0, int(cy) - r), min(ny, int(cy) + r + 1)
        x0, x1 = max(0, int(cx) - r), min(nx, int(cx) + r + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        dy = np.arange(y0, y1)[:, None] - cy
        dx = np.arange(x0, x1)[None, :] - cx
        u = (c * dy + s * dx) / a
        v = (-s * dy + c * dx) / b
        inside = (u**2 + v**2 <= 1.0) & (inst[y0:y1, x0:x1] == cell + 1)
        # keep mitochondria off the membrane
        inside &= border[y0:y1, x0:x1] > thick_field[y0:y1, x0:x1] + 2.0
        if not inside.any():
            continue
        cristae = 0.06 * np.sin(2.2 * u * np.pi * 2)
        img[y0:y1, x0:x1][inside] = (0.36 + cristae)[inside]
        mito_ids[y0:y1, x0:x1][inside] = k + 1
        if lab is not None:
            lab[y0:y1, x0:x1][inside] = MITOCHONDRION


def _draw_mitochondria(
    rng: np.random.Generator, n_cells: int, cell_size: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The cells that hold a mitochondrion, and its axes, angle and offset from the cell seed."""
    seeds = rng.choice(n_cells, size=max(1, n_cells // 4), replace=False)
    shapes = rng.uniform(0.18, 0.32, size=(len(seeds), 2)) * cell_size
    angles = rng.uniform(0, np.pi, size=len(seeds))
    offsets = rng.normal(0, 0.12 * cell_size, size=(len(seeds), 2))
    return seeds, shapes, angles, offsets


def _section(
    rng: np.random.Generator,
    cells: tuple[np.ndarray, np.ndarray],
    thick_field: np.ndarray,
    illum: np.ndarray,
    noise: float,
    mito: tuple[np.ndarray, ...] | None,
    pts: np.ndarray,
    mitochondria_class: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One section: the uint8 image, its labels, its cell ids (0 on membranes), its mitochondria ids."""
    border, inst = cells
    membrane = border < thick_field
    inst[membrane] = 0
    lab = np.where(membrane, MEMBRANE, CELL).astype(np.uint8)
    # intensities: bright cytoplasm with texture, dark membranes
    texture = ndimage.gaussian_filter(rng.standard_normal(border.shape), 1.5)
    img = 0.68 + 0.05 * texture
    edge = np.clip(1.0 - border / (thick_field + 1.0), 0.0, 1.0)
    img = img - 0.45 * edge**1.5
    mito_ids = np.zeros(border.shape, np.int32)
    if mito is not None:
        paint_labels = lab if mitochondria_class else None
        _paint_mitochondria(img, paint_labels, inst, border, thick_field, pts, mito, mito_ids)
    img = img * illum
    img = ndimage.gaussian_filter(img, 0.8)
    img = img + rng.normal(0, noise, size=img.shape)
    return np.clip(img * 255.0, 0, 255).astype(np.uint8), lab, inst, mito_ids


def synthetic_em(
    shape: tuple[int, ...] = (16, 512, 512),
    seed: int = 0,
    *,
    cell_size: float = 40.0,
    mitochondria: bool = True,
    mitochondria_class: bool = False,
    noise: float = 0.08,
    return_instances: bool = False,
    classes: str | None = None,
    return_mitochondria: bool = False,
) -> tuple[np.ndarray, ...]:
    """Make a synthetic EM-like stack and its exact ground truth.

    Cells are a Voronoi tessellation whose seeds drift slowly through the
    stack (neighbouring sections are correlated), with dark membranes of
    varying thickness along the borders, mitochondria-like dark textured
    blobs, uneven illumination, blur and noise.

    Parameters
    ----------
    shape
        ``(Z, Y, X)`` or ``(Y, X)``.
    seed
        The same seed always gives the same stack.
    cell_size
        Typical cell diameter in pixels.
    mitochondria
        Add dark textured mitochondria-like blobs inside some cells.
    mitochondria_class
        Label mitochondria as class 3 instead of "cell" (the same as
        ``classes="membranes+mitochondria"``).
    noise
        Standard deviation of the additive noise (image range 0..1).
    return_instances
        Also return the cell instance ids (0 on membranes).
    classes
        A key of ``SAMPLE_CLASSES``: ``"membranes"`` (1 = membrane, 2 = cell; the
        default), ``"membranes+mitochondria"`` (3 = mitochondrion) or
        ``"mitochondria"`` (1 = background, 2 = mitochondrion: the two-class
        mitochondria task, named as the Annotate preset).
    return_mitochondria
        Also return the mitochondrion instance ids (0 elsewhere; one id per
        mitochondrion through the whole stack, it moves with its cell).

    Returns
    -------
    image : uint8 array of ``shape``
    labels : uint8 array of ``shape`` with the values of ``classes``
    instances : int32 array of ``shape`` (only with ``return_instances``)
    mitochondria : int32 array of ``shape`` (only with ``return_mitochondria``)
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ValueError(f"shape must be (Y, X) or (Z, Y, X) with positive sizes, got {shape}")
    if cell_size <= 2:
        raise ValueError(f"cell_size must be larger than 2 pixels, got {cell_size}")
    layout = _class_layout(classes, mitochondria, mitochondria_class)
    squeeze = len(shape) == 2
    nz, ny, nx = (1, *shape) if squeeze else shape
    rng = np.random.default_rng(seed)

    n_cells = max(2, round(ny * nx / (0.8 * cell_size**2)))
    # seeds on a jittered grid so cells have similar sizes; they drift through z
    base = rng.uniform(0, 1, size=(n_cells, 2)) * [ny, nx]
    drift = rng.normal(0, 0.6, size=(n_cells, 2))
    # membrane half-thickness per pair is smooth in space: from a field
    thick_field = 0.9 + 1.8 * _smooth_field(rng, (ny, nx), scale=cell_size)
    illum = 0.8 + 0.35 * _smooth_field(rng, (ny, nx), scale=max(ny, nx) / 4)
    yy, xx = np.mgrid[0:ny, 0:nx]
    pix = np.stack([yy.ravel(), xx.ravel()], axis=1).astype(np.float64)

    image = np.empty((nz, ny, nx), np.uint8)
    labels = np.empty((nz, ny, nx), np.uint8)
    instances = np.empty((nz, ny, nx), np.int32)
    mito_ids = np.empty((nz, ny, nx), np.int32)
    mito = _draw_mitochondria(rng, n_cells, cell_size)  # drawn always: the rest stays the same
    if not mitochondria:
        mito = None
    for z in range(nz):
        pts = base + drift * z
        pts[:, 0] %= ny
        pts[:, 1] %= nx
        cells = _voronoi_cells(pts, pix, (ny, nx))
        image[z], labels[z], instances[z], mito_ids[z] = _section(
            rng, cells, thick_field, illum, noise, mito, pts, layout != "membranes"
        )

    if layout == "mitochondria":
        labels = np.where(labels == MITOCHONDRION, 2, 1).astype(np.uint8)
    out = [image, labels]
    if return_instances:
        out.append(instances)
    if return_mitochondria:
        out.append(mito_ids)
    return tuple(a[0] for a in out) if squeeze else tuple(out)


def _class_layout(classes: str | None, mitochondria: bool, mitochondria_class: bool) -> str:
    """The checked ``classes`` key (``mitochondria_class`` is the older spelling)."""
    if classes is None:
        return "membranes+mitochondria" if mitochondria_class else "membranes"
    if classes not in SAMPLE_CLASSES:
        raise ValueError(f"classes must be one of {', '.join(SAMPLE_CLASSES)}, got {classes!r}")
    if mitochondria_class and classes == "membranes":
        raise ValueError('mitochondria_class=True contradicts classes="membranes"')
    if classes != "membranes" and not mitochondria:
        raise ValueError(f"classes={classes!r} needs mitochondria=True")
    return classes


# --------------------------------------------------------------------------- ISBI 2012


def isbi_cache_dir() -> Path:
    """Where the ISBI download is cached (``$NAPARI_UNET_DATA`` or pooch's OS cache)."""
    env = os.environ.get("NAPARI_UNET_DATA")
    if env:
        return Path(env)
    import pooch

    return Path(pooch.os_cache("napari-unet"))


def _find_dataset(h5: Any, want: tuple[str, ...]) -> Any:
    found: list[Any] = []

    def visit(name: str, obj: Any) -> None:
        if hasattr(obj, "shape") and len(obj.shape) == 3 and all(w in name.lower() for w in want):
            found.append(obj)

    h5.visititems(visit)
    return found[0] if found else None


def load_isbi2012(
    *,
    url: str = ISBI_URL,
    known_hash: str | None = ISBI_SHA256,
    cache_dir: str | os.PathLike | None = None,
    progressbar: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Download (once) and load the ISBI 2012 training stack.

    Returns
    -------
    image : (30, 512, 512) uint8
    labels : (30, 512, 512) uint8 in napari-unet's convention: 1 = membrane, 2 = cell

    Raises
    ------
    RuntimeError
        If the download fails or the file does not match its checksum, with
        the URL in the message.
    """
    import h5py
    import pooch

    folder = Path(cache_dir) if cache_dir is not None else isbi_cache_dir()
    try:
        fname = pooch.retrieve(
            url,
            known_hash=f"sha256:{known_hash}" if known_hash else None,
            fname=ISBI_FILENAME,
            path=folder,
            progressbar=progressbar,
        )
    except Exception as exc:
        raise RuntimeError(f"could not download the ISBI 2012 data from {url}: {exc}") from exc
    with h5py.File(fname, "r") as h5:
        raw = _find_dataset(h5, ("raw",))
        lab = _find_dataset(h5, ("membrane",))
        if raw is None or lab is None:
            raise RuntimeError(f"{fname}: no raw/membrane datasets found in the ISBI file")
        image = np.asarray(raw[...])
        membranes = np.asarray(lab[...])
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    # The challenge files use 255 inside cells and 0 on membranes; other copies
    # flag membranes instead.  Membranes are the minority class (~22 %) either way.
    positive = membranes > 0
    cells = positive if positive.mean() >= 0.5 else ~positive
    labels = np.where(cells, CELL, MEMBRANE).astype(np.uint8)
    return image, labels
