"""Sparse labels that hold a single class train, but never silently."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from fault_helpers import FAST, cli, tiny_unet

from napari_unet.sample_data import synthetic_em
from napari_unet.training import TrainConfig, Trainer, TrainingWarning

CFG = {"iterations": 2, "patch_size": 32, "batch_size": 1, "device": "cpu", "num_threads": 1}


@pytest.fixture(scope="module")
def stack() -> tuple[np.ndarray, np.ndarray]:
    image, truth = synthetic_em((3, 64, 64), seed=5, cell_size=16)
    return image, truth


def _warnings(image, labels) -> list[str]:
    events = Trainer(image, labels, TrainConfig(**CFG), model=tiny_unet()).run()
    return [e.message for e in events if isinstance(e, TrainingWarning)]


def test_one_painted_class_warns_with_its_name_and_slices(stack):
    image, truth = stack
    labels = np.zeros_like(truth)
    labels[0][truth[0] == 1] = 1  # membrane only, on two slices
    labels[2][truth[2] == 1] = 1
    warned = [w for w in _warnings(image, labels) if "only one class" in w]
    assert len(warned) == 1, warned
    assert "label 1" in warned[0] and "slice(s) 0,2" in warned[0]


def test_two_painted_classes_do_not_warn(stack):
    image, truth = stack
    labels = np.zeros_like(truth)
    labels[0, :8] = truth[0, :8]  # a strip that holds both classes
    assert len(np.unique(labels[0])) == 3
    assert not [w for w in _warnings(image, labels) if "only one class" in w]


def test_the_cli_prints_the_warning(stack, tmp_path):
    image, truth = stack
    labels = np.zeros_like(truth)
    labels[1][truth[1] == 2] = 2  # cytoplasm only
    tifffile.imwrite(tmp_path / "img.tif", image, photometric="minisblack")
    tifffile.imwrite(tmp_path / "lab.tif", labels, photometric="minisblack")
    run = cli("train", "--image", str(tmp_path / "img.tif"), "--labels", str(tmp_path / "lab.tif"),
              "--out", str(tmp_path / "m.pt"), "--model", "small", *FAST)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "only one class" in run.stderr and "label 2" in run.stderr, run.stderr
    assert (tmp_path / "m.pt").is_file()
