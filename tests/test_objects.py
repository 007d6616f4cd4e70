"""Instances from class maps and probabilities, on generated data with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.checks import ArgumentError
from napari_unet.objects import (
    BOUNDARY_H,
    OTHER_H,
    ObjectParams,
    ObjectsWarning,
    default_params,
    label_objects,
    objects_metadata,
    resolve_class,
)


def _disc(shape, center, radius):
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2


def test_touching_discs_split_into_two_only_with_split():
    shape = (64, 96)
    mask = _disc(shape, (32, 30), 15) | _disc(shape, (32, 58), 15)  # overlap: a neck
    classes = np.where(mask, 2, 1).astype(np.uint8)
    joined = label_objects(classes, 2, kind="classes", params=ObjectParams(smooth=0))
    assert joined.n_objects == 1
    split = label_objects(classes, 2, kind="classes", params=ObjectParams(smooth=0, split=True))
    assert split.n_objects == 2
    lab = split.labels
    assert lab.dtype == np.uint32
    assert lab[32, 20] != lab[32, 68] and lab[32, 20] > 0 and lab[32, 68] > 0
    assert np.array_equal(lab > 0, mask)  # every object pixel is kept


def _two_cells_with_gap():
    """Two cells separated by a vertical membrane with a one-pixel gap, in a frame."""
    prob = np.zeros((60, 80), np.float32)
    prob[:2, :] = prob[-2:, :] = prob[:, :2] = prob[:, -2:] = 1.0
    prob[:, 39:41] = 1.0
    prob[30, 39:41] = 0.0  # the gap
    return prob


def test_a_gap_in_a_membrane_does_not_merge_two_cells():
    from napari_unet.metrics import segments_from_classes

    prob = _two_cells_with_gap()
    classes = np.where(prob > 0.5, 1, 2).astype(np.uint8)
    assert segments_from_classes(classes, 1).max() == 1  # the old way merges them
    probs = np.stack([prob, 1 - prob])
    res = label_objects(probs, 1, params=ObjectParams(mode="boundary"))
    assert res.n_objects == 2
    assert res.labels[30, 20] != res.labels[30, 60]
    assert res.labels.min() > 0  # the watershed assigns every pixel
    res_c = label_objects(classes, 1, kind="classes", params=ObjectParams(mode="boundary"))
    assert res_c.n_objects == 2


def test_small_segments_are_merged_into_neighbours():
    prob = _two_cells_with_gap()
    prob[30, 39:41] = 1.0
    prob[10:14, 10:14] = 1.0  # a small closed ring of membrane: a 2x2 cell inside
    prob[11:13, 11:13] = 0.0
    probs = np.stack([prob, 1 - prob])
    p = ObjectParams(mode="boundary", smooth=0)
    assert label_objects(probs, 1, params=p.replace(min_pixels=1)).n_objects == 3
    assert label_objects(probs, 1, params=p.replace(min_pixels=40)).n_objects == 2
    half = (0.5, 0.5)
    assert label_objects(probs, 1, params=p.replace(min_size=0.25), scale=half).n_objects == 3
    assert label_objects(probs, 1, params=p.replace(min_size=10.0), scale=half).n_objects == 2


def _two_slices_three_blobs():
    vol = np.ones((2, 40, 60), np.uint8)
    vol[0, 5:15, 5:15] = 2  # overlaps the blob above
    vol[1, 10:20, 10:20] = 2
    vol[0, 25:35, 40:50] = 2  # no overlap with the one above (shifted away)
    vol[1, 25:35, 51:59] = 2
    return vol


@pytest.mark.parametrize("block_slices", [32, 1])
def test_3d_objects_connect_across_slices_only_where_they_overlap(block_slices):
    vol = _two_slices_three_blobs()
    p = ObjectParams(dims=3, smooth=0, min_pixels=1, block_slices=block_slices)
    res = label_objects(vol, 2, kind="classes", params=p)
    lab = res.labels
    assert res.n_objects == 3
    assert lab[0, 10, 10] == lab[1, 15, 15] > 0
    assert lab[0, 30, 45] != lab[1, 30, 55]
    flat = label_objects(vol, 2, kind="classes", params=p.replace(dims=2))
    assert flat.n_objects == 4


def test_min_size_is_physical():
    vol = np.ones((40, 40), np.uint8)
    vol[2:6, 2:6] = 2  # 16 px
    vol[20:30, 20:30] = 2  # 100 px
    p = ObjectParams(smooth=0, min_size=10.0)
    assert label_objects(vol, 2, kind="classes", params=p).n_objects == 2  # 16 um^2
    res = label_objects(vol, 2, kind="classes", params=p, scale=(0.5, 0.5))
    assert res.n_objects == 1  # 16 px = 4 um^2 < 10 um^2 <= 25 um^2


def test_holes_are_filled():
    vol = np.ones((30, 30), np.uint8)
    vol[5:25, 5:25] = 2
    vol[12:16, 12:16] = 1
    res = label_objects(vol, 2, kind="classes", params=ObjectParams(smooth=0))
    assert res.labels[13, 13] == res.labels[6, 6] == 1
    kept = label_objects(vol, 2, kind="classes", params=ObjectParams(smooth=0, fill_holes=False))
    assert kept.labels[13, 13] == 0


def test_zarr_in_zarr_out_matches_numpy(tmp_path):
    zarr = pytest.importorskip("zarr")
    vol = np.ones((6, 32, 32), np.uint8)
    for z in range(6):
        vol[z, 4 + z : 12 + z, 4:12] = 2
        vol[z, 20:28, 18 + z % 2 : 26] = 2
    src = zarr.open_array(str(tmp_path / "in.zarr"), mode="w", shape=vol.shape, chunks=(1, 32, 32),
                          dtype=vol.dtype)  # fmt: skip
    src[:] = vol
    out = zarr.open_array(str(tmp_path / "out.zarr"), mode="w", shape=vol.shape, chunks=(1, 32, 32),
                          dtype=np.uint32)  # fmt: skip
    p = ObjectParams(dims=3, smooth=0, min_pixels=1, block_slices=2)
    res = label_objects(src, 2, kind="classes", params=p, out=out)
    ref = label_objects(vol, 2, kind="classes", params=p.replace(block_slices=32))
    assert res.n_objects == ref.n_objects == 2
    assert np.array_equal(np.asarray(out[:]), ref.labels)


@pytest.mark.parametrize("block_slices", [32, 1])
def test_3d_boundary_watershed_with_anisotropic_scale(block_slices):
    prob = np.repeat(_two_cells_with_gap()[None], 4, axis=0)
    probs = np.stack([prob, 1 - prob])
    p = ObjectParams(mode="boundary", dims=3, block_slices=block_slices)
    res = label_objects(probs, 1, params=p, scale=(10.0, 1.0, 1.0))
    assert res.n_objects == 2  # blocks of one slice are stitched by their overlap
    assert np.all(res.labels[:, 30, 20] == res.labels[0, 30, 20])
    assert np.all(res.labels[:, 30, 60] == res.labels[0, 30, 60])


def test_class_resolution_and_defaults():
    names = ["membrane", "cell"]
    assert resolve_class("Cell", names) == 2 and resolve_class("1", names) == 1
    with pytest.raises(ArgumentError, match="no class 'mito'"):
        resolve_class("mito", names)
    assert default_params(names, 2) == (1, ObjectParams(mode="boundary"))
    assert default_params(["background", "mitochondria"], 2) == (2, ObjectParams())
    meta = {"objects": {"mitochondria": {"split": True, "unknown": 1}}}
    with pytest.warns(ObjectsWarning, match="'unknown' of class 'mitochondria' is ignored"):
        assert default_params(["background", "mitochondria"], 2, meta)[1].split is True


def test_bad_input_gives_one_line_errors():
    vol = np.ones((10, 10), np.uint8)
    with pytest.raises(ArgumentError, match="holds no pixel of class 2"):
        label_objects(vol, 2, kind="classes")
    with pytest.raises(ArgumentError, match="threshold"):
        ObjectParams(threshold=2.0).checked()
    with pytest.raises(ArgumentError, match="not in probabilities of 2 classes"):
        label_objects(np.zeros((2, 8, 8), np.float32), 3)


def test_split_by_seeds_gives_one_part_per_seed():
    from napari_unet.objects import split_by_seeds

    mask = np.zeros((20, 40), bool)
    mask[5:15, 2:38] = True
    parts = split_by_seeds(mask, [(10, 5), (10, 35)])
    assert set(np.unique(parts)) == {0, 1, 2}
    assert parts[10, 3] == 1 and parts[10, 36] == 2
    assert np.array_equal(parts > 0, mask)
    with pytest.raises(ArgumentError, match=r"seed 2 .* not inside"):
        split_by_seeds(mask, [(10, 5), (0, 0)])


# --------------------------------------------------------------------------- stored in checkpoints


def test_the_seed_depth_default_follows_the_mode():
    assert ObjectParams(mode="boundary").seed_depth() == BOUNDARY_H
    assert ObjectParams(mode="boundary", seeds="hminima").seed_depth() == OTHER_H
    assert ObjectParams().seed_depth() == OTHER_H
    assert ObjectParams(mode="boundary", h=1.5).seed_depth() == 1.5
    with pytest.raises(ArgumentError, match="split must be true or false"):
        ObjectParams(split="yes").checked()


def test_a_real_tiny_training_stores_the_table_and_keeps_tuned_entries(tmp_path):
    import torch

    from napari_unet.checkpoint import load_checkpoint
    from napari_unet.model import UNet
    from napari_unet.sample_data import synthetic_em
    from napari_unet.training import TrainConfig, Trainer

    image, labels = synthetic_em((2, 64, 64), seed=2, cell_size=20)
    cfg = TrainConfig(iterations=2, num_threads=1, preview_every_s=0.0, batch_size=2,
                      patch_size=32, device="cpu")  # fmt: skip
    torch.manual_seed(0)
    trainer = Trainer(image, labels, cfg, model=UNet(depth=2, base_channels=4, padding="same"))
    list(trainer.run())
    _, meta = load_checkpoint(trainer.save(tmp_path / "m.pt"))
    table = meta["objects"]
    assert set(table) == {"membrane", "cell"}
    assert table["cell"]["mode"] == table["membrane"]["mode"] == "boundary"
    assert table["cell"]["h"] == BOUNDARY_H and table["cell"]["dims"] == 2
    stock = ObjectParams(mode="boundary", h=BOUNDARY_H)
    assert default_params(meta["class_names"], 2, meta) == (1, stock)
    # fine-tuning from a checkpoint whose cell parameters were tuned keeps them
    table["cell"]["h"] = 9.0
    net, _ = load_checkpoint(tmp_path / "m.pt")
    again = Trainer(image, labels, cfg, model=net, metadata=meta)
    assert again.metadata["objects"]["cell"]["h"] == 9.0
    assert again.metadata["objects"]["membrane"]["h"] == BOUNDARY_H


def test_stored_parameters_change_what_objects_does():
    prob = _two_cells_with_gap()
    prob[28:33, 39:41] = 0.0  # a gap wide enough to stay open after the smoothing
    probs = np.stack([prob, 1 - prob])
    names = ["membrane", "cell"]
    cls, params = default_params(names, 2)
    assert label_objects(probs, cls, params=params).n_objects == 2  # cells between membranes
    meta = {"objects": objects_metadata(names)}
    meta["objects"]["cell"]["mode"] = "objects"  # the cells as connected components
    cls, params = default_params(names, 2, meta)
    assert cls == 2 and params.mode == "objects"
    assert label_objects(probs, cls, params=params).n_objects == 1  # joined through the gap
    meta["objects"]["cell"] = {"h": 1000.0}  # seeds too deep: one seed for the joined region
    cls, params = default_params(names, 2, meta)
    assert cls == 1 and label_objects(probs, cls, params=params).n_objects == 1


def test_a_bad_table_gives_a_clear_error_or_a_warning(tmp_path):
    from napari_unet.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
    from napari_unet.model import UNet

    net = UNet(depth=1, base_channels=2)
    save_checkpoint(tmp_path / "bad.pt", net, class_names=["membrane", "cell"], objects="oops")
    with pytest.raises(CheckpointError, match=r"invalid metadata 'objects': must be a \{class"):
        load_checkpoint(tmp_path / "bad.pt")
    save_checkpoint(tmp_path / "bad2.pt", net, objects={"cell": {"h": [1, 2]}})
    with pytest.raises(CheckpointError, match="the parameters of 'cell' must be plain values"):
        load_checkpoint(tmp_path / "bad2.pt")
    stored = {"cell": {"h": -1.0, "mode": "blob", "split": True, "colour": "red"}}
    save_checkpoint(tmp_path / "odd.pt", net, objects=stored)
    _, meta = load_checkpoint(tmp_path / "odd.pt")  # loads: the values are checked when used
    with pytest.warns(ObjectsWarning) as caught:
        cls, params = default_params(["membrane", "cell"], 2, meta)
    text = " | ".join(str(w.message) for w in caught)
    assert "'h' of class 'cell' is ignored: h must be" in text and "'mode'" in text
    assert "'colour'" in text and "'split'" not in text
    assert (cls, params) == (1, ObjectParams(mode="boundary", split=True))
