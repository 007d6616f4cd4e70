"""Fixtures of the CLI tests: real files on disk and one small real training run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_unet.cli import main
from napari_unet.io import write_labels_tiff
from napari_unet.sample_data import synthetic_em

#: a tiny but real training run: a few seconds on one CPU thread
FAST_TRAIN = [
    "--iterations", "30",
    "--patch-size", "64",
    "--batch-size", "2",
    "--device", "cpu",
    "--threads", "1",
    "-q",
]  # fmt: skip


@pytest.fixture(scope="session")
def fast_train() -> list[str]:
    """Options of a tiny real training run."""
    return list(FAST_TRAIN)


@pytest.fixture(scope="session")
def cli_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """image.tif (3 x 96 x 96 uint8), labels.tif (1 membrane / 2 cell), labels255.tif (0 / 255)."""
    root = tmp_path_factory.mktemp("cli_data")
    image, labels = synthetic_em((3, 96, 96), seed=1)
    paths = {
        "root": root,
        "image": root / "image.tif",
        "labels": root / "labels.tif",
        "labels255": root / "labels255.tif",
    }
    tifffile.imwrite(paths["image"], image, photometric="minisblack")
    write_labels_tiff(paths["labels"], labels)
    write_labels_tiff(paths["labels255"], np.where(labels == 1, 0, 255).astype(np.uint8))
    return paths


@pytest.fixture(scope="session")
def trained_model(cli_data: dict[str, Path]) -> Path:
    """A small U-Net trained by `napari-unet train` on slices 0 and 2 (sparse 1/2 labels)."""
    out = cli_data["root"] / "model.pt"
    code = main(
        [
            "train",
            "--image", str(cli_data["image"]),
            "--labels", str(cli_data["labels"]),
            "--slices", "0,2",
            "--out", str(out),
            *FAST_TRAIN,
        ]
    )  # fmt: skip
    assert code == 0
    return out
