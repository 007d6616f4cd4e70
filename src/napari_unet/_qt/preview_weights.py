"""3 Preview weight map: the per-pixel loss weights Train will use, from the viewer's ``state.config``.

It computes :func:`napari_unet.weightmap.loss_weight_map`, the trainer's formula, in a worker.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import QComboBox, QPushButton, QWidget

from ..slices import read_slice
from ..training import TrainConfig
from ..weightmap import loss_weight_map
from ._common import Debounce, current_z, friendly_error, put_layer, slice_placement
from ._compute import class_lut, slice_counts, weight_inputs
from ._widgets import Guard, UNetWidget, check_box, field_spin
from ._workers import Job

if TYPE_CHECKING:
    import napari
    from napari.layers import Image

WEIGHT_LAYER = "weight map"
BALANCE = {"balanced": "balanced", "none": None}


def weight_map_job(
    labels: Any,
    zs: list[int] | None,
    counts: Mapping[int, np.ndarray] | None,
    class_weights: Any,
    inputs: dict[str, Any],
    request: int,
) -> Iterator[tuple[int, int | None, np.ndarray, list[int]]]:
    """Worker: the weights of slices ``zs`` (None: every labelled slice, in the labels' shape).

    ``counts`` are the class counts of the labelled slices (scanned here when not given);
    their sum balances the classes as the trainer does, over all training slices.
    """
    counts = dict(counts) if counts else slice_counts(labels, inputs["n_classes"])
    lut = class_lut(counts.values(), class_weights, inputs)
    args = {key: inputs[key] for key in ("w0", "sigma", "object_class")}
    if zs is None:
        out = np.zeros(tuple(labels.shape), dtype=np.float32)
        view = out if out.ndim >= 3 else out[None]
        for z in sorted(counts):
            view[z] = loss_weight_map(read_slice(labels, z), lut, **args)
        yield (request, None, out, sorted(counts))
        return
    z = zs[0]
    w = loss_weight_map(read_slice(labels, z), lut, **args)
    yield (request, z, w[None], [z] if z in counts else [])


class WeightMapPreviewWidget(UNetWidget):
    """The U-Net border weight map of the labelled slices, as Train will use it."""

    SCOPES = ("current slice", "all labelled slices")

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(napari_viewer, parent)
        self._request = 0
        self._updating = Guard()
        self.layer: Image | None = None
        self.compute_count = 0
        form = self.add_form()
        self.w0 = field_spin(TrainConfig, "w0", step=1.0, decimals=1)
        self.w0.setToolTip("amplitude of the border term (paper: 10); 0 = class weights only")
        form.addRow("w0", self.w0)
        self.sigma = field_spin(TrainConfig, "sigma", step=0.5, decimals=1)
        self.sigma.setToolTip("width of the border term in pixels (paper: about 5)")
        form.addRow("sigma (px)", self.sigma)
        self.balance = QComboBox()
        self.balance.addItems(list(BALANCE))
        self.balance.setToolTip("class balancing over the labelled pixels of all training slices")
        form.addRow("Class balancing", self.balance)
        self.object_class = QComboBox()
        self.object_class.setToolTip("the class whose separate objects get the border weight")
        form.addRow("Object class", self.object_class)
        self.scope = QComboBox()
        self.scope.addItems(list(self.SCOPES))
        form.addRow("Show", self.scope)
        self.auto = check_box("update when a setting or the slice changes")
        form.addRow(self.auto)
        self.compute_btn = QPushButton("Compute weight map")
        self.layout().addWidget(self.compute_btn)
        self.finish_layout()

        self._show_config()
        self._debounce = Debounce(self.compute, 300, self)
        self.w0.valueChanged.connect(lambda v: self._write(w0=float(v)))
        self.sigma.valueChanged.connect(lambda v: self._write(sigma=float(v)))
        self.balance.currentTextChanged.connect(lambda t: self._write(class_weights=BALANCE[t]))
        self.object_class.currentIndexChanged.connect(lambda *_: self._write_object_class())
        self.scope.currentIndexChanged.connect(self._on_view_setting)
        self.compute_btn.clicked.connect(lambda: self.compute())
        self.state.classes_changed.connect(self._show_config)
        self.state.config_changed.connect(self._show_config)
        self.viewer.dims.events.current_step.connect(self._on_dims)

    # -- settings <-> state.config --------------------------------------------------------------
    def _show_config(self) -> None:
        if self._updating.active:
            return
        cfg = self.state.config
        with self._updating:
            self.w0.set_field(cfg.w0)
            self.sigma.set_field(cfg.sigma)
            if isinstance(cfg.class_weights, str | type(None)):
                self.balance.setCurrentText("none" if cfg.class_weights is None else "balanced")
            names = self.state.class_names
            self.object_class.clear()
            for k, name in enumerate(names, start=1):
                self.object_class.addItem(f"{k}: {name}", k)
            obj = cfg.object_class or len(names)
            self.object_class.setCurrentIndex(max(0, min(obj, len(names)) - 1))

    def _write_object_class(self) -> None:
        k = self.object_class.currentData()
        last = k is None or int(k) == len(self.state.class_names)
        self._write(object_class=None if last else int(k))

    def _write(self, **fields: Any) -> None:
        if self._updating.active:
            return
        try:
            with self._updating:
                self.state.update_config(**fields)
        except ValueError as exc:
            self.error(f"weight map setting: {exc}")
            return
        self._on_view_setting()

    def _on_view_setting(self, *_: Any) -> None:
        if self.auto.isChecked() and not self._updating.active:
            self._debounce.trigger()

    def _on_dims(self, event: Any = None) -> None:
        if self.scope.currentText() == self.SCOPES[0] and self.auto.isChecked() and self.layer:
            self._debounce.trigger()

    # -- compute ----------------------------------------------------------------------------------
    def compute(self, scope: str | None = None) -> Job | None:
        """Start computing the weight map (``scope``: "current slice" or "all labelled slices")."""
        if scope is not None:
            self.scope.setCurrentText(scope)
        problem = self.layers_problem()
        if problem is not None:
            self.error(problem)
            return None
        labels = self.state.labels_layer
        every = self.scope.currentText() == self.SCOPES[1]
        self._request += 1
        job = Job(
            weight_map_job,
            labels.data,
            None if every else [current_z(self.viewer, labels)],
            self.state.labelled_slices,
            self.state.config.class_weights,
            weight_inputs(self.state.config, len(self.state.class_names)),
            self._request,
            on_yield=self._show,
            on_error=lambda e: self.error(friendly_error(e, "weight map")),
        )
        return self.start_job("main", job)

    def _show(self, item: tuple[int, int | None, np.ndarray, list[int]]) -> None:
        request, z, weights, labelled = item
        image = self.state.image_layer
        if request != self._request or image is None:
            return  # a newer map is on its way
        self.compute_count += 1
        place = slice_placement(image, z)
        data = weights[0] if z is not None and image.ndim < 3 else weights
        hi = float(data.max()) if data.size else 1.0
        self.layer = put_layer(
            self.viewer, self.layer, WEIGHT_LAYER, "image", data,
            colormap="magma", opacity=0.7, contrast_limits=(0.0, max(hi, 1e-6)), **place,
        )  # fmt: skip
        if not labelled:
            where = f"slice {z}" if z is not None else "any slice"
            self.info(f"no labelled pixels on {where}: the weight map is zero there", notify=False)
        else:
            what = f"slice {z}" if z is not None else f"{len(labelled)} labelled slice(s)"
            self.info(f"weight map of {what}: max {hi:.2f}", notify=False)
        lab = self.state.labels_layer
        if lab is not None and lab in self.viewer.layers:
            self.viewer.layers.selection.active = lab
