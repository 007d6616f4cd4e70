"""`predict --scheduler` block by block: a 2-D TIFF written 2-D by the workers, and --resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_unet.cli import main

distributed = pytest.importorskip("distributed")
zarr = pytest.importorskip("zarr")


def test_2d_tiff_on_scheduler_then_resume(
    cli_data: dict[str, Path], trained_model: Path, tmp_path: Path, capsys
) -> None:
    image = tmp_path / "big2d.tif"
    tifffile.imwrite(image, np.tile(tifffile.imread(cli_data["image"])[0], (1, 2)))  # 96 x 192
    common = ["--model", str(trained_model), "--image", str(image), "--device", "cpu",
              "--tile", "64", "--batch-size", "2", "-q"]  # fmt: skip
    local = tmp_path / "local.tif"
    assert main(["predict", *common, "--out", str(local)]) == 0
    store = tmp_path / "remote.zarr"
    with distributed.LocalCluster(
        host="127.0.0.1", protocol="tcp", n_workers=2, processes=False,
        threads_per_worker=1, dashboard_address=None,
    ) as cluster:  # fmt: skip
        address = ["--scheduler", cluster.scheduler_address]
        assert main(["predict", *common, "--out", str(store), *address]) == 0
        arr = zarr.open_array(str(store), mode="r")
        assert arr.shape == (96, 192)  # written 2-D, no (1, H, W) copy squeezed afterwards
        np.testing.assert_array_equal(arr[...], tifffile.imread(local))
        record = arr.attrs["napari_unet"]
        assert record["complete"] is True
        # --resume on a complete result predicts nothing and keeps it
        assert main(["predict", *common, "--out", str(store), "--resume", *address]) == 0
        np.testing.assert_array_equal(zarr.open_array(str(store))[...], tifffile.imread(local))
    assert "error" not in capsys.readouterr().err
