"""Tests of the U-Net border weight maps (napari_unet.weightmap)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet.weightmap import (
    border_cutoff_radius,
    border_term,
    border_weight_map,
    border_weight_map_reference,
    border_weight_map_stack,
    class_weight_lut,
    class_weight_map,
    instances_from_mask,
    loss_weight_map,
)


def voronoi_cells(
    shape: tuple[int, int] = (128, 128), n_seeds: int = 30, membrane: int = 1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Random Voronoi cells separated by membranes: (labels {1 membrane, 2 cell}, cell instances)."""
    rng = np.random.default_rng(seed)
    markers = np.ones(shape, dtype=bool)
    ys = rng.integers(0, shape[0], n_seeds)
    xs = rng.integers(0, shape[1], n_seeds)
    markers[ys, xs] = False
    seed_id = np.zeros(shape, dtype=np.int32)
    seed_id[ys, xs] = np.arange(1, n_seeds + 1)
    _, (iy, ix) = ndi.distance_transform_edt(markers, return_indices=True)
    nearest = seed_id[iy, ix]
    edges = np.zeros(shape, dtype=bool)
    edges[:-1] |= nearest[:-1] != nearest[1:]
    edges[:, :-1] |= nearest[:, :-1] != nearest[:, 1:]
    if membrane > 1:
        edges = ndi.binary_dilation(edges, iterations=membrane - 1)
    labels = np.where(edges, 1, 2).astype(np.uint8)
    return labels, instances_from_mask(labels, object_value=2)


# ----------------------------------------------------------------------------- instances


def test_instances_from_mask_default_object_value() -> None:
    mask = np.array([[255, 0, 255], [255, 0, 0], [0, 0, 255]], dtype=np.uint8)
    inst = instances_from_mask(mask)
    assert inst.dtype == np.int32
    assert inst.max() == 3  # three 4-connected components of 255
    assert np.array_equal(inst > 0, mask == 255)
    # {0 unlabelled, 1 membrane, 2 cell}: the last class is the object class
    lab = np.array([[2, 1, 2], [0, 1, 2]], dtype=np.uint8)
    assert np.array_equal(instances_from_mask(lab) > 0, lab == 2)
    assert instances_from_mask(lab).max() == 2
    # booleans: the True pixels
    assert np.array_equal(instances_from_mask(mask == 0) > 0, mask == 0)
    # all zero: no objects
    assert not instances_from_mask(np.zeros((4, 4), np.uint8)).any()


def test_instances_from_mask_connectivity_and_value() -> None:
    diag = np.eye(4, dtype=np.uint8) * 2
    assert instances_from_mask(diag, object_value=2).max() == 4  # 4-connected
    assert instances_from_mask(diag, object_value=2, connectivity=2).max() == 1  # 8-connected
    inverse = instances_from_mask(diag, object_value=0)
    assert inverse.max() == 2 and np.array_equal(inverse > 0, diag == 0)
    with pytest.raises(ValueError):
        instances_from_mask(diag, connectivity=3)
    with pytest.raises(TypeError):
        instances_from_mask(np.array([["a"]]))


# ----------------------------------------------------------------------------- exactness


@pytest.mark.parametrize(
    ("w0", "sigma", "seed", "membrane"),
    [(10.0, 5.0, 0, 1), (10.0, 5.0, 1, 2), (10.0, 10.0, 2, 2), (1000.0, 3.0, 3, 1)],
)
def test_fast_equals_reference(w0: float, sigma: float, seed: int, membrane: int) -> None:
    _, inst = voronoi_cells((160, 144), n_seeds=40, membrane=membrane, seed=seed)
    assert inst.max() >= 20
    fast = border_weight_map(inst, w0=w0, sigma=sigma)
    ref = border_weight_map_reference(inst, w0=w0, sigma=sigma)
    assert fast.dtype == np.float32 and fast.shape == inst.shape
    np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-4)
    assert ref.max() > 1.0 + 0.2 * w0  # the border term is really there


def test_fast_equals_reference_balanced_and_sparse_objects() -> None:
    # few small objects far apart: many pixels have no second object in range
    inst = np.zeros((150, 170), dtype=np.int64)
    inst[10:14, 10:16] = 3
    inst[30:33, 100:140] = 9
    inst[120:140, 20:25] = 4
    inst[139:150, 160:170] = 12
    for sigma in (2.0, 5.0, 10.0):
        fast = border_weight_map(inst, 10.0, sigma, class_weights="balanced")
        ref = border_weight_map_reference(inst, 10.0, sigma, class_weights="balanced")
        np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-4)


def test_error_bound_follows_tol() -> None:
    _, inst = voronoi_cells((96, 96), n_seeds=25, seed=5)
    ref = border_weight_map_reference(inst, 10.0, 5.0)
    for tol in (1e-1, 1e-2):
        fast = border_weight_map(inst, 10.0, 5.0, tol=tol)
        err = np.abs(fast - ref).max()
        assert err <= tol + 1e-5
    r = border_cutoff_radius(10.0, 5.0, 1e-6)
    assert math.isclose(10.0 * math.exp(-(r**2) / (2 * 25.0)), 1e-6, rel_tol=1e-9)


def test_non_contiguous_and_huge_ids() -> None:
    _, inst = voronoi_cells((80, 90), n_seeds=15, seed=7)
    base = border_weight_map(inst)
    shifted = np.where(inst > 0, inst * 7 + 100, 0).astype(np.uint16)
    np.testing.assert_array_equal(border_weight_map(shifted), base)
    huge = np.where(inst > 0, inst.astype(np.int64) * 2**40 + 5, 0)
    np.testing.assert_array_equal(border_weight_map(huge), base)
    np.testing.assert_allclose(border_weight_map_reference(huge), base, atol=1e-4, rtol=0)
    # no background at all: every pixel an object pixel
    full = np.arange(1, 13).reshape(3, 4)
    np.testing.assert_array_equal(border_weight_map(full), np.ones((3, 4), np.float32))


# ----------------------------------------------------------------------------- behaviour


def test_border_term_is_largest_in_narrow_gaps() -> None:
    inst = np.zeros((40, 80), dtype=np.int32)
    inst[10:30, 5:20] = 1  # narrow gap: columns 20, 21
    inst[10:30, 22:37] = 2
    inst[10:30, 47:62] = 3  # wide gap: columns 37..46 (10 px)
    w = border_weight_map(inst, w0=10.0, sigma=5.0)
    narrow = w[20, 20]
    wide = w[20, 41]
    assert narrow > wide + 1.0
    # d1 + d2 = 1 + 2 in the 2 px gap
    assert narrow == pytest.approx(1.0 + 10.0 * math.exp(-(3.0**2) / 50.0), abs=1e-5)
    assert np.all(w[inst > 0] == 1.0)  # objects get w_c only


def test_fewer_than_two_objects_gives_class_weights() -> None:
    empty = np.zeros((20, 30), dtype=np.uint8)
    np.testing.assert_array_equal(border_weight_map(empty), np.ones((20, 30), np.float32))
    one = empty.copy()
    one[5:10, 5:10] = 4
    np.testing.assert_array_equal(border_weight_map(one), np.ones((20, 30), np.float32))
    bal = border_weight_map(one, class_weights="balanced")
    np.testing.assert_allclose(bal, class_weight_map(one, "balanced"))
    zero_size = np.zeros((0, 5), dtype=np.int32)
    assert border_weight_map(zero_size).shape == (0, 5)
    # w0 = 0 switches the border term off
    _, inst = voronoi_cells((40, 40), n_seeds=8, seed=1)
    np.testing.assert_array_equal(border_weight_map(inst, w0=0.0), np.ones((40, 40), np.float32))


def test_balanced_class_weights_formula() -> None:
    inst = np.zeros((4, 4), dtype=np.int32)
    inst[0, :3] = 1  # 3 object pixels, 13 background
    w = class_weight_map(inst, "balanced")
    assert w[0, 0] == pytest.approx(16 / (2 * 3))
    assert w[3, 3] == pytest.approx(16 / (2 * 13))
    # with a second object the border term is added on top of the balanced w_c
    inst[3, 3] = 2
    full = border_weight_map(inst, w0=10.0, sigma=5.0, class_weights="balanced")
    assert full[0, 0] == pytest.approx(16 / (2 * 4))
    assert full[1, 0] > 16 / (2 * 12)
    # one class only: K = 1 and N_c = N
    np.testing.assert_allclose(class_weight_map(np.zeros((3, 3), int), "balanced"), 1.0)


def test_dict_class_weights() -> None:
    inst = np.zeros((10, 10), dtype=np.int32)
    inst[2:4, 2:4] = 1
    inst[2:4, 6:8] = 2
    by_int = border_weight_map(inst, class_weights={0: 0.5, 1: 3.0})
    by_name = border_weight_map(inst, class_weights={"background": 0.5, "object": 3.0})
    np.testing.assert_array_equal(by_int, by_name)
    assert np.all(by_int[inst > 0] == 3.0)
    plain = border_weight_map(inst)
    bg = inst == 0
    np.testing.assert_allclose(by_int[bg] - 0.5, plain[bg] - 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="both"):
        border_weight_map(inst, class_weights={0: 1.0})
    with pytest.raises(ValueError):
        border_weight_map(inst, class_weights={0: 1.0, 1: 1.0, 2: 1.0})
    with pytest.raises(ValueError):
        border_weight_map(inst, class_weights={0: -1.0, 1: 1.0})
    with pytest.raises(ValueError):
        border_weight_map(inst, class_weights="inverse")
    with pytest.raises(TypeError):
        border_weight_map(inst, class_weights=[1.0, 2.0])  # type: ignore[arg-type]


def test_input_validation() -> None:
    with pytest.raises(TypeError):
        border_weight_map(np.zeros((5, 5), dtype=np.float32))
    with pytest.raises(TypeError):
        border_weight_map(np.zeros((5, 5), dtype=bool))
    with pytest.raises(TypeError):
        border_weight_map_reference(np.zeros((5, 5), dtype=np.float64))
    with pytest.raises(ValueError, match="stack"):
        border_weight_map(np.zeros((2, 5, 5), dtype=np.int32))
    with pytest.raises(ValueError):
        border_weight_map(-np.ones((5, 5), dtype=np.int32))
    with pytest.raises(ValueError):
        border_weight_map(np.zeros((5, 5), np.int32), sigma=0.0)
    with pytest.raises(ValueError):
        border_weight_map(np.zeros((5, 5), np.int32), w0=-1.0)
    with pytest.raises(ValueError):
        border_weight_map(np.zeros((5, 5), np.int32), tol=0.0)


def test_stack_is_per_slice() -> None:
    slices = [voronoi_cells((48, 40), n_seeds=10, seed=s)[1] for s in range(3)]
    stack = np.stack(slices)
    out = border_weight_map_stack(stack, 10.0, 5.0, class_weights="balanced")
    assert out.shape == stack.shape and out.dtype == np.float32
    for z, inst in enumerate(slices):
        np.testing.assert_array_equal(out[z], border_weight_map(inst, class_weights="balanced"))
    np.testing.assert_array_equal(border_weight_map_stack(slices[0]), border_weight_map(slices[0]))
    with pytest.raises(ValueError):
        border_weight_map_stack(np.zeros((2, 2, 2, 2), np.int32))


# ----------------------------------------------------------------------------- training weights


def test_loss_weight_map_formula():
    lab = np.ones((40, 40), np.uint8)
    lab[5:18, 5:35] = 2
    lab[20:35, 5:35] = 2
    lab[0, 0] = 0
    counts = np.bincount(lab.ravel(), minlength=3)
    lut = class_weight_lut(counts, 2, "balanced")
    labelled = counts[1:].sum()
    np.testing.assert_allclose(lut[1:], labelled / (2 * counts[1:]), rtol=1e-6)
    assert lut[0] == 0.0
    w = loss_weight_map(lab, lut, w0=10.0, sigma=5.0, object_class=2)
    assert w.dtype == np.float32
    assert w[0, 0] == 0.0  # unlabelled pixels weigh nothing
    # the thin membrane between the two cells weighs most
    assert w[19, 20] > w[2, 20] > lut[1]
    assert np.isclose(w[10, 20], lut[2])  # inside a cell: class weight only
    # the border term is the paper's, on the 4-connected cells
    expected = border_weight_map(instances_from_mask(lab == 2), 10.0, 5.0) - 1.0
    np.testing.assert_allclose(w[19, 20] - lut[1], expected[19, 20], rtol=1e-5)
    # w0 = 0 or fewer than two cells: no border term
    assert border_term(lab, 2, w0=0.0) is None
    one = lab.copy()
    one[20:35, 5:35] = 1
    assert border_term(one, 2) is None


def test_class_weight_lut_options():
    counts = np.array([100, 30, 10])
    np.testing.assert_array_equal(class_weight_lut(counts, 2, None), [0, 1, 1])
    np.testing.assert_array_equal(class_weight_lut(counts, 2, {2: 4.0}), [0, 1, 4])
    # a class nobody painted keeps weight 1 under "balanced"
    np.testing.assert_allclose(class_weight_lut([5, 0, 10], 2, "balanced"), [0, 1, 1])
    with pytest.raises(ValueError, match=r"classes are 1\.\.2"):
        class_weight_lut(counts, 2, {3: 1.0})
    with pytest.raises(ValueError, match="'balanced'"):
        class_weight_lut(counts, 2, "equal")


def test_trainer_uses_the_loss_weight_map():
    """The weights the trainer feeds the loss are loss_weight_map's, slice by slice."""
    from napari_unet.sample_data import synthetic_em
    from napari_unet.training import TrainConfig, Trainer

    image, truth = synthetic_em((4, 96, 96), seed=3)
    labels = np.zeros_like(truth)
    labels[1] = truth[1]
    labels[2, :40] = truth[2, :40]  # a partly painted slice
    config = TrainConfig(w0=6.0, sigma=4.0, class_weights="balanced", device="cpu")
    trainer = Trainer(image, labels, config)
    counts = np.bincount(labels.ravel(), minlength=3)
    lut = class_weight_lut(counts, 2, "balanced")
    for z in (1, 2):
        expected = loss_weight_map(labels[z], lut, w0=6.0, sigma=4.0, object_class=2)
        np.testing.assert_allclose(trainer.weight_map(z), expected, rtol=1e-6)
    assert not trainer.weight_map(2)[40:].any()
    with pytest.raises(ValueError, match="not a training slice"):
        trainer.weight_map(0)
