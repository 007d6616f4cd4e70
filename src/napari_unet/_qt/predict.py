"""5 Predict: tiled prediction of a slice, the visible slices, a range or the whole stack.

The worker predicts slice by slice with :func:`napari_unet.tiling.predict_tiled`
and yields each finished slice; the GUI thread writes it into the prediction
Labels layer ("<image> prediction", the image's scale and translate) and
refreshes the layer a few times per second.  Large or lazily loaded stacks
(dask / memmap / zarr, or a prediction over 1 GiB) are streamed into a zarr
array in a temporary folder that napari displays lazily, instead of a full
in-memory copy.  Cancel stops within one tile batch; finished slices stay.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QWidget,
)

from ._common import (
    Throttle,
    current_z,
    default_colors,
    friendly_error,
    label_colormap,
    n_slices,
    parse_slice_ranges,
    visible_z_range,
)
from ._compute import warm_torch
from ._widgets import UNetWidget, path_row
from ._workers import Job

if TYPE_CHECKING:
    import napari
    from napari.layers import Image, Labels

SOURCES = ("model in memory", "checkpoint file")
RANGES = ("current slice", "visible slices", "all slices", "range")
STORAGE = ("auto", "memory", "disk (zarr)")
#: predictions larger than this (bytes of labels) stream to disk in "auto" mode
DISK_THRESHOLD = 1 << 30
PRED_SUFFIX = " prediction"


@dataclass
class ModelLoaded:
    model: Any
    metadata: dict[str, Any]
    path: str


@dataclass
class SliceDone:
    z: int
    labels: np.ndarray
    probabilities: np.ndarray | None
    done: int
    total: int


@dataclass
class Cancelled:
    done: int
    total: int


def _read_slice(data: Any, z: int, is_3d: bool) -> np.ndarray:
    block = data[z] if is_3d else data
    if hasattr(block, "compute") and not isinstance(block, np.ndarray):
        block = block.compute()
    return np.asarray(block)


def _predict_job(
    image: Any,
    zs: list[int],
    is_3d: bool,
    model: Any,
    metadata: dict[str, Any] | None,
    checkpoint: str | None,
    tile: int | None,
    batch: int | None,
    device: str,
    tta: bool,
    probabilities: bool,
    cancel: threading.Event,
) -> Any:
    from ..devices import resolve_device
    from ..tiling import PredictionCancelled, predict_tiled
    from ..training import compute_normalization

    if checkpoint is not None:
        from ..checkpoint import load_checkpoint

        model, metadata = load_checkpoint(checkpoint)
        yield ModelLoaded(model, metadata, checkpoint)
    metadata = metadata or {}
    norm = metadata.get("normalization")
    if not (isinstance(norm, dict) and "mean" in norm and "std" in norm):
        norm = compute_normalization(image)
    dev = resolve_device(device)
    params = list(model.parameters())
    if (
        params
        and params[0].device != dev
        and not (dev.type == "cuda" and params[0].device.type == "cuda")
    ):
        model = copy.deepcopy(model).to(dev)  # once, not per slice
    for i, z in enumerate(zs):
        if cancel.is_set():
            yield Cancelled(i, len(zs))
            return
        sl = _read_slice(image, z, is_3d)
        try:
            result = predict_tiled(
                model,
                sl,
                tile_size=tile,
                batch_size=batch,
                device=dev,
                return_probabilities=probabilities,
                normalization=norm,
                tta=tta,
                progress=lambda done, total: not cancel.is_set(),
            )
        except PredictionCancelled:
            yield Cancelled(i, len(zs))
            return
        labels, probs = result if probabilities else (result, None)
        yield SliceDone(
            int(z), np.asarray(labels), None if probs is None else np.asarray(probs), i + 1, len(zs)
        )


class PredictWidget(UNetWidget):
    """Predict with the model in memory or a checkpoint; overlay the result."""

    key = "predict"
    #: emitted when a prediction run ends: "completed", "cancelled" or "error"
    prediction_finished = Signal(str)

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(napari_viewer, parent)
        self.layer: Labels | None = None
        self.prob_layer: Image | None = None
        self._cancel: threading.Event | None = None
        self._pbar: Any = None
        self._t0 = 0.0
        self._done = 0
        self._total = 0
        self._zs: list[int] = []
        self._tempdirs: list[str] = []
        self._meta: dict[str, Any] = {}
        self._outcome = "completed"
        self.on_disk = False
        self.slices_written = 0

        form = self.add_form()
        self.source = QComboBox()
        self.source.addItems(list(SOURCES))
        form.addRow("Model", self.source)
        crow, self.ckpt_edit, self.ckpt_btn = path_row("checkpoint .pt")
        form.addRow("Checkpoint", crow)
        self.model_label = QLabel("")
        self.model_label.setWordWrap(True)
        form.addRow(self.model_label)
        rrow = QHBoxLayout()
        self.range = QComboBox()
        self.range.addItems(list(RANGES))
        self.range.setCurrentText("all slices")
        self.range_edit = QLineEdit()
        self.range_edit.setPlaceholderText("e.g. 0-9,15")
        rrow.addWidget(self.range, 1)
        rrow.addWidget(self.range_edit, 1)
        form.addRow("Slices", rrow)
        self.tile = QSpinBox()
        self.tile.setRange(0, 8192)
        self.tile.setSingleStep(64)
        self.tile.setSpecialValueText("auto")
        form.addRow("Tile size", self.tile)
        self.batch = QSpinBox()
        self.batch.setRange(0, 512)
        self.batch.setSpecialValueText("auto")
        form.addRow("Batch size", self.batch)
        self.device = QComboBox()
        self.device.addItems(["auto", "cuda", "mps", "cpu"])
        form.addRow("Device", self.device)
        self.tta = QCheckBox("test-time augmentation (8 flips/rotations, 8x slower)")
        form.addRow(self.tta)
        prow = QHBoxLayout()
        self.probs = QCheckBox("probabilities of")
        self.prob_class = QComboBox()
        prow.addWidget(self.probs)
        prow.addWidget(self.prob_class, 1)
        form.addRow(prow)
        self.storage = QComboBox()
        self.storage.addItems(list(STORAGE))
        self.storage.setToolTip(
            "auto: stream into a temporary zarr array for lazily loaded or very large stacks"
        )
        form.addRow("Result storage", self.storage)
        self.predict_btn, self.cancel_btn, self.progress = self.add_run_row("Predict", "Cancel")
        self.finish_layout()

        self._refresh = Throttle(self._refresh_layers, 250, self)
        self.predict_btn.clicked.connect(lambda: self.predict())
        self.cancel_btn.clicked.connect(self.cancel)
        self.ckpt_btn.clicked.connect(self._choose_checkpoint)
        self.source.currentTextChanged.connect(self._update_model_label)
        self.range.currentTextChanged.connect(self._on_range)
        self.state.model_changed.connect(self._update_model_label)
        self.state.classes_changed.connect(self._fill_prob_classes)
        self._fill_prob_classes()
        self._on_range(self.range.currentText())
        self._update_model_label()
        self.start_job("warmup", Job(warm_torch))

    # -- settings ------------------------------------------------------------------------------
    def _on_range(self, text: str) -> None:
        self.range_edit.setEnabled(text == "range")

    def _fill_prob_classes(self) -> None:
        names = self._meta.get("class_names") or self.state.class_names
        current = self.prob_class.currentIndex()
        self.prob_class.clear()
        for k, name in enumerate(names, start=1):
            self.prob_class.addItem(f"{k}: {name}", k)
        if 0 <= current < len(names):
            self.prob_class.setCurrentIndex(current)

    def _update_model_label(self, *_: Any) -> None:
        ckpt = self.source.currentText() == "checkpoint file"
        self.ckpt_edit.setEnabled(ckpt)
        self.ckpt_btn.setEnabled(ckpt)
        if ckpt:
            self.model_label.setText("")
            return
        model = self.state.model
        if model is None:
            self.model_label.setText(
                "no model in memory yet: train one in '4 Train' or use a checkpoint"
            )
            return
        md = self.state.metadata
        names = ", ".join(md.get("class_names") or [])
        self.model_label.setText(
            f"in memory: depth {model.depth}, {model.base_channels} base channels, "
            f"{model.n_classes} classes ({names}), {md.get('iterations', 0)} iterations"
        )

    def _choose_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Checkpoint", "", "Checkpoints (*.pt *.pth);;All files (*)"
        )
        if path:
            self.ckpt_edit.setText(path)
            self.source.setCurrentText("checkpoint file")

    def slices_to_predict(self) -> list[int]:
        """The slices of the chosen range (raises ValueError for a bad range text)."""
        image = self.state.image_layer
        if image is None:
            return []
        n = n_slices(image)
        mode = self.range.currentText()
        if mode == "current slice":
            return [current_z(self.viewer, image)]
        if mode == "visible slices":
            return visible_z_range(self.viewer, image)
        if mode == "all slices":
            return list(range(n))
        zs = parse_slice_ranges(self.range_edit.text(), n)
        if not zs:
            raise ValueError("type the slices to predict, e.g. 0-9,15")
        return zs

    # -- run -----------------------------------------------------------------------------------
    def predict(self) -> Job | None:
        if self.busy():
            self.warning("a prediction is already running: Cancel it first")
            return None
        image = self.grayscale_image("no image layer: open a stack and pick it in '1 Annotate'")
        if image is None:
            return None
        model = metadata = None
        ckpt = None
        if self.source.currentText() == "model in memory":
            if self.state.model is None:
                self.error("no model in memory: train one in '4 Train' or choose a checkpoint file")
                return None
            model, metadata = self.state.model, self.state.metadata
            self._meta = dict(metadata)
        else:
            ckpt = self.ckpt_edit.text().strip()
            if not ckpt:
                self.error("choose the checkpoint file to predict with (the '…' button)")
                return None
        try:
            zs = self.slices_to_predict()
        except ValueError as exc:
            self.error(f"slices to predict: {exc}")
            return None
        self._zs = zs
        self._done = 0
        self._total = len(zs)
        self._outcome = "completed"
        self.slices_written = 0
        self._cancel = threading.Event()
        self.progress.setRange(0, len(zs))
        self.progress.setValue(0)
        from napari.utils import progress

        if self._pbar is not None:
            self._pbar.close()
        self._pbar = progress(total=len(zs), desc="U-Net prediction")
        job = Job(
            _predict_job,
            image.data,
            zs,
            image.ndim >= 3,
            model,
            metadata,
            ckpt,
            int(self.tile.value()) or None,
            int(self.batch.value()) or None,
            self.device.currentText(),
            self.tta.isChecked(),
            self.probs.isChecked(),
            self._cancel,
            on_yield=self._on_item,
            on_error=self._on_error,
            on_finished=self._on_finished,
            cancel=self._cancel.set,
        )
        self.layer = None  # re-check the layer against this run's model
        if model is not None:
            self._ensure_layers(int(model.n_classes), self.probs.isChecked())
        self._t0 = time.perf_counter()
        self.predict_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        self.info(f"predicting {len(zs)} slice(s)…", notify=False)
        return self.start_job("main", job)

    def cancel(self) -> None:
        job = self.job("main")
        if job is not None and job.running:
            job.cancel()
            self.cancel_btn.setEnabled(False)

    # -- results (GUI thread) ------------------------------------------------------------------
    def _on_item(self, item: Any) -> None:
        if isinstance(item, ModelLoaded):
            self._meta = dict(item.metadata)
            self._fill_prob_classes()
            return
        if isinstance(item, Cancelled):
            self._outcome = "cancelled"
            return
        if isinstance(item, SliceDone):
            self._write_slice(item)

    def _use_disk(self, image: Image, nbytes: int) -> bool:
        mode = self.storage.currentText()
        if mode == "memory":
            return False
        if mode == "disk (zarr)":
            return True
        data = image.data
        lazy = not isinstance(data, np.ndarray) or isinstance(data, np.memmap)
        return lazy or nbytes > DISK_THRESHOLD

    def _new_array(self, shape: tuple[int, ...], dtype: Any, disk: bool, name: str) -> Any:
        if not disk:
            return np.zeros(shape, dtype=dtype)
        import zarr

        folder = tempfile.mkdtemp(prefix="napari-unet-")
        self._tempdirs.append(folder)
        chunks = tuple([1] * (len(shape) - 2) + [min(shape[-2], 1024), min(shape[-1], 1024)])
        return zarr.open_array(
            str(Path(folder) / f"{name}.zarr"),
            mode="w",
            shape=shape,
            chunks=chunks,
            dtype=dtype,
            fill_value=0,
        )

    def _ensure_layers(self, n_classes: int, probabilities: bool) -> None:
        """Create (or reuse) the prediction layer (and the probability layer).

        Called when Predict is pressed (model in memory), so that napari's cost of
        adding a layer lands on the button press, not in the middle of the stream.
        """
        from ..tiling import label_dtype

        image = self.state.image_layer
        if image is None:
            return
        shape = tuple(image.data.shape)
        names = self._meta.get("class_names") or self.state.class_names
        colors = self._meta.get("class_colors") or self.state.class_colors
        if len(colors) < len(names):
            colors = default_colors(len(names))
        dtype = label_dtype(n_classes)
        layer = self.layer if self.layer is not None else self.state.prediction_layer
        if (
            layer is None
            or layer not in self.viewer.layers
            or tuple(layer.data.shape) != shape
            or np.dtype(layer.data.dtype).itemsize < dtype.itemsize
        ):
            disk = self._use_disk(image, int(np.prod(shape)) * dtype.itemsize)
            data = self._new_array(shape, dtype, disk, "prediction")
            self.on_disk = disk
            active = self.viewer.layers.selection.active
            layer = self.viewer.add_labels(
                data,
                name=f"{image.name}{PRED_SUFFIX}",
                scale=tuple(image.scale),
                translate=tuple(image.translate),
                opacity=0.5,
                colormap=label_colormap(colors),
                metadata={
                    "napari_unet": {
                        "generated": True,
                        "prediction": True,
                        "class_names": list(names),
                        "class_colors": list(colors),
                        "image": image.name,
                    }
                },
            )
            if active is not None and active in self.viewer.layers:
                self.viewer.layers.selection.active = active
        else:
            layer.colormap = label_colormap(colors)
        self.layer = layer
        if self.state.prediction_layer is not layer:
            self.state.set_prediction_layer(layer)
        if probabilities:
            probs = self.state.probabilities
            pshape = (n_classes, *shape)
            if probs is None or tuple(probs.shape) != pshape:
                disk = self._use_disk(image, int(np.prod(pshape)) * 4)
                self.state.probabilities = self._new_array(
                    pshape, np.float32, disk, "probabilities"
                )
            self._show_prob_layer(image)

    def _show_prob_layer(self, image: Image) -> None:
        probs = self.state.probabilities
        k = int(self.prob_class.currentData() or 1)
        k = min(max(k, 1), probs.shape[0])
        if isinstance(probs, np.ndarray):
            view = probs[k - 1]
        else:
            import dask.array as da

            view = da.from_zarr(probs)[k - 1]
        names = self._meta.get("class_names") or self.state.class_names
        name = f"{image.name} probability ({names[k - 1] if k - 1 < len(names) else k})"
        lay = self.prob_layer
        if lay is not None and lay in self.viewer.layers and lay.data.shape == view.shape:
            lay.data = view
            lay.name = name
        else:
            if lay is not None and lay in self.viewer.layers:
                self.viewer.layers.remove(lay)
            active = self.viewer.layers.selection.active
            lay = self.viewer.add_image(
                view,
                name=name,
                scale=tuple(image.scale),
                translate=tuple(image.translate),
                colormap="viridis",
                contrast_limits=(0.0, 1.0),
                opacity=0.6,
                blending="additive",
                visible=False,
                metadata={"napari_unet": {"generated": True, "probabilities": True}},
            )
            if active is not None and active in self.viewer.layers:
                self.viewer.layers.selection.active = active
        self.prob_layer = lay
        self.state.probability_layer = lay

    def _write_slice(self, item: SliceDone) -> None:
        if (
            self.layer is None
            or self.layer not in self.viewer.layers
            or np.dtype(self.layer.data.dtype).itemsize < item.labels.dtype.itemsize
            or (item.probabilities is not None and self.state.probabilities is None)
            or (
                item.probabilities is not None
                and self.state.probabilities.shape[0] != item.probabilities.shape[0]
            )
        ):
            k = (
                item.probabilities.shape[0]
                if item.probabilities is not None
                else int(item.labels.max())
            )
            self._ensure_layers(max(k, 2), item.probabilities is not None)
        if self.layer is None:
            return
        data = self.layer.data
        is_3d = data.ndim >= 3
        if is_3d:
            data[item.z] = item.labels
        else:
            data[...] = item.labels
        if item.probabilities is not None and self.state.probabilities is not None:
            probs = self.state.probabilities
            if is_3d:
                probs[:, item.z] = item.probabilities.astype(np.float32, copy=False)
            else:
                probs[...] = item.probabilities.astype(np.float32, copy=False)
        self.slices_written += 1
        self._done = item.done
        self.progress.setValue(item.done)
        if self._pbar is not None:
            self._pbar.update(1)
        self._refresh.trigger()

    def _refresh_layers(self) -> None:
        for lay in (self.layer, self.prob_layer):
            if lay is not None and lay in self.viewer.layers:
                lay.refresh()

    def _on_error(self, exc: BaseException) -> None:
        self._outcome = "error"
        from ..checkpoint import CheckpointError

        if isinstance(exc, CheckpointError):
            self.error(f"cannot use the checkpoint: {exc}")
        else:
            self.error(friendly_error(exc, "prediction failed"))

    def _on_finished(self) -> None:
        self._refresh.flush()
        self._refresh_layers()
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self.predict_btn.setEnabled(True)
        self.cancel_btn.setEnabled(False)
        dt = time.perf_counter() - self._t0
        if self._outcome == "completed":
            where = " (streamed to a temporary zarr array)" if self.on_disk else ""
            self.info(f"predicted {self._done} slice(s) in {dt:.1f} s{where}", notify=True)
        elif self._outcome == "cancelled":
            self.info(
                f"prediction cancelled after {self._done} of {self._total} slice(s)", notify=True
            )
        self.prediction_finished.emit(self._outcome)

    def before_shutdown(self) -> None:
        if self._pbar is not None:
            try:
                self._pbar.close()
            except Exception:  # pragma: no cover
                pass
            self._pbar = None
        job = self.job("main")
        if job is not None:
            job.shutdown()
        for folder in self._tempdirs:
            shutil.rmtree(folder, ignore_errors=True)
        self._tempdirs.clear()
