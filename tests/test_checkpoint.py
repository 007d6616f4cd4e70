"""Tests for napari_unet.checkpoint."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_unet.checkpoint import (
    FORMAT,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from napari_unet.model import UNet


def _trained_model() -> UNet:
    torch.manual_seed(0)
    model = UNet(n_classes=3, depth=3, base_channels=4, padding="same", norm="batch")
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 1, 16, 16) * 3 + 1)  # moves the batch-norm running stats
    return model


class _Evil:
    """Unpickling this would create a marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_round_trip(tmp_path):
    model = _trained_model()
    meta = {
        "class_names": ["membrane", "cell", "mito"],
        "class_colors": ("#ff0000", "#00ff00", "#0000ff"),
        "normalization": {"mean": np.float32(0.5), "std": np.float64(2.0)},
        "label_mapping": {"0": 1, "255": np.int64(2)},
        "history": [{"iteration": 1, "loss": 0.7, "ok": np.bool_(True)}, {"loss": float("nan")}],
        "iterations": np.int32(10),
        "augmentation": {"elastic": True, "sigma": 10.0, "grid": None},
        "weights": np.array([[1.0, 2.0]]),
    }
    path = save_checkpoint(tmp_path / "net.pt", model, **meta)
    assert path == tmp_path / "net.pt" and path.is_file()
    assert os.listdir(tmp_path) == ["net.pt"]  # no temporary files left

    loaded, metadata = load_checkpoint(str(path))
    assert isinstance(loaded, UNet) and not loaded.training
    assert loaded.config == model.config
    assert next(loaded.parameters()).device.type == "cpu"
    x = torch.randn(1, 1, 24, 16)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    history = metadata.pop("history")
    assert history[0] == {"iteration": 1, "loss": 0.7, "ok": True}
    assert np.isnan(history[1]["loss"])
    assert metadata == {
        "class_names": ["membrane", "cell", "mito"],
        "class_colors": ["#ff0000", "#00ff00", "#0000ff"],
        "normalization": {"mean": 0.5, "std": 2.0},
        "label_mapping": {"0": 1, "255": 2},
        "iterations": 10,
        "augmentation": {"elastic": True, "sigma": 10.0, "grid": None},
        "weights": [[1.0, 2.0]],
    }
    assert type(metadata["iterations"]) is int
    assert type(metadata["normalization"]["mean"]) is float

    # the file is a plain dict that torch's safe loader reads
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT and raw["format_version"] == 1


def test_overwrite_is_atomic_replacement(tmp_path):
    path = tmp_path / "sub" / "net.pt"
    save_checkpoint(path, UNet(depth=2, base_channels=2), note="first")
    save_checkpoint(path, UNet(depth=2, base_channels=3), note="second")
    assert os.listdir(path.parent) == ["net.pt"]
    model, meta = load_checkpoint(path)
    assert meta == {"note": "second"} and model.base_channels == 3


def test_bad_metadata_rejected_and_nothing_written(tmp_path):
    model = UNet(depth=2, base_channels=2)
    for bad in ({"where": Path("x")}, {"t": torch.ones(2)}, {"s": {1, 2}}, {"d": {1: "a"}}):
        with pytest.raises(TypeError, match="metadata"):
            save_checkpoint(tmp_path / "x.pt", model, **bad)
    with pytest.raises(TypeError, match="dtype"):
        save_checkpoint(tmp_path / "x.pt", model, a=np.array(["a"], dtype=object))
    with pytest.raises(TypeError, match="UNet"):
        save_checkpoint(tmp_path / "x.pt", torch.nn.Linear(2, 2))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("as_torch_file", [False, True])
def test_malicious_pickle_is_refused_without_running_code(tmp_path, as_torch_file):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"format": FORMAT, "format_version": 1, "metadata": _Evil(str(marker))}
    if as_torch_file:
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="tampered"):
        load_checkpoint(path)
    assert not marker.exists()


def test_random_bytes_and_foreign_files(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match="not a napari-unet checkpoint"):
        load_checkpoint(junk)
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {"w": torch.ones(2)}, "epoch": 3}, foreign)
    with pytest.raises(CheckpointError, match="not a napari-unet checkpoint"):
        load_checkpoint(foreign)
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.ones(3), tensor)
    with pytest.raises(CheckpointError):
        load_checkpoint(tensor)
    with pytest.raises(CheckpointError, match="directory"):
        load_checkpoint(tmp_path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found") as info:
        load_checkpoint(tmp_path / "nope.pt")
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nope.pt")


def test_truncated_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "net.pt", UNet(depth=3, base_channels=4))
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 30, 10):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="tampered"):
            load_checkpoint(path)


def test_wrong_version_and_mismatched_state(tmp_path):
    path = save_checkpoint(tmp_path / "net.pt", UNet(depth=3, base_channels=4))
    good = torch.load(path, weights_only=True)

    newer = dict(good, format_version=2)
    torch.save(newer, tmp_path / "newer.pt")
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(tmp_path / "newer.pt")

    wrong_config = dict(good, model_config={**good["model_config"], "base_channels": 5})
    torch.save(wrong_config, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(tmp_path / "mismatch.pt")

    bad_config = dict(good, model_config={**good["model_config"], "padding": "weird"})
    torch.save(bad_config, tmp_path / "badconfig.pt")
    with pytest.raises(CheckpointError, match="configuration"):
        load_checkpoint(tmp_path / "badconfig.pt")

    state = dict(good["state_dict"])
    state.pop(next(iter(state)))
    torch.save(dict(good, state_dict=state), tmp_path / "missing_key.pt")
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(tmp_path / "missing_key.pt")

    nan_state = {k: v.clone() for k, v in good["state_dict"].items()}
    next(v for v in nan_state.values() if v.is_floating_point()).fill_(float("nan"))
    torch.save(dict(good, state_dict=nan_state), tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="NaN"):
        load_checkpoint(tmp_path / "nan.pt")


def test_loaded_metadata_missing_is_empty(tmp_path):
    path = save_checkpoint(tmp_path / "net.pt", UNet(depth=2, base_channels=2))
    _, meta = load_checkpoint(path, map_location=torch.device("cpu"))
    assert meta == {}
