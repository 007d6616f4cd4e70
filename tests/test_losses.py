"""Tests for napari_unet.losses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from napari_unet.losses import (
    LOSS_MODES,
    combined_loss,
    soft_dice_loss,
    soft_jaccard_loss,
    uses_pixel_weights,
    weighted_cross_entropy,
)

ALL_LOSSES = [
    lambda lo, t, w: weighted_cross_entropy(lo, t, w),
    lambda lo, t, w: weighted_cross_entropy(lo, t, w, reduction="sum"),
    lambda lo, t, w: soft_dice_loss(lo, t),
    lambda lo, t, w: combined_loss(lo, t, w, mode="wce"),
    lambda lo, t, w: combined_loss(lo, t, w, mode="dice"),
    lambda lo, t, w: combined_loss(lo, t, w, mode="wce+dice"),
    lambda lo, t, w: soft_jaccard_loss(lo, t),
    lambda lo, t, w: combined_loss(lo, t, w, mode="jaccard"),
    lambda lo, t, w: combined_loss(lo, t, w, mode="wce+jaccard"),
]


def _data(n=2, k=3, h=12, w=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, h, w, generator=g)
    target = torch.randint(0, k + 1, (n, h, w), generator=g)
    weight = torch.rand(n, h, w, generator=g) * 5 + 0.5
    return logits, target, weight


@pytest.mark.parametrize("loss", ALL_LOSSES)
def test_unlabelled_pixels_do_not_matter(loss):
    logits, target, weight = _data()
    ref = loss(logits, target, weight)
    other = logits.clone()
    unlabelled = (target == 0).unsqueeze(1).expand_as(logits)
    other[unlabelled] = torch.randn(int(unlabelled.sum())) * 100
    weight2 = weight.clone()
    weight2[target == 0] = 1e6
    torch.testing.assert_close(loss(other, target, weight2), ref)
    # and the gradient at unlabelled pixels is exactly zero
    other.requires_grad_(True)
    loss(other, target, weight2).backward()
    assert torch.all(other.grad[unlabelled] == 0)
    assert other.grad[~unlabelled].abs().sum() > 0


def test_wce_with_unit_weight_equals_torch_cross_entropy():
    logits, target, _ = _data(n=3, k=4, h=9, w=7, seed=1)
    lab = target > 0
    flat_logits = logits.permute(0, 2, 3, 1)[lab]  # (n_lab, K)
    expected = F.cross_entropy(flat_logits, target[lab] - 1)
    torch.testing.assert_close(weighted_cross_entropy(logits, target), expected)
    torch.testing.assert_close(
        weighted_cross_entropy(logits, target, torch.ones(target.shape)), expected
    )
    torch.testing.assert_close(
        weighted_cross_entropy(logits, target, reduction="sum"), expected * lab.sum()
    )
    per_pixel = weighted_cross_entropy(logits, target, reduction="none")
    assert per_pixel.shape == target.shape
    assert torch.all(per_pixel[~lab] == 0)


def test_wce_weight_normalised_by_labelled_count():
    # one labelled pixel with weight 10: loss is 10 * ce, not ce
    logits = torch.zeros(1, 2, 2, 2)
    target = torch.tensor([[[1, 0], [0, 0]]])
    weight = torch.full((1, 2, 2), 10.0)
    assert weighted_cross_entropy(logits, target, weight).item() == pytest.approx(10 * math.log(2))


def test_soft_dice_hand_values():
    # perfect, confident prediction of both classes -> loss ~ 0
    target = torch.tensor([[[1, 1], [2, 0]]])
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 0][target[0] == 1] = 50
    logits[0, 1][target[0] == 2] = 50
    assert soft_dice_loss(logits, target, eps=0.0).item() == pytest.approx(0.0, abs=1e-6)
    # uniform prediction: class 1: inter 1, p_sum 1.5, g_sum 2 -> 2/3.5; class 2: 1/2.5
    uniform = torch.zeros(1, 2, 2, 2)
    expected = 1 - (2 / 3.5 + 1 / 2.5) / 2
    assert soft_dice_loss(uniform, target, eps=0.0).item() == pytest.approx(expected, rel=1e-6)
    # an absent class (3) is not averaged in
    uniform3 = torch.zeros(1, 3, 2, 2)
    expected3 = 1 - ((2 * 2 / 3) / (1 + 2) + (2 * 1 / 3) / (1 + 1)) / 2  # 11/18
    assert soft_dice_loss(uniform3, target, eps=0.0).item() == pytest.approx(expected3, rel=1e-6)


def test_soft_jaccard_hand_values():
    # perfect, confident prediction of both classes -> loss ~ 0 (also with the default eps)
    target = torch.tensor([[[1, 1], [2, 0]]])
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 0][target[0] == 1] = 50
    logits[0, 1][target[0] == 2] = 50
    assert soft_jaccard_loss(logits, target, eps=0.0).item() == pytest.approx(0.0, abs=1e-6)
    assert soft_jaccard_loss(logits, target).item() == pytest.approx(0.0, abs=1e-6)
    # uniform prediction: class 1: inter 1, p_sum 1.5, g_sum 2 -> 1 / 2.5; class 2: 0.5 / 2
    uniform = torch.zeros(1, 2, 2, 2)
    expected = 1 - (1 / 2.5 + 0.5 / 2) / 2
    assert soft_jaccard_loss(uniform, target, eps=0.0).item() == pytest.approx(expected, rel=1e-6)
    # an absent class (3) is not averaged in: inter 2/3 | 1/3, union 3 - 2/3 | 2 - 1/3
    uniform3 = torch.zeros(1, 3, 2, 2)
    expected3 = 1 - ((2 / 3) / (3 - 2 / 3) + (1 / 3) / (2 - 1 / 3)) / 2
    assert soft_jaccard_loss(uniform3, target, eps=0.0).item() == pytest.approx(expected3)
    # Jaccard J and Dice D of one class: J = D / (2 - D)
    one = torch.tensor([[[1, 1, 1, 2]]])
    lo = torch.randn(1, 2, 1, 4, generator=torch.Generator().manual_seed(0))
    p = torch.softmax(lo, 1)[0, 0, 0]
    g = (one[0, 0] == 1).float()
    dice = 2 * (p * g).sum() / (p.sum() + g.sum())
    jac = (p * g).sum() / (p.sum() + g.sum() - (p * g).sum())
    torch.testing.assert_close(jac, dice / (2 - dice))
    with pytest.raises(ValueError, match="eps"):
        soft_jaccard_loss(logits, target, eps=-1)


def test_combined_is_sum():
    logits, target, weight = _data(seed=2)
    torch.testing.assert_close(
        combined_loss(logits, target, weight),
        weighted_cross_entropy(logits, target, weight) + soft_dice_loss(logits, target),
    )
    torch.testing.assert_close(
        combined_loss(logits, target, weight, mode="wce+jaccard"),
        weighted_cross_entropy(logits, target, weight) + soft_jaccard_loss(logits, target),
    )
    torch.testing.assert_close(
        combined_loss(logits, target, weight, mode="jaccard"), soft_jaccard_loss(logits, target)
    )
    # only the modes with a cross-entropy term use the pixel weights
    assert [m for m in LOSS_MODES if uses_pixel_weights(m)] == ["wce", "wce+dice", "wce+jaccard"]
    for mode in LOSS_MODES:
        heavy = combined_loss(logits, target, weight * 7, mode=mode)
        same = torch.allclose(heavy, combined_loss(logits, target, weight, mode=mode))
        assert same != uses_pixel_weights(mode), mode


def test_jaccard_loss_trains_a_minority_class():
    """Minimising the soft Jaccard loss of free logits reaches the labels (loss -> ~0)."""
    g = torch.Generator().manual_seed(7)
    target = torch.ones(1, 16, 16, dtype=torch.long)
    target[0, 5:8, 5:9] = 2  # a small "mitochondrion", 12 of 256 pixels
    target[0, 0, :] = 0  # an unlabelled row
    logits = torch.randn(1, 2, 16, 16, generator=g).requires_grad_(True)
    opt = torch.optim.Adam([logits], lr=0.3)
    first = float(soft_jaccard_loss(logits.detach(), target))
    for _ in range(150):
        opt.zero_grad()
        loss = soft_jaccard_loss(logits, target)
        loss.backward()
        opt.step()
    assert first > 0.3 and float(loss.detach()) < 0.02
    pred = logits.argmax(1)[0] + 1
    assert torch.equal(pred[1:], target[0, 1:])


@pytest.mark.parametrize("loss", ALL_LOSSES)
def test_gradients_flow(loss):
    logits, target, weight = _data(seed=3)
    logits.requires_grad_(True)
    value = loss(logits, target, weight)
    assert value.ndim == 0 and value.dtype == torch.float32 and torch.isfinite(value)
    value.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("loss", ALL_LOSSES)
def test_no_labelled_pixel_gives_zero_with_grad(loss):
    logits = torch.randn(2, 2, 4, 4, requires_grad=True)
    target = torch.zeros(2, 4, 4, dtype=torch.long)
    value = loss(logits, target, None)
    assert value.item() == 0.0
    value.backward()
    assert torch.all(logits.grad == 0)


@pytest.mark.parametrize("loss", ALL_LOSSES)
def test_target_centre_cropped_to_smaller_logits(loss):
    logits, target, weight = _data(h=6, w=4, seed=4)
    big_t = torch.zeros(2, 10, 10, dtype=torch.long)
    big_w = torch.full((2, 10, 10), 123.0)
    big_t[:, 2:8, 3:7] = target
    big_w[:, 2:8, 3:7] = weight
    torch.testing.assert_close(loss(logits, big_t, big_w), loss(logits, target, weight))


def test_target_smaller_than_logits_raises():
    logits, target, _ = _data(h=8, w=8)
    with pytest.raises(ValueError, match="smaller than the logits"):
        weighted_cross_entropy(logits, target[:, :6, :6])


@pytest.mark.parametrize("loss", ALL_LOSSES)
def test_label_out_of_range_raises(loss):
    logits, target, weight = _data(k=2)
    target[0, 0, 0] = 3
    with pytest.raises(ValueError, match=r"0\.\.2"):
        loss(logits, target, weight)
    target[0, 0, 0] = -1
    with pytest.raises(ValueError, match=r"0\.\.2"):
        loss(logits, target, weight)


def test_input_validation():
    logits, target, weight = _data()
    with pytest.raises(TypeError, match="integer"):
        weighted_cross_entropy(logits, target.float())
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        weighted_cross_entropy(logits, target[:, None])
    with pytest.raises(ValueError, match="weight"):
        weighted_cross_entropy(logits, target, weight[:, :3])
    with pytest.raises(ValueError, match="batch"):
        weighted_cross_entropy(logits, target[:1])
    with pytest.raises(ValueError, match="mode"):
        combined_loss(logits, target, mode="focal")
    with pytest.raises(ValueError, match="reduction"):
        weighted_cross_entropy(logits, target, reduction="avg")
    with pytest.raises(ValueError, match="eps"):
        soft_dice_loss(logits, target, eps=-1)


def test_uint8_target_and_low_precision_logits():
    logits, target, weight = _data(seed=5)
    ref = combined_loss(logits, target, weight)
    value = combined_loss(logits.bfloat16(), target.to(torch.uint8), weight)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, ref, rtol=2e-2, atol=2e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        conv = torch.nn.Conv2d(3, 3, 1)
        out = conv(logits)
        assert out.dtype == torch.bfloat16
        value = combined_loss(out, target, weight)
    assert value.dtype == torch.float32


# --------------------------------------------------------------------------- the trainer's weights


def _train_and_capture(mode: str, monkeypatch: pytest.MonkeyPatch):
    """A real 2-iteration training run with ``loss=mode``; its batches and border-term calls.

    One dense 64 x 64 slice, 64 px patches, same padding, no oversampling and no crop:
    every patch is the whole slice, so a batch's weights can be compared pixel by pixel.
    """
    import numpy as np

    from napari_unet.model import UNet
    from napari_unet.sample_data import synthetic_em
    from napari_unet.training import TrainConfig, Trainer
    from napari_unet.training import live_labels as live_module
    from napari_unet.training import trainer as trainer_module

    calls: list[int] = []
    real_border, real_sample = live_module.border_term, trainer_module.sample_batch

    def counting_border(*args, **kwargs):
        calls.append(1)
        return real_border(*args, **kwargs)

    batches: list = []

    def recording_sample(*args, **kwargs):
        batches.append(real_sample(*args, **kwargs))
        return batches[-1]

    monkeypatch.setattr(live_module, "border_term", counting_border)
    monkeypatch.setattr(trainer_module, "sample_batch", recording_sample)
    image, truth = synthetic_em((3, 64, 64), seed=3)
    labels = np.zeros_like(truth)
    labels[1] = truth[1]  # dense: every pixel is labelled
    config = TrainConfig(
        loss=mode, iterations=2, w0=6.0, sigma=4.0, class_weights="balanced", device="cpu",
        batch_size=2, patch_size=64, label_oversampling=0.0, num_threads=1,
        preview_every_s=0.0, max_minutes=None,
    )  # fmt: skip
    torch.manual_seed(0)
    model = UNet(depth=2, base_channels=4, padding="same", norm="batch")
    trainer = Trainer(image, labels, config, model=model)
    for _ in trainer.run():
        pass
    return trainer, labels, batches, calls


@pytest.mark.parametrize("mode", LOSS_MODES)
def test_border_term_only_for_losses_with_a_weight_map(mode, monkeypatch):
    """Weighted losses get the border weight map as before; dice / jaccard alone never
    compute it and their batches carry no weights."""
    import numpy as np

    from napari_unet.weightmap import class_weight_lut, loss_weight_map

    trainer, labels, batches, calls = _train_and_capture(mode, monkeypatch)
    assert len(batches) == 2
    slice_cache = trainer._live.slices[1]
    if not uses_pixel_weights(mode):
        assert calls == [] and slice_cache.border is None
        assert all(weights is None for _, _, weights in batches)
        return
    lut = class_weight_lut(np.bincount(labels.ravel(), minlength=3), 2, "balanced")
    expected = loss_weight_map(labels[1], lut, w0=6.0, sigma=4.0, object_class=2)
    assert calls and slice_cache.border is not None and expected.max() > lut.max()
    np.testing.assert_allclose(trainer.weight_map(1), expected, rtol=1e-6)
    for _, batch_labels, weights in batches:
        assert weights is not None and weights.shape == batch_labels.shape
        for lab, w in zip(batch_labels, weights):  # each patch is the whole slice
            np.testing.assert_array_equal(lab, labels[1])
            np.testing.assert_allclose(w, expected, rtol=1e-6)
