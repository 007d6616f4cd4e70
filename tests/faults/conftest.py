"""Fixtures of the fault-injection suite: small real files, a tiny checkpoint, small disks."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile
from fault_helpers import tiny_unet

from napari_unet.checkpoint import save_checkpoint
from napari_unet.io import write_labels_tiff
from napari_unet.normalization import training_statistics
from napari_unet.sample_data import synthetic_em


@pytest.fixture(scope="session")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """image.tif (6 x 64 x 64 uint8), labels.tif (slices 0, 2 labelled) and a tiny model.pt."""
    root = tmp_path_factory.mktemp("faults")
    image, truth = synthetic_em((6, 64, 64), seed=2, cell_size=16)
    labels = np.zeros_like(truth)
    labels[0], labels[2] = truth[0], truth[2]
    tifffile.imwrite(root / "image.tif", image, photometric="minisblack")
    write_labels_tiff(root / "labels.tif", labels)
    write_labels_tiff(root / "truth.tif", truth)
    stats, intensity = training_statistics(image)
    save_checkpoint(
        root / "model.pt", tiny_unet(), normalization=stats, intensity=intensity,
        class_names=["membrane", "cell"], iterations=0,
    )  # fmt: skip
    return {"root": root, "image": root / "image.tif", "labels": root / "labels.tif",
            "truth": root / "truth.tif", "model": root / "model.pt"}  # fmt: skip


def _mount(folder: Path, options: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")


@pytest.fixture
def make_disk(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """``make_disk(size="1m", read_only=False)``: a small tmpfs (root only, else the test is
    skipped with the reason); writes past its size fail with ENOSPC, or all with EROFS."""
    mounted: list[Path] = []

    def make(size: str = "1m", read_only: bool = False) -> Path:
        folder = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
        _mount(folder, f"{'ro,' if read_only else ''}size={size}")
        mounted.append(folder)
        return folder

    yield make
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
