"""`napari-unet train|predict|evaluate` on OME-Zarr, N5 and HDF5 inputs, and OME-NGFF labels out."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from napari_unet.cli import main
from napari_unet.volumes import open_volume
from volume_files import write_h5, write_n5, write_ome_zarr

CPU = ["--device", "cpu", "--threads", "1", "-q"]


@pytest.fixture(scope="module")
def volumes(
    cli_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, object]:
    """The CLI test stack as HDF5 (image + labels), N5 and a 2-level OME-Zarr image (nm)."""
    root = tmp_path_factory.mktemp("volumes")
    image = tifffile.imread(cli_data["image"])
    labels = tifffile.imread(cli_data["labels"])
    h5 = write_h5(root / "stack.h5", "volumes/raw", image, {"resolution": [50.0, 4.0, 4.0]})
    write_h5(h5, "volumes/labels/classes", labels)
    write_n5(root / "stack.n5", "raw", image, (1, 64, 64))
    ome = write_ome_zarr(root / "em.ome.zarr", image, scale=(50.0, 4.0, 4.0), levels=2)
    return {
        "root": root,
        "image": image,
        "labels": labels,
        "h5": h5,
        "n5": root / "stack.n5",
        "ome": ome,
    }


def _predict(model: Path, image: str, out: Path, *extra: str) -> int:
    return main(
        ["predict", "--model", str(model), "--image", image, "--out", str(out), *CPU, *extra]
    )


def test_predict_every_input_format_gives_the_tiff_result(
    trained_model: Path, cli_data: dict[str, Path], volumes, tmp_path: Path
) -> None:
    assert _predict(trained_model, str(cli_data["image"]), tmp_path / "ref.tif") == 0
    ref = tifffile.imread(tmp_path / "ref.tif")
    h5 = volumes["h5"]
    assert _predict(trained_model, f"{h5}:/volumes/raw", tmp_path / "h5.tif") == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "h5.tif"), ref)
    assert _predict(trained_model, f"{volumes['n5']}/raw", tmp_path / "n5.zarr") == 0
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "n5.zarr"), mode="r")[...], ref)
    # a standalone OME-NGFF label image with the checkpoint's class names and the HDF5 pixel size
    assert _predict(trained_model, f"{h5}/volumes/raw", tmp_path / "seg.ome.zarr") == 0
    vol = open_volume(tmp_path / "seg.ome.zarr")
    assert vol.is_labels and vol.scale == (50.0, 4.0, 4.0)
    np.testing.assert_array_equal(np.asarray(vol.data), ref)
    classes = [p["class"] for p in vol.metadata["image_label"]["properties"]]
    assert classes == ["membrane", "cell"]


def test_predict_into_an_ome_zarr_image_then_evaluate(
    trained_model: Path, volumes, tmp_path: Path, capsys
) -> None:
    import shutil

    ome = tmp_path / "em.ome.zarr"
    shutil.copytree(volumes["ome"], ome)
    assert _predict(trained_model, str(ome), ome) == 0  # labels go inside the image
    labels_group = json.loads((ome / "labels" / ".zattrs").read_text())
    assert labels_group == {"labels": ["prediction"]}
    vol = open_volume(ome / "labels" / "prediction")
    assert vol.is_labels
    np.testing.assert_allclose(vol.scale, (0.05, 0.004, 0.004))  # the image's (nm -> µm)
    np.testing.assert_array_equal(open_volume(ome).data, volumes["image"])  # image untouched
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    nodes = {str(n.zarr.path): n for n in Reader(parse_url(str(ome)))()}
    assert nodes[str(ome / "labels" / "prediction")].metadata["properties"][1] == {
        "class": "membrane"
    }
    capsys.readouterr()
    truth = f"{volumes['h5']}:/volumes/labels/classes"
    assert (
        main(["evaluate", "--prediction", str(ome / "labels" / "prediction"), "--truth", truth])
        == 0
    )
    assert "membrane IoU" in capsys.readouterr().out


def test_interrupted_ngff_result_is_refused_then_resumed(
    trained_model: Path, volumes, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "seg.ome.zarr"
    image = f"{volumes['n5']}/raw"
    assert _predict(trained_model, image, out) == 0
    level0 = zarr.open_array(str(out / "0"), mode="r+")
    full = level0[...]
    record = dict(level0.attrs["napari_unet"])
    level0[1] = 0  # as if killed before slice 1 was written
    level0.attrs["napari_unet"] = {**record, "complete": False, "done": "0,2"}
    capsys.readouterr()
    truth = f"{volumes['h5']}:/volumes/labels/classes"
    assert main(["evaluate", "--prediction", str(out), "--truth", truth]) != 0
    assert "slice(s) 1 of 3 were never written" in capsys.readouterr().err
    assert _predict(trained_model, image, out, "--resume") == 0
    np.testing.assert_array_equal(zarr.open_array(str(out / "0"), mode="r")[...], full)
    assert open_volume(out).stored.attrs["napari_unet"]["complete"] is True


def test_train_on_hdf5_image_and_labels(volumes, fast_train: list[str], tmp_path: Path) -> None:
    h5 = volumes["h5"]
    code = main(
        [
            "train", "--image", f"{h5}:/volumes/raw", "--labels", f"{h5}:/volumes/labels/classes",
            "--slices", "0,2", "--out", str(tmp_path / "m.pt"), *fast_train,
        ]
    )  # fmt: skip
    assert code == 0 and (tmp_path / "m.pt").stat().st_size > 0


def test_predict_on_a_scheduler_from_n5_and_hdf5(
    trained_model: Path, cli_data, volumes, tmp_path: Path
) -> None:
    distributed = pytest.importorskip("distributed")
    assert _predict(trained_model, str(cli_data["image"]), tmp_path / "ref.tif") == 0
    ref = tifffile.imread(tmp_path / "ref.tif")
    with distributed.LocalCluster(
        host="127.0.0.1",
        protocol="tcp",
        n_workers=1,
        processes=False,
        threads_per_worker=1,
        dashboard_address=None,
    ) as cluster:
        for image, out in (
            (f"{volumes['n5']}/raw", "n5.zarr"),
            (f"{volumes['h5']}:/volumes/raw", "h5.zarr"),
        ):
            extra = ("--scheduler", cluster.scheduler_address)
            assert _predict(trained_model, image, tmp_path / out, *extra) == 0
            np.testing.assert_array_equal(zarr.open_array(str(tmp_path / out), mode="r")[...], ref)


def test_default_output_of_an_ome_zarr_image_is_ngff_labels(
    trained_model: Path, volumes, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert (
        main(["predict", "--model", str(trained_model), "--image", str(volumes["ome"]), *CPU]) == 0
    )
    vol = open_volume(tmp_path / "em_prediction.ome.zarr")
    assert vol.is_labels and vol.metadata["image_label"]["properties"][0]["class"] == "membrane"
    assert not (volumes["ome"] / "labels").exists()  # the input image is left alone
