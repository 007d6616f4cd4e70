"""Tests for napari_unet.metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_unet.metrics import (
    adapted_rand_error,
    dice_per_class,
    evaluate_segmentation,
    iou_per_class,
    pixel_error,
    segments_from_classes,
    variation_of_information,
)

# class 1 in columns 0-1, class 2 in columns 2-3
TRUTH = np.array([[1, 1, 2, 2]] * 4, dtype=np.uint8)
# two wrong pixels: (0, 2) predicted 1, (3, 0) predicted 2
PRED = TRUTH.copy()
PRED[0, 2] = 1
PRED[3, 0] = 2


def test_pixel_error_hand_values():
    assert pixel_error(TRUTH, TRUTH) == 0.0
    assert pixel_error(PRED, TRUTH) == pytest.approx(2 / 16)
    truth = TRUTH.copy()
    truth[0, 2] = 0  # unlabelled: one of the errors is no longer counted
    assert pixel_error(PRED, truth, ignore=0) == pytest.approx(1 / 15)
    assert math.isnan(pixel_error(PRED, np.zeros_like(TRUTH), ignore=0))


def test_iou_and_dice_hand_values():
    # class 1: |P| = 8, |T| = 8, |P & T| = 7 -> IoU 7/9, Dice 14/16; class 2 symmetric
    iou = iou_per_class(PRED, TRUTH)
    dice = dice_per_class(PRED, TRUTH)
    assert iou == pytest.approx({1: 7 / 9, 2: 7 / 9})
    assert dice == pytest.approx({1: 0.875, 2: 0.875})
    iou3 = iou_per_class(PRED, TRUTH, classes=[1, 2, 3])
    assert math.isnan(iou3[3]) and iou3[1] == pytest.approx(7 / 9)
    assert math.isnan(dice_per_class(PRED, TRUTH, classes=[5])[5])
    # a class only in the prediction scores 0
    pred = PRED.copy()
    pred[1, 1] = 3
    assert iou_per_class(pred, TRUTH)[3] == 0.0


def test_segments_from_classes():
    cross = np.array([[2, 1, 2], [1, 1, 1], [2, 1, 2]])
    seg = segments_from_classes(cross)
    assert seg.dtype == np.int32
    assert seg.max() == 4 and np.all(seg[cross == 1] == 0)
    diagonal = np.array([[2, 1], [1, 2]])
    assert segments_from_classes(diagonal, connectivity=1).max() == 2
    assert segments_from_classes(diagonal, connectivity=2).max() == 1
    # membrane_class other than 1
    assert segments_from_classes(np.array([[1, 2], [2, 1]]), membrane_class=2).max() == 2
    stack = segments_from_classes(np.stack([cross, cross]))
    assert stack.shape == (2, 3, 3)
    assert set(np.unique(stack[0])) == {0, 1, 2, 3, 4}
    assert set(np.unique(stack[1])) == {0, 5, 6, 7, 8}  # unique across slices
    with pytest.raises(ValueError, match="connectivity"):
        segments_from_classes(cross, connectivity=3)


def test_rand_identical_and_relabelled():
    seg = np.array([[1, 1, 0, 2], [1, 1, 0, 2], [3, 3, 0, 2]])
    r = adapted_rand_error(seg, seg)
    assert r == pytest.approx({"error": 0.0, "precision": 1.0, "recall": 1.0})
    relabelled = np.where(seg > 0, 10 - seg, 0) * 7
    assert adapted_rand_error(relabelled, seg)["error"] == pytest.approx(0.0)


def test_rand_split_and_merge_hand_values():
    one = np.ones((4, 4), dtype=int)
    halves = one.copy()
    halves[:, 2:] = 2
    # n = 16; sum n_ij^2 - n = 2*64 - 16 = 112; true pairs 256 - 16 = 240; pred pairs 112
    split = adapted_rand_error(halves, one)
    assert split["precision"] == pytest.approx(1.0)
    assert split["recall"] == pytest.approx(112 / 240)
    assert split["error"] == pytest.approx(1 - 112 / (0.5 * 240 + 0.5 * 112))
    merge = adapted_rand_error(one, halves)
    assert merge["precision"] == pytest.approx(112 / 240)
    assert merge["recall"] == pytest.approx(1.0)
    assert merge["error"] == pytest.approx(split["error"])


def test_vi_hand_values():
    one = np.ones((4, 4), dtype=int)
    halves = one.copy()
    halves[:, 2:] = 2
    assert variation_of_information(one, one) == pytest.approx(
        {"split": 0.0, "merge": 0.0, "total": 0.0}
    )
    assert variation_of_information(halves * 3, halves) == pytest.approx(
        {"split": 0.0, "merge": 0.0, "total": 0.0}
    )
    # prediction cuts the single true segment in two equal halves: 1 bit of split
    assert variation_of_information(halves, one) == pytest.approx(
        {"split": 1.0, "merge": 0.0, "total": 1.0}
    )
    assert variation_of_information(one, halves) == pytest.approx(
        {"split": 0.0, "merge": 1.0, "total": 1.0}
    )
    # truth boundary pixels (0) are ignored
    truth = halves.copy()
    truth[0] = 0
    pred = halves.copy()
    pred[0] = 5
    assert variation_of_information(pred, truth)["total"] == pytest.approx(0.0)


def test_evaluate_identical_2d():
    truth = np.array([[2, 2, 1, 2, 2]] * 5, dtype=np.uint8)
    res = evaluate_segmentation(truth, truth)
    assert res["pixel_error"] == 0.0
    assert res["iou"] == {1: 1.0, 2: 1.0} and res["mean_dice"] == 1.0
    assert res["rand_error"] == pytest.approx(0.0)
    assert res["vi_total"] == pytest.approx(0.0)
    assert res["n_slices"] == 1


def test_evaluate_stack_averages_slices():
    truth_slice = np.array([[2, 2, 1, 2, 2]] * 5, dtype=np.uint8)  # two cells of 10 px
    truth = np.stack([truth_slice, truth_slice])
    pred = truth.copy()
    pred[1] = 2  # slice 1: membrane missed -> both cells merged
    res = evaluate_segmentation(pred, truth)
    assert res["n_slices"] == 2
    assert res["pixel_error"] == pytest.approx(5 / 50)
    # slice 1: joint pairs 180, true pairs 180, predicted pairs (20 px) 380
    rand_1 = 1 - 180 / (0.5 * 180 + 0.5 * 380)
    assert res["rand_error"] == pytest.approx(rand_1 / 2)
    assert res["rand_precision"] == pytest.approx((1 + 180 / 380) / 2)
    assert res["rand_recall"] == pytest.approx(1.0)
    assert res["vi_merge"] == pytest.approx(0.5)  # 1 bit on one slice of two
    assert res["vi_split"] == pytest.approx(0.0)
    # membrane: |T| = 10, |P| = 5, inter 5 -> IoU 0.5
    assert res["iou"][1] == pytest.approx(0.5)


def test_evaluate_ignores_unlabelled_truth():
    truth = np.array([[2, 2, 1, 2, 2]] * 4, dtype=np.uint8)
    pred = truth.copy()
    truth[0] = 0
    pred[0] = 1
    res = evaluate_segmentation(pred, truth)
    assert res["pixel_error"] == 0.0 and res["rand_error"] == pytest.approx(0.0)


def test_validation_errors():
    with pytest.raises(ValueError, match="shapes differ"):
        pixel_error(np.zeros((4, 4), int), np.zeros((4, 5), int))
    with pytest.raises(ValueError, match="shapes differ"):
        evaluate_segmentation(np.zeros((2, 4, 4), int), np.zeros((4, 4), int))
    with pytest.raises(TypeError, match="integer"):
        iou_per_class(np.zeros((4, 4)), np.zeros((4, 4), int))
    with pytest.raises(ValueError, match="2D"):
        adapted_rand_error(np.zeros(4, int), np.zeros(4, int))
    with pytest.raises(TypeError, match="integer"):
        segments_from_classes(np.zeros((3, 3)))
