"""2 Preview augmentation and 3 Preview weight map.

Both widgets edit settings that Train uses (the shared
:class:`~napari_unet.augment.Augmentation` and the weight-map settings in
the viewer's :class:`~napari_unet._qt._state.UNetState`) and show their effect
on the labelled data, computed in a worker thread and debounced (~300 ms)
while a setting changes.

The augmentation preview is a stack of N samples (image, labels and
optionally the weight map), placed to the right of the image, sample ``i``
at slice ``z + i`` (``z`` the previewed slice).  The weight-map preview is
aligned with the image: one slice (the current one) or the whole stack (zero
on unlabelled slices).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QPushButton,
    QSpinBox,
    QWidget,
)

from ..augment import Augmentation
from ..weightmap import class_weight_lut, loss_weight_map
from ._common import (
    Debounce,
    current_z,
    friendly_error,
    label_colormap,
)
from ._compute import slice_counts, warm_torch
from ._widgets import UNetWidget
from ._workers import Job

if TYPE_CHECKING:
    import napari
    from napari.layers import Image, Labels

AUG_IMAGE = "augmentation preview"
AUG_LABELS = "augmentation preview labels"
AUG_WEIGHTS = "augmentation preview weights"
WEIGHT_LAYER = "weight map"


def _dspin(lo: float, hi: float, value: float, step: float, decimals: int = 2) -> QDoubleSpinBox:
    w = QDoubleSpinBox()
    w.setRange(lo, hi)
    w.setDecimals(decimals)
    w.setSingleStep(step)
    w.setValue(value)
    return w


def _spin(lo: int, hi: int, value: int) -> QSpinBox:
    w = QSpinBox()
    w.setRange(lo, hi)
    w.setValue(value)
    return w


def _read_slice(data: Any, z: int) -> np.ndarray:
    block = data[z] if data.ndim >= 3 else data
    if hasattr(block, "compute") and not isinstance(block, np.ndarray):
        block = block.compute()
    return np.asarray(block)


def _weight_inputs(state: Any) -> tuple[float, float, Any, int, int]:
    ws = state.weight_settings
    k = max(len(state.class_names), 2)
    obj = ws.get("object_class") or k
    return float(ws["w0"]), float(ws["sigma"]), ws.get("class_weights"), int(min(obj, k)), k


def _put_layer(
    viewer: napari.Viewer,
    existing: Any,
    name: str,
    kind: str,
    data: np.ndarray,
    **kwargs: Any,
) -> Any:
    """Update ``existing`` (if still in the viewer and of the same ndim) or add a new layer."""
    if existing is not None and existing in viewer.layers and existing.ndim == data.ndim:
        spatial = {k: kwargs.pop(k) for k in ("scale", "translate") if k in kwargs}
        kwargs.pop("units", None)
        existing.data = data
        for key, value in {**spatial, **kwargs}.items():
            try:
                setattr(existing, key, value)
            except (AttributeError, ValueError, TypeError):
                pass
        return existing
    if existing is not None and existing in viewer.layers:
        viewer.layers.remove(existing)
    kwargs.setdefault("metadata", {"napari_unet": {"generated": True}})
    return getattr(viewer, f"add_{kind}")(data, name=name, **kwargs)


# =============================================================================== augmentation


def _augmentation_job(
    image2d: np.ndarray,
    labels2d: np.ndarray | None,
    aug: Augmentation,
    n: int,
    seed: int,
    weight_args: tuple[float, float, Any, int, int] | None,
    counts: dict[int, np.ndarray] | None,
    request: int,
) -> Any:
    weight = None
    if weight_args is not None and labels2d is not None and labels2d.any():
        w0, sigma, cw, obj, k = weight_args
        total = sum(counts.values()) if counts else np.bincount(labels2d.ravel(), minlength=k + 1)
        lut = class_weight_lut(np.asarray(total), k, cw)
        weight = loss_weight_map(labels2d, w0=w0, sigma=sigma, lut=lut, object_class=obj)
    lab = None
    if labels2d is not None:
        lab = labels2d if labels2d.dtype.kind in "iu" else labels2d.astype(np.int32)
    images, labels, weights = aug.preview(image2d, lab, n=n, seed=seed, weight=weight)
    yield (request, images, labels, weights)


class AugmentationPreviewWidget(UNetWidget):
    """Edit the shared augmentation and see N augmented samples of a slice."""

    key = "augmentation"

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(napari_viewer, parent)
        self._request = 0
        self._anchor: int | None = None
        self._updating = False
        self.image_layer: Image | None = None
        self.labels_layer: Labels | None = None
        self.weights_layer: Image | None = None
        self.compute_count = 0

        box = QGroupBox("Augmentation (used by Train)")
        form = QFormLayout(box)
        self.layout().addWidget(box)
        aug = self.state.augmentation
        self.elastic = QCheckBox("elastic deformation")
        self.elastic.setChecked(aug.elastic)
        form.addRow(self.elastic)
        self.grid = _spin(2, 16, aug.elastic_grid)
        self.grid.setToolTip("control points per side of the coarse displacement grid (paper: 3)")
        form.addRow("  grid", self.grid)
        self.sigma = _dspin(0.0, 100.0, aug.elastic_sigma, 1.0, 1)
        self.sigma.setToolTip("std of the control-point displacements in pixels (paper: 10)")
        form.addRow("  sigma (px)", self.sigma)
        self.elastic_p = _dspin(0.0, 1.0, aug.elastic_p, 0.1)
        form.addRow("  probability", self.elastic_p)
        self.flip = QCheckBox("random flips")
        self.flip.setChecked(aug.flip)
        form.addRow(self.flip)
        self.rot90 = QCheckBox("random 90° rotations")
        self.rot90.setChecked(aug.rot90)
        form.addRow(self.rot90)
        self.rotate = _dspin(0.0, 180.0, aug.rotate_degrees, 5.0, 1)
        form.addRow("rotation ± (deg)", self.rotate)
        self.noise = _dspin(0.0, 5.0, aug.gaussian_noise, 0.05)
        self.noise.setToolTip("std of Gaussian noise in units of the image's std")
        form.addRow("Gaussian noise", self.noise)
        self.brightness = _dspin(0.0, 5.0, aug.brightness, 0.05)
        form.addRow("brightness ±", self.brightness)
        self.contrast = _dspin(0.0, 0.95, aug.contrast, 0.05)
        form.addRow("contrast ±", self.contrast)
        self.gamma = _dspin(0.0, 2.0, aug.gamma, 0.05)
        form.addRow("gamma ±", self.gamma)

        form2 = self.add_form()
        self.n_samples = _spin(1, 32, 4)
        form2.addRow("Samples", self.n_samples)
        self.seed = _spin(0, 2**31 - 1, 0)
        form2.addRow("Seed", self.seed)
        self.with_weights = QCheckBox("also the weight map (3 Preview weight map settings)")
        self.with_weights.setChecked(True)
        form2.addRow(self.with_weights)
        self.auto = QCheckBox("update when a setting changes")
        self.auto.setChecked(True)
        form2.addRow(self.auto)
        row = QHBoxLayout()
        self.preview_btn = QPushButton("Preview current slice")
        self.new_seed_btn = QPushButton("New samples")
        row.addWidget(self.preview_btn)
        row.addWidget(self.new_seed_btn)
        self.layout().addLayout(row)
        self.finish_layout()

        self._debounce = Debounce(self._compute_anchor, 300, self)
        for w in (self.elastic, self.flip, self.rot90):
            w.toggled.connect(self._on_setting)
        for w in (
            self.grid,
            self.sigma,
            self.elastic_p,
            self.rotate,
            self.noise,
            self.brightness,
            self.contrast,
            self.gamma,
        ):
            w.valueChanged.connect(self._on_setting)
        self.n_samples.valueChanged.connect(self._on_view_setting)
        self.seed.valueChanged.connect(self._on_view_setting)
        self.with_weights.toggled.connect(self._on_view_setting)
        self.preview_btn.clicked.connect(self.preview_current_slice)
        self.new_seed_btn.clicked.connect(lambda: self.seed.setValue(self.seed.value() + 1))
        self.state.augmentation_changed.connect(self._on_state_augmentation)
        self.start_job("warmup", Job(warm_torch))

    # -- settings <-> state ------------------------------------------------------------------
    def augmentation(self) -> Augmentation:
        """The settings of the form as an :class:`Augmentation` (raises ValueError if invalid)."""
        base = self.state.augmentation
        return dataclasses.replace(
            base,
            elastic=self.elastic.isChecked(),
            elastic_grid=int(self.grid.value()),
            elastic_sigma=float(self.sigma.value()),
            elastic_p=float(self.elastic_p.value()),
            flip=self.flip.isChecked(),
            rot90=self.rot90.isChecked(),
            rotate_degrees=float(self.rotate.value()),
            gaussian_noise=float(self.noise.value()),
            brightness=float(self.brightness.value()),
            contrast=float(self.contrast.value()),
            gamma=float(self.gamma.value()),
        )

    def _on_setting(self, *_: Any) -> None:
        if self._updating:
            return
        try:
            aug = self.augmentation()
        except ValueError as exc:
            self.error(f"augmentation setting: {exc}")
            return
        self._updating = True
        try:
            self.state.set_augmentation(aug)
        finally:
            self._updating = False
        if self.auto.isChecked():
            self._debounce.trigger()

    def _on_view_setting(self, *_: Any) -> None:
        if self.auto.isChecked():
            self._debounce.trigger()

    def _on_state_augmentation(self) -> None:
        if self._updating:
            return
        aug = self.state.augmentation
        self._updating = True
        try:
            self.elastic.setChecked(aug.elastic)
            self.grid.setValue(aug.elastic_grid)
            self.sigma.setValue(aug.elastic_sigma)
            self.elastic_p.setValue(aug.elastic_p)
            self.flip.setChecked(aug.flip)
            self.rot90.setChecked(aug.rot90)
            self.rotate.setValue(aug.rotate_degrees)
            self.noise.setValue(aug.gaussian_noise)
            self.brightness.setValue(aug.brightness)
            self.contrast.setValue(aug.contrast)
            self.gamma.setValue(aug.gamma)
        finally:
            self._updating = False

    # -- compute -------------------------------------------------------------------------------
    def preview_current_slice(self) -> None:
        image = self.state.image_layer
        if image is None:
            self.error("no image layer: open a stack and pick it in '1 Annotate'")
            return
        self._anchor = current_z(self.viewer, image)
        self._debounce.cancel()
        self.compute(self._anchor)

    def _compute_anchor(self) -> None:
        image = self.state.image_layer
        if image is None:
            return
        z = self._anchor if self._anchor is not None else current_z(self.viewer, image)
        self.compute(z)

    def compute(self, z: int | None = None) -> Job | None:
        """Start computing the preview of slice ``z`` (default: the current one)."""
        image = self.grayscale_image("no image layer: open a stack and pick it in '1 Annotate'")
        if image is None:
            return None
        z = current_z(self.viewer, image) if z is None else int(z)
        self._anchor = z
        try:
            aug = self.augmentation()
        except ValueError as exc:
            self.error(f"augmentation setting: {exc}")
            return None
        img2d = _read_slice(image.data, z)
        labels = self.state.labels_layer
        lab2d = None
        counts = None
        if labels is not None and tuple(labels.data.shape) == tuple(image.data.shape):
            lab2d = np.array(_read_slice(labels.data, z), copy=True)
        weight_args = None
        if self.with_weights.isChecked() and lab2d is not None:
            weight_args = _weight_inputs(self.state)
            ann = self.state.widgets.get("annotate")
            if ann is not None:
                counts = ann.labelled_slices() or None
        self._request += 1
        job = Job(
            _augmentation_job,
            img2d,
            lab2d,
            aug,
            int(self.n_samples.value()),
            int(self.seed.value()),
            weight_args,
            counts,
            self._request,
            on_yield=self._show,
            on_error=lambda e: self.error(friendly_error(e, "augmentation preview")),
        )
        return self.start_job("main", job)

    def _placement(self, image: Image, h: int, w: int) -> dict[str, Any]:
        nd = image.ndim
        scale = np.asarray(image.scale, dtype=float)
        trans = np.asarray(image.translate, dtype=float)
        sy, sx = scale[-2], scale[-1]
        width = image.data.shape[-1]
        gap = max(8, int(0.04 * width))
        ty = trans[-2]
        tx = trans[-1] + (width + gap) * sx
        if nd >= 3:
            sz, tz = scale[-3], trans[-3] + (self._anchor or 0) * scale[-3]
        else:
            sz, tz = 1.0, 0.0
        return {"scale": (sz, sy, sx), "translate": (tz, ty, tx)}

    def _show(self, item: tuple[int, np.ndarray, np.ndarray | None, np.ndarray | None]) -> None:
        request, images, labels, weights = item
        if request != self._request:
            return  # a newer preview is on its way
        image = self.state.image_layer
        if image is None:
            return
        self.compute_count += 1
        n, h, w = images.shape
        place = self._placement(image, h, w)
        self.image_layer = _put_layer(
            self.viewer,
            self.image_layer,
            AUG_IMAGE,
            "image",
            images,
            colormap="gray",
            contrast_limits=tuple(image.contrast_limits),
            **place,
        )
        if labels is not None:
            self.labels_layer = _put_layer(
                self.viewer,
                self.labels_layer,
                AUG_LABELS,
                "labels",
                labels,
                opacity=0.5,
                colormap=label_colormap(self.state.class_colors),
                **place,
            )
        elif self.labels_layer is not None and self.labels_layer in self.viewer.layers:
            self.viewer.layers.remove(self.labels_layer)
            self.labels_layer = None
        if weights is not None:
            hi = float(weights.max()) if weights.size else 1.0
            self.weights_layer = _put_layer(
                self.viewer,
                self.weights_layer,
                AUG_WEIGHTS,
                "image",
                weights,
                colormap="magma",
                opacity=0.6,
                blending="additive",
                contrast_limits=(0.0, max(hi, 1e-6)),
                visible=False,
                **place,
            )
        elif self.weights_layer is not None and self.weights_layer in self.viewer.layers:
            self.viewer.layers.remove(self.weights_layer)
            self.weights_layer = None
        z = self._anchor or 0
        self.info(
            f"{n} augmented samples of slice {z}, at slices {z}-{z + n - 1} right of the image",
            notify=False,
        )
        self._reselect_labels()

    def _reselect_labels(self) -> None:
        lab = self.state.labels_layer
        if lab is not None and lab in self.viewer.layers:
            self.viewer.layers.selection.active = lab


# =============================================================================== weight map


def _weight_map_job(
    labels: Any,
    zs: list[int] | None,
    shape: tuple[int, ...],
    w0: float,
    sigma: float,
    class_weights: Any,
    object_class: int,
    n_classes: int,
    request: int,
) -> Any:
    counts = slice_counts(labels, n_classes)
    total = sum(counts.values()) if counts else np.zeros(n_classes + 1, np.int64)
    lut = class_weight_lut(np.asarray(total), n_classes, class_weights)
    if zs is None:  # all labelled slices, full shape
        out = np.zeros(shape, dtype=np.float32)
        view = out if out.ndim >= 3 else out[None]
        for z in sorted(counts):
            lab = _read_slice(labels, z)
            view[z] = loss_weight_map(lab, w0=w0, sigma=sigma, lut=lut, object_class=object_class)
        yield (request, None, out, sorted(counts))
        return
    z = zs[0]
    lab = _read_slice(labels, z)
    w = loss_weight_map(lab, w0=w0, sigma=sigma, lut=lut, object_class=object_class)
    yield (request, z, w[None], [z] if z in counts else [])


class WeightMapPreviewWidget(UNetWidget):
    """The U-Net border weight map of the labelled slices, as Train will use it."""

    key = "weightmap"
    SCOPES = ("current slice", "all labelled slices")

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(napari_viewer, parent)
        self._request = 0
        self._updating = False
        self.layer: Image | None = None
        self.compute_count = 0
        ws = self.state.weight_settings
        form = self.add_form()
        self.w0 = _dspin(0.0, 1000.0, float(ws["w0"]), 1.0, 1)
        self.w0.setToolTip("amplitude of the border term (paper: 10); 0 = class weights only")
        form.addRow("w0", self.w0)
        self.sigma = _dspin(0.5, 100.0, float(ws["sigma"]), 0.5, 1)
        self.sigma.setToolTip("width of the border term in pixels (paper: about 5)")
        form.addRow("sigma (px)", self.sigma)
        self.balance = QComboBox()
        self.balance.addItems(["balanced", "none"])
        self.balance.setCurrentText("none" if ws["class_weights"] is None else "balanced")
        self.balance.setToolTip("class balancing over the labelled pixels of all training slices")
        form.addRow("Class balancing", self.balance)
        self.object_class = QComboBox()
        self.object_class.setToolTip("the class whose separate objects get the border weight")
        form.addRow("Object class", self.object_class)
        self.scope = QComboBox()
        self.scope.addItems(list(self.SCOPES))
        form.addRow("Show", self.scope)
        self.auto = QCheckBox("update when a setting or the slice changes")
        self.auto.setChecked(True)
        form.addRow(self.auto)
        self.compute_btn = QPushButton("Compute weight map")
        self.layout().addWidget(self.compute_btn)
        self.finish_layout()

        self._fill_object_classes()
        self._debounce = Debounce(self.compute, 300, self)
        self.w0.valueChanged.connect(self._on_setting)
        self.sigma.valueChanged.connect(self._on_setting)
        self.balance.currentIndexChanged.connect(self._on_setting)
        self.object_class.currentIndexChanged.connect(self._on_setting)
        self.scope.currentIndexChanged.connect(self._on_view_setting)
        self.compute_btn.clicked.connect(lambda: self.compute())
        self.state.classes_changed.connect(self._fill_object_classes)
        self.state.weights_changed.connect(self._on_state_weights)
        self.viewer.dims.events.current_step.connect(self._on_dims)

    def _fill_object_classes(self) -> None:
        self._updating = True
        try:
            names = self.state.class_names
            self.object_class.clear()
            for k, name in enumerate(names, start=1):
                self.object_class.addItem(f"{k}: {name}", k)
            obj = self.state.weight_settings.get("object_class") or len(names)
            self.object_class.setCurrentIndex(max(0, min(obj, len(names)) - 1))
        finally:
            self._updating = False

    def settings(self) -> dict[str, Any]:
        k = self.object_class.currentData()
        n = len(self.state.class_names)
        return {
            "w0": float(self.w0.value()),
            "sigma": float(self.sigma.value()),
            "class_weights": None if self.balance.currentText() == "none" else "balanced",
            "object_class": None if k is None or int(k) == n else int(k),
        }

    def _on_setting(self, *_: Any) -> None:
        if self._updating:
            return
        self._updating = True
        try:
            self.state.set_weight_settings(**self.settings())
        finally:
            self._updating = False
        self._on_view_setting()

    def _on_view_setting(self, *_: Any) -> None:
        if self.auto.isChecked() and not self._updating:
            self._debounce.trigger()

    def _on_state_weights(self) -> None:
        if self._updating:
            return
        ws = self.state.weight_settings
        self._updating = True
        try:
            self.w0.setValue(float(ws["w0"]))
            self.sigma.setValue(float(ws["sigma"]))
            self.balance.setCurrentText("none" if ws["class_weights"] is None else "balanced")
        finally:
            self._updating = False
        self._fill_object_classes()

    def _on_dims(self, event: Any = None) -> None:
        if (
            self.scope.currentText() == "current slice"
            and self.auto.isChecked()
            and self.layer is not None
        ):
            self._debounce.trigger()

    def compute(self, scope: str | None = None) -> Job | None:
        """Start computing the weight map (``scope``: "current slice" or "all labelled slices")."""
        if scope is not None:
            self.scope.setCurrentText(scope)
        image = self.state.image_layer
        labels = self.state.labels_layer
        if image is None:
            self.error("no image layer: open a stack and pick it in '1 Annotate'")
            return None
        if labels is None:
            self.error("no training labels: create them in '1 Annotate' and paint a slice")
            return None
        if tuple(labels.data.shape) != tuple(image.data.shape):
            self.error(
                f"labels layer shape {tuple(labels.data.shape)} does not match image "
                f"{tuple(image.data.shape)}"
            )
            return None
        self.state.set_weight_settings(**self.settings())
        w0, sigma, cw, obj, k = _weight_inputs(self.state)
        zs = (
            None
            if self.scope.currentText() == "all labelled slices"
            else [current_z(self.viewer, labels)]
        )
        self._request += 1
        job = Job(
            _weight_map_job,
            labels.data,
            zs,
            tuple(labels.data.shape),
            w0,
            sigma,
            cw,
            obj,
            k,
            self._request,
            on_yield=self._show,
            on_error=lambda e: self.error(friendly_error(e, "weight map")),
        )
        return self.start_job("main", job)

    def _show(self, item: tuple[int, int | None, np.ndarray, list[int]]) -> None:
        request, z, weights, labelled = item
        if request != self._request:
            return
        image = self.state.image_layer
        if image is None:
            return
        self.compute_count += 1
        nd = image.ndim
        scale = tuple(float(s) for s in image.scale)
        trans = np.asarray(image.translate, dtype=float)
        if z is not None and nd >= 3:
            trans = trans.copy()
            trans[-3] += z * scale[-3]
            data = weights
        elif z is not None:
            data = weights[0]
        else:
            data = weights
        hi = float(data.max()) if data.size else 1.0
        self.layer = _put_layer(
            self.viewer,
            self.layer,
            WEIGHT_LAYER,
            "image",
            data,
            scale=scale,
            translate=tuple(trans),
            colormap="magma",
            opacity=0.7,
            contrast_limits=(0.0, max(hi, 1e-6)),
        )
        if not labelled:
            where = f"slice {z}" if z is not None else "any slice"
            self.info(f"no labelled pixels on {where}: the weight map is zero there", notify=False)
        else:
            what = f"slice {z}" if z is not None else f"{len(labelled)} labelled slice(s)"
            self.info(f"weight map of {what}: max {hi:.2f}", notify=False)
        lab = self.state.labels_layer
        if lab is not None and lab in self.viewer.layers:
            self.viewer.layers.selection.active = lab
