"""The intensity transforms of augmentation (gamma, contrast, brightness, noise), image only.

Their strengths are the :class:`~napari_unet.augment.Augmentation` fields named in INTENSITY_FIELDS.
"""

from __future__ import annotations

import torch

__all__ = ["INTENSITY_FIELDS", "apply_intensity"]

#: the :class:`Augmentation` fields of the intensity transforms (strengths, ``0`` = off),
#: which change the image only
INTENSITY_FIELDS = ("gaussian_noise", "uniform_noise", "brightness", "contrast", "gamma")


def apply_intensity(
    x: torch.Tensor, p: dict[str, torch.Tensor], gaussian_noise: float, uniform_noise: float
) -> torch.Tensor:
    """Gamma, contrast, brightness (per-sample factors drawn in ``p``), then additive noise."""
    n = x.shape[0]
    dev, dt = x.device, x.dtype

    def per_sample(key: str) -> torch.Tensor:
        return p[key].to(device=dev, dtype=dt).view(n, 1, 1, 1)

    if "gamma" in p:
        lo = x.amin(dim=(-2, -1), keepdim=True)
        hi = x.amax(dim=(-2, -1), keepdim=True)
        scale = (hi - lo).clamp_min(torch.finfo(dt).tiny)
        x = ((x - lo) / scale).clamp_(0.0, 1.0).pow(per_sample("gamma")) * scale + lo
    if "contrast" in p:
        mean = x.mean(dim=(-2, -1), keepdim=True)
        x = (x - mean) * per_sample("contrast") + mean
    if "brightness" in p:
        x = x + per_sample("brightness")
    if "noise_seed" in p:
        noise_gen = torch.Generator(device=dev).manual_seed(int(p["noise_seed"][0]))
        if gaussian_noise > 0:
            x = x + gaussian_noise * torch.randn(x.shape, generator=noise_gen, device=dev, dtype=dt)
        if uniform_noise > 0:
            u = torch.rand(x.shape, generator=noise_gen, device=dev, dtype=dt)
            x = x + uniform_noise * (2.0 * u - 1.0)
    return x
