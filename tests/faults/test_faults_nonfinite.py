"""NaN/inf pixels, losses and weights: masked, skipped or refused, never saved, never silent."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import tifffile
import torch
from fault_helpers import FAST, one_line_error, tiny_unet

from napari_unet import losses
from napari_unet.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from napari_unet.cli import main
from napari_unet.sample_data import synthetic_em
from napari_unet.tiling import predict_tiled
from napari_unet.tiling.predict import NonFiniteWarning
from napari_unet.training import Diverged, Finished, TrainConfig, Trainer, TrainingWarning

CFG = {"iterations": 3, "patch_size": 32, "batch_size": 2, "device": "cpu", "num_threads": 1,
       "preview_every_s": 0.0}  # fmt: skip


@pytest.fixture(scope="module")
def float_stack() -> tuple[np.ndarray, np.ndarray]:
    image, truth = synthetic_em((3, 64, 64), seed=4, cell_size=16)
    labels = np.zeros_like(truth)
    labels[0] = truth[0]
    return image.astype(np.float32) / 255, labels


def test_nan_and_inf_pixels_are_masked_out_of_the_loss(float_stack):
    image, labels = float_stack
    image = image.copy()
    image[0, 10:20, 10:20] = np.nan  # 100 labelled pixels on NaN
    image[0, 40, 40] = np.inf
    trainer = Trainer(image, labels, TrainConfig(**CFG), model=tiny_unet())
    cached = trainer._live.slices[0]
    assert not cached.labels[10:20, 10:20].any() and cached.labels[40, 40] == 0
    assert np.isfinite(cached.image).all()
    events = list(trainer.run())
    warned = [e.message for e in events if isinstance(e, TrainingWarning)]
    assert any("101 NaN/inf pixels on training slice(s) 0" in w for w in warned), warned
    assert all(torch.isfinite(v).all() for v in trainer.model.state_dict().values())
    assert np.isfinite(trainer.normalization["mean"]) and trainer.normalization["std"] > 0
    assert events[-1].reason == "completed"


def test_too_many_nonfinite_pixels_refuse_to_train(float_stack):
    image, labels = float_stack
    image = image.copy()
    image[0, :20] = np.nan  # 31 % of the training slice
    with pytest.raises(ValueError, match=r"31\.2 %\) of the training slices are NaN.*at most 10 %"):
        Trainer(image, labels, TrainConfig(**CFG), model=tiny_unet())
    image = float_stack[0].copy()
    only = np.zeros_like(labels)
    only[0, 5, 5] = 1
    image[0, 5, 5] = np.nan
    with pytest.raises(ValueError, match="every labelled pixel lies on a NaN"):
        Trainer(image, only, TrainConfig(**CFG), model=tiny_unet())


def test_nonfinite_loss_skips_the_step_and_repeated_ones_stop(float_stack, monkeypatch, tmp_path):
    image, labels = float_stack
    model = tiny_unet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    real = losses.combined_loss

    def nan_loss(*args, **kwargs):
        return real(*args, **kwargs) * float("nan")

    monkeypatch.setattr("napari_unet.training.step.combined_loss", nan_loss)
    cfg = TrainConfig(**{**CFG, "iterations": 20}, checkpoint_path=str(tmp_path / "m.pt"))
    events = list(Trainer(image, labels, cfg, model=model).run())
    diverged = [e for e in events if isinstance(e, Diverged)]
    assert len(diverged) == 1 and diverged[0].iteration == 5 and diverged[0].skipped == 5
    assert "5 steps in a row had a NaN or infinite loss" in diverged[0].message
    assert isinstance(events[-1], Finished) and events[-1].reason == "diverged"
    warned = [e.message for e in events if isinstance(e, TrainingWarning)]
    assert warned == ["iteration 1: the loss or its gradient is NaN or infinite: step skipped, "
                      "the weights are unchanged"]  # fmt: skip
    for key, value in model.state_dict().items():  # weights and batch-norm statistics
        if value.is_floating_point():
            assert torch.equal(value, before[key]), key
    saved, _ = load_checkpoint(tmp_path / "m.pt")  # the last finite weights were saved
    assert torch.equal(saved.state_dict()["head.weight"], before["head.weight"])


def test_one_bad_step_does_not_stop_the_run(float_stack, monkeypatch):
    image, labels = float_stack
    real, calls = losses.combined_loss, []

    def sometimes_nan(*args, **kwargs):
        calls.append(1)
        loss = real(*args, **kwargs)
        return loss * float("nan") if len(calls) == 2 else loss

    monkeypatch.setattr("napari_unet.training.step.combined_loss", sometimes_nan)
    events = list(
        Trainer(image, labels, TrainConfig(**{**CFG, "iterations": 4}), model=tiny_unet()).run()
    )
    assert events[-1].reason == "completed" and events[-1].iterations == 4
    assert not any(isinstance(e, Diverged) for e in events)


def test_cli_diverged_run_keeps_the_last_finite_weights(data, tmp_path, monkeypatch, capsys):
    real = losses.combined_loss
    monkeypatch.setattr(
        "napari_unet.training.step.combined_loss", lambda *a, **k: real(*a, **k) * float("inf")
    )
    out = tmp_path / "m.pt"
    argv = ["train", "--image", str(data["image"]), "--labels", str(data["labels"]), "--out",
            str(out), *FAST, "--iterations", "50"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "napari-unet: error: training stopped at iteration 5" in err
    assert f"saved them to {out}" in err
    model, _ = load_checkpoint(out)  # loadable and finite
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())


def test_save_refuses_nonfinite_weights_and_keeps_the_old_file(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", tiny_unet(), note="good")
    before = path.read_bytes()
    bad = tiny_unet()
    with torch.no_grad():
        bad.head.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(CheckpointError, match=r"'head\.weight' contains NaN.*unchanged"):
        save_checkpoint(path, bad)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.pt"]


def test_predict_warns_with_the_count_and_uses_the_mean(tmp_path):
    net = tiny_unet()
    image = np.random.default_rng(0).random((2, 48, 48)).astype(np.float32)
    bad = image.copy()
    bad[0, :10, :10] = np.nan
    bad[1, 3, 3] = -np.inf
    norm = {"mean": 0.5, "std": 0.3}
    with pytest.warns(NonFiniteWarning, match="101 NaN/inf pixel") as caught:
        result = predict_tiled(net, bad, device="cpu", normalization=norm)
    assert caught[0].message.count == 101 and caught[0].message.slices == [0, 1]
    filled = image.copy()
    filled[0, :10, :10] = 0.5  # the mean intensity
    filled[1, 3, 3] = 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # finite pixels: no warning
        expected = predict_tiled(net, filled, device="cpu", normalization=norm)
    np.testing.assert_array_equal(result, expected)


def test_cli_predict_nan_pixels_warn_and_all_nan_is_refused(data, tmp_path, capsys):
    image = tifffile.imread(data["image"]).astype(np.float32) / 255
    image[1, :8, :8] = np.nan
    path = tmp_path / "nan.tif"
    tifffile.imwrite(path, image, photometric="minisblack")
    base = ["predict", "--model", str(data["model"]), "--device", "cpu", "--threads", "1", "-q"]
    out = tmp_path / "p.tif"
    assert main([*base, "--image", str(path), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "warning: the image has 64 NaN/inf pixel(s) of 24,576" in err
    assert out.exists()
    # a float 0..1 copy of the uint8 training stack: mapped onto its range, with a note
    assert "(float32, percentiles 1-99" in err and "mapped linearly" in err
    tifffile.imwrite(path, np.full((2, 32, 32), np.nan, np.float32), photometric="minisblack")
    code = main([*base, "--image", str(path), "--out", str(tmp_path / "q.tif")])
    one_line_error(capsys, code, str(path), "no finite pixel values")
    assert not (tmp_path / "q.tif").exists()


def test_cli_train_on_nan_pixels_masks_them(data, tmp_path, capsys):
    image = tifffile.imread(data["image"]).astype(np.float32)
    image[0, 5:9, 5:9] = np.nan
    path = tmp_path / "nan.tif"
    tifffile.imwrite(path, image, photometric="minisblack")
    out = tmp_path / "m.pt"
    code = main(["train", "--image", str(path), "--labels", str(data["labels"]), "--out",
                 str(out), *FAST])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert "16 NaN/inf pixels on training slice(s) 0 are left out of the loss" in (
        capsys.readouterr().err
    )
    _, meta = load_checkpoint(out)
    assert np.isfinite(meta["normalization"]["mean"])
    assert meta["intensity"]["dtype"] == "float32"


def test_a_nan_block_changes_only_its_neighbourhood():
    """A NaN block changes only the pixels whose receptive field sees it."""
    net = tiny_unet()
    image = np.random.default_rng(1).random((96, 96)).astype(np.float32)
    norm = {"mean": 0.5, "std": 0.3}
    clean = predict_tiled(net, image, device="cpu", normalization=norm)
    bad = image.copy()
    bad[40:50, 40:50] = np.nan
    with pytest.warns(NonFiniteWarning):
        result = predict_tiled(net, bad, device="cpu", normalization=norm)
    far = np.ones_like(clean, bool)
    far[20:70, 20:70] = False
    np.testing.assert_array_equal(result[far], clean[far])
