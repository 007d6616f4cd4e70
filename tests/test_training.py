"""Tests of napari_unet.training: real (tiny) training runs on the synthetic sample."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import numpy as np
import pytest
import torch

from napari_unet import metrics
from napari_unet.augment import Augmentation
from napari_unet.checkpoint import load_checkpoint
from napari_unet.devices import cpu_has_native_bf16, training_amp_dtype
from napari_unet.model import UNet
from napari_unet.sample_data import synthetic_em
from napari_unet.tiling import predict_tiled
from napari_unet.training import (
    CheckpointSaved,
    Finished,
    Iteration,
    LabelsChanged,
    Preview,
    TrainConfig,
    Trainer,
    TrainingEvent,
    TrainingStarted,
    TrainingWarning,
    Validation,
    compute_normalization,
    train,
)

# one thread: the test machines are small and shared; oversubscribed OpenMP is very slow
BASE = {"num_threads": 1, "preview_every_s": 0.0, "batch_size": 4, "patch_size": 64}


def tiny_net(padding: str = "same", seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    return UNet(depth=3, base_channels=8, padding=padding, norm="batch")


def config(**kw: Any) -> TrainConfig:
    return TrainConfig(**{**BASE, **kw})


def run_all(trainer: Trainer) -> list[TrainingEvent]:
    return list(trainer.run())


def losses_of(events: list[TrainingEvent]) -> list[float]:
    return [e.loss for e in events if isinstance(e, Iteration)]


@pytest.fixture(scope="module")
def stack() -> tuple[np.ndarray, np.ndarray]:
    """6 x 96 x 96 synthetic EM slices, ground truth 1 = membrane, 2 = cell."""
    return synthetic_em((6, 96, 96), seed=3, cell_size=22)


@pytest.fixture(scope="module")
def trained(stack):
    """One real training run on two labelled slices, shared by several tests."""
    image, truth = stack
    labels = np.zeros_like(truth)
    labels[0], labels[1] = truth[0], truth[1]
    cfg = config(iterations=80, learning_rate=3e-3, seed=0)
    trainer = Trainer(image, labels, cfg, model=tiny_net())
    t0 = time.perf_counter()
    events = run_all(trainer)
    return trainer, events, time.perf_counter() - t0


# --------------------------------------------------------------------------- training runs


def test_training_reduces_loss_and_beats_majority(stack, trained):
    image, truth = stack
    trainer, events, _ = trained
    losses = losses_of(events)
    assert len(losses) == 80
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    # an unlabelled slice: better than predicting the majority class everywhere
    pred = predict_tiled(trainer.model, image[4], device="cpu", normalization=trainer.normalization)
    majority = np.bincount(truth[4].ravel()).argmax()
    baseline = metrics.pixel_error(np.full_like(truth[4], majority), truth[4])
    error = metrics.pixel_error(pred, truth[4])
    assert error < 0.75 * baseline, (error, baseline)


def test_events_types_and_order(trained):
    trainer, events, _ = trained
    assert isinstance(events[0], TrainingStarted)
    assert isinstance(events[-1], Finished)
    assert sum(isinstance(e, (TrainingStarted, Finished)) for e in events) == 2
    started, finished = events[0], events[-1]
    assert started.labelled_slices == [0, 1]
    assert started.n_labelled_pixels == 2 * 96 * 96
    assert (started.patch_size, started.batch_size, started.iterations) == (64, 4, 80)
    assert started.device == "cpu" and "cpu" in started.device_description
    assert started.n_parameters == trainer.model.n_parameters()
    iterations = [e for e in events if isinstance(e, Iteration)]
    assert [e.iteration for e in iterations] == list(range(1, 81))
    assert all(e.total == 80 and e.lr > 0 and e.samples_per_s > 0 for e in iterations)
    assert all(np.isfinite(e.loss) for e in iterations)
    elapsed = [e.elapsed_s for e in iterations]
    assert elapsed == sorted(elapsed)
    # warm-up then cosine decay to 5 % of the learning rate
    lrs = [e.lr for e in iterations]
    assert max(lrs) == pytest.approx(3e-3, rel=0.05)
    assert lrs[-1] < 0.1 * max(lrs)
    assert finished.reason == "completed"
    assert finished.iterations == 80
    assert finished.final_loss == iterations[-1].loss
    assert finished.checkpoint_path is None
    kinds = {
        cls.kind
        for cls in (
            TrainingStarted,
            Iteration,
            Validation,
            Preview,
            CheckpointSaved,
            TrainingWarning,
            LabelsChanged,
            Finished,
        )
    }
    assert len(kinds) == 8
    # frozen dataclasses
    with pytest.raises(AttributeError):
        finished.reason = "other"  # type: ignore[misc]


def test_metadata_for_checkpoint(trained, tmp_path):
    trainer, _, _ = trained
    meta = trainer.metadata
    assert meta["class_names"] == ["membrane", "cell"]
    assert len(meta["class_colors"]) == 2
    assert set(meta["normalization"]) == {"mean", "std"}
    assert meta["iterations"] == 80
    assert [h["iteration"] for h in meta["history"]] == list(range(1, 81))
    assert meta["augmentation"] == Augmentation().to_dict()
    json.dumps(meta)  # JSON friendly
    path = trainer.save(tmp_path / "model.pt")
    model, loaded = load_checkpoint(path)
    assert loaded["iterations"] == 80
    assert loaded["normalization"] == pytest.approx(meta["normalization"])
    ref = trainer.model.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, ref[key].cpu())


def test_scribbles_train(stack):
    """A few % of the pixels labelled along thin lines: the loss still goes down."""
    image, truth = stack
    labels = np.zeros_like(truth)
    lines = np.zeros(truth.shape[1:], dtype=bool)
    lines[::16, :] = True
    lines[:, ::16] = True
    for z in (0, 1):
        labels[z][lines] = truth[z][lines]
    fraction = np.count_nonzero(labels[:2]) / labels[:2].size
    assert 0.05 < fraction < 0.15
    trainer = Trainer(image, labels, config(iterations=60, learning_rate=3e-3), model=tiny_net())
    events = run_all(trainer)
    losses = losses_of(events)
    assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:5])
    assert events[0].n_labelled_pixels == np.count_nonzero(labels)


def test_valid_padded_net_trains(stack):
    image, truth = stack
    labels = np.zeros_like(truth)
    labels[0] = truth[0]
    net = tiny_net("valid")
    trainer = Trainer(
        image, labels, config(iterations=40, patch_size=90, learning_rate=3e-3), model=net
    )
    assert trainer.input_size == net.valid_input_size(90)
    assert net.output_size(trainer.input_size) < trainer.input_size  # the loss crops the target
    events = run_all(trainer)
    losses = losses_of(events)
    assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:5])


def test_2d_image_and_train_wrapper(stack):
    image, truth = stack
    events = list(train(image[0], truth[0], config(iterations=3), model=tiny_net(), batch_size=2))
    assert isinstance(events[0], TrainingStarted) and events[0].labelled_slices == [0]
    assert events[0].batch_size == 2
    assert isinstance(events[-1], Finished) and events[-1].iterations == 3


def test_cpu_reproducible(stack):
    image, truth = stack
    labels = np.zeros_like(truth)
    labels[2] = truth[2]

    def first_losses(seed: int) -> list[float]:
        cfg = config(iterations=5, seed=seed, model="small", patch_size=32, batch_size=2)
        trainer = Trainer(image, labels, cfg)  # built from the preset with the seed
        return losses_of(run_all(trainer))

    a, b, c = first_losses(7), first_losses(7), first_losses(8)
    assert a == b
    assert a != c


def test_cpu_precision_and_memory_format(stack):
    """amp=True trains in bfloat16 on CPUs that compute it natively, float32 elsewhere;
    both in channels_last, and both learn."""
    image, truth = stack
    labels = np.zeros_like(truth)
    labels[0] = truth[0]
    native = cpu_has_native_bf16()
    assert training_amp_dtype(torch.device("cpu"), False) is None
    assert training_amp_dtype(torch.device("cpu"), True) == (torch.bfloat16 if native else None)
    finals = {}
    for amp in (True, False):
        trainer = Trainer(image, labels, config(iterations=40, amp=amp, seed=1), model=tiny_net())
        conv = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
        events = run_all(trainer)
        expected = "bfloat16" if (amp and native) else "float32"
        assert events[0].precision == expected
        losses = losses_of(events)
        assert all(np.isfinite(losses))
        assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:5]), (amp, losses)
        finals[amp] = np.mean(losses[-5:])
    # mixed precision does not cost the fit: final losses within 25 % of each other
    assert abs(finals[True] - finals[False]) < 0.25 * finals[False], finals
    # channels_last weights load into a freshly built (contiguous) network
    fresh = tiny_net(seed=5)
    fresh.load_state_dict(trainer.model.state_dict())
    x = torch.randn(1, 1, 32, 32)
    trainer.model.eval(), fresh.eval()
    with torch.inference_mode():
        torch.testing.assert_close(fresh(x), trainer.model(x))


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@CUDA
def test_cuda_mixed_precision_training(stack):
    image, truth = stack
    labels = np.zeros_like(truth)
    labels[0], labels[1] = truth[0], truth[1]
    trainer = Trainer(
        image, labels, config(iterations=60, device="cuda", learning_rate=3e-3), model=tiny_net()
    )
    events = run_all(trainer)
    started = events[0]
    assert started.device.startswith("cuda")
    assert started.precision == ("bfloat16" if torch.cuda.is_bf16_supported() else "float16")
    losses = losses_of(events)
    assert all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    assert next(trainer.model.parameters()).is_cuda
    pred = predict_tiled(
        trainer.model, image[4], device="cuda", normalization=trainer.normalization
    )
    majority = np.bincount(truth[4].ravel()).argmax()
    baseline = metrics.pixel_error(np.full_like(truth[4], majority), truth[4])
    assert metrics.pixel_error(pred, truth[4]) < 0.75 * baseline


@CUDA
def test_cuda_real_out_of_memory_halves_the_batch():
    """A real CUDA OOM (the allocator capped to a sliver of the card): training
    halves the batch, reports it, and finishes."""
    image, truth = synthetic_em((2, 512, 512), seed=3, cell_size=40)
    labels = np.zeros_like(truth)
    labels[0] = truth[0]
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    # about 1.2 GiB: batch 64 of 512 px patches of the "small" preset needs several GiB
    torch.cuda.set_per_process_memory_fraction(1.2 * 2**30 / total)
    try:
        cfg = config(iterations=3, device="cuda", batch_size=64, patch_size=512, model="small")
        events = run_all(Trainer(image, labels, cfg))
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    warnings = [e.message for e in events if isinstance(e, TrainingWarning)]
    assert warnings and all(w.startswith("CUDA out of memory: retrying with") for w in warnings)
    assert isinstance(events[-1], Finished) and events[-1].iterations == 3


# --------------------------------------------------------------------------- control


def test_stop_from_another_thread_and_checkpoint(stack, tmp_path):
    image, truth = stack
    labels = np.zeros_like(truth)
    labels[0] = truth[0]
    path = tmp_path / "autosave.pt"
    cfg = config(iterations=10_000, checkpoint_path=str(path), checkpoint_every_s=3600)
    trainer = Trainer(image, labels, cfg, model=tiny_net())
    reached = threading.Event()
    stopped_at: list[int] = []
    seen: list[int] = []

    def stopper() -> None:
        reached.wait(30)
        stopped_at.append(len(seen))
        trainer.stop()

    thread = threading.Thread(target=stopper)
    thread.start()
    events = []
    for event in trainer.run():
        events.append(event)
        if isinstance(event, Iteration):
            seen.append(event.iteration)
            if event.iteration == 3:
                reached.set()
    thread.join()
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.reason == "stopped"
    # the step in flight when stop() was called may finish, nothing after it
    assert len(seen) <= stopped_at[0] + 1
    assert finished.iterations == len(seen)
    saved = [e for e in events if isinstance(e, CheckpointSaved)]
    assert saved and saved[-1].path == str(path) == finished.checkpoint_path
    model, meta = load_checkpoint(path)
    assert meta["iterations"] == len(seen)
    assert model.config == trainer.model.config


def test_resume_continues_from_weights(stack, trained, tmp_path):
    image, truth = stack
    trainer, events, _ = trained
    path = trainer.save(tmp_path / "first.pt")
    model, meta = load_checkpoint(path)
    labels = np.zeros_like(truth)
    labels[0], labels[1] = truth[0], truth[1]
    cfg = config(iterations=4, seed=1, learning_rate=1e-4, warmup_iterations=0)
    resumed = Trainer(image, labels, cfg, model=model, metadata=meta)
    assert resumed.normalization == meta["normalization"]
    resumed_losses = losses_of(run_all(resumed))
    fresh_losses = losses_of(run_all(Trainer(image, labels, cfg, model=tiny_net(seed=5))))
    previous = np.mean(losses_of(events)[-10:])
    assert abs(np.mean(resumed_losses) - previous) < abs(np.mean(fresh_losses) - previous)
    assert np.mean(resumed_losses) < 0.8 * np.mean(fresh_losses)
    assert resumed.metadata["iterations"] == 84
    assert resumed.metadata["history"][-1]["iteration"] == 84


def test_labels_painted_during_training_are_picked_up(stack):
    image, truth = stack
    labels = np.zeros_like(truth)
    labels[0] = truth[0]
    trainer = Trainer(image, labels, config(iterations=12, labels_rescan_s=0.0), model=tiny_net())
    changes: list[list[int]] = []
    for event in trainer.run():
        if isinstance(event, Iteration) and event.iteration == 3:
            labels[2] = truth[2]  # the user paints a new slice
        if isinstance(event, Iteration) and event.iteration == 7:
            labels[0][:10] = 0  # ... and erases part of another
        if isinstance(event, LabelsChanged):
            changes.append(event.slices)
    assert changes == [[2], [0]]
    assert trainer.labelled_slices == [0, 2]
    assert trainer.n_labelled_pixels == np.count_nonzero(labels)


def test_notify_labels_changed_and_preview(stack):
    image, truth = stack
    labels = np.zeros_like(truth)
    labels[1] = truth[1]
    # a long rescan interval: only notify_labels_changed() makes the change visible
    cfg = config(iterations=8, labels_rescan_s=3600.0, preview_every_s=1e-6)
    trainer = Trainer(image, labels, cfg, model=tiny_net())
    trainer.set_preview_slice(5)
    previews: list[Preview] = []
    changes: list[list[int]] = []
    for event in trainer.run():
        if isinstance(event, Iteration) and event.iteration == 2:
            labels[3] = truth[3]
            trainer.notify_labels_changed([3])
        if isinstance(event, LabelsChanged):
            changes.append(event.slices)
        if isinstance(event, Preview):
            previews.append(event)
    assert changes == [[3]]
    assert previews
    p = previews[-1]
    assert p.slice_index == 5
    assert p.labels.dtype == np.uint8 and p.labels.shape == (96, 96)
    assert set(np.unique(p.labels)) <= {1, 2}
    assert p.probabilities.dtype == np.float16 and p.probabilities.shape == (2, 96, 96)
    np.testing.assert_allclose(p.probabilities.astype(np.float32).sum(0), 1.0, atol=1e-2)
    assert trainer.model.training is False  # left in eval mode when finished
    with pytest.raises(ValueError, match="preview slice"):
        trainer.set_preview_slice(6)


def test_validation_events(stack):
    image, truth = stack
    labels = np.zeros_like(truth)
    labels[0] = truth[0]
    labels[3] = truth[3]
    cfg = config(iterations=10, val_slices=[3], val_every=5)
    trainer = Trainer(image, labels, cfg, model=tiny_net())
    assert trainer.labelled_slices == [0]  # the validation slice is held out
    events = run_all(trainer)
    vals = [e for e in events if isinstance(e, Validation)]
    assert [v.iteration for v in vals] == [5, 10]
    m = vals[-1].metrics
    assert {"pixel_error", "iou_membrane", "iou_cell", "mean_iou", "n_pixels"} <= set(m)
    assert 0.0 <= m["pixel_error"] <= 1.0 and m["n_pixels"] == 96 * 96
    assert trainer.metadata["validation_history"][-1]["iteration"] == 10


class _OOMAboveBatch(UNet):
    """A real UNet that runs out of "CUDA memory" for batches above ``limit`` (fault injection)."""

    limit = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().forward(x)


def test_out_of_memory_halves_the_batch(stack):
    image, truth = stack
    labels = np.zeros_like(truth)
    labels[0] = truth[0]
    torch.manual_seed(0)
    net = _OOMAboveBatch(depth=3, base_channels=8, padding="same", norm="batch")
    events = run_all(Trainer(image, labels, config(iterations=3), model=net))
    warnings = [e.message for e in events if isinstance(e, TrainingWarning)]
    assert warnings == [
        "CUDA out of memory: retrying with batch 2",
        "CUDA out of memory: retrying with batch 1",
    ]
    assert events[-1].iterations == 3
    net.limit = 0  # never fits
    with pytest.raises(RuntimeError, match="out of memory even with batch 1"):
        run_all(Trainer(image, labels, config(iterations=3), model=net))


def test_reads_only_labelled_slices():
    """A big lazy volume: only the labelled slices are read whole."""

    class RecordingVolume:
        def __init__(self, data: np.ndarray) -> None:
            self.data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim
            self.full_reads: set[int] = set()

        def __getitem__(self, index: Any) -> np.ndarray:
            if isinstance(index, (int, np.integer)):
                self.full_reads.add(int(index))
            return self.data[index]

    image, truth = synthetic_em((40, 64, 64), seed=0, cell_size=20)
    volume = RecordingVolume(image)
    labels = np.zeros_like(truth)
    labels[7], labels[30] = truth[7], truth[30]
    trainer = Trainer(volume, labels, config(iterations=2, patch_size=32), model=tiny_net())
    run_all(trainer)
    assert volume.full_reads == {7, 30}


# --------------------------------------------------------------------------- errors & config


def test_errors(stack):
    image, truth = stack
    empty = np.zeros_like(truth)
    with pytest.raises(
        ValueError, match="no labelled pixels on any slice: paint at least one slice"
    ):
        Trainer(image, empty, config())
    with pytest.raises(
        ValueError, match=r"labels shape \(6, 96, 64\) does not match image \(6, 96, 96\)"
    ):
        Trainer(image, truth[:, :, :64], config())
    with pytest.raises(TypeError, match="integer"):
        Trainer(image, truth.astype(np.float32), config())
    with pytest.raises(ValueError, match="model predicts 2 classes"):
        Trainer(image, np.where(truth == 2, 3, truth).astype(np.uint8), config(), model=tiny_net())
    with pytest.raises(ValueError, match="validation slices"):
        labels = np.zeros_like(truth)
        labels[3] = truth[3]
        Trainer(image, labels, config(val_slices=[3]))
    with pytest.raises(ValueError, match="out of range"):
        Trainer(image, truth, config(val_slices=[9]))
    with pytest.raises(ValueError, match="image must be"):
        Trainer(image[None], truth[None], config())


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("batch_size", 0, "batch_size"),
        ("loss", "l2", "loss must be one of"),
        ("model", "huge", "model must be one of"),
        ("learning_rate", -1.0, "learning_rate"),
        ("label_oversampling", 1.5, "label_oversampling"),
        ("lr_schedule", "step", "lr_schedule"),
        ("lr_period", 1, "lr_period"),
        ("min_learning_rate", 0.0, "min_learning_rate"),
        ("min_learning_rate", 0.01, "min_learning_rate 0.01 is above learning_rate"),
        ("loss", "iou", "loss must be one of"),
        ("class_weights", "inverse", "class_weights"),
        ("patch_size", 4, "patch_size"),
        ("val_every", 0, "val_every"),
        ("iterations", None, "set iterations or max_minutes"),
    ],
)
def test_bad_config_values(stack, field, value, match):
    image, truth = stack
    cfg = TrainConfig(**{field: value})
    with pytest.raises(ValueError, match=match):
        cfg.validate()
    with pytest.raises(ValueError, match=match):
        Trainer(image, truth, cfg)


def test_config_round_trip():
    cfg = TrainConfig(
        class_weights={1: 2.0, 2: 0.5},
        val_slices=[3, 4],
        augmentation=Augmentation(rotate_degrees=15.0, gamma=0.2),
        max_minutes=2.5,
        iterations=None,
    )
    data = json.loads(json.dumps(cfg.to_dict()))
    assert data["augmentation"]["rotate_degrees"] == 15.0
    back = TrainConfig.from_dict(data)
    assert back == cfg
    assert TrainConfig.from_dict(TrainConfig().to_dict()) == TrainConfig()
    paper = TrainConfig.paper(iterations=10).validate()
    assert (paper.model, paper.loss, paper.w0, paper.class_weights) == (
        "paper",
        "wce",
        10.0,
        "balanced",
    )
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        TrainConfig.from_dict({"epochs": 3})


def test_compute_normalization():
    da = pytest.importorskip("dask.array")
    rng = np.random.default_rng(0)
    image = rng.normal(100.0, 20.0, size=(50, 64, 64)).astype(np.float32)
    ref = {"mean": float(image.mean()), "std": float(image.std())}
    small = compute_normalization(image, max_samples=20_000, max_slices=10)
    assert small["mean"] == pytest.approx(ref["mean"], rel=0.01)
    assert small["std"] == pytest.approx(ref["std"], rel=0.03)
    lazy = compute_normalization(da.from_array(image, chunks=(1, 64, 64)))
    full = compute_normalization(image)
    assert lazy["mean"] == pytest.approx(full["mean"]) and lazy["std"] == pytest.approx(full["std"])
    assert compute_normalization(np.full((8, 8), 3, np.uint8)) == {"mean": 3.0, "std": 1.0}
    with pytest.raises(ValueError, match="image must be"):
        compute_normalization(np.zeros(5))


# --------------------------------------------------------------------------- intensity range


def test_same_stack_in_three_dtypes_predicts_the_same_classes(stack, trained, tmp_path):
    """uint8, uint16 x257 and float 0..1 copies of the training stack: identical classes."""
    from napari_unet.normalization import stack_normalization

    image, _ = stack
    trainer, _, _ = trained
    model, meta = load_checkpoint(trainer.save(tmp_path / "m.pt"))
    assert meta["intensity"]["dtype"] == "uint8"
    assert meta["intensity"]["low"] < meta["intensity"]["high"]
    copies = {
        "uint8": image,
        "uint16": image.astype(np.uint16) * 257,
        "float": image.astype(np.float32) / 255,
    }
    results, notes = {}, {}
    for name, copy in copies.items():
        stats, notes[name] = stack_normalization(copy, meta["normalization"], meta["intensity"])
        results[name] = predict_tiled(model, copy, device="cpu", normalization=stats)
    assert notes["uint8"] is None  # the training stack itself: the recorded statistics
    assert "uint16" in notes["uint16"] and "mapped linearly" in notes["uint16"]
    assert "float32" in notes["float"]
    np.testing.assert_array_equal(results["uint16"], results["uint8"])
    np.testing.assert_array_equal(results["float"], results["uint8"])
    # without the conversion, the recorded absolute statistics give another result
    raw = predict_tiled(model, copies["uint16"], device="cpu", normalization=meta["normalization"])
    assert (raw != results["uint8"]).mean() > 0.1
    # an old checkpoint (no intensity range) warns instead of mapping
    stats, note = stack_normalization(copies["uint16"], meta["normalization"], None)
    assert stats == meta["normalization"] and "far from the training stack" in note


def test_fine_tuning_maps_another_dtype_onto_the_model_frame(stack, trained, tmp_path):
    image, truth = stack
    trainer, _, _ = trained
    model, meta = load_checkpoint(trainer.save(tmp_path / "m.pt"))
    labels = np.zeros_like(truth)
    labels[2] = truth[2]
    tuned = Trainer(image.astype(np.float32) / 255, labels, config(iterations=1), model=model,
                    metadata=meta)  # fmt: skip
    events = run_all(tuned)
    warnings = [e.message for e in events if isinstance(e, TrainingWarning)]
    assert any("mapped linearly" in w for w in warnings)
    assert tuned.metadata["normalization"] == meta["normalization"]  # the model's frame
    assert tuned.metadata["intensity"] == meta["intensity"]
    assert tuned._input_norm["mean"] == pytest.approx(meta["normalization"]["mean"] / 255)


# --------------------------------------------------------------------------- previews, process


def test_preview_interval_keeps_previews_within_their_budget():
    from napari_unet.training.schedule import PREVIEW_BUDGET, preview_interval

    assert preview_interval(5.0, 0.01) == 5.0  # cheap previews: the configured interval
    gap = preview_interval(5.0, 1.0)  # dear ones: spaced so they cost the budget at most
    assert 1.0 / (gap + 1.0) <= PREVIEW_BUDGET + 1e-9


def test_region_previews_predict_only_the_region(stack):
    from napari_unet.training.validation import clip_region

    assert clip_region((0, 96, 0, 96), (96, 96)) is None  # (most of) the slice: all of it
    assert clip_region((-5, 40, 10, 200), (96, 96)) == (0, 40, 10, 96)
    with pytest.raises(ValueError, match="outside"):
        clip_region((100, 120, 0, 10), (96, 96))
    image, truth = stack
    labels = np.zeros_like(truth)
    labels[1] = truth[1]
    trainer = Trainer(image, labels, config(iterations=3, preview_every_s=1e-6), model=tiny_net())
    trainer.set_preview_slice(4)
    trainer.set_preview_region((10, 40, 20, 60))
    previews = [e for e in trainer.run() if isinstance(e, Preview)]
    assert previews and trainer.last_preview_region == (10, 40, 20, 60)
    p = previews[-1]
    assert p.slice_index == 4 and p.labels.shape == (96, 96) and p.probabilities is None
    assert set(np.unique(p.labels[10:40, 20:60])) <= {1, 2} and p.labels[10:40, 20:60].all()
    p.labels[10:40, 20:60] = 0
    assert not p.labels.any()  # nothing outside the region


def test_training_process_runs_the_trainer_with_live_labels(stack, tmp_path):
    from napari_unet.training.remote import (
        ModelStart,
        RegionPreview,
        TrainerReady,
        TrainingProcess,
        TrainResult,
    )

    image, truth = stack
    labels = np.zeros_like(truth)
    labels[0] = truth[0]
    cfg = config(
        iterations=40,
        preview_every_s=1e-6,
        labels_rescan_s=3600.0,
        checkpoint_path=str(tmp_path / "m.pt"),
    )
    process = TrainingProcess()
    events = []
    for event in process.run(
        image, labels, cfg, ModelStart("small"), (["a", "b"], ["red", "blue"])
    ):
        events.append(event)
        if isinstance(event, Iteration) and event.iteration == 3:
            labels[2] = truth[2]
            process.notify_labels([2])  # reaches the child's trainer
            process.set_view(5, (0, 30, 0, 30))
    kinds = [type(e) for e in events]
    assert kinds[0] is TrainerReady and kinds[-1] is TrainResult
    changed = [e for e in events if isinstance(e, LabelsChanged)]
    assert changed and changed[0].slices == [2]
    regions = [e for e in events if isinstance(e, RegionPreview)]
    assert regions and regions[-1].slice_index == 5 and regions[-1].labels.shape == (30, 30)
    finished = next(e for e in events if isinstance(e, Finished))
    assert finished.reason == "completed" and finished.iterations == 40
    result = events[-1]
    assert isinstance(result.model, UNet) and result.metadata["iterations"] == 40
    _, meta = load_checkpoint(tmp_path / "m.pt")
    assert meta["iterations"] == 40
    assert process.process.exitcode == 0


# --------------------------------------------------------------------------- learning-rate schedules


def test_schedule_values() -> None:
    from napari_unet.training.schedule import learning_rate

    def lrs(**kw: Any) -> np.ndarray:
        cfg = TrainConfig(**{"iterations": 1000, "learning_rate": 1e-3, **kw}).validate()
        return np.array([learning_rate(cfg, i, 0.0) for i in range(1000)])

    # cyclic: warm-up (20 steps) up to the minimum, then triangles min -> max -> min every 100
    cyc = lrs(lr_schedule="cyclic", min_learning_rate=1e-4, lr_period=100)
    np.testing.assert_allclose(cyc[:20], 1e-4 * np.arange(1, 21) / 21)
    np.testing.assert_allclose(cyc[[20, 70, 120, 170, 920]], [1e-4, 1e-3, 1e-4, 1e-3, 1e-4])
    np.testing.assert_allclose(cyc[[45, 95, 145]], 5.5e-4)
    assert cyc[20:].min() == pytest.approx(1e-4) and cyc[20:].max() == pytest.approx(1e-3)
    assert np.all(np.diff(cyc[20:71]) > 0) and np.all(np.diff(cyc[70:121]) < 0)
    # without min_learning_rate the lowest rate is 5 % of the rate
    assert lrs(lr_schedule="cyclic")[20] == pytest.approx(5e-5)
    # constant: the rate after the warm-up
    const = lrs(lr_schedule="constant")
    np.testing.assert_allclose(const[20:], 1e-3)
    np.testing.assert_allclose(const[:20], 1e-3 * np.arange(1, 21) / 21)
    # cosine: from the rate down to the minimum (default 5 %), monotone
    cos = lrs()
    assert cos[20] == pytest.approx(1e-3) and cos[-1] == pytest.approx(5e-5, rel=1e-3)
    assert np.all(np.diff(cos[20:]) <= 0)
    assert lrs(min_learning_rate=1e-5)[-1] == pytest.approx(1e-5, rel=1e-2)


def test_cyclic_jaccard_run_uses_the_schedule(stack) -> None:
    """A real run: the Iteration events carry the cyclic rates, the Jaccard loss trains."""
    from napari_unet.training.schedule import learning_rate

    image, truth = stack
    labels = np.zeros_like(truth)
    labels[0], labels[1] = truth[0], truth[1]
    cfg = config(
        iterations=24,
        loss="wce+jaccard",
        lr_schedule="cyclic",
        min_learning_rate=1e-4,
        learning_rate=2e-3,
        lr_period=8,
        warmup_iterations=0,
    )
    events = run_all(Trainer(image, labels, cfg, model=tiny_net()))
    its = [e for e in events if isinstance(e, Iteration)]
    assert [e.lr for e in its] == pytest.approx([learning_rate(cfg, i, 0.0) for i in range(24)])
    assert [e.lr for e in its][:5] == pytest.approx([1e-4, 5.75e-4, 1.05e-3, 1.525e-3, 2e-3])
    loss = losses_of(events)
    assert all(np.isfinite(loss))
    assert np.mean(loss[-6:]) < np.mean(loss[:6])
