"""Per-object measurements in physical units, and the CSV file."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from napari_unet.measure import measure_objects, write_csv


def test_2d_measurements_follow_the_scale_and_translate():
    lab = np.zeros((20, 30), np.uint32)
    lab[2:6, 3:11] = 1  # 4 x 8
    lab[10:20, 20:30] = 7
    t = measure_objects(lab, scale=(0.5, 2.0), translate=(100.0, 10.0), class_name="mito")
    assert list(t["label"]) == [1, 7]
    assert list(t["class"]) == ["mito", "mito"]
    assert list(t["pixels"]) == [32, 100]
    assert t["area"][0] == pytest.approx(32 * 1.0)
    assert t["equivalent_diameter"][1] == pytest.approx(math.sqrt(4 * 100 / math.pi))
    assert t["centroid_y"][0] == pytest.approx(100 + 0.5 * 3.5)
    assert t["centroid_x"][0] == pytest.approx(10 + 2.0 * 6.5)
    assert t["bbox_min_y"][0] == pytest.approx(101.0) and t["bbox_max_y"][0] == pytest.approx(103.0)
    assert t["bbox_min_x"][1] == pytest.approx(50.0) and t["bbox_max_x"][1] == pytest.approx(70.0)


def test_3d_volume_spans_the_slices():
    lab = np.zeros((4, 10, 10), np.uint32)
    lab[1:3, 2:4, 2:4] = 3  # 2 x 2 x 2 voxels
    lab[0, 8, 8] = 5
    t = measure_objects(lab, scale=(4.0, 1.0, 1.0), dims=3)
    assert list(t["label"]) == [3, 5]
    assert list(t["z_first"]) == [1, 0] and list(t["z_last"]) == [2, 0]
    assert t["volume"][0] == pytest.approx(8 * 4.0)
    assert t["centroid_z"][0] == pytest.approx(4.0 * 1.5)
    assert t["bbox_max_z"][0] == pytest.approx(12.0)
    assert t["equivalent_diameter"][0] == pytest.approx((6 * 32 / math.pi) ** (1 / 3))
    flat = measure_objects(lab, scale=(4.0, 1.0, 1.0), dims=2)
    assert "area" in flat and flat["area"][0] == pytest.approx(8.0)


def test_csv_is_written_with_a_header(tmp_path):
    lab = np.zeros((5, 5), np.uint32)
    lab[1:3, 1:3] = 1
    path = write_csv(tmp_path / "objects.csv", measure_objects(lab, class_name="cell"))
    rows = list(csv.DictReader(open(path, encoding="utf-8")))
    assert rows == [
        {"label": "1", "class": "cell", "pixels": "4", "area": "4",
         "equivalent_diameter": "2.25676", "centroid_y": "1.5", "centroid_x": "1.5",
         "bbox_min_y": "1", "bbox_min_x": "1", "bbox_max_y": "3", "bbox_max_x": "3"}
    ]  # fmt: skip
    assert not list(tmp_path.glob(".*"))  # no temporary file left
