"""The geometry of augmented samples applied: exact crops, flips and quarter turns, or one warp.

A sample with a free rotation or an elastic field is resampled once along all its transforms.
"""

from __future__ import annotations

import math

import torch

from ..dihedral import flip_rotate
from .warp import grid_factors, warp_many

__all__ = ["apply_geometry"]


def apply_geometry(
    arrays: list[torch.Tensor],
    orders: list[int],
    p: dict[str, torch.Tensor],
    out_hw: tuple[int, int],
) -> list[torch.Tensor]:
    """Crop, flip, rotate and deform every ``(N, C, H, W)`` tensor of ``arrays`` as drawn in ``p``.

    ``orders`` are the interpolation orders of the arrays (used where a sample
    is resampled); the outputs are ``(N, C, h, w)`` with the inputs' dtypes.
    """
    h, w = out_hw
    n = arrays[0].shape[0]
    in_hw = (arrays[0].shape[-2], arrays[0].shape[-1])
    device = arrays[0].device
    outs = [torch.empty((n, a.shape[1], h, w), dtype=a.dtype, device=device) for a in arrays]
    warp = p["warp"]
    # samples without a rotation or an elastic field: exact crop / flip / rot90
    for i in torch.nonzero(~warp).flatten().tolist():
        oy, ox = int(p["offset"][i, 0]), int(p["offset"][i, 1])
        fy, fx, k = bool(p["flip_y"][i]), bool(p["flip_x"][i]), int(p["k"][i])
        for a, o in zip(arrays, outs):
            o[i] = flip_rotate(a[i, :, oy : oy + h, ox : ox + w], fy, fx, k)
    if bool(warp.any()):
        idx = torch.nonzero(warp).flatten()
        idx_dev = idx.to(device)
        sub = idx.numel() < n  # no copies of the inputs when all samples warp
        items = [(a.index_select(0, idx_dev) if sub else a, o) for a, o in zip(arrays, orders)]
        warped = warp_many(items, _sample_grid(p, idx, out_hw, in_hw, device))
        for j, res in enumerate(warped):
            if sub:
                outs[j][idx_dev] = res
            else:
                outs[j] = res
    return outs


def _sample_grid(
    p: dict[str, torch.Tensor],
    idx: torch.Tensor,
    out_hw: tuple[int, int],
    in_hw: tuple[int, int],
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sampling-grid factors (:func:`~.warp.grid_factors`) of the warped samples ``idx``.

    Source pixel ``src = c_in + R(angle) @ D @ (q - c_out) + d(q)`` of output
    pixel ``q = (y, x)``, with ``D`` the sample's flip / rot90 (the map of
    :func:`~napari_unet.dihedral.flip_rotate`), ``c_out`` the output centre,
    ``c_in`` the crop centre in the input and ``d`` the elastic field.
    """
    f64 = torch.float64
    h, w = out_hw
    m = idx.numel()
    flip_y = torch.tensor([[-1.0, 0.0], [0.0, 1.0]], dtype=f64)
    flip_x = torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=f64)
    rot = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=f64)  # torch.rot90(k=1), on (y, x)
    affine = torch.empty((m, 2, 3), dtype=f64)
    c_out = torch.tensor([(h - 1) / 2.0, (w - 1) / 2.0], dtype=f64)
    for j, i in enumerate(idx.tolist()):
        d = torch.eye(2, dtype=f64)
        if bool(p["flip_y"][i]):
            d = d @ flip_y
        if bool(p["flip_x"][i]):
            d = d @ flip_x
        d = d @ torch.linalg.matrix_power(rot, int(p["k"][i]))
        ang = float(p["angle"][i])
        ca, sa = math.cos(ang), math.sin(ang)
        mat = torch.tensor([[ca, -sa], [sa, ca]], dtype=f64) @ d
        c_in = p["offset"][i].to(f64) + c_out
        affine[j, :, :2] = mat
        affine[j, :, 2] = c_in - mat @ c_out
    coarse = None
    if "coarse" in p and bool(p["elastic"][idx].any()):
        coarse = p["coarse"][idx]
    return grid_factors(m, out_hw, in_hw, device, affine=affine, coarse=coarse)
