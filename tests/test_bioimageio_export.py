"""bioimage.io packages of a valid-padding U-Net with no metadata: defaults, the cropped
output described by a size offset, a padded test crop, and the self-contained architecture."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch

from napari_unet.model import UNet

pytest.importorskip("bioimageio.core")


def test_valid_padding_package_with_defaults_passes_test_model(tmp_path) -> None:
    from bioimageio.core import test_model
    from bioimageio.spec import load_model_description

    from napari_unet.bioimageio_export import export_bioimageio, load_bioimageio_model

    torch.manual_seed(0)
    net = UNet(depth=2, base_channels=4, padding="valid")
    small = np.random.default_rng(0).integers(0, 255, (30, 34), dtype=np.uint8)  # < valid size
    path = export_bioimageio(tmp_path / "valid.zip", net, None, small)
    descr = load_model_description(path, perform_io_checks=False)
    assert descr.name == "napari-unet U-Net (membrane cell)"  # defaults, not errors
    assert [a.name for a in descr.authors] == ["napari-unet user"]
    assert descr.inputs[0].preprocessing[1].id == "zero_mean_unit_variance"  # own statistics
    y_in = next(a for a in descr.inputs[0].axes if a.id == "y")
    y_out = next(a for a in descr.outputs[0].axes if a.id == "y")
    assert y_in.size.min == net.valid_input_size(1) and y_in.size.step == net.size_multiple
    assert y_out.size.offset == -net.context and not hasattr(y_out, "halo")
    test_in = descr.get_input_test_arrays()[0]
    test_out = descr.get_output_test_arrays()[0]
    assert test_out.shape[-2:] == tuple(n - net.context for n in test_in.shape[-2:])
    side = net.valid_input_size(30 + net.context)  # for an output of the slice's height
    assert test_in.shape == (1, 1, side, side)
    top, left = (side - 30) // 2, (side - 34) // 2
    np.testing.assert_array_equal(test_in[0, 0, top : top + 30, left : left + 34], small)
    readme = zipfile.ZipFile(path).read("README.md").decode()
    assert "reflect-padded" in readme and "10.1007/978-3-319-24574-4_28" in readme

    summary = test_model(path, weight_format="pytorch_state_dict", devices=["cpu"])
    assert summary.status == "passed", summary.format()
    reloaded, _ = load_bioimageio_model(path)
    x = torch.randn(1, 1, 44, 48)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), net.eval()(x))


def test_architecture_source_needs_no_napari_unet() -> None:
    from napari_unet.bioimageio_architecture import architecture_source

    source = architecture_source()
    assert "napari_unet" not in "".join(
        line for line in source.splitlines() if line.startswith(("import", "from"))
    )
    namespace: dict = {"__name__": "shipped_unet"}
    exec(compile(source, "unet_architecture.py", "exec"), namespace)
    config = UNet(depth=3, base_channels=4, padding="same", norm="batch").config
    shipped = namespace["UNet"](**config)
    ours = UNet(**config)
    shipped.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(shipped.eval()(x), ours.eval()(x))


def test_bad_licence_and_model_are_one_line_errors(tmp_path) -> None:
    from napari_unet.bioimageio_export import PackageInfo, export_bioimageio

    net = UNet(depth=2, base_channels=4)
    with pytest.raises(ValueError, match="unknown licence 'nope'"):
        export_bioimageio(tmp_path / "m.zip", net, info=PackageInfo(license="nope"))
    with pytest.raises(ValueError, match="single-channel"):
        export_bioimageio(tmp_path / "m.zip", UNet(in_channels=2, depth=2, base_channels=4))
    assert not list(tmp_path.iterdir())
