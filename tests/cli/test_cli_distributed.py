"""`predict --scheduler` on a dask.distributed cluster gives the local result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_unet.cli import main

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        host="127.0.0.1",
        protocol="tcp",
        n_workers=1,
        processes=False,
        threads_per_worker=1,
        dashboard_address=None,
    ) as c:
        yield c


def test_predict_on_scheduler_matches_local(
    cli_data: dict[str, Path], trained_model: Path, tmp_path: Path, cluster
) -> None:
    common = ["--model", str(trained_model), "--image", str(cli_data["image"]),
              "--device", "cpu", "--tile", "64", "--batch-size", "2", "-q"]  # fmt: skip
    local = tmp_path / "local.tif"
    assert main(["predict", *common, "--out", str(local), "--probabilities"]) == 0
    remote = tmp_path / "remote.tif"
    address = cluster.scheduler_address
    assert main(["predict", *common, "--out", str(remote), "--probabilities",
                 "--scheduler", address]) == 0  # fmt: skip
    ref = tifffile.imread(local)
    np.testing.assert_array_equal(tifffile.imread(remote), ref)
    np.testing.assert_allclose(
        tifffile.imread(tmp_path / "remote_probabilities.tif"),
        tifffile.imread(tmp_path / "local_probabilities.tif"),
        atol=1e-5,
    )

    import zarr

    store = tmp_path / "remote.zarr"
    assert main(["predict", *common, "--out", str(store), "--slices", "1-2",
                 "--scheduler", address]) == 0  # fmt: skip
    np.testing.assert_array_equal(zarr.open_array(str(store), mode="r")[...], ref[1:])


def test_unknown_device_with_scheduler_is_one_line(
    cli_data: dict[str, Path], trained_model: Path, capsys, cluster
) -> None:
    code = main(
        ["predict", "--model", str(trained_model), "--image", str(cli_data["image"]),
         "--device", "abacus", "--scheduler", cluster.scheduler_address]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown device" in err[0]
