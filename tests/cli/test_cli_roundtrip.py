"""train -> predict -> evaluate on real files, in-process (``napari_unet.cli.main``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from napari_unet.checkpoint import load_checkpoint
from napari_unet.cli import main

METRIC_KEYS = {
    "pixel_error",
    "iou",
    "dice",
    "membrane_iou",
    "membrane_dice",
    "mean_iou",
    "mean_dice",
    "rand_error",
    "rand_precision",
    "rand_recall",
    "vi_split",
    "vi_merge",
    "vi_total",
    "membrane_value",
    "slices",
    "per_slice",
}


def _predict(model: Path, image: Path, out: Path, *extra: str) -> None:
    code = main(
        ["predict", "--model", str(model), "--image", str(image), "--out", str(out),
         "--device", "cpu", "--threads", "1", "-q", *extra]
    )  # fmt: skip
    assert code == 0


def test_train_predict_evaluate_round_trip(
    cli_data: dict[str, Path], trained_model: Path, tmp_path: Path, capsys
) -> None:
    model, meta = load_checkpoint(trained_model)
    assert model.n_classes == 2
    assert meta["class_names"] == ["membrane", "cell"]
    assert set(meta["normalization"]) == {"mean", "std"}
    assert len(meta["history"]) == 30
    assert "label_mapping" not in meta

    pred = tmp_path / "pred.tif"
    _predict(trained_model, cli_data["image"], pred)
    labels = tifffile.imread(pred)
    assert labels.shape == (3, 96, 96)
    assert set(np.unique(labels)) <= {1, 2}

    report = tmp_path / "metrics.json"
    code = main(
        ["evaluate", "--prediction", str(pred), "--truth", str(cli_data["labels"]),
         "--slices", "1", "--json", str(report)]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "membrane value 1" in out
    assert "pixel error" in out and "adapted Rand error" in out and "VI" in out
    result = json.loads(report.read_text())
    assert METRIC_KEYS <= set(result)
    assert set(result["iou"]) == {"1", "2"}
    assert result["slices"] == [1]
    assert result["membrane_value"] == 1
    assert 0.0 <= result["pixel_error"] < 0.5
    assert 0.0 <= result["rand_error"] <= 1.0
    assert result["vi_total"] >= 0.0


def test_dense_0_255_labels_round_trip_values(
    cli_data: dict[str, Path], tmp_path: Path, capsys, fast_train: list[str]
) -> None:
    ckpt = tmp_path / "isbi_like.pt"
    code = main(
        ["train", "--image", str(cli_data["image"]), "--labels", str(cli_data["labels255"]),
         "--dense", "--slices", "0,2", "--val-slices", "1", "--out", str(ckpt), *fast_train]
    )  # fmt: skip
    assert code == 0
    _, meta = load_checkpoint(ckpt)
    assert meta["label_mapping"] == {"0": 1, "255": 2}
    assert meta["class_names"] == ["value 0", "value 255"]
    assert meta["validation_history"], "validation on --val-slices ran"

    pred = tmp_path / "pred.tif"
    _predict(ckpt, cli_data["image"], pred, "--probabilities")
    labels = tifffile.imread(pred)
    assert set(np.unique(labels)) <= {0, 255}
    probs = tifffile.imread(tmp_path / "pred_probabilities.tif")  # ImageJ hyperstack: Z, C, Y, X
    assert probs.shape == (3, 2, 96, 96) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    # class 1 (file value 0) wins where its probability is larger
    np.testing.assert_array_equal(labels == 0, probs[:, 0] > probs[:, 1])

    capsys.readouterr()
    report = tmp_path / "m.json"
    assert main(
        ["evaluate", "--prediction", str(pred), "--truth", str(cli_data["labels255"]),
         "--slices", "1", "--json", str(report)]
    ) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "membrane value 0" in out
    result = json.loads(report.read_text())
    assert result["membrane_value"] == 0 and result["zero_is_class"] is True
    assert set(result["iou"]) == {"0", "255"}
    assert result["pixel_error"] < 0.5


def test_predict_zarr_probabilities_and_slices(
    cli_data: dict[str, Path], trained_model: Path, tmp_path: Path
) -> None:
    full = tmp_path / "full.tif"
    _predict(trained_model, cli_data["image"], full)
    ref = tifffile.imread(full)

    store = tmp_path / "pred.zarr"
    _predict(trained_model, cli_data["image"], store, "--probabilities")
    arr = zarr.open_array(str(store), mode="r")
    np.testing.assert_array_equal(arr[...], ref)
    assert arr.attrs["napari_unet"]["slices"] == [0, 1, 2]
    probs = zarr.open_array(str(tmp_path / "pred_probabilities.zarr"), mode="r")
    assert probs.shape == (2, 3, 96, 96) and probs.dtype == np.float16
    p = probs[...].astype(np.float32)
    differ = np.argmax(p, axis=0) + 1 != ref
    # labels come from the float32 values: float16 rounding can only flip near-ties
    assert np.all(np.abs(p[0] - p[1])[differ] < 2e-3)

    part = tmp_path / "part.tif"
    _predict(trained_model, cli_data["image"], part, "--slices", "1-2")
    np.testing.assert_array_equal(tifffile.imread(part), ref[1:3])

    # evaluate --slices accepts the full prediction and the one written with --slices alike
    results = []
    for pred in (full, part, store):
        js = tmp_path / f"{pred.stem}.json"
        assert main(
            ["evaluate", "--prediction", str(pred), "--truth", str(cli_data["labels"]),
             "--slices", "1-2", "--json", str(js)]
        ) == 0  # fmt: skip
        results.append(json.loads(js.read_text()))
    for key in ("pixel_error", "rand_error", "vi_total"):
        assert results[0][key] == results[1][key] == results[2][key]


def test_fine_tune_from_checkpoint_continues_history(
    cli_data: dict[str, Path], trained_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "tuned.pt"
    code = main(
        ["train", "--image", str(cli_data["image"]), "--labels", str(cli_data["labels"]),
         "--model", str(trained_model), "--slices", "1", "--iterations", "2",
         "--patch-size", "64", "--batch-size", "1", "--device", "cpu", "--threads", "1",
         "-q", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    _, before = load_checkpoint(trained_model)
    _, after = load_checkpoint(out)
    assert after["iterations"] == before["iterations"] + 2
    assert after["normalization"] == before["normalization"]


def test_train_progress_lines_when_piped(cli_data: dict[str, Path], tmp_path: Path, capsys) -> None:
    code = main(
        ["train", "--image", str(cli_data["image"]), "--labels", str(cli_data["labels"]),
         "--slices", "0", "--iterations", "2", "--patch-size", "64", "--batch-size", "1",
         "--device", "cpu", "--threads", "1", "--out", str(tmp_path / "m.pt")]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "\r" not in out  # not a terminal: plain lines
    assert "training on cpu" in out
    assert "training 1/2" in out
    assert "saved" in out and "2 iterations" in out


@pytest.mark.parametrize("iterations", ["3"])
def test_demo_runs_and_prints_metrics(tmp_path: Path, capsys, iterations: str) -> None:
    out = tmp_path / "demo"
    code = main(
        ["demo", "--iterations", iterations, "--shape", "2,64,64", "--device", "cpu",
         "--threads", "1", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "$ napari-unet train" in text and "$ napari-unet evaluate" in text
    assert "pixel error" in text and "adapted Rand error" in text
    for name in ("image.tif", "labels.tif", "model.pt", "prediction.tif", "metrics.json"):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["slices"] == [1]  # trained on slice 0, evaluated on the other
