"""The synthetic EM generator and the ISBI download path (against a local server)."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from napari_unet.sample_data import (
    CELL,
    MEMBRANE,
    MITOCHONDRION,
    MITOCHONDRION_CLASS,
    SAMPLE_CLASSES,
    load_isbi2012,
    synthetic_em,
)


def test_deterministic_for_a_seed() -> None:
    a_img, a_lab = synthetic_em((2, 96, 80), seed=5)
    b_img, b_lab = synthetic_em((2, 96, 80), seed=5)
    c_img, _ = synthetic_em((2, 96, 80), seed=6)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    assert not np.array_equal(a_img, c_img)
    assert a_img.dtype == np.uint8 and a_lab.dtype == np.uint8
    assert a_img.shape == a_lab.shape == (2, 96, 80)


def test_labels_consistent_with_image() -> None:
    img, lab, inst = synthetic_em((3, 160, 160), seed=2, return_instances=True)
    assert set(np.unique(lab)) == {MEMBRANE, CELL}
    # membranes are darker on average than cell interiors, on every slice
    for z in range(3):
        assert img[z][lab[z] == MEMBRANE].mean() < img[z][lab[z] == CELL].mean() - 20
    # instances: 0 exactly on membranes; every cell id present somewhere in the stack
    np.testing.assert_array_equal(inst == 0, lab == MEMBRANE)
    ids = np.unique(inst[inst > 0])
    assert ids.min() >= 1
    assert len(ids) > 10
    # each slice has most of the cells (the tessellation drifts slowly)
    per_slice = [len(np.unique(inst[z][inst[z] > 0])) for z in range(3)]
    assert min(per_slice) >= 0.8 * len(ids)


def test_2d_and_mitochondria_class() -> None:
    img, lab = synthetic_em((128, 128), seed=3, mitochondria_class=True)
    assert img.shape == (128, 128)
    assert MITOCHONDRION in lab
    assert img[lab == MITOCHONDRION].mean() < img[lab == CELL].mean()


def test_class_layouts_and_mitochondria_instances() -> None:
    shape, seed = (3, 128, 128), 4
    base_img, base_lab = synthetic_em(shape, seed=seed)
    img, lab, mito = synthetic_em(
        shape, seed=seed, classes="membranes+mitochondria", return_mitochondria=True
    )
    # the image is the same; only the labels of the mitochondria change
    np.testing.assert_array_equal(img, base_img)
    np.testing.assert_array_equal(lab == MEMBRANE, base_lab == MEMBRANE)
    assert set(np.unique(lab)) == {MEMBRANE, CELL, MITOCHONDRION}
    np.testing.assert_array_equal(mito > 0, lab == MITOCHONDRION)
    # the older spelling gives the same labels
    np.testing.assert_array_equal(synthetic_em(shape, seed=seed, mitochondria_class=True)[1], lab)
    # one id per mitochondrion through the stack: most ids are in every slice
    ids = np.unique(mito[mito > 0])
    assert len(ids) >= 3
    in_all = [i for i in ids if all((mito[z] == i).any() for z in range(shape[0]))]
    assert len(in_all) >= len(ids) // 2
    # the two-class mitochondria task: 1 = background, 2 = mitochondrion
    _, lab2 = synthetic_em(shape, seed=seed, classes="mitochondria")
    assert SAMPLE_CLASSES["mitochondria"] == ("background", "mitochondria")
    assert MITOCHONDRION_CLASS["mitochondria"] == 2
    np.testing.assert_array_equal(lab2 == 2, lab == MITOCHONDRION)
    np.testing.assert_array_equal(lab2 == 1, lab != MITOCHONDRION)
    # a minority class, as in real EM
    assert 0.005 < (lab2 == 2).mean() < 0.2


def test_class_layout_errors() -> None:
    with pytest.raises(ValueError, match="classes must be one of"):
        synthetic_em((32, 32), classes="nuclei")
    with pytest.raises(ValueError, match="needs mitochondria"):
        synthetic_em((32, 32), classes="mitochondria", mitochondria=False)
    with pytest.raises(ValueError, match="contradicts"):
        synthetic_em((32, 32), classes="membranes", mitochondria_class=True)


def test_bad_shape() -> None:
    with pytest.raises(ValueError, match="shape"):
        synthetic_em((2, 2, 2, 2))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass


@pytest.fixture
def local_server(tmp_path: Path):
    root = tmp_path / "www"
    root.mkdir()

    def handler(*a, **k):
        return _QuietHandler(*a, directory=str(root), **k)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _make_isbi_like(path: Path) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 255, (3, 32, 32), dtype=np.uint8)
    cells = np.where(rng.random((3, 32, 32)) < 0.78, 255, 0).astype(np.uint8)
    with h5py.File(path, "w") as h5:
        h5.create_dataset("volumes/raw", data=raw)
        h5.create_dataset("volumes/labels/membranes", data=cells)
    return raw, cells


def test_isbi_download_from_local_server(local_server, tmp_path: Path) -> None:
    root, base = local_server
    raw, cells = _make_isbi_like(root / "isbi.h5")
    sha = hashlib.sha256((root / "isbi.h5").read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    image, labels = load_isbi2012(url=f"{base}/isbi.h5", known_hash=sha, cache_dir=cache)
    np.testing.assert_array_equal(image, raw)
    np.testing.assert_array_equal(labels == CELL, cells == 255)
    np.testing.assert_array_equal(labels == MEMBRANE, cells == 0)
    # second call uses the cache (the server's file is gone)
    (root / "isbi.h5").unlink()
    image2, _ = load_isbi2012(url=f"{base}/isbi.h5", known_hash=sha, cache_dir=cache)
    np.testing.assert_array_equal(image2, raw)


def test_isbi_download_checksum_mismatch(local_server, tmp_path: Path) -> None:
    root, base = local_server
    _make_isbi_like(root / "isbi.h5")
    with pytest.raises(RuntimeError, match="could not download"):
        load_isbi2012(url=f"{base}/isbi.h5", known_hash="0" * 64, cache_dir=tmp_path / "c")


def test_isbi_download_unreachable(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"127\.0\.0\.1"):
        load_isbi2012(url="http://127.0.0.1:9/isbi.h5", known_hash=None, cache_dir=tmp_path)
