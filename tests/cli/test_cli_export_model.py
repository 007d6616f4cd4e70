"""``napari-unet export-model``: a trained checkpoint as a bioimage.io package that passes
``bioimageio.core.test_model`` with both weight formats and reloads into our own U-Net."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_unet.checkpoint import load_checkpoint
from napari_unet.cli import main

pytest.importorskip("bioimageio.core")


@pytest.fixture(scope="module")
def package(cli_data: dict[str, Path], trained_model: Path) -> Path:
    out = cli_data["root"] / "exported" / "unet.zip"
    out.parent.mkdir(exist_ok=True)
    code = main(
        ["export-model", "--model", str(trained_model), "--out", str(out),
         "--image", str(cli_data["image"]), "--slice", "1", "--author", "A. Tester"]
    )  # fmt: skip
    assert code == 0
    return out


def test_package_passes_bioimageio_test_model(package: Path) -> None:
    from bioimageio.core import test_model

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        for weights in ("pytorch_state_dict", "torchscript"):
            summary = test_model(package, weight_format=weights, devices=["cpu"])
            assert summary.status == "passed", summary.format()
    finally:
        torch.set_num_threads(threads)


def test_package_content_and_reload(package: Path, cli_data: dict[str, Path], trained_model):
    from bioimageio.spec import load_model_description

    from napari_unet.bioimageio_export import load_bioimageio_model

    names = set(zipfile.ZipFile(package).namelist())
    expected = {"rdf.yaml", "README.md", "cover.png", "unet_architecture.py", "weights.pt",
                "weights_torchscript.pt", "test_input.npy", "test_output.npy"}  # fmt: skip
    assert expected <= names
    descr = load_model_description(package, perform_io_checks=False)
    original, meta = load_checkpoint(trained_model)
    assert [str(c.doi) for c in descr.cite] == ["10.1007/978-3-319-24574-4_28"]
    assert [a.name for a in descr.authors] == ["A. Tester"]
    channel = next(a for a in descr.outputs[0].axes if a.type == "channel")
    assert list(channel.channel_names) == meta["class_names"]
    norm = descr.inputs[0].preprocessing[1].kwargs
    assert (norm.mean, norm.std) == (meta["normalization"]["mean"], meta["normalization"]["std"])

    # the test input is a centre crop of slice 1 of the user's stack
    test_in = descr.get_input_test_arrays()[0]
    stack = tifffile.imread(cli_data["image"])
    side = test_in.shape[-1]
    top = (stack.shape[1] - side) // 2
    np.testing.assert_array_equal(test_in[0, 0], stack[1, top : top + side, top : top + side])

    # our own code reads the state-dict weights back: same net, same outputs
    model, extra = load_bioimageio_model(package)
    assert model.config == original.config and extra["class_names"] == meta["class_names"]
    x = torch.randn(1, 1, side, side)
    with torch.no_grad():
        torch.testing.assert_close(model(x), original(x))
    probs = descr.get_output_test_arrays()[0]
    assert probs.shape == (1, original.n_classes, side, side)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_export_model_errors_are_one_line(cli_data, trained_model, tmp_path, capsys) -> None:
    cases = [
        (["--out", str(tmp_path / "m.pt")], "a bioimage.io package is a .zip file"),
        (["--out", str(tmp_path / "m.zip"), "--license", "no-such"], "unknown licence"),
        (["--out", str(tmp_path / "m.zip"), "--image", str(tmp_path / "nope.tif")], "nope.tif"),
    ]
    for extra, needle in cases:
        code = main(["export-model", "--model", str(trained_model), *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and needle in err[0], err
        assert not (tmp_path / "m.zip").exists()
    code = main(
        ["export-model", "--model", str(tmp_path / "none.pt"), "--out", str(tmp_path / "m.zip")]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "not found" in err[0]
