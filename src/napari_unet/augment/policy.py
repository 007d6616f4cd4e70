"""The training-time augmentation policy: which transforms to draw per sample, and how strong.

One :class:`Augmentation` drives the training loop, the checkpoint metadata and the GUI preview.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..checks import ArgumentError, check_int
from ..fields import bounded, field_bounds, validate_fields
from .geometry import apply_geometry
from .intensity import INTENSITY_FIELDS, apply_intensity
from .warp import MODES, resolve_generator, target_batches

__all__ = ["Augmentation"]

_CASTS = {"bool": bool, "int": int, "float": float, "choice": int}


@dataclasses.dataclass
class Augmentation:
    """Training-time augmentation of image / label / weight-map batches.

    One object describes the whole augmentation so that the same settings
    drive the training loop, the checkpoint metadata (:meth:`to_dict`) and the
    preview layers in the GUI (:meth:`preview`).

    Geometric transforms (random crop, flips, 90-degree rotations, arbitrary
    rotation, elastic field) are drawn per sample, applied identically to the
    image and all its targets, and composed into **one** resampling per
    sample (samples that end up with no rotation and no elastic field are just
    cropped / flipped / rotated exactly, without resampling).  Intensity
    transforms are applied to the image only.  The intensity defaults were
    chosen on ISBI 2012, whose slices differ in mean brightness.

    Attributes
    ----------
    elastic : bool, default True
        Elastic deformation as in the U-Net paper (see :func:`elastic_deform`).
    elastic_grid : int, default 3
        Control points per side of the coarse displacement grid (``>= 2``),
        spread over the output (the crop when ``crop_size`` is set).
    elastic_sigma : float, default 10.0
        Standard deviation of the control-point displacements, in pixels.
    elastic_p : float, default 0.8
        Probability that a sample is deformed elastically.
    flip : bool, default True
        Random vertical and horizontal flips (each with probability 1/2).
    rot90 : bool, default True
        Random rotation by a multiple of 90 degrees (only 0 / 180 degrees
        when the output is not square).
    rotate_degrees : float, default 0.0
        Arbitrary rotation by an angle uniform in ``[-rotate_degrees,
        rotate_degrees]`` (``0..180``), mirrored at the borders.
    gaussian_noise : float, default 0.1
        Standard deviation of additive Gaussian noise, in units of the
        normalised intensity (the image is ``(x - mean) / std``, so ``0.1`` is
        a tenth of the image's standard deviation).
    uniform_noise : float, default 0.0
        Half-width of additive uniform noise ``U(-a, a)`` (normalised units).
    brightness : float, default 0.3
        Additive shift drawn per sample from ``U(-b, b)`` (normalised units).
    contrast : float, default 0.3
        Per-sample contrast factor from ``U(1 - c, 1 + c)`` (``0 <= c < 1``),
        applied around the sample's mean.
    gamma : float, default 0.3
        Per-sample gamma ``exp(U(-g, g))`` applied to the sample's intensities
        rescaled to ``[0, 1]`` (then scaled back), so ``0.3`` gives gammas in
        about ``[0.74, 1.35]``.
    crop_size : int or None, default None
        Side of a random square crop taken from each sample (``None``: keep
        the full size).  The crop is sampled from the whole input, so rotated
        or deformed crops see real image content rather than mirrored borders.
    order : {3, 1, 0}, default 3
        Interpolation of the image (bicubic, bilinear, nearest); integer
        targets always use nearest, floating ones bilinear.
    """

    elastic: bool = bounded(True, kind="bool")
    elastic_grid: int = bounded(3, kind="int", low=2)
    elastic_sigma: float = bounded(10.0, kind="float", low=0)
    elastic_p: float = bounded(0.8, kind="float", low=0, high=1)
    flip: bool = bounded(True, kind="bool")
    rot90: bool = bounded(True, kind="bool")
    rotate_degrees: float = bounded(0.0, kind="float", low=0, high=180)
    gaussian_noise: float = bounded(0.1, kind="float", low=0)
    uniform_noise: float = bounded(0.0, kind="float", low=0)
    brightness: float = bounded(0.3, kind="float", low=0)
    contrast: float = bounded(0.3, kind="float", low=0, high=1)  # and < 1: see validate()
    gamma: float = bounded(0.3, kind="float", low=0)
    crop_size: int | None = bounded(None, kind="int", low=2, optional=True)
    order: int = bounded(3, kind="choice", choices=tuple(MODES))

    def __post_init__(self) -> None:
        bounds = field_bounds(self)
        for name in bounds:  # numpy scalars (e.g. read from an array) as Python ones
            value = getattr(self, name)
            if isinstance(value, np.generic):
                setattr(self, name, value.item())
        self.validate()
        for name, b in bounds.items():  # e.g. ints read back from JSON for float settings
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, _CASTS[b.kind](value))

    # -- settings ----------------------------------------------------------------

    def validate(self) -> None:
        """Check the settings; raise ``ValueError`` describing the first bad one."""
        validate_fields(self)
        if self.contrast >= 1.0:
            raise ArgumentError(
                f"contrast must be < 1 (factor 1 +- contrast), got {float(self.contrast)}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-friendly dict (plain bools, ints, floats, None)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool | np.bool_):
                v = bool(v)
            elif isinstance(v, int | np.integer):
                v = int(v)
            elif isinstance(v, float | np.floating):
                v = float(v)
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], strict: bool = True) -> Augmentation:
        """Rebuild from :meth:`to_dict` output (missing keys take their defaults).

        Unknown keys raise ``ValueError`` when ``strict`` (the default), and are
        ignored otherwise (e.g. settings saved by a newer version).
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"data must be a mapping, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown and strict:
            raise ValueError(f"unknown augmentation settings: {', '.join(map(str, unknown))}")
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def none(cls) -> Augmentation:
        """An augmentation that changes nothing (every transform off)."""
        return cls(elastic=False, flip=False, rot90=False, **dict.fromkeys(INTENSITY_FIELDS, 0.0))

    @property
    def _uses_elastic(self) -> bool:
        return bool(self.elastic and self.elastic_sigma > 0 and self.elastic_p > 0)

    @property
    def is_identity(self) -> bool:
        """Whether these settings leave every sample unchanged (crops aside)."""
        return not (
            self._uses_elastic
            or self.flip
            or self.rot90
            or self.rotate_degrees > 0
            or any(getattr(self, name) > 0 for name in INTENSITY_FIELDS)
        )

    # -- application ---------------------------------------------------------------

    def __call__(
        self,
        image: torch.Tensor,
        *targets: torch.Tensor | None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor | None, ...]:
        """Augment a batch.

        Parameters
        ----------
        image : torch.Tensor
            ``(N, C, H, W)`` floating (normalised) image batch, on any device.
        *targets : torch.Tensor or None
            ``(N, H, W)`` or ``(N, C, H, W)`` tensors with the image's ``N``,
            ``H``, ``W`` (e.g. int64 labels, float32 weight maps), moved to the
            image's device if needed; ``None`` is passed through.
        generator : torch.Generator, optional
            Source of the per-sample random parameters (drawn on the
            generator's device, normally the CPU, so a seeded CPU generator
            reproduces the same augmentation on any device).  ``None`` uses
            torch's global generator.

        Returns
        -------
        torch.Tensor or tuple
            The augmented image alone when no targets are given, otherwise
            ``(image, *targets)``.  Spatial size is ``crop_size`` if set, else
            unchanged; dtypes are kept.
        """
        self.validate()
        if not isinstance(image, torch.Tensor):
            raise TypeError(f"image must be a torch.Tensor, got {type(image).__name__}")
        if image.ndim != 4:
            raise ValueError(f"image must be (N, C, H, W), got shape {tuple(image.shape)}")
        if not image.dtype.is_floating_point:
            raise TypeError(f"image must be a floating (normalised) tensor, got {image.dtype}")
        gen = resolve_generator(None, generator)
        n, _, height, width = image.shape
        tgts = target_batches(targets, 4, (height, width), n, image.device, torch_only=True)
        if self.crop_size is not None and (self.crop_size > height or self.crop_size > width):
            raise ValueError(
                f"crop_size {self.crop_size} is larger than the {height} x {width} input"
            )
        h = self.crop_size if self.crop_size is not None else height
        w = self.crop_size if self.crop_size is not None else width
        p = self._draw(n, height, width, h, w, gen)

        present = [t for t in tgts if t is not None]
        arrays = [image] + [t[0] for t in present]
        orders = [self.order] + [1 if t[0].dtype.is_floating_point else 0 for t in present]
        outs = iter(apply_geometry(arrays, orders, p, (h, w)))
        out_img = apply_intensity(next(outs), p, self.gaussian_noise, self.uniform_noise)
        if not targets:
            return out_img
        rest = [None if t is None else next(outs).reshape(*t[1][:-2], h, w) for t in tgts]
        return (out_img, *rest)

    def _draw(
        self, n: int, height: int, width: int, h: int, w: int, gen: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """All per-sample random parameters, drawn on the generator's device, moved to the CPU."""
        gdev = gen.device

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(shape, generator=gen, device=gdev).cpu()

        def randint(high: int, *shape: int) -> torch.Tensor:
            return torch.randint(high, shape, generator=gen, device=gdev).cpu()

        p: dict[str, torch.Tensor] = {}
        p["offset"] = torch.stack((randint(height - h + 1, n), randint(width - w + 1, n)), dim=1)
        zeros = torch.zeros(n, dtype=torch.bool)
        p["flip_y"] = rand(n) < 0.5 if self.flip else zeros
        p["flip_x"] = rand(n) < 0.5 if self.flip else zeros
        if self.rot90:
            p["k"] = randint(4, n) if h == w else 2 * randint(2, n)
        else:
            p["k"] = torch.zeros(n, dtype=torch.long)
        if self.rotate_degrees > 0:
            p["angle"] = (rand(n) * 2.0 - 1.0) * math.radians(self.rotate_degrees)
        else:
            p["angle"] = torch.zeros(n)
        if self._uses_elastic:
            p["elastic"] = rand(n) < self.elastic_p
            g = self.elastic_grid
            coarse = (
                torch.randn((n, 2, g, g), generator=gen, device=gdev).cpu() * self.elastic_sigma
            )
            p["coarse"] = coarse * p["elastic"].view(n, 1, 1, 1)
        else:
            p["elastic"] = zeros
        p["warp"] = p["elastic"] | (p["angle"] != 0)
        if self.brightness > 0:
            p["brightness"] = (rand(n) * 2.0 - 1.0) * self.brightness
        if self.contrast > 0:
            p["contrast"] = 1.0 + (rand(n) * 2.0 - 1.0) * self.contrast
        if self.gamma > 0:
            p["gamma"] = torch.exp((rand(n) * 2.0 - 1.0) * self.gamma)
        if self.gaussian_noise > 0 or self.uniform_noise > 0:
            p["noise_seed"] = randint(2**62, 1)
        return p

    # -- GUI preview ---------------------------------------------------------------

    def preview(
        self,
        image2d: np.ndarray,
        labels2d: np.ndarray | None = None,
        n: int = 4,
        seed: int = 0,
        weight: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """``n`` augmented versions of one 2D image (and labels / weight map) for display.

        The image is normalised with its own mean and standard deviation (as
        in training), augmented, and scaled back to its intensity units.  A
        ``crop_size`` larger than the image is reduced to the image's shorter
        side.

        Parameters
        ----------
        image2d : np.ndarray
            ``(H, W)`` image, any numeric dtype.
        labels2d : np.ndarray, optional
            ``(H, W)`` integer labels (``0`` = unlabelled).
        n : int, default 4
            Number of augmented samples.
        seed : int, default 0
            Seed of the random parameters (same seed, same preview).
        weight : np.ndarray, optional
            ``(H, W)`` float weight map.

        Returns
        -------
        images : np.ndarray
            ``(n, h, w)`` float32.
        labels : np.ndarray or None
            ``(n, h, w)`` with ``labels2d``'s dtype.
        weights : np.ndarray or None
            ``(n, h, w)`` float32.
        """
        img = np.asarray(image2d)
        if img.ndim != 2:
            raise ValueError(f"image2d must be 2D (H, W), got shape {img.shape}")
        if img.dtype.kind not in "biuf":
            raise TypeError(f"image2d must be numeric, got dtype {img.dtype}")
        n = check_int("n", n, 1)
        aug = self
        if self.crop_size is not None and self.crop_size > min(img.shape):
            aug = dataclasses.replace(self, crop_size=max(min(img.shape), 2))
        mean = float(img.mean()) if img.size else 0.0
        std = float(img.std()) if img.size else 1.0
        std = std if std > 0 else 1.0
        x = torch.from_numpy(((img.astype(np.float32) - mean) / std).astype(np.float32))
        batch = x.expand(n, 1, *img.shape).contiguous()
        targets: list[torch.Tensor | None] = [None, None]
        lab_dtype = None
        if labels2d is not None:
            lab = np.asarray(labels2d)
            if lab.shape != img.shape:
                raise ValueError(f"labels2d has shape {lab.shape}, image2d {img.shape}")
            if lab.dtype.kind not in "biu":
                raise TypeError(f"labels2d must be an integer array, got dtype {lab.dtype}")
            lab_dtype = lab.dtype
            targets[0] = torch.from_numpy(lab.astype(np.int64)).expand(n, *img.shape).contiguous()
        if weight is not None:
            wt = np.asarray(weight, dtype=np.float32)
            if wt.shape != img.shape:
                raise ValueError(f"weight has shape {wt.shape}, image2d {img.shape}")
            targets[1] = torch.from_numpy(wt).expand(n, *img.shape).contiguous()
        gen = torch.Generator().manual_seed(int(seed))
        out_img, out_lab, out_w = aug(batch, *targets, generator=gen)
        images = (out_img[:, 0] * std + mean).numpy().astype(np.float32, copy=False)
        labels = None if out_lab is None else out_lab.numpy().astype(lab_dtype)
        weights = None if out_w is None else out_w.numpy()
        return images, labels, weights
