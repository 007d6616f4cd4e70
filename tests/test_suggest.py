"""Ranking the unlabelled slices by the model's uncertainty (napari_unet.suggest), on a tiny trained model."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_unet.model import UNet
from napari_unet.sample_data import synthetic_em
from napari_unet.suggest import Ranking, labelled_slices, rank_slices, uncertainty_map
from napari_unet.training import TrainConfig, Trainer

CPU = {"device": "cpu"}


@pytest.fixture(scope="module")
def trained() -> tuple[np.ndarray, np.ndarray, np.ndarray, Trainer]:
    """(image, truth, labels on slices 0-1, trainer) for a tiny net trained for a few seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    image, truth = synthetic_em((6, 96, 96), seed=2, cell_size=24)
    labels = np.zeros_like(truth)
    labels[:2] = truth[:2]
    torch.manual_seed(0)
    net = UNet(depth=3, base_channels=8, padding="same", norm="batch")
    config = TrainConfig(
        iterations=150, num_threads=1, preview_every_s=0.0, batch_size=4, patch_size=64
    )
    trainer = Trainer(image, labels, config, model=net)
    for _ in trainer.run():
        pass
    yield image, truth, labels, trainer
    torch.set_num_threads(threads)


def _rank(trainer: Trainer, image: np.ndarray, labels: np.ndarray, **kw) -> Ranking:
    return rank_slices(
        trainer.model, image, labels, normalization=trainer.normalization, **CPU, **kw
    )


def test_ranking_covers_the_unlabelled_slices_and_is_deterministic(trained) -> None:
    image, _, labels, trainer = trained
    first = _rank(trainer, image, labels)
    assert sorted(first.slices) == [2, 3, 4, 5]
    assert not first.cancelled and len(first) == 4
    values = [score for _, score in first.ranking]
    assert values == sorted(values, reverse=True)
    assert all(0.0 <= v <= 1.0 for v in values)
    again = _rank(trainer, image, labels)
    assert again.ranking == first.ranking
    assert first.next() == first.slices[0]
    assert first.next(exclude=first.slices[:1]) == first.slices[1]
    assert first.next(exclude=first.slices) is None


def test_a_corrected_slice_drops_out_of_the_ranking(trained) -> None:
    image, truth, labels, trainer = trained
    before = _rank(trainer, image, labels)
    top = before.next()
    edited = labels.copy()
    edited[top] = truth[top]  # the user accepts and corrects the suggested slice
    assert top in labelled_slices(edited)
    after = _rank(trainer, image, edited)
    assert top not in after.slices
    assert after.slices == [z for z in before.slices if z != top]


@pytest.mark.parametrize("method", ["entropy", "disagreement"])
def test_a_corrupted_slice_scores_as_the_most_uncertain(trained, method: str) -> None:
    image, _, labels, trainer = trained
    baseline = _rank(trainer, image, labels, method=method)
    bad = baseline.slices[-1]  # the least uncertain slice, corrupted: contrast reversed
    corrupted = image.copy()
    corrupted[bad] = 255 - corrupted[bad]
    ranking = _rank(trainer, corrupted, labels, method=method)
    assert ranking.next() == bad
    assert ranking.method == method
    if method == "disagreement":
        assert all(s.disagreement is not None and s.disagreement >= 0 for s in ranking.scores)


def test_stop_before_and_during_scoring(trained) -> None:
    image, _, labels, trainer = trained
    stop = threading.Event()
    stop.set()
    none = _rank(trainer, image, labels, stop=stop)
    assert none.cancelled and len(none) == 0

    stop = threading.Event()
    partial = _rank(trainer, image, labels, progress=lambda done, total: stop.set(), stop=stop)
    assert partial.cancelled and len(partial) == 1

    calls = {"n": 0}

    def stop_inside_a_slice() -> bool:  # False for the first checks, then True mid-prediction
        calls["n"] += 1
        return calls["n"] > 2

    mid = _rank(trainer, image, labels, method="disagreement", stop=stop_inside_a_slice)
    assert mid.cancelled and len(mid) == 0


def test_maps_downsampling_and_slices(trained) -> None:
    image, _, labels, trainer = trained
    out = np.full(image.shape, -1.0, np.float32)
    ranking = _rank(trainer, image, labels, slices=[1, 3, 4], return_maps=True, maps_out=out)
    assert sorted(ranking.slices) == [3, 4]  # slice 1 is labelled
    for z in (3, 4):
        assert ranking.maps[z].shape == image.shape[1:]
        np.testing.assert_array_equal(out[z], ranking.maps[z])
        assert np.isclose(ranking.maps[z].mean(), dict(ranking.ranking)[z], atol=1e-5)
    assert (out[[0, 1, 2, 5]] == -1).all()  # unscored slices are left alone
    fast = _rank(trainer, image, labels, downsample=2, return_maps=True)
    assert sorted(fast.slices) == [2, 3, 4, 5]
    assert all(m.shape == image.shape[1:] for m in fast.maps.values())


def test_uncertainty_map_of_one_slice(trained) -> None:
    image, _, _, trainer = trained
    entropy, disagreement = uncertainty_map(
        trainer.model, image[4, :, :80], method="disagreement", n_transforms=8,
        normalization=trainer.normalization, **CPU,
    )  # fmt: skip
    assert entropy.shape == disagreement.shape == (96, 80)  # non-square: rotations undone
    assert (disagreement <= entropy + 1e-6).all() and (entropy <= 1 + 1e-6).all()
    plain, none = uncertainty_map(trainer.model, image[4], normalization=trainer.normalization)
    assert none is None and plain.shape == (96, 96)


def test_bad_arguments(trained) -> None:
    image, _, labels, trainer = trained
    with pytest.raises(ValueError, match="method must be one of entropy, disagreement"):
        _rank(trainer, image, labels, method="variance")
    with pytest.raises(ValueError, match="labels have shape"):
        _rank(trainer, image, labels[:3])
    with pytest.raises(ValueError, match="downsample must be >= 1"):
        _rank(trainer, image, labels, downsample=0)
    with pytest.raises(ValueError, match="slice must be between 0 and 5"):
        _rank(trainer, image, labels, slices=[9])
    with pytest.raises(TypeError, match="stop must be callable"):
        _rank(trainer, image, labels, stop=3)
    assert labelled_slices(labels) == [0, 1]
    assert labelled_slices(labels[0]) == [0]
