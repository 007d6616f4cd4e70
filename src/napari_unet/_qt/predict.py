"""5 Predict: tiled prediction of a slice, the visible slices, a range or the whole stack.

A worker (:mod:`._predict_job`) normalises the stack as the training stack was and predicts slice
by slice; results go into the "<image> prediction" layer, in memory or streamed to a temporary zarr.

The GUI thread's share of a run is bounded: the layers are made when Predict is pressed, a finished
slice is a copy into the layer's array (or nothing: the worker wrote the zarr), and the display (the
dock's progress bar; a layer only when the slice it shows was predicted) is updated in one pass at most
every :data:`DISPLAY_MS`: each redraw of a window holding napari's OpenGL canvas composites the whole
window, tens of ms with software OpenGL.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QWidget

from ..classes import reconcile_classes
from ..labels import label_dtype
from ..slices import format_slices
from ._common import (
    Throttle,
    current_z,
    friendly_error,
    label_colormap,
    n_slices,
    parse_slice_ranges,
    put_layer,
    spatial_kwargs,
    visible_z_range,
)
from ._compute import warm_torch
from ._predict_job import (
    CANCELLED,
    DISK_THRESHOLD,  # noqa: F401 - re-exported: the storage rule's threshold
    Normalised,
    Outputs,
    PredictRequest,
    SliceDone,
    in_memory,
    predict_job,
)
from ._widgets import UNetWidget
from ._workers import Job
from .panels.predict_settings import PredictSettings
from .panels.run_row import set_value_later

if TYPE_CHECKING:
    import napari
    from napari.layers import Image, Labels

PRED_SUFFIX = " prediction"
#: while predicting, the progress bar and the layers showing new slices are redrawn at most this
#: often (milliseconds); a window redraw cost 40-80 ms on 2 shared cores with software OpenGL
DISPLAY_MS = 2000


class PredictWidget(UNetWidget):
    """Predict with the model in memory or a checkpoint; overlay the result."""

    #: emitted when a prediction run ends: "completed", "cancelled" or "error"
    prediction_finished = Signal(str)

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(napari_viewer, parent)
        self.layer: Labels | None = None
        self.prob_layer: Image | None = None
        self._cancel: threading.Event | None = None
        self._stale: set[Any] = set()  # layers whose shown slice was written since their redraw
        self._prepared: int | None = None  # classes of the in-memory layers made at the click
        self._new_layers: list[Any] = []  # layers the click added (removed if nothing came)
        self._t0 = 0.0
        self._done = 0
        self._total = 0
        self._tempdir: str | None = None
        self._meta: dict[str, Any] = {}
        self._normalised: Normalised | None = None  # the last stack's statistics (reused)
        self._outputs: Outputs | None = None
        self._wants_probs = False
        self._outcome = "completed"
        self.on_disk = False
        self.slices_written = 0
        self.settings = PredictSettings()
        self.layout().addWidget(self.settings)
        st = self.settings
        self.source, self.ckpt_edit, self.range, self.range_edit = (
            st.source, st.ckpt_edit, st.range, st.range_edit,
        )  # fmt: skip
        self.device, self.tta, self.probs, self.storage = st.device, st.tta, st.probs, st.storage
        self.predict_btn, self.cancel_btn, self.progress = self.add_run_row("Predict", "Cancel")
        self.finish_layout()
        self._display = Throttle(self._update_display, DISPLAY_MS, self)
        self.predict_btn.clicked.connect(lambda: self.predict())
        self.cancel_btn.clicked.connect(self.cancel)
        st.source_changed.connect(self._update_model_label)
        self.state.model_changed.connect(self._update_model_label)
        self.state.classes_changed.connect(self._fill_prob_classes)
        self._fill_prob_classes()
        self._update_model_label()
        self.start_job("warmup", Job(warm_torch))

    # -- settings ------------------------------------------------------------------------------
    def _class_names(self) -> list[str]:
        return list(self._meta.get("class_names") or self.state.class_names)

    def _fill_prob_classes(self) -> None:
        self.settings.fill_classes(self._class_names())

    def _update_model_label(self, *_: Any) -> None:
        self.settings.show_model(self.state.model, self.state.metadata)

    def slices_to_predict(self) -> list[int]:
        """The slices of the chosen range (raises ValueError for a bad range text)."""
        image = self.state.image_layer
        if image is None:
            return []
        mode = self.range.currentText()
        if mode == "current slice":
            return [current_z(self.viewer, image)]
        if mode == "visible slices":
            return visible_z_range(self.viewer, image)
        if mode == "all slices":
            return list(range(n_slices(image)))
        zs = parse_slice_ranges(self.range_edit.text(), n_slices(image))
        if not zs:
            raise ValueError("type the slices to predict, e.g. 0-9,15")
        return zs

    # -- run -----------------------------------------------------------------------------------
    def _request(self, image: Image) -> PredictRequest | None:
        """The run the settings describe, or None after telling the user what is missing."""
        req = PredictRequest(image=image.data, slices=[], **self.settings.options())
        if not self.settings.uses_checkpoint():
            if self.state.model is None:
                self.error("no model in memory: train one in '4 Train' or choose a checkpoint file")
                return None
            req.model, req.metadata = self.state.model, self.state.metadata
            self._meta = dict(req.metadata)
        else:
            req.checkpoint = self.settings.checkpoint()
            if req.checkpoint is None:
                self.error("choose the checkpoint file to predict with (the '…' button)")
                return None
        try:
            req.slices = self.slices_to_predict()
        except ValueError as exc:
            self.error(f"slices to predict: {exc}")
            return None
        req.lazy = type(image.data) is not np.ndarray  # dask, zarr, memmap...
        if req.storage != "memory":
            if self._tempdir is None:
                self._tempdir = tempfile.mkdtemp(prefix="napari-unet-")
            req.folder = self._tempdir
        req.reuse = (getattr(self.state.prediction_layer, "data", None), self.state.probabilities)
        req.normalised = self._normalised
        return req

    def predict(self) -> Job | None:
        if self.busy():
            self.warning("a prediction is already running: Cancel it first")
            return None
        image = self.grayscale_image("no image layer: open a stack and pick it in '1 Annotate'")
        if image is None:
            return None
        req = self._request(image)
        if req is None:
            return None
        self._done, self._total, self._outcome = 0, len(req.slices), "completed"
        self.slices_written = 0
        self._outputs = None
        self._wants_probs = req.probabilities
        self._cancel = threading.Event()
        self.progress.setRange(0, self._total)
        self.progress.setValue(0)
        self._stale.clear()
        self.layer = None  # checked again against this run's model
        self._prepared = None
        self._new_layers = []
        if req.model is not None and in_memory(req, int(req.model.n_classes)):
            # napari's cost of making (or re-filling) the layers lands on the click, not mid-run
            before = list(self.viewer.layers)
            self._prepared = int(req.model.n_classes)
            self._ensure_layers(Outputs(self._prepared, None, None))
            self._new_layers = [lay for lay in self.viewer.layers if lay not in before]
        job = Job(
            predict_job,
            req,
            self._cancel,
            on_yield=self._on_item,
            on_error=self._on_error,
            on_finished=self._on_finished,
            cancel=self._cancel.set,
        )
        self._t0 = time.perf_counter()
        self.predict_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        self.info(f"predicting {self._total} slice(s)…", notify=False)
        return self.start_job("main", job)

    def cancel(self) -> None:
        job = self.job("main")
        if job is not None and job.running:
            job.cancel()
            self.cancel_btn.setEnabled(False)

    # -- results (GUI thread) ------------------------------------------------------------------
    def _on_item(self, item: Any) -> None:
        if isinstance(item, Outputs):
            if item.metadata is not None:  # loaded from the checkpoint
                self._meta = dict(item.metadata)
                self._fill_prob_classes()
            self.state.set_prediction_metadata(item.metadata)  # None: the model in memory
            self._outputs = item
            same = (item.n_classes, item.labels, item.probabilities) == (self._prepared, None, None)
            if not same:  # else the layers made at the click are the ones written
                self._ensure_layers(item)
        elif isinstance(item, Normalised):
            self._normalised = item
            if item.note:
                self.warning(f"{self._image_name()}: {item.note}")
        elif isinstance(item, Warning):  # the run's NaN/inf pixels (a NonFiniteWarning)
            self.warning(self._nonfinite_message(item))
        elif item == CANCELLED:
            self._outcome = "cancelled"
        elif isinstance(item, SliceDone):
            self._write_slice(item)

    def _image_name(self) -> str:
        image = self.state.image_layer
        return repr(image.name) if image is not None else "the image"

    def _nonfinite_message(self, report: Any) -> str:
        image = self.state.image_layer
        where = ""
        if image is not None and image.data.ndim >= 3:
            where = f" (slice(s) {format_slices(report.slices)})"
        return f"{self._image_name()}: {report}{where}"

    def _labels_data(self, out: Outputs, layer: Labels | None, shape: tuple[int, ...]) -> Any:
        """The worker's zarr array, else the layer's numpy data if it fits, else new zeros."""
        if out.labels is not None:
            return out.labels
        dtype = label_dtype(out.n_classes)
        data = getattr(layer, "data", None)
        if type(data) is np.ndarray and data.shape == shape and np.can_cast(dtype, data.dtype):
            return data
        return np.zeros(shape, dtype=dtype)

    def _ensure_layers(self, out: Outputs) -> None:
        """Create (or reuse) the prediction layer, and the probabilities when asked for."""
        image = self.state.image_layer
        if image is None:
            return
        shape = tuple(image.data.shape)
        colors = self._meta.get("class_colors") or self.state.class_colors
        names, colors = reconcile_classes(out.n_classes, self._class_names(), colors)
        layer = self.layer or self.state.prediction_layer
        layer = layer if layer is not None and layer in self.viewer.layers else None
        data = self._labels_data(out, layer, shape)
        self.on_disk = out.labels is not None
        md = {"generated": True, "prediction": True, "image": image.name, "class_names": names}
        md["class_colors"] = colors
        self.layer = put_layer(
            self.viewer, layer, f"{image.name}{PRED_SUFFIX}", "labels", data,
            opacity=0.5, colormap=label_colormap(colors), metadata={"napari_unet": md},
            **spatial_kwargs(image),
        )  # fmt: skip
        if self.state.prediction_layer is not self.layer:
            self.state.set_prediction_layer(self.layer)
        if self._wants_probs:
            probs, pshape = out.probabilities, (out.n_classes, *shape)
            if probs is None:  # in memory: the GUI thread writes each slice
                probs = self.state.probabilities
                if not (type(probs) is np.ndarray and probs.shape == pshape):
                    probs = np.zeros(pshape, dtype=np.float32)
            self.state.set_probabilities(probs)
            self._show_prob_layer(image)

    def _show_prob_layer(self, image: Image) -> None:
        probs = self.state.probabilities
        k = min(max(self.settings.prob_class_value(), 1), probs.shape[0])
        if isinstance(probs, np.ndarray):
            view = probs[k - 1]
        else:
            import dask.array as da

            view = da.from_zarr(probs)[k - 1]
        names = self._class_names()
        name = f"{image.name} probability ({names[k - 1] if k - 1 < len(names) else k})"
        layer = self.prob_layer if self.prob_layer in self.viewer.layers else None
        look: dict[str, Any] = {"colormap": "viridis", "contrast_limits": (0.0, 1.0)}
        if layer is None:  # a new layer starts hidden; an existing one keeps what the user set
            md = {"napari_unet": {"generated": True, "probabilities": True}}
            look.update(opacity=0.6, blending="additive", visible=False, metadata=md)
        self.prob_layer = put_layer(
            self.viewer, layer, name, "image", view, **look, **spatial_kwargs(image)
        )
        if self.prob_layer.name != name:
            self.prob_layer.name = name
        self.state.probability_layer = self.prob_layer

    def _write_slice(self, item: SliceDone) -> None:
        """A finished slice: a copy into the layer's array at most (zarr: the worker wrote it)."""
        if self._outputs is not None and (
            self.layer is None or self.layer not in self.viewer.layers
        ):
            self._ensure_layers(self._outputs)  # the layer was deleted while predicting
        is_3d = self.layer is not None and self.layer.data.ndim >= 3
        index = item.z if is_3d else ...
        if item.labels is not None and self.layer is not None:
            self.layer.data[index] = item.labels
        probs = self.state.probabilities
        if item.probabilities is not None and probs is not None:
            probs[(slice(None), index)] = item.probabilities
        self.slices_written += 1
        self._done = item.done
        for lay in (self.layer, self.prob_layer):
            if lay is not None and self._shows(lay, item.z):
                self._stale.add(lay)
        self._display.trigger()

    def _shows(self, layer: Any, z: int) -> bool:
        """Whether ``layer`` now shows slice ``z`` (a redraw would change what is seen)."""
        if not layer.visible or layer not in self.viewer.layers:
            return False
        if layer.ndim < 3 or self.viewer.dims.ndisplay == 3:
            return True
        return current_z(self.viewer, layer) == int(z)

    def _update_display(self, final: bool = False) -> None:
        """The bar and the layers whose shown slice changed, redrawn together (``final``: every
        layer, with its thumbnail)."""
        set_value_later(self.progress, self._done)
        todo = {self.layer, self.prob_layer} if final else set(self._stale)
        self._stale.clear()
        for lay in todo:
            if lay is not None and lay in self.viewer.layers:
                lay.refresh(thumbnail=final, highlight=final, extent=final)

    def _drop_new_layers(self) -> None:
        """A run that failed before its first slice leaves no empty layer it made."""
        new, self._new_layers = self._new_layers, []
        if self.slices_written:
            return
        for lay in new:
            if lay in self.viewer.layers:
                self.viewer.layers.remove(lay)
        if self.layer in new:
            self.layer = None
            self.state.set_prediction_layer(None)
        if self.prob_layer in new:
            self.prob_layer = self.state.probability_layer = None

    def _on_error(self, exc: BaseException) -> None:
        self._outcome = "error"
        self._drop_new_layers()
        from ..checkpoint import CheckpointError

        if isinstance(exc, CheckpointError):
            self.error(f"cannot use the checkpoint: {exc}")
        else:
            self.error(friendly_error(exc, "prediction failed"))

    def _on_finished(self) -> None:
        self._update_display(final=True)  # a pending throttled call then finds nothing to do
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
        job = self.job("main")
        if job is not None:
            job.shutdown()
        if self._tempdir is not None:
            shutil.rmtree(self._tempdir, ignore_errors=True)
            self._tempdir = None
