"""``napari-unet objects`` and ``napari-unet predict --objects`` on real files."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from napari_unet.cli import main
from napari_unet.io import write_labels_tiff


def _two_cells(n_z: int = 1) -> np.ndarray:
    """Class map (1 membrane, 2 cell): two cells with a one-pixel gap in the membrane."""
    cls = np.full((n_z, 40, 60), 2, np.uint8)
    cls[:, :2, :] = cls[:, -2:, :] = cls[:, :, :2] = cls[:, :, -2:] = 1
    cls[:, :, 29:31] = 1
    cls[:, 20, 29:31] = 2
    return cls if n_z > 1 else cls[0]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_objects_from_a_class_map_tiff(tmp_path):
    pred = tmp_path / "pred.tif"
    write_labels_tiff(pred, _two_cells(3), scale=(2.0, 0.5, 0.5))
    out = tmp_path / "cells.tif"
    code = main(["objects", "--input", str(pred), "--objects", "cell", "--out", str(out), "-q"])
    assert code == 0
    with tifffile.TiffFile(out) as tif:
        labels = tif.asarray()
        x_res = tif.pages[0].tags["XResolution"].value
    assert labels.dtype == np.uint32 and labels.shape == (3, 40, 60)
    assert x_res[0] / x_res[1] == pytest.approx(2.0)  # 0.5 per pixel
    assert len(np.unique(labels[0])) == 2  # two cells (membranes assigned), per slice
    rows = _rows(tmp_path / "cells.csv")
    assert len(rows) == 6 and {r["class"] for r in rows} == {"cell"}
    assert float(rows[0]["area"]) == pytest.approx(int(rows[0]["pixels"]) * 0.25)
    again = main(["objects", "--input", str(pred), "--objects", "cell", "--out", str(out), "-q"])
    assert again == 2  # exists: needs --overwrite


def test_objects_3d_from_probabilities_zarr_to_zarr(tmp_path):
    probs = np.zeros((2, 4, 32, 32), np.float32)
    probs[1, :, 8:16, 8:16] = 0.9  # one object through all slices
    probs[1, 0, 24:30, 24:30] = 0.9  # one in slice 0 only
    probs[0] = 1 - probs[1]
    src = zarr.open_array(str(tmp_path / "p.zarr"), mode="w", shape=probs.shape, dtype="f4")
    src[:] = probs
    src.attrs["scale"] = [3.0, 1.0, 1.0]
    out = tmp_path / "mito.zarr"
    code = main(
        ["objects", "--input", str(tmp_path / "p.zarr"), "--objects", "2", "--mode", "objects",
         "--dims", "3", "--min-size", "10", "--out", str(out), "-q"]
    )  # fmt: skip
    assert code == 0
    labels = np.asarray(zarr.open_array(str(out), mode="r")[:])
    assert labels.max() == 2 and labels.dtype == np.uint32
    rows = _rows(tmp_path / "mito.csv")
    assert [r["z_first"] + "-" + r["z_last"] for r in rows] == ["0-3", "0-0"]
    # smoothing rounds the corners of the squares a little
    assert float(rows[0]["volume"]) == pytest.approx(int(rows[0]["pixels"]) * 3.0)
    assert 4 * 56 <= int(rows[0]["pixels"]) <= 4 * 64


def test_objects_errors_are_one_line(tmp_path, capsys):
    pred = tmp_path / "pred.tif"
    write_labels_tiff(pred, _two_cells())
    code = main(
        ["objects", "--input", str(pred), "--objects", "mito", "--out", str(tmp_path / "o.tif")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "no class 'mito'" in err
    code = main(
        ["objects", "--input", str(pred), "--objects", "7", "--out", str(tmp_path / "o.tif")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no pixel of class 7" in err and len(err.splitlines()) == 1
    code = main(["objects", "--input", str(tmp_path / "missing.tif"), "--objects", "1",
                 "--out", str(tmp_path / "o.tif")])  # fmt: skip
    assert code == 2 and "no such file" in capsys.readouterr().err


def test_predict_objects_writes_instances_and_csv(cli_data, trained_model, tmp_path):
    out = tmp_path / "cells.tif"
    code = main(
        ["predict", "--model", str(trained_model), "--image", str(cli_data["image"]),
         "--slices", "0-1", "--objects", "cell", "--out", str(out), "--device", "cpu",
         "--threads", "1", "-q"]
    )  # fmt: skip
    assert code == 0
    labels = tifffile.imread(out)
    assert labels.dtype == np.uint32 and labels.shape == (2, 96, 96)
    rows = _rows(tmp_path / "cells.csv")
    assert len(rows) == len(np.unique(labels[labels > 0])) > 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers


# --------------------------------------------------------------------------- stored parameters


def _tuned(model: Path, out: Path, **cell: object) -> Path:
    """A copy of ``model`` whose stored object parameters of 'cell' are updated by ``cell``."""
    from napari_unet.checkpoint import load_checkpoint, save_checkpoint

    net, meta = load_checkpoint(model)
    meta["objects"]["cell"].update(cell)
    return save_checkpoint(out, net, **meta)


def _n_per_slice(path: Path) -> list[int]:
    labels = tifffile.imread(path)
    labels = labels if labels.ndim == 3 else labels[None]
    return [len(np.unique(s[s > 0])) for s in labels]


def test_training_stores_object_parameters_per_class(trained_model):
    from napari_unet.checkpoint import load_checkpoint
    from napari_unet.objects import BOUNDARY_H

    _, meta = load_checkpoint(trained_model)
    table = meta["objects"]
    assert set(table) == set(meta["class_names"]) == {"membrane", "cell"}
    assert table["cell"]["mode"] == "boundary" and table["cell"]["h"] == BOUNDARY_H


def test_stored_parameters_are_the_defaults_and_options_override(trained_model, tmp_path):
    pred = tmp_path / "pred.tif"
    cells = _two_cells(2)
    cells[:, 18:23, 29:31] = 2  # a gap wide enough to stay open after the smoothing
    write_labels_tiff(pred, cells)
    tuned = _tuned(trained_model, tmp_path / "tuned.pt", mode="objects")

    def objects(model: Path, name: str, *extra: str) -> list[int]:
        out = tmp_path / f"{name}.tif"
        code = main(["objects", "--input", str(pred), "--objects", "cell", "--model", str(model),
                     "--out", str(out), "-q", *extra])  # fmt: skip
        assert code == 0
        return _n_per_slice(out)

    assert objects(trained_model, "stock") == [2, 2]  # boundary watershed: two cells
    assert objects(tuned, "tuned") == [1, 1]  # the stored mode: components, joined at the gap
    assert objects(tuned, "flag", "--mode", "boundary") == [2, 2]  # an option overrides


def test_predict_objects_uses_the_stored_parameters(cli_data, trained_model, tmp_path):
    tuned = _tuned(trained_model, tmp_path / "tuned.pt", mode="objects", min_size=1e9)
    for model, name in ((trained_model, "stock"), (tuned, "tuned")):
        code = main(
            ["predict", "--model", str(model), "--image", str(cli_data["image"]), "--slices",
             "0", "--objects", "cell", "--out", str(tmp_path / f"{name}.tif"), "--device", "cpu",
             "--threads", "1", "-q"]
        )  # fmt: skip
        assert code == 0
    assert _n_per_slice(tmp_path / "stock.tif")[0] > 0
    assert _n_per_slice(tmp_path / "tuned.tif") == [0]  # every object under the stored size


def test_a_bad_stored_table_gives_one_line(trained_model, tmp_path, capsys):
    from napari_unet.checkpoint import load_checkpoint, save_checkpoint

    pred = tmp_path / "pred.tif"
    write_labels_tiff(pred, _two_cells())
    net, meta = load_checkpoint(trained_model)
    bad = save_checkpoint(tmp_path / "bad.pt", net, **{**meta, "objects": ["cell"]})
    args = ["objects", "--input", str(pred), "--objects", "cell", "--out"]
    code = main([*args, str(tmp_path / "a.tif"), "--model", str(bad)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "invalid metadata 'objects'" in err
    odd = _tuned(trained_model, tmp_path / "odd.pt", h="deep", seeds="random")
    code = main([*args, str(tmp_path / "b.tif"), "--model", str(odd), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 0 and len(err) == 2
    assert all(e.startswith("napari-unet: warning: the model's object parameter") for e in err)
    assert any("'h' of class 'cell' is ignored" in e for e in err)
    assert any("'seeds' of class 'cell' is ignored" in e for e in err)
    assert _n_per_slice(tmp_path / "b.tif") == [2]  # the defaults instead
