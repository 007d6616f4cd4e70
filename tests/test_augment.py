"""Tests of the elastic deformation and the training augmentation (napari_unet.augment)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from napari_unet.augment import (
    INTENSITY_FIELDS,
    Augmentation,
    elastic_deform,
    random_displacement,
)

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def blocks(
    shape: tuple[int, int] = (96, 96), size: int = 16, n_ids: int | None = None
) -> np.ndarray:
    """A grid of square regions with distinct ids (int64, starting at 1)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    ids = (yy // size) * (-(-shape[1] // size)) + xx // size + 1
    if n_ids is not None:
        ids = ids % n_ids
    return ids.astype(np.int64)


def dihedral_images(x: np.ndarray) -> list[np.ndarray]:
    out = []
    for k in range(4):
        r = np.rot90(x, k)
        out += [r, r[:, ::-1]]
    return out


# ----------------------------------------------------------------------------- elastic_deform


def test_same_field_on_image_and_labels() -> None:
    labels = blocks((80, 96), 12)
    image = labels.astype(np.float32)
    out_img, out_lab = elastic_deform(image, labels, order=0, seed=3)
    assert not np.array_equal(out_lab, labels)
    np.testing.assert_array_equal(out_img, out_lab.astype(np.float32))
    # several targets of different dtypes all follow the one field
    lab16 = labels.astype(np.uint16)
    _, a, b, none = elastic_deform(image, labels, lab16, None, seed=3)
    assert none is None
    np.testing.assert_array_equal(a, out_lab)
    np.testing.assert_array_equal(b, out_lab.astype(np.uint16))


def test_labels_stay_a_subset_of_input_labels() -> None:
    rng = np.random.default_rng(0)
    sparse = np.zeros((64, 64), dtype=np.uint8)
    sparse[10:30, 5:50] = 1
    sparse[40:60, 20:40] = 2  # 0 = unlabelled
    image = rng.normal(size=(64, 64)).astype(np.float32)
    for seed in range(5):
        _, out = elastic_deform(image, sparse, sigma=10.0, seed=seed)
        assert out.dtype == np.uint8
        assert set(np.unique(out)) <= {0, 1, 2}
    # values beyond float32 (2**24) and float64 (2**53) precision survive exactly
    for offset in (2**30, 2**60):
        big = torch.from_numpy(blocks((48, 48), 8)) + offset
        img = torch.zeros((1, 1, 48, 48))
        _, out = elastic_deform(img, big[None], sigma=8.0, seed=1)
        assert out.dtype == torch.int64 and out.shape == (1, 48, 48)
        assert set(out.unique().tolist()) <= set(big.unique().tolist())
        assert len(out.unique()) > 20


def test_sigma_zero_is_identity_copy() -> None:
    img = np.random.default_rng(1).random((32, 40)).astype(np.float32)
    lab = blocks((32, 40), 8)
    out_img, out_lab = elastic_deform(img, lab, sigma=0.0, seed=0)
    np.testing.assert_array_equal(out_img, img)
    np.testing.assert_array_equal(out_lab, lab)
    assert not np.shares_memory(out_img, img) and not np.shares_memory(out_lab, lab)
    t = torch.rand(2, 1, 16, 16)
    out = elastic_deform(t, sigma=0)
    assert torch.equal(out, t) and out.data_ptr() != t.data_ptr()


def test_deformation_is_smooth_not_torn() -> None:
    labels = blocks((256, 256), 32).astype(np.int32)
    interior = np.unique(labels[32:-32, 32:-32])
    for seed in range(4):
        out = elastic_deform(labels, sigma=10.0, order=0, seed=seed)
        for i in interior:
            lab, n = ndi.label(out == i)
            sizes = np.sort(np.bincount(lab.ravel())[1:])
            assert n >= 1
            assert sizes[-1] > 0.5 * 32 * 32  # the square is still there, in one big piece
            assert sizes[:-1].sum() <= 2  # at most a stray corner pixel (nearest sampling)
    field = random_displacement((256, 256), 32, 3, 10.0, generator=torch.Generator().manual_seed(0))
    grad = torch.cat([field.diff(dim=-1).flatten(), field.diff(dim=-2).flatten()])
    assert grad.abs().max() < 1.0  # no folding
    assert field.diff(dim=-1).diff(dim=-1).abs().max() < 0.05  # smooth


def test_batch_gets_one_field_per_element() -> None:
    img = torch.from_numpy(blocks((64, 64), 8).astype(np.float32))[None, None].repeat(4, 1, 1, 1)
    lab = torch.from_numpy(blocks((64, 64), 8))[None].repeat(4, 1, 1)
    out_img, out_lab = elastic_deform(img, lab, order=0, seed=5)
    assert out_img.shape == (4, 1, 64, 64) and out_lab.shape == (4, 64, 64)
    assert torch.equal(out_img[:, 0], out_lab.float())
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.equal(out_lab[i], out_lab[j])
    # channels of one element share its field
    two = torch.cat([img, 2 * img], dim=1)
    out2 = elastic_deform(two, order=0, seed=5)
    assert torch.equal(out2[:, 1], 2 * out2[:, 0])


def test_types_dtypes_and_shapes() -> None:
    rng = np.random.default_rng(2)
    u8 = (rng.random((40, 50)) > 0.5).astype(np.uint8) * 255  # bicubic overshoots: clipped
    lab = blocks((40, 50), 10).astype(np.uint16)
    wmap = rng.random((40, 50)).astype(np.float32) + 1.0
    out, out_lab, out_w = elastic_deform(u8, lab, wmap, seed=0)
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.shape == (40, 50)
    assert out_lab.dtype == np.uint16 and out_w.dtype == np.float32
    # bilinear weights stay within the input range
    assert out_w.min() >= wmap.min() - 1e-6 and out_w.max() <= wmap.max() + 1e-6
    t64 = torch.rand(2, 3, 24, 20, dtype=torch.float64)
    lab32 = torch.randint(0, 5, (2, 1, 24, 20), dtype=torch.int32)
    o, ol = elastic_deform(t64, lab32, seed=0)
    assert isinstance(o, torch.Tensor) and o.dtype == torch.float64 and o.shape == t64.shape
    assert ol.dtype == torch.int32 and ol.shape == lab32.shape
    # mixing numpy and torch: each output keeps its own kind
    o2, ol2 = elastic_deform(t64, lab32[:, 0].numpy(), seed=0)
    assert isinstance(ol2, np.ndarray) and np.array_equal(ol2, ol[:, 0].numpy())
    assert torch.equal(o2, o)
    # bool and int images
    b = elastic_deform(u8 > 0, seed=0)
    assert b.dtype == bool
    i16 = elastic_deform(u8.astype(np.int16) - 128, order=1, seed=0)
    assert i16.dtype == np.int16 and i16.min() >= -128 and i16.max() <= 127


def test_displacement_statistics_and_interpolation() -> None:
    gen = torch.Generator().manual_seed(0)
    field = random_displacement((33, 33), 1000, grid=3, sigma=10.0, generator=gen)
    assert field.shape == (1000, 2, 33, 33) and field.dtype == torch.float32
    nodes = field[:, :, ::16, ::16]  # the control points (align_corners=True)
    assert nodes.std().item() == pytest.approx(10.0, rel=0.1)
    assert abs(nodes.mean().item()) < 0.3
    for c in range(2):  # dy and dx are independent, same law
        assert nodes[:, c].std().item() == pytest.approx(10.0, rel=0.1)
    corr = torch.corrcoef(torch.stack([nodes[:, 0].flatten(), nodes[:, 1].flatten()]))[0, 1]
    assert abs(corr.item()) < 0.05
    # the same numbers as torch's bicubic upsampling of the control points
    gen = torch.Generator().manual_seed(1)
    dense = random_displacement((50, 70), 3, grid=4, sigma=2.0, generator=gen)
    gen = torch.Generator().manual_seed(1)
    coarse = torch.randn((3, 2, 4, 4), generator=gen) * 2.0
    ref = F.interpolate(coarse, (50, 70), mode="bicubic", align_corners=True)
    torch.testing.assert_close(dense, ref, atol=1e-4, rtol=0)


def test_field_convention_output_samples_input_at_p_plus_d() -> None:
    h, w = 60, 80
    ramp_x = torch.arange(w, dtype=torch.float64).expand(h, w)
    ramp_y = torch.arange(h, dtype=torch.float64)[:, None].expand(h, w)
    img = torch.stack([ramp_y, ramp_x])[None]
    out = elastic_deform(img, sigma=2.0, order=1, seed=11)
    field = random_displacement((h, w), 1, 3, 2.0, generator=torch.Generator().manual_seed(11))
    src_y = ramp_y + field[0, 0]
    src_x = ramp_x + field[0, 1]
    inside = (src_y >= 0) & (src_y <= h - 1) & (src_x >= 0) & (src_x <= w - 1)
    assert inside.float().mean() > 0.8
    torch.testing.assert_close(out[0, 0][inside], src_y[inside], atol=1e-3, rtol=0)
    torch.testing.assert_close(out[0, 1][inside], src_x[inside], atol=1e-3, rtol=0)


def test_seeded_reproducibility() -> None:
    img = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    a = elastic_deform(img, seed=42)
    b = elastic_deform(img, seed=42)
    c = elastic_deform(img, seed=43)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    g1 = torch.Generator().manual_seed(7)
    g2 = torch.Generator().manual_seed(7)
    np.testing.assert_array_equal(
        elastic_deform(img, generator=g1), elastic_deform(img, generator=g2)
    )
    torch.manual_seed(3)
    d = elastic_deform(img)
    torch.manual_seed(3)
    np.testing.assert_array_equal(d, elastic_deform(img))


def test_elastic_deform_validation() -> None:
    img = np.zeros((16, 16), np.float32)
    with pytest.raises(ValueError):
        elastic_deform(img, order=2)
    with pytest.raises(ValueError):
        elastic_deform(img, grid=1)
    with pytest.raises(ValueError):
        elastic_deform(img, sigma=-1.0)
    with pytest.raises(ValueError):
        elastic_deform(np.zeros((3, 16, 16), np.float32))
    with pytest.raises(ValueError):
        elastic_deform(img, np.zeros((16, 15), np.int64))
    with pytest.raises(ValueError):
        elastic_deform(np.zeros((2, 1, 16, 16)), np.zeros((3, 16, 16), np.int64))
    with pytest.raises(TypeError):
        elastic_deform([[0.0, 1.0], [2.0, 3.0]])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        elastic_deform(img, seed=1, generator=torch.Generator())
    with pytest.raises(ValueError):
        random_displacement((16,), 1)


# ----------------------------------------------------------------------------- Augmentation


def _batch(n: int = 4, hw: tuple[int, int] = (64, 64)) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.from_numpy(blocks(hw, 8))[None].repeat(n, 1, 1)
    labels = labels + 100 * torch.arange(n).view(n, 1, 1)  # distinct per sample
    return labels.float()[:, None], labels


def _geometry_only(aug: Augmentation) -> Augmentation:
    """``aug`` without its intensity transforms (on by default), which change the image."""
    return dataclasses.replace(aug, **dict.fromkeys(INTENSITY_FIELDS, 0.0))


def test_augmentation_geometry_is_joint() -> None:
    image, labels = _batch()
    weight = labels.double() * 0.5
    aug = _geometry_only(Augmentation(order=0, rotate_degrees=30.0, elastic_p=0.5, crop_size=48))
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        oi, ol, ow = aug(image, labels, weight[:, None], generator=gen)
        assert oi.shape == (4, 1, 48, 48) and ol.shape == (4, 48, 48) and ow.shape == (4, 1, 48, 48)
        assert ol.dtype == torch.int64 and ow.dtype == torch.float64
        assert torch.equal(oi[:, 0], ol.float())
        # a sample's labels come from that sample only
        for i in range(4):
            assert set(ol[i].unique().tolist()) <= set(labels[i].unique().tolist())


def test_flip_rot90_are_exact_and_consistent() -> None:
    rng = np.random.default_rng(0)
    img = torch.from_numpy(rng.random((8, 1, 32, 32)).astype(np.float32))
    lab = torch.from_numpy(rng.integers(0, 4, (8, 32, 32)))
    aug = Augmentation.none()
    aug.flip = aug.rot90 = True
    oi, ol = aug(img, lab, generator=torch.Generator().manual_seed(1))
    seen = set()
    for i in range(8):
        cands = dihedral_images(img[i, 0].numpy())
        which = [k for k, c in enumerate(cands) if np.array_equal(c, oi[i, 0].numpy())]
        assert which, "output is not a flip / rotation of the input"
        k = which[0]
        assert np.array_equal(dihedral_images(lab[i].numpy())[k], ol[i].numpy())
        seen.add(k)
    assert len(seen) > 1
    # non-square inputs: only flips and 180 degrees, shape kept
    rect = torch.rand(6, 2, 20, 30)
    out = aug(rect, generator=torch.Generator().manual_seed(2))
    assert out.shape == rect.shape


def test_intensity_transforms_touch_only_the_image() -> None:
    image, labels = _batch(3, (32, 32))
    image = (image - image.mean()) / image.std()
    weight = torch.rand(3, 32, 32)
    aug = Augmentation(
        elastic=False,
        flip=False,
        rot90=False,
        gaussian_noise=0.1,
        uniform_noise=0.05,
        brightness=0.3,
        contrast=0.2,
        gamma=0.2,
    )
    oi, ol, ow = aug(image, labels, weight, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ol, labels) and torch.equal(ow, weight)
    assert not torch.allclose(oi, image)
    # brightness alone: one constant shift per sample, within the range
    aug = Augmentation.none()
    aug.brightness = 0.5
    oi = aug(image, generator=torch.Generator().manual_seed(0))
    shift = (oi - image).flatten(1)
    assert torch.allclose(shift, shift[:, :1].expand_as(shift), atol=1e-5)
    assert shift.abs().max() <= 0.5
    assert len(set(shift[:, 0].tolist())) == 3


def test_augmentation_reproducible() -> None:
    image, labels = _batch()
    aug = Augmentation(rotate_degrees=10.0, gaussian_noise=0.1, crop_size=40)
    a = aug(image, labels, generator=torch.Generator().manual_seed(9))
    b = aug(image, labels, generator=torch.Generator().manual_seed(9))
    c = aug(image, labels, generator=torch.Generator().manual_seed(10))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    single = aug(image, generator=torch.Generator().manual_seed(9))
    assert isinstance(single, torch.Tensor)


def test_augmentation_shapes_and_none_targets() -> None:
    image, labels = _batch(2, (40, 36))
    aug = Augmentation(crop_size=32)
    oi, ol, none, ol4 = aug(image, labels, None, labels[:, None])
    assert oi.shape == (2, 1, 32, 32) and ol.shape == (2, 32, 32) and none is None
    assert ol4.shape == (2, 1, 32, 32)
    with pytest.raises(ValueError, match="crop_size"):
        Augmentation(crop_size=64)(image)
    with pytest.raises(TypeError):
        aug(image.long())
    with pytest.raises(ValueError):
        aug(image[0])
    with pytest.raises(ValueError):
        aug(image, labels[:1])
    assert Augmentation.none().is_identity and not Augmentation().is_identity
    ident = Augmentation.none()(image, labels)
    assert torch.equal(ident[0], image) and torch.equal(ident[1], labels)


def test_to_dict_from_dict_round_trip() -> None:
    aug = Augmentation(elastic_sigma=7.5, rotate_degrees=15.0, crop_size=128, gamma=0.1, order=1)
    d = aug.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert Augmentation.from_dict(json.loads(json.dumps(d))) == aug
    assert Augmentation.from_dict({}) == Augmentation()
    with pytest.raises(ValueError, match="unknown"):
        Augmentation.from_dict({**d, "mixup": 0.5})
    assert Augmentation.from_dict({**d, "mixup": 0.5}, strict=False) == aug


@pytest.mark.parametrize(
    "bad",
    [
        {"elastic_sigma": -1.0},
        {"elastic_grid": 1},
        {"elastic_grid": 2.5},
        {"elastic_p": 1.5},
        {"rotate_degrees": 400.0},
        {"gaussian_noise": -0.1},
        {"contrast": 1.0},
        {"gamma": float("nan")},
        {"crop_size": 1},
        {"order": 2},
        {"flip": "yes"},
    ],
)
def test_validation_errors(bad: dict) -> None:
    with pytest.raises(ValueError):
        Augmentation(**bad)
    aug = Augmentation()
    for k, v in bad.items():
        setattr(aug, k, v)
    with pytest.raises(ValueError):
        aug.validate()


def test_preview() -> None:
    rng = np.random.default_rng(0)
    image = (rng.random((50, 60)) * 200).astype(np.uint8)
    labels = blocks((50, 60), 10).astype(np.uint8)
    weight = rng.random((50, 60)).astype(np.float32)
    aug = _geometry_only(Augmentation(rotate_degrees=20.0, crop_size=256))  # crop > image
    imgs, labs, ws = aug.preview(image, labels, n=3, seed=1, weight=weight)
    assert imgs.shape == (3, 50, 50) and imgs.dtype == np.float32
    assert labs.shape == (3, 50, 50) and labs.dtype == np.uint8
    assert ws.shape == (3, 50, 50) and ws.dtype == np.float32
    assert set(np.unique(labs)) <= set(np.unique(labels))
    assert -30 < imgs.min() and imgs.max() < 230  # back in the image's intensity units
    again = aug.preview(image, labels, n=3, seed=1, weight=weight)
    np.testing.assert_array_equal(imgs, again[0])
    only, none_l, none_w = Augmentation().preview(image, None, n=2, seed=0)
    assert only.shape == (2, 50, 60) and none_l is None and none_w is None


@CUDA
def test_cuda_matches_cpu() -> None:
    image, labels = _batch()
    aug = Augmentation(rotate_degrees=20.0, crop_size=48, gaussian_noise=0.0)
    ci, cl = aug(image, labels, generator=torch.Generator().manual_seed(0))
    gi, gl = aug(image.cuda(), labels.cuda(), generator=torch.Generator().manual_seed(0))
    assert gi.is_cuda and gl.is_cuda
    torch.testing.assert_close(gi.cpu(), ci, atol=1e-3, rtol=0)
    assert (gl.cpu() != cl).float().mean() < 1e-3  # nearest ties may round differently
    out = elastic_deform(image.cuda(), labels.cuda(), seed=0)
    assert out[0].is_cuda and out[1].dtype == torch.int64
