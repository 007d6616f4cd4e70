"""Training losses for sparse (partially painted) labels: weighted cross-entropy, soft Dice and Jaccard.

Label ``0`` is unlabelled and ignored by every loss; class ``k`` is logit channel ``k - 1``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .model import center_crop

__all__ = [
    "LOSS_MODES",
    "combined_loss",
    "soft_dice_loss",
    "soft_jaccard_loss",
    "uses_pixel_weights",
    "weighted_cross_entropy",
]

LOSS_MODES: tuple[str, ...] = ("wce", "dice", "wce+dice", "jaccard", "wce+jaccard")
_REDUCTIONS = ("mean", "sum", "none")


def _prepare(
    logits: Tensor, target: Tensor, weight: Tensor | None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Validate the inputs, crop target/weight to the logits; return float32 logits.

    ``logits`` are ``(N, K, h, w)``; ``target`` is an integer ``(N, H, W)``
    tensor (``0`` = unlabelled, ``k`` in ``1..K`` = channel ``k - 1``) and the
    optional per-pixel ``weight`` has its shape.  A target larger than the
    logits (a valid-padding U-Net) is centre-cropped to them; a smaller one is
    an error.  Every loss is computed in float32, also under autocast, and is
    differentiable also when no pixel is labelled (an exact zero).
    """
    if not isinstance(logits, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError("logits and target must be torch tensors")
    if logits.ndim != 4:
        raise ValueError(f"logits must have shape (N, K, h, w), got {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got {logits.dtype}")
    if target.ndim != 3:
        raise ValueError(
            f"target must have shape (N, H, W) (no channel axis), got {tuple(target.shape)}"
        )
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(
            f"target must be an integer tensor of class labels (0 = unlabelled), got {target.dtype}"
        )
    n, k, h, w = logits.shape
    if target.shape[0] != n:
        raise ValueError(f"batch sizes differ: logits have {n}, target has {target.shape[0]}")
    th, tw = target.shape[1:]
    if th < h or tw < w:
        raise ValueError(
            f"target {th}x{tw} is smaller than the logits {h}x{w}: crop the logits or pad "
            "the target before computing the loss"
        )
    if weight is not None:
        if not isinstance(weight, torch.Tensor):
            raise TypeError(f"weight must be a torch tensor or None, got {type(weight).__name__}")
        if weight.shape != target.shape:
            raise ValueError(
                f"weight must have the target's shape {tuple(target.shape)}, got {tuple(weight.shape)}"
            )
        weight = center_crop(weight, h, w).to(device=logits.device, dtype=torch.float32)
    target = center_crop(target, h, w).to(device=logits.device, dtype=torch.long)
    if target.numel():
        lo, hi = torch.aminmax(target)
        lo, hi = int(lo), int(hi)
        if lo < 0 or hi > k:
            raise ValueError(
                f"target labels must be in 0..{k} (0 = unlabelled, 1..{k} = classes for a "
                f"{k}-channel output), found values in {lo}..{hi}; check the label mapping or "
                "the model's n_classes"
            )
    return logits.float(), target, weight


def _zero(logits: Tensor) -> Tensor:
    return logits.float().sum() * 0.0


def weighted_cross_entropy(
    logits: Tensor, target: Tensor, weight: Tensor | None = None, reduction: str = "mean"
) -> Tensor:
    """Pixel-weighted softmax cross-entropy: the energy function of the U-Net paper.

    ``E = sum_x w(x) * -log p_{l(x)}(x)`` over the labelled pixels ``x``.

    Parameters
    ----------
    logits : torch.Tensor
        ``(N, K, h, w)`` floating-point logits.
    target : torch.Tensor
        ``(N, H, W)`` integer labels, ``0`` = unlabelled (ignored), ``k`` = channel ``k - 1``;
        ``H >= h``, ``W >= w`` (centre-cropped to the logits).
    weight : torch.Tensor, optional
        ``(N, H, W)`` per-pixel weights (e.g. the paper's border weight map); ``None`` = 1.
    reduction : {"mean", "sum", "none"}
        ``"mean"``: ``sum(w * ce) / n_labelled`` -- normalised by the *number of
        labelled pixels*, not by ``sum(w)``, so a weight of 10 really makes a pixel
        count ten times as much (as in the paper's energy).  ``"sum"``:
        ``sum(w * ce)``.  ``"none"``: the ``(N, h, w)`` map ``w * ce``, zero at
        unlabelled pixels.

    Returns
    -------
    torch.Tensor
        float32 scalar (or map for ``"none"``).
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(_REDUCTIONS)}, got {reduction!r}")
    logits32, target, weight = _prepare(logits, target, weight)
    ce = F.cross_entropy(logits32, target - 1, ignore_index=-1, reduction="none")
    if weight is not None:
        ce = ce * weight
    if reduction == "none":
        return ce
    if reduction == "sum":
        return ce.sum()
    n_labelled = (target > 0).sum()
    if int(n_labelled) == 0:
        return _zero(logits)
    return ce.sum() / n_labelled


def soft_dice_loss(logits: Tensor, target: Tensor, eps: float = 1.0) -> Tensor:
    """Multi-class soft Dice loss on the softmax probabilities of the labelled pixels.

    For every class ``c`` present in the batch's labels,
    ``D_c = (2 * sum p_c g_c + eps) / (sum p_c + sum g_c + eps)`` where the sums
    run over the labelled pixels of the whole batch (a "batch Dice"), ``p_c`` is
    the softmax probability of channel ``c - 1`` and ``g_c`` the one-hot target.
    Unlabelled pixels contribute neither to the intersection nor to the
    denominators.  The loss is ``1 - mean_c D_c``, averaged over the classes that
    occur in the batch's labels (absent classes would otherwise give a
    meaningless constant); it is 0 when no pixel is labelled.

    Parameters
    ----------
    logits : torch.Tensor
        ``(N, K, h, w)`` logits.
    target : torch.Tensor
        ``(N, H, W)`` integer labels, ``0`` = unlabelled.
    eps : float, default 1.0
        Smoothing term added to numerator and denominator.

    Returns
    -------
    torch.Tensor
        float32 scalar in ``[0, 1]``.
    """
    sums = _overlaps(logits, target, eps)
    if sums is None:
        return _zero(logits)
    intersection, p_sum, g_sum = sums
    dice = (2.0 * intersection + eps) / (p_sum + g_sum + eps)
    return 1.0 - dice[g_sum > 0].mean()


def soft_jaccard_loss(logits: Tensor, target: Tensor, eps: float = 1.0) -> Tensor:
    """Multi-class soft Jaccard (IoU) loss on the softmax probabilities of the labelled pixels.

    As :func:`soft_dice_loss`, with ``J_c = (sum p_c g_c + eps) / (sum p_c + sum g_c -
    sum p_c g_c + eps)``: ``1 - mean_c J_c`` over the classes present in the
    batch's labels, the sums over the labelled pixels of the whole batch; 0 when
    no pixel is labelled.  (The soft IoU of the mitochondria recipes.)

    Returns
    -------
    torch.Tensor
        float32 scalar in ``[0, 1]``.
    """
    sums = _overlaps(logits, target, eps)
    if sums is None:
        return _zero(logits)
    intersection, p_sum, g_sum = sums
    jaccard = (intersection + eps) / (p_sum + g_sum - intersection + eps)
    return 1.0 - jaccard[g_sum > 0].mean()


def _overlaps(logits: Tensor, target: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor] | None:
    """Per class: soft intersection, probability sum and label count over the labelled pixels.

    ``None`` when no pixel is labelled.
    """
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps < 0:
        raise ValueError(f"eps must be a non-negative number, got {eps!r}")
    logits32, target, _ = _prepare(logits, target, None)
    k = logits32.shape[1]
    labelled = target > 0
    if not bool(labelled.any()):
        return None
    probs = torch.softmax(logits32, dim=1)
    mask = labelled.unsqueeze(1).to(probs.dtype)  # (N, 1, h, w)
    onehot = F.one_hot(target.clamp(min=1) - 1, k).permute(0, 3, 1, 2).to(probs.dtype) * mask
    dims = (0, 2, 3)
    return (probs * onehot).sum(dims), (probs * mask).sum(dims), onehot.sum(dims)


def uses_pixel_weights(mode: str) -> bool:
    """Whether loss ``mode`` uses the per-pixel weight map (it has a cross-entropy term)."""
    return "wce" in mode.split("+")


def combined_loss(
    logits: Tensor, target: Tensor, weight: Tensor | None = None, mode: str = "wce+dice"
) -> Tensor:
    """The training loss: weighted cross-entropy, soft Dice, soft Jaccard, or a sum.

    Parameters
    ----------
    logits, target, weight
        See :func:`weighted_cross_entropy` (``weight`` is only used by the
        cross-entropy term).
    mode : {"wce", "dice", "wce+dice", "jaccard", "wce+jaccard"}
        ``"wce+dice"`` is the unweighted sum ``weighted_cross_entropy + soft_dice_loss``,
        ``"wce+jaccard"`` the same with :func:`soft_jaccard_loss`.

    Returns
    -------
    torch.Tensor
        float32 scalar.
    """
    if mode not in LOSS_MODES:
        raise ValueError(f"loss mode must be one of {', '.join(LOSS_MODES)}, got {mode!r}")
    total = None
    for term in mode.split("+"):
        if term == "wce":
            value = weighted_cross_entropy(logits, target, weight)
        else:
            value = _OVERLAP_LOSSES[term](logits, target)
        total = value if total is None else total + value
    return total


_OVERLAP_LOSSES = {"dice": soft_dice_loss, "jaccard": soft_jaccard_loss}
