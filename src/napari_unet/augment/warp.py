"""The elastic deformation of the U-Net paper and the resampling kernels of augmentation warps.

Fields are ``(N, 2, H, W)`` pixel displacements (``dy``, ``dx``; backward, mirrored borders);
integer targets keep exactly their values (nearest or index gather), floating ones go bilinear.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..checks import check_float, check_int

__all__ = ["elastic_deform", "random_displacement"]

MODES = {0: "nearest", 1: "bilinear", 3: "bicubic"}
# torch's gather has no kernels for the unsigned types above uint8: gather the bits
_GATHER_VIEW = {torch.uint16: torch.int16, torch.uint32: torch.int32, torch.uint64: torch.int64}

Array = np.ndarray | torch.Tensor


@functools.lru_cache(maxsize=64)
def _cubic_matrix_cpu(n_in: int, n_out: int) -> torch.Tensor:
    """``(n_out, n_in)`` matrix of 1D bicubic upsampling (torch's, align_corners=True)."""
    eye = torch.eye(n_in, dtype=torch.float64).reshape(n_in, 1, n_in, 1)
    cols = F.interpolate(eye, size=(n_out, 1), mode="bicubic", align_corners=True)
    return cols.reshape(n_in, n_out).T.contiguous()


def _cubic_matrix(n_in: int, n_out: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return _cubic_matrix_cpu(n_in, n_out).to(device=device, dtype=dtype)


def _upsample_field(coarse: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bicubic (align_corners=True) upsampling of ``(N, 2, g, g)`` to ``(N, 2, H, W)``.

    Bicubic interpolation is separable and linear, so it is two small matrix
    products ``Wy @ C @ Wx.T``: the same numbers as ``F.interpolate(coarse,
    (H, W), mode="bicubic", align_corners=True)`` at a fraction of the cost.
    """
    gy, gx = coarse.shape[-2:]
    wy = _cubic_matrix(gy, height, coarse.device, coarse.dtype)
    wx = _cubic_matrix(gx, width, coarse.device, coarse.dtype)
    return torch.matmul(torch.matmul(wy, coarse), wx.T)


def resolve_generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    if generator is not None:
        if seed is not None:
            raise ValueError("pass either seed or generator, not both")
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        return generator
    if seed is None:
        return torch.default_generator  # torch.manual_seed() makes it reproducible
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    return torch.Generator().manual_seed(int(seed))


def grid_factors(
    n: int,
    out_hw: tuple[int, int],
    in_hw: tuple[int, int],
    device: torch.device,
    affine: torch.Tensor | None = None,
    coarse: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors ``(T, K)`` of the grid_sample grid of a warp: ``grid = (T @ K).view(n, h, w, 2)``.

    The grid is float32, normalised, x first.  The source pixel of output
    pixel ``(y, x)`` of sample ``k`` is ``affine[k] @ (y, x, 1)`` (rows: source
    ``y``, source ``x``; identity when ``None``) plus the bicubic upsampling
    of the coarse ``(dy, dx)`` field ``coarse[k]`` (pixels, ``(n, 2, g, g)``;
    none when ``None``).

    Everything that depends on the output row is folded into the small
    ``(n, h, R)`` matrix ``T`` and everything that depends on the column into
    the ``(R, 2 w)`` matrix ``K`` (``R = 4 + 2 g``), so the whole grid, already
    normalised and interleaved, is one matrix product on the target device.
    """
    h, w = out_hw
    height, width = in_hw
    f64 = torch.float64
    scale = torch.tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)], dtype=f64)
    if affine is None:
        affine = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=f64).expand(n, 2, 3)
    affine = affine.to(f64)[:, [1, 0]]  # grid channel order: x, then y
    ys = torch.arange(h, dtype=f64)
    xs = torch.arange(w, dtype=f64)
    eye2 = torch.eye(2, dtype=f64)
    # rows "one_c": constant and y-dependent part of channel c
    t_one = (affine[:, None, :, 0] * ys[None, :, None] + affine[:, None, :, 2]) * scale - 1.0
    k_one = eye2[:, None, :].expand(2, w, 2).reshape(2, 2 * w)
    # rows "xlin_c": x-dependent part of channel c
    t_xlin = (affine[:, :, 1] * scale)[:, None, :].expand(n, h, 2)
    k_xlin = (xs[None, :, None] * eye2[:, None, :]).reshape(2, 2 * w)
    t_parts, k_parts = [t_one, t_xlin], [k_one, k_xlin]
    if coarse is not None:
        g_y, g_x = coarse.shape[-2:]
        wy = _cubic_matrix_cpu(g_y, h)
        wx = _cubic_matrix_cpu(g_x, w)
        c = coarse.to(device="cpu", dtype=f64)[:, [1, 0]] * scale.view(1, 2, 1, 1)
        t_parts.append(torch.einsum("yi,ncij->nyjc", wy, c).reshape(n, h, 2 * g_x))
        k_parts.append(torch.einsum("xj,cd->jcxd", wx, eye2).reshape(2 * g_x, 2 * w))
    t = torch.cat(t_parts, dim=2).to(device=device, dtype=torch.float32)
    k = torch.cat(k_parts, dim=0).to(device=device, dtype=torch.float32)
    return t, k


def warp_many(
    items: Sequence[tuple[torch.Tensor, int]], factors: tuple[torch.Tensor, torch.Tensor]
) -> list[torch.Tensor]:
    """Resample every ``(x, order)`` of ``items`` (all (N, C, H, W)) along one grid.

    On the CPU the batch is processed a few samples at a time (about one
    512 x 512 grid per chunk), so that the grid and the images stay in cache;
    on a GPU the whole batch goes at once.
    """
    t, k = factors
    n, h = t.shape[:2]
    w = k.shape[1] // 2
    chunk = n if t.device.type != "cpu" else max(1, 2**18 // max(h * w, 1))
    if chunk >= n:
        grid = torch.matmul(t, k).view(n, h, w, 2)
        return [_warp(x, grid, order) for x, order in items]
    outs: list[torch.Tensor] = []
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        grid = torch.matmul(t[start:stop], k).view(stop - start, h, w, 2)
        for j, (x, order) in enumerate(items):
            part = _warp(x[start:stop], grid, order)
            if start == 0:
                outs.append(part.new_empty((n, *part.shape[1:])))
            outs[j][start:stop] = part
    return outs


def _reflect(coord: torch.Tensor, size: int) -> torch.Tensor:
    """Mirror pixel coordinates into ``[0, size - 1]`` (as grid_sample's reflection, align_corners=True)."""
    if size == 1:
        return torch.zeros_like(coord)
    span = float(size - 1)
    coord = coord.abs()
    flips = torch.floor(coord / span)
    extra = coord - flips * span
    odd = torch.remainder(flips, 2.0) == 1
    return torch.where(odd, span - extra, extra).clamp_(0.0, span)


def _gather_nearest(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour resampling by an index gather; exact for any integer dtype."""
    n, c, height, width = x.shape
    h, w = grid.shape[1:3]
    g = grid if grid.device.type == "mps" else grid.to(torch.float64)  # no float64 on MPS
    sx = (g[..., 0] + 1.0) * (0.5 * (width - 1))
    sy = (g[..., 1] + 1.0) * (0.5 * (height - 1))
    iy = torch.round(_reflect(sy, height)).long()
    ix = torch.round(_reflect(sx, width)).long()
    index = (iy * width + ix).reshape(n, 1, h * w).expand(n, c, h * w)
    view = _GATHER_VIEW.get(x.dtype)
    src = x.view(view) if view is not None else x
    out = torch.gather(src.reshape(n, c, -1), 2, index).reshape(n, c, h, w)
    return out.view(x.dtype) if view is not None else out


def _exact_float_dtype(x: torch.Tensor) -> torch.dtype | None:
    """A float dtype holding every value of the integer tensor ``x`` exactly (None: none does)."""
    if x.dtype in _GATHER_VIEW:  # few kernels for these: always the exact index gather
        return None
    if x.dtype == torch.bool or x.element_size() <= 2:
        return torch.float32
    if x.numel() == 0:
        return torch.float32
    lo, hi = torch.aminmax(x)
    big = max(abs(int(lo)), abs(int(hi)))
    if big <= 2**24:
        return torch.float32
    if big <= 2**53 and x.device.type != "mps":
        return torch.float64
    return None


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _round_to(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Cast an interpolated float tensor back to ``dtype`` (round and clip for integers)."""
    if dtype.is_floating_point:
        return x.to(dtype)
    if dtype == torch.bool:
        return x > 0.5
    info = torch.iinfo(dtype)
    x = torch.round(x).clamp_(info.min, info.max)
    return x.to(dtype)


def _warp(x: torch.Tensor, grid: torch.Tensor, order: int) -> torch.Tensor:
    """Resample ``x`` (N, C, H, W) along ``grid`` (N, h, w, 2) with spline ``order``; keep the dtype.

    Nearest (``order=0``) on integer data samples an exact float copy (or
    gathers indices when no float type holds the values), so the output
    values are always input values.
    """
    if order == 0 and not x.dtype.is_floating_point:
        fdtype = _exact_float_dtype(x)
        if fdtype is None:
            return _gather_nearest(x, grid)
    else:
        fdtype = _compute_dtype(x.dtype)
    src = x if x.dtype == fdtype else x.to(fdtype)
    g = grid if grid.dtype == fdtype else grid.to(fdtype)
    out = F.grid_sample(src, g, mode=MODES[order], padding_mode="reflection", align_corners=True)
    if out.dtype == x.dtype:
        return out
    if order == 0:
        return out.to(x.dtype)
    return _round_to(out, x.dtype)


def _to_tensor(a: Any, name: str, device: torch.device | None) -> tuple[torch.Tensor, bool]:
    """(tensor, was_numpy)."""
    if isinstance(a, torch.Tensor):
        return (a if device is None else a.to(device)), False
    if isinstance(a, np.ndarray):
        if a.dtype.kind not in "biuf":
            raise TypeError(f"{name} must be a numeric array, got dtype {a.dtype}")
        arr = np.ascontiguousarray(a)
        if not arr.dtype.isnative:
            arr = arr.astype(arr.dtype.newbyteorder("="))
        t = torch.from_numpy(arr)
        return (t if device is None else t.to(device)), True
    raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(a).__name__}")


def _from_tensor(t: torch.Tensor, like: Any) -> Array:
    """``t`` as the kind of ``like``: a numpy array, or a tensor on ``like``'s device."""
    if isinstance(like, np.ndarray):
        return t.detach().cpu().numpy()
    return t.to(like.device)


def random_displacement(
    shape: Sequence[int],
    n: int = 1,
    grid: int = 3,
    sigma: float = 10.0,
    generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """A dense random elastic displacement field, as in the U-Net paper.

    Parameters
    ----------
    shape : (H, W)
        Size of the field.
    n : int, default 1
        Number of independent fields (batch size).
    grid : int, default 3
        Number of control points per side (``>= 2``); they sit on the corners
        and evenly in between (``align_corners=True``).
    sigma : float, default 10.0
        Standard deviation in pixels of each displacement component (``dy`` and
        ``dx`` independent) at the control points.
    generator : torch.Generator, optional
        Source of randomness; the control-point vectors are drawn on the
        generator's device (the CPU by default, so CPU-seeded runs give the same
        field on every device) and then moved to ``device``.  ``None`` uses
        torch's global generator.
    device : str or torch.device, optional
        Device of the returned field (default: the CPU).
    dtype : torch.dtype, default torch.float32

    Returns
    -------
    torch.Tensor
        ``(n, 2, H, W)`` displacements in pixels, channel 0 = ``dy``,
        channel 1 = ``dx``; bicubic interpolation of the control points (exactly
        the values of ``F.interpolate(coarse, (H, W), mode="bicubic",
        align_corners=True)``), so the field equals the drawn vectors at the
        control points.  With the default float32 ``dtype``, a generator in the
        same state gives the field :func:`elastic_deform` uses.
    """
    if len(shape) != 2:
        raise ValueError(f"shape must be (H, W), got {tuple(shape)}")
    height, width = (check_int("shape", s, 1) for s in shape)
    n = check_int("n", n, 1)
    grid = check_int("grid", grid, 2)
    sigma = check_float("sigma", sigma)
    gen = resolve_generator(None, generator)
    coarse = torch.randn((n, 2, grid, grid), generator=gen, device=gen.device, dtype=dtype)
    coarse = (coarse * sigma).to(device=device or "cpu")
    return _upsample_field(coarse, height, width)


def as_nchw(
    x: torch.Tensor, image_ndim: int, name: str, hw: tuple[int, int], n: int
) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Reshape a target to (N, C, H, W); return it and its original shape."""
    shape = tuple(x.shape)
    if image_ndim == 2:
        if x.ndim != 2:
            raise ValueError(
                f"{name}: with a 2D (H, W) image the targets must be 2D too, got shape {shape}"
            )
        x4 = x[None, None]
    else:
        if x.ndim == 3:
            x4 = x[:, None]
        elif x.ndim == 4:
            x4 = x
        else:
            raise ValueError(f"{name} must be (N, H, W) or (N, C, H, W), got shape {shape}")
        if x4.shape[0] != n:
            raise ValueError(f"{name} has batch size {x4.shape[0]}, the image {n}")
    if tuple(x4.shape[-2:]) != hw:
        raise ValueError(f"{name} is {tuple(x4.shape[-2:])} pixels, the image {hw}")
    return x4, shape


def target_batches(
    targets: Sequence[Any],
    image_ndim: int,
    hw: tuple[int, int],
    n: int,
    device: torch.device,
    torch_only: bool = False,
) -> list[tuple[torch.Tensor, tuple[int, ...]] | None]:
    """Each target as an (N, C, H, W) tensor on ``device`` with its original shape (None stays)."""
    out: list[tuple[torch.Tensor, tuple[int, ...]] | None] = []
    for i, t in enumerate(targets):
        if t is None:
            out.append(None)
            continue
        if torch_only and not isinstance(t, torch.Tensor):
            raise TypeError(f"target {i} must be a torch.Tensor, got {type(t).__name__}")
        tt, _ = _to_tensor(t, f"target {i}", device)
        out.append(as_nchw(tt, image_ndim, f"target {i}", hw, n))
    return out


def _image_batch(image: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``image`` as a tensor and as an (N, C, H, W) view of it."""
    img, _ = _to_tensor(image, "image", None)
    if img.ndim == 2:
        img4 = img[None, None]
    elif img.ndim == 4:
        img4 = img
    else:
        raise ValueError(
            f"image must be (H, W) or (N, C, H, W), got shape {tuple(img.shape)}; "
            "add the missing axes, e.g. image[None] for (1, C, H, W)"
        )
    if img4.dtype.is_complex:
        raise TypeError("complex images are not supported")
    return img, img4


def elastic_deform(
    image: Array,
    *targets: Array | None,
    grid: int = 3,
    sigma: float = 10.0,
    order: int = 3,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> Array | tuple[Array | None, ...]:
    """Elastically deform an image and its targets with one random field.

    Parameters
    ----------
    image : np.ndarray or torch.Tensor
        ``(H, W)`` or ``(N, C, H, W)``; any numeric dtype, on any device.  Each
        of the ``N`` batch elements gets its own random field.
    *targets : np.ndarray or torch.Tensor or None
        Arrays deformed with the image's field: ``(H, W)`` for a 2D image;
        ``(N, H, W)`` or ``(N, C, H, W)`` for a batch.  Integer (or boolean)
        targets, e.g. labels with ``0`` = unlabelled, are resampled by nearest
        neighbour and keep exactly their values; floating targets (weight
        maps) bilinearly.  ``None`` is passed through.
    grid : int, default 3
        Control points per side of the coarse grid (``>= 2``).
    sigma : float, default 10.0
        Standard deviation in pixels of the control-point displacements.
        ``0`` returns unchanged copies.
    order : {3, 1, 0}, default 3
        Interpolation of the image: 3 bicubic, 1 bilinear, 0 nearest.  Integer
        images are interpolated in float32, then rounded and clipped to their
        dtype's range.
    seed : int, optional
        Seed of a fresh CPU generator (same seed, same result).
    generator : torch.Generator, optional
        Generator to draw from instead (mutually exclusive with ``seed``).
        With neither, torch's global generator is used.

    Returns
    -------
    np.ndarray or torch.Tensor, or tuple
        The deformed image alone when no targets are given, otherwise the tuple
        ``(image, *targets)``; every output has its input's type (numpy or
        torch), dtype, shape and device.
    """
    if order not in MODES:
        raise ValueError(f"order must be 0 (nearest), 1 (bilinear) or 3 (bicubic), got {order!r}")
    grid = check_int("grid", grid, 2)
    sigma = check_float("sigma", sigma)
    gen = resolve_generator(seed, generator)

    img, img4 = _image_batch(image)
    n = img4.shape[0]
    hw = (img4.shape[-2], img4.shape[-1])
    tgts = target_batches(targets, img.ndim, hw, n, img4.device)

    if sigma == 0.0 or img4.numel() == 0:
        out_img = img.clone()
        outs = [None if t is None else t[0].reshape(t[1]).clone() for t in tgts]
    else:
        coarse = torch.randn((n, 2, grid, grid), generator=gen, device=gen.device) * sigma
        items = [(img4, order)] + [
            (t[0], 1 if t[0].dtype.is_floating_point else 0) for t in tgts if t is not None
        ]
        warped = iter(warp_many(items, grid_factors(n, hw, hw, img4.device, coarse=coarse)))
        out_img = next(warped).reshape(img.shape)
        outs = [None if t is None else next(warped).reshape(t[1]) for t in tgts]

    result_img = _from_tensor(out_img, image)
    if not targets:
        return result_img
    results: list[Array | None] = [result_img]
    for t, o in zip(targets, outs):
        results.append(None if t is None or o is None else _from_tensor(o, t))
    return tuple(results)
