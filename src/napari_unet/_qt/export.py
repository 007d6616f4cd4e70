"""7 Export: masks, probabilities and the model, written atomically in a worker.

* masks (training labels and/or prediction) as multipage TIFF that Fiji opens
  as a stack with the right scale (:func:`napari_unet.io.write_labels_tiff`),
  optionally also one PNG per slice (uint8 / uint16);
* probabilities (K, Z, Y, X) float32 as an ImageJ TIFF or a zarr array;
* the model in memory as a checkpoint (:func:`napari_unet.checkpoint.save_checkpoint`).

Every file is written to a temporary name in the target folder and renamed,
so a full disk never leaves a half file over an old one; errors (folder not
writable, disk full) become a notification telling what to do.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QWidget,
)

from ..io import InvalidImageError, atomic_write, smallest_unsigned_dtype, write_labels_tiff
from ._common import friendly_error, sanitize_name
from ._layers import image_source_path
from ._widgets import UNetWidget, path_row
from ._workers import Job

if TYPE_CHECKING:
    import napari


def _as_numpy(data: Any) -> np.ndarray:
    if hasattr(data, "compute") and not isinstance(data, np.ndarray):
        data = data.compute()
    return np.asarray(data)


def _write_pngs(folder: Path, data: Any) -> list[Path]:
    import imageio.v3 as iio

    folder.mkdir(parents=True, exist_ok=True)
    arr = data if data.ndim >= 3 else data[None]
    dtype = smallest_unsigned_dtype(np.asarray(arr[0]))
    if arr.shape[0] > 1:
        dtype = max(
            (smallest_unsigned_dtype(np.asarray(arr[z])) for z in range(arr.shape[0])),
            key=lambda d: d.itemsize,
        )
    if dtype.itemsize > 2:
        raise InvalidImageError("labels above 65535 do not fit in a PNG: export TIFF instead")
    out = []
    for z in range(arr.shape[0]):
        sl = _as_numpy(arr[z]).astype(dtype, copy=False)
        path = folder / f"slice_{z:04d}.png"
        atomic_write(path, lambda tmp, sl=sl: iio.imwrite(tmp, sl, extension=".png"), suffix=".png")
        out.append(path)
    return out


def _write_probabilities_tiff(path: Path, probs: Any, scale: tuple[float, ...]) -> Path:
    import tifffile

    arr = _as_numpy(probs).astype(np.float32, copy=False)  # (K, Z, Y, X) or (K, Y, X)
    if arr.ndim == 4:
        arr = np.moveaxis(arr, 0, 1)  # ImageJ order: Z C Y X
        axes = "ZCYX"
    else:
        axes = "CYX"
    sy, sx = scale[-2], scale[-1]
    metadata: dict[str, Any] = {"axes": axes}
    if arr.ndim == 4:
        metadata["spacing"] = float(scale[-3])

    def _write(tmp: Path) -> None:
        tifffile.imwrite(
            str(tmp), arr, imagej=True, resolution=(1.0 / sx, 1.0 / sy), metadata=metadata,
            compression="zlib", photometric="minisblack",
        )  # fmt: skip

    return atomic_write(path, _write)


def _write_probabilities_zarr(path: Path, probs: Any) -> Path:
    import zarr

    parent = path.parent
    if not os.access(parent, os.W_OK):
        raise InvalidImageError(f"{parent}: folder is not writable")
    tmp = parent / f".{path.name}.part"
    shutil.rmtree(tmp, ignore_errors=True)
    shape = tuple(probs.shape)
    chunks = tuple([1] * (len(shape) - 2) + [min(shape[-2], 1024), min(shape[-1], 1024)])
    try:
        z = zarr.open_array(str(tmp), mode="w", shape=shape, chunks=chunks, dtype="float32")
        lead = shape[:-2]
        for idx in np.ndindex(*lead):
            z[idx] = _as_numpy(probs[idx]).astype(np.float32, copy=False)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise InvalidImageError(
            f"{path}: could not write the zarr array ({exc.strerror or exc})"
        ) from exc
    return path


def _export_job(tasks: list[tuple[str, Any]]) -> Any:
    """Worker: run the export tasks one by one, yielding what was written."""
    for what, args in tasks:
        if what == "labels":
            path, data, scale = args
            yield ("written", str(write_labels_tiff(path, data, scale=scale, unit="pixel")))
        elif what == "png":
            folder, data = args
            files = _write_pngs(folder, data)
            yield ("written", f"{folder} ({len(files)} PNG)")
        elif what == "probs_tiff":
            path, probs, scale = args
            yield ("written", str(_write_probabilities_tiff(path, probs, scale)))
        elif what == "probs_zarr":
            path, probs = args
            yield ("written", str(_write_probabilities_zarr(path, probs)))
        elif what == "model":
            from ..checkpoint import save_checkpoint

            path, model, metadata = args
            yield ("written", str(save_checkpoint(path, model, **metadata)))


class ExportWidget(UNetWidget):
    """Write the masks, probabilities and model to a folder."""

    key = "export"
    export_finished = Signal(bool)

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(napari_viewer, parent)
        self.written: list[str] = []
        self._failed = False
        form = self.add_form()
        self.what = QComboBox()
        self.what.addItems(["training labels", "prediction", "both"])
        self.what.setCurrentText("both")
        form.addRow("Masks", self.what)
        self.png = QCheckBox("also one PNG per slice")
        form.addRow(self.png)
        prow = QHBoxLayout()
        self.probs = QCheckBox("probabilities as")
        self.probs_fmt = QComboBox()
        self.probs_fmt.addItems(["TIFF", "zarr"])
        prow.addWidget(self.probs)
        prow.addWidget(self.probs_fmt, 1)
        form.addRow(prow)
        self.model = QCheckBox("model checkpoint (.pt)")
        form.addRow(self.model)
        frow, self.folder, self.folder_btn = path_row("output folder")
        form.addRow("Folder", frow)
        self.base = QLineEdit()
        self.base.setPlaceholderText("file name prefix (default: the image name)")
        form.addRow("Name", self.base)
        self.export_btn = QPushButton("Export")
        self.layout().addWidget(self.export_btn)
        self.finish_layout()
        self.folder_btn.clicked.connect(self._choose_folder)
        self.export_btn.clicked.connect(lambda: self.export())
        self.state.image_changed.connect(self._default_folder)
        self._default_folder()

    def _default_folder(self, *_: Any) -> None:
        if self.folder.text().strip():
            return
        image = self.state.image_layer
        src = image_source_path(image) if image is not None else None
        if src is not None:
            self.folder.setText(str(src.parent))

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export folder")
        if folder:
            self.folder.setText(folder)

    def _prefix(self) -> str:
        text = self.base.text().strip()
        if text:
            return sanitize_name(text)
        image = self.state.image_layer
        return sanitize_name(image.name) if image is not None else "napari-unet"

    def export(self) -> Job | None:
        """Check the folder and inputs, then write everything in a worker."""
        if self.busy():
            self.warning("an export is already running")
            return None
        text = self.folder.text().strip()
        if not text:
            self.error("choose an output folder (the '…' button)")
            return None
        folder = Path(text).expanduser()
        if not folder.exists():
            try:
                folder.mkdir(parents=True)
            except OSError as exc:
                self.error(friendly_error(exc, f"cannot create the folder {folder}"))
                return None
        if not folder.is_dir():
            self.error(f"{folder} is a file, not a folder: choose a folder")
            return None
        if not os.access(folder, os.W_OK):
            self.error(f"folder {folder} is not writable: choose another folder")
            return None
        prefix = self._prefix()
        tasks: list[tuple[str, Any]] = []
        what = self.what.currentText()
        layers = []
        if what in ("training labels", "both"):
            lab = self.state.labels_layer
            if lab is None and what == "training labels":
                self.error("no training labels layer to export: create one in '1 Annotate'")
                return None
            if lab is not None:
                layers.append(("labels", lab))
        if what in ("prediction", "both"):
            pred = self.state.prediction_layer
            if pred is None and what == "prediction":
                self.error("no prediction to export: run '5 Predict' first")
                return None
            if pred is not None:
                layers.append(("prediction", pred))
        for tag, layer in layers:
            data = layer.data
            snapshot = np.array(data, copy=True) if isinstance(data, np.ndarray) else data
            scale = tuple(float(s) for s in layer.scale)
            tasks.append(("labels", (folder / f"{prefix}_{tag}.tif", snapshot, scale)))
            if self.png.isChecked():
                tasks.append(("png", (folder / f"{prefix}_{tag}_png", snapshot)))
        if self.probs.isChecked():
            probs = self.state.probabilities
            if probs is None:
                self.error(
                    "no probabilities: predict with 'probabilities of' ticked in '5 Predict'"
                )
                return None
            scale = (
                tuple(float(s) for s in self.state.image_layer.scale)
                if self.state.image_layer
                else (1.0,) * 3
            )
            if self.probs_fmt.currentText() == "TIFF":
                tasks.append(("probs_tiff", (folder / f"{prefix}_probabilities.tif", probs, scale)))
            else:
                tasks.append(("probs_zarr", (folder / f"{prefix}_probabilities.zarr", probs)))
        if self.model.isChecked():
            if self.state.model is None:
                self.error("no model in memory to export: train one in '4 Train'")
                return None
            tasks.append(
                (
                    "model",
                    (folder / f"{prefix}_unet.pt", self.state.model, dict(self.state.metadata)),
                )
            )
        if not tasks:
            self.error("nothing to export: tick something, or create labels / run a prediction")
            return None
        self.written = []
        self._failed = False
        self.export_btn.setEnabled(False)
        job = Job(
            _export_job,
            tasks,
            on_yield=self._on_written,
            on_error=self._on_error,
            on_finished=self._on_finished,
        )
        return self.start_job("main", job)

    def _on_written(self, item: tuple[str, str]) -> None:
        self.written.append(item[1])
        self.info(f"written: {item[1]}", notify=False)

    def _on_error(self, exc: BaseException) -> None:
        self._failed = True
        if isinstance(exc, InvalidImageError):
            msg = f"export failed: {exc}"
            if "not writable" in str(exc) or "could not write" in str(exc):
                msg += "; choose another folder or free some disk space"
            self.error(msg)
        else:
            self.error(friendly_error(exc, "export failed"))

    def _on_finished(self) -> None:
        self.export_btn.setEnabled(True)
        if not self._failed:
            self.info(f"exported {len(self.written)} item(s) to {self.folder.text().strip()}")
        self.export_finished.emit(not self._failed)
