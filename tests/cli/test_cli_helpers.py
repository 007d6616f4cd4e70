"""Slice syntax, lazy label views, progress output and the evaluation arithmetic."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest

from napari_unet.cli import CLIError
from napari_unet.cli._common import Progress, SliceSelection, json_safe, parse_slices
from napari_unet.evaluation import default_membrane_value, evaluate_arrays
from napari_unet.labels import MappedOutput, SliceLabels, class_lut
from napari_unet.metrics import evaluate_segmentation
from napari_unet.slices import format_slices


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("0,3,7", [0, 3, 7]),
        ("0-4", [0, 1, 2, 3, 4]),
        ("0-2,5,9-10", [0, 1, 2, 5, 9, 10]),
        (" 7 , 3,3 ", [3, 7]),
        ("4-4", [4]),
        ("2 - 3", [2, 3]),
    ],
)
def test_parse_slices(spec: str, expected: list[int]) -> None:
    assert parse_slices(spec, 11) == expected
    assert parse_slices(format_slices(expected), 11) == expected


@pytest.mark.parametrize("spec", ["", "a", "1,", "-1", "3-1", "1-2-3", "1.5", "0;1"])
def test_parse_slices_rejects_bad_syntax(spec: str) -> None:
    with pytest.raises(CLIError):
        parse_slices(spec, 10)


def test_parse_slices_range_check() -> None:
    with pytest.raises(CLIError, match=r"out of range.*\(0-4\)"):
        parse_slices("3-5", 5)
    assert parse_slices("3-5") == [3, 4, 5]  # no stack size: no check


class CountingArray:
    """A (Z, H, W) array that records which slices were read."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data
        self.shape = data.shape
        self.dtype = data.dtype
        self.reads: list[int] = []

    def __getitem__(self, z):
        self.reads.append(int(z))
        return self.data[z]


def test_slice_labels_reads_only_kept_slices_and_maps_dense_values() -> None:
    data = np.zeros((4, 5, 6), np.uint8)
    data[1] = 255
    data[1, :, :2] = 0
    data[3] = 7
    arr = CountingArray(data)
    view = SliceLabels(arr, keep={1}, values=[0, 255])
    assert view.shape == (4, 5, 6) and view.dtype == np.uint8
    assert not np.any(view[0]) and not np.any(view[3])
    assert arr.reads == []  # slices outside --slices are never read
    s1 = view[1]
    assert set(np.unique(s1)) == {1, 2}
    np.testing.assert_array_equal(s1 == 1, data[1] == 0)
    assert arr.reads == [1]
    # values outside the mapping become unlabelled
    assert not np.any(SliceLabels(arr, values=[0, 255])[3])
    # sparse view: values pass through
    np.testing.assert_array_equal(SliceLabels(arr)[3], data[3])
    assert np.asarray(SliceLabels(arr, keep={3})).sum() == 7 * 30


def test_selection_and_mapped_output() -> None:
    data = np.arange(4 * 2 * 2).reshape(4, 2, 2)
    sel = SliceSelection(data, [3, 1])
    assert sel.shape == (2, 2, 2)
    np.testing.assert_array_equal(sel[0], data[3])
    np.testing.assert_array_equal(sel[...], data[[3, 1]])
    lut = class_lut({"0": 1, "255": 2}, 2)
    assert lut.tolist() == [0, 0, 255]
    target = np.full((2, 2, 2), 9, np.uint8)
    out = MappedOutput(target, lut)
    out[1] = np.array([[1, 2], [2, 1]], np.uint8)
    np.testing.assert_array_equal(target[1], [[0, 255], [255, 0]])
    assert class_lut(None, 2) is None


def test_progress_plain_lines_and_terminal_bar() -> None:
    piped = io.StringIO()
    p = Progress("training", stream=piped, tty=False, every_s=1000)
    for i in range(1, 6):
        p.update(i, 5, f"loss {i}")
    p.update(5, 5, "done", force=True)
    p.close()
    lines = piped.getvalue().splitlines()
    assert len(lines) == 2  # the first update and the forced last, nothing in between
    assert lines[0].startswith("training 1/5") and "\r" not in piped.getvalue()

    tty = io.StringIO()
    bar = Progress("predicting", stream=tty, tty=True)
    bar.update(1, 4, force=True)
    bar.update(4, 4, force=True)
    bar.close()
    text = tty.getvalue()
    assert text.count("\r") == 2 and "[######" in text and text.endswith("\n")
    assert Progress("x", stream=io.StringIO(), quiet=True).update(1, 2) is None


def test_json_safe() -> None:
    assert json_safe({1: math.nan, "a": [np.float32(0.5), np.int64(3)]}) == {
        "1": None,
        "a": [0.5, 3],
    }


def test_default_membrane_value() -> None:
    assert default_membrane_value(np.array([0, 255])) == 0
    assert default_membrane_value(np.array([0, 1, 2])) == 1
    assert default_membrane_value(np.array([1, 2])) == 1
    assert default_membrane_value(np.array([255])) == 1


def _noisy_pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from napari_unet.sample_data import synthetic_em

    _, truth = synthetic_em((3, 64, 64), seed=seed, cell_size=16)
    rng = np.random.default_rng(seed)
    pred = truth.copy()
    flip = rng.random(pred.shape) < 0.1
    pred[flip] = 3 - pred[flip]
    return pred, truth


def test_slice_by_slice_evaluation_equals_metrics_module() -> None:
    pred, truth = _noisy_pair()
    truth = truth.copy()
    truth[1, :10] = 0  # some unlabelled pixels
    got = evaluate_arrays(pred, truth)
    ref = evaluate_segmentation(pred, truth, membrane_class=1)
    for key in ("pixel_error", "mean_iou", "mean_dice", "rand_error", "vi_split", "vi_merge"):
        assert got[key] == pytest.approx(ref[key], rel=1e-9, abs=1e-12), key
    for cls in (1, 2):
        assert got["iou"][cls] == pytest.approx(ref["iou"][cls])
        assert got["dice"][cls] == pytest.approx(ref["dice"][cls])
    assert got["membrane_iou"] == got["iou"][1]


def test_isbi_style_values_are_classes() -> None:
    pred, truth = _noisy_pair(1)
    p255 = np.where(pred == 1, 0, 255).astype(np.uint8)
    t255 = np.where(truth == 1, 0, 255).astype(np.uint8)
    got = evaluate_arrays(p255, t255, slices=[0, 2])
    ref = evaluate_segmentation(pred[[0, 2]], truth[[0, 2]], membrane_class=1)
    assert got["membrane_value"] == 0 and got["zero_is_class"]
    assert got["pixel_error"] == pytest.approx(ref["pixel_error"])
    assert got["iou"][0] == pytest.approx(ref["iou"][1])
    assert got["iou"][255] == pytest.approx(ref["iou"][2])
    assert got["rand_error"] == pytest.approx(ref["rand_error"])
    assert got["n_pixels"] == 2 * 64 * 64
    # a 2D image works too, and identical maps are perfect
    same = evaluate_arrays(t255[0], t255[0])
    assert same["pixel_error"] == 0.0 and same["rand_error"] == pytest.approx(0.0)


def test_train_help_shows_the_train_config_defaults(capsys) -> None:
    from napari_unet.cli import main
    from napari_unet.training import TrainConfig

    cfg = TrainConfig()
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"patches per step (default {cfg.batch_size})" in text
    assert f"learning rate (default {cfg.learning_rate:g})" in text
    assert f"N iterations (default {cfg.iterations};" in text
    assert f"loss (default {cfg.loss})" in text and f"default {cfg.model})" in text


def test_train_passes_the_users_settings_and_leaves_policy_to_the_trainer(tmp_path) -> None:
    import dataclasses

    from napari_unet.cli import build_parser
    from napari_unet.cli.train import TrainingData, _config
    from napari_unet.training import TrainConfig

    args = build_parser().parse_args(
        ["train", "--image", "x.tif", "--labels", "y.tif", "--iterations", "30", "--lr", "0.01"]
    )
    data = TrainingData(None, None, [0], [1], 2, None, None, 2, False)
    cfg = _config(args, data, "small", tmp_path / "m.pt", "cpu")
    ref = TrainConfig()
    assert (cfg.iterations, cfg.learning_rate, cfg.max_minutes) == (30, 0.01, None)
    # warm-up clipping and the validation interval are the Trainer's (training.schedule)
    assert cfg.warmup_iterations == ref.warmup_iterations and cfg.val_every == ref.val_every
    untouched = {"iterations", "learning_rate", "max_minutes", "device", "n_classes", "model",
                 "val_slices", "checkpoint_path", "preview_every_s", "seed"}  # fmt: skip
    for f in dataclasses.fields(TrainConfig):
        if f.name not in untouched:
            assert getattr(cfg, f.name) == getattr(ref, f.name), f.name
