"""2 Preview augmentation: edit the augmentation Train uses and see N augmented samples of a slice.

The settings are ``state.config.augmentation``; samples are computed in a worker, debounced.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QGroupBox,
    QSpinBox,
    QWidget,
)

from ..augment import Augmentation
from ..slices import read_slice
from ..weightmap import loss_weight_map
from ._common import Debounce, current_z, friendly_error, label_colormap, put_layer
from ._compute import class_lut, warm_torch, weight_inputs
from ._widgets import SPIN_MAX, Guard, UNetWidget, check_box, field_spin
from ._workers import Job
from .panels.run_row import button_row

if TYPE_CHECKING:
    import napari
    from napari.layers import Image, Labels

AUG_IMAGE = "augmentation preview"
AUG_LABELS = "augmentation preview labels"
AUG_WEIGHTS = "augmentation preview weights"
#: the Augmentation fields of the form: (field, label, tooltip)
CHECKS = (
    ("elastic", "elastic deformation", ""),
    ("flip", "random flips", ""),
    ("rot90", "random 90° rotations", ""),
)
SPINS = (
    (
        "elastic_grid",
        "  grid",
        "control points per side of the coarse displacement grid (paper: 3)",
    ),
    (
        "elastic_sigma",
        "  sigma (px)",
        "std of the control-point displacements in pixels (paper: 10)",
    ),
    ("elastic_p", "  probability", ""),
    ("rotate_degrees", "rotation ± (deg)", ""),
    ("gaussian_noise", "Gaussian noise", "std of Gaussian noise in units of the image's std"),
    ("brightness", "brightness ±", ""),
    ("contrast", "contrast ±", ""),
    ("gamma", "gamma ±", ""),
)
#: the spin boxes' steps (decimals follow the step)
STEPS = {"elastic_sigma": 1.0, "rotate_degrees": 5.0, "elastic_grid": 1, "elastic_p": 0.1}


def augmentation_job(
    image: Any,
    z: int,
    labels2d: np.ndarray | None,
    aug: Augmentation,
    n_seed: tuple[int, int],
    weights: tuple[Any, dict[str, Any], Mapping[int, np.ndarray] | None] | None,
    request: int,
) -> Iterator[tuple[int, np.ndarray, np.ndarray | None, np.ndarray | None]]:
    """Worker: ``n`` augmented samples of slice ``z`` (and of its loss weights when asked)."""
    image2d = read_slice(image, z)
    weight = None
    if weights is not None and labels2d is not None and labels2d.any():
        class_weights, inputs, counts = weights
        k = inputs["n_classes"]
        lut = class_lut(
            counts.values() if counts else [np.bincount(labels2d.ravel(), minlength=k + 1)],
            class_weights,
            inputs,
        )
        args = {key: inputs[key] for key in ("w0", "sigma", "object_class")}
        weight = loss_weight_map(labels2d, lut, **args)
    lab = None
    if labels2d is not None:
        lab = labels2d if labels2d.dtype.kind in "iu" else labels2d.astype(np.int32)
    n, seed = n_seed
    images, labels, out_weights = aug.preview(image2d, lab, n=n, seed=seed, weight=weight)
    yield (request, images, labels, out_weights)


class AugmentationPreviewWidget(UNetWidget):
    """Edit the shared augmentation and see N augmented samples of a slice."""

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(napari_viewer, parent)
        self._request = 0
        self._anchor: int | None = None
        self._updating = Guard()
        self.image_layer: Image | None = None
        self.labels_layer: Labels | None = None
        self.weights_layer: Image | None = None
        self.compute_count = 0
        self._build_settings()
        form = self.add_form()
        self.n_samples = QSpinBox()
        self.n_samples.setRange(1, 32)
        self.n_samples.setValue(4)
        form.addRow("Samples", self.n_samples)
        self.seed = QSpinBox()
        self.seed.setRange(0, SPIN_MAX)
        form.addRow("Seed", self.seed)
        self.with_weights = check_box("also the weight map (3 Preview weight map settings)")
        form.addRow(self.with_weights)
        self.auto = check_box("update when a setting changes")
        form.addRow(self.auto)
        row, (self.preview_btn, self.new_seed_btn) = button_row(
            "Preview current slice", "New samples"
        )
        self.layout().addLayout(row)
        self.finish_layout()

        self._debounce = Debounce(self._compute_anchor, 300, self)
        for name, _label, _tip in CHECKS:
            getattr(self, _attr(name)).toggled.connect(self._on_setting)
        for name, _label, _tip in SPINS:
            getattr(self, _attr(name)).valueChanged.connect(self._on_setting)
        for w in (self.n_samples, self.seed):
            w.valueChanged.connect(self._on_view_setting)
        self.with_weights.toggled.connect(self._on_view_setting)
        self.preview_btn.clicked.connect(self.preview_current_slice)
        self.new_seed_btn.clicked.connect(lambda: self.seed.setValue(self.seed.value() + 1))
        self.state.augmentation_changed.connect(self._on_state_augmentation)
        self._on_state_augmentation()
        self.start_job("warmup", Job(warm_torch))

    def _build_settings(self) -> None:
        box = QGroupBox("Augmentation (used by Train)")
        form = QFormLayout(box)
        self.layout().addWidget(box)
        rows: list[tuple[str, str, str]] = [CHECKS[0], *SPINS[:3], *CHECKS[1:], *SPINS[3:]]
        for name, label, tip in rows:
            if any(name == c[0] for c in CHECKS):
                widget: Any = QCheckBox(label)
                form.addRow(widget)
            else:
                step = STEPS.get(name, 0.05)
                decimals = 1 if step >= 1 else 2
                widget = field_spin(Augmentation, name, step=step, decimals=decimals)
                form.addRow(label, widget)
            widget.setToolTip(tip)
            setattr(self, _attr(name), widget)

    # -- settings <-> state ------------------------------------------------------------------
    def augmentation(self) -> Augmentation:
        """The settings of the form as an :class:`Augmentation` (raises ValueError if invalid)."""
        fields: dict[str, Any] = {n: getattr(self, _attr(n)).isChecked() for n, _, _ in CHECKS}
        fields.update({n: getattr(self, _attr(n)).field() for n, _, _ in SPINS})
        return dataclasses.replace(self.state.augmentation, **fields)

    def _on_setting(self, *_: Any) -> None:
        if self._updating.active:
            return
        try:
            with self._updating:
                self.state.set_augmentation(self.augmentation())
        except ValueError as exc:
            self.error(f"augmentation setting: {exc}")
            return
        if self.auto.isChecked():
            self._debounce.trigger()

    def _on_view_setting(self, *_: Any) -> None:
        if self.auto.isChecked():
            self._debounce.trigger()

    def _on_state_augmentation(self) -> None:
        if self._updating.active:
            return
        aug = self.state.augmentation
        with self._updating:
            for name, _label, _tip in CHECKS:
                getattr(self, _attr(name)).setChecked(getattr(aug, name))
            for name, _label, _tip in SPINS:
                getattr(self, _attr(name)).set_field(getattr(aug, name))

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
        if image is not None:
            self.compute(
                self._anchor if self._anchor is not None else current_z(self.viewer, image)
            )

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
        labels = self.state.labels_layer
        lab2d = None
        if labels is not None and tuple(labels.data.shape) == tuple(image.data.shape):
            lab2d = np.array(read_slice(labels.data, z), copy=True)
        weights = None
        if self.with_weights.isChecked() and lab2d is not None:
            cfg = self.state.config
            inputs = weight_inputs(cfg, len(self.state.class_names))
            weights = (cfg.class_weights, inputs, dict(self.state.labelled_slices) or None)
        self._request += 1
        job = Job(
            augmentation_job,
            image.data,
            z,
            lab2d,  # a copy: painting goes on
            aug,
            (int(self.n_samples.value()), int(self.seed.value())),
            weights,
            self._request,
            on_yield=self._show,
            on_error=lambda e: self.error(friendly_error(e, "augmentation preview")),
        )
        return self.start_job("main", job)

    def _placement(self, image: Image) -> dict[str, Any]:
        scale = np.asarray(image.scale, dtype=float)
        trans = np.asarray(image.translate, dtype=float)
        width = image.data.shape[-1]
        gap = max(8, int(0.04 * width))
        tx = trans[-1] + (width + gap) * scale[-1]
        if image.ndim >= 3:
            sz, tz = scale[-3], trans[-3] + (self._anchor or 0) * scale[-3]
        else:
            sz, tz = 1.0, 0.0
        return {"scale": (sz, scale[-2], scale[-1]), "translate": (tz, trans[-2], tx)}

    def _show(self, item: tuple[int, np.ndarray, np.ndarray | None, np.ndarray | None]) -> None:
        request, images, labels, weights = item
        image = self.state.image_layer
        if request != self._request or image is None:
            return  # a newer preview is on its way
        self.compute_count += 1
        place = self._placement(image)
        self.image_layer = put_layer(
            self.viewer, self.image_layer, AUG_IMAGE, "image", images,
            colormap="gray", contrast_limits=tuple(image.contrast_limits), **place,
        )  # fmt: skip
        self.labels_layer = self._put_or_drop(
            self.labels_layer, AUG_LABELS, "labels", labels,
            opacity=0.5, colormap=label_colormap(self.state.class_colors), **place,
        )  # fmt: skip
        hi = float(weights.max()) if weights is not None and weights.size else 1.0
        self.weights_layer = self._put_or_drop(
            self.weights_layer, AUG_WEIGHTS, "image", weights, colormap="magma", opacity=0.6,
            blending="additive", contrast_limits=(0.0, max(hi, 1e-6)), visible=False, **place,
        )  # fmt: skip
        z, n = self._anchor or 0, images.shape[0]
        self.info(
            f"{n} augmented samples of slice {z}, at slices {z}-{z + n - 1} right of the image",
            notify=False,
        )
        lab = self.state.labels_layer
        if lab is not None and lab in self.viewer.layers:
            self.viewer.layers.selection.active = lab  # painting continues on the labels

    def _put_or_drop(self, existing: Any, name: str, kind: str, data: Any, **kwargs: Any) -> Any:
        if data is not None:
            return put_layer(self.viewer, existing, name, kind, data, **kwargs)
        if existing is not None and existing in self.viewer.layers:
            self.viewer.layers.remove(existing)
        return None


def _attr(name: str) -> str:
    """The widget attribute of an Augmentation field (the names the tests and scripts use)."""
    return {
        "elastic_grid": "grid",
        "elastic_sigma": "sigma",
        "rotate_degrees": "rotate",
        "gaussian_noise": "noise",
    }.get(name, name)
