"""7 Export: masks, probabilities and the model, written atomically by :mod:`napari_unet.writers`.

Masks as labels TIFF (and PNGs) or OME-NGFF labels (:mod:`napari_unet.ngff_labels`),
probabilities as an ImageJ TIFF or zarr, the model as a
checkpoint and as a bioimage.io package (:mod:`napari_unet.bioimageio_export`, its test input
cut from the slice on screen); a worker writes each under its lock file, errors name the path
and become notifications.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

from ..bioimageio_export import bioimageio_missing
from ..io import InvalidImageError
from ..writers import (
    write_mask_tiff,
    write_pngs,
    write_probabilities_tiff,
    write_probabilities_zarr,
)
from ._common import friendly_error, sanitize_name
from ._layers import image_source_path
from ._widgets import UNetWidget, path_row
from ._workers import Job

if TYPE_CHECKING:
    import napari

#: one export step: its target, what to call in the worker, and how to word what it wrote
Task = tuple[Path, Callable[[], Any], Callable[[Any], str]]
#: the mask formats offered, and the file name ending of each
MASK_FORMATS = {"TIFF": ".tif", "OME-Zarr labels (.ome.zarr)": ".ome.zarr"}


class ExportError(InvalidImageError):
    """An export step failed; the message names the user's path (never a temporary file)."""

    def __init__(self, message: str, on_disk: bool) -> None:
        super().__init__(message)
        self.on_disk = on_disk  # a write error (disk, permissions, lock), not the data


def _save_model(path: Path, model: Any, metadata: dict[str, Any]) -> Path:
    from ..checkpoint import save_checkpoint

    return save_checkpoint(path, model, **metadata)


def _save_bioimageio(
    path: Path, model: Any, metadata: dict[str, Any], image: Any, z: int | None, name: str
) -> Path:
    from ..bioimageio_export import PackageInfo, export_bioimageio

    return export_bioimageio(path, model, metadata, image, PackageInfo(name=name, z=z))


def _save_ngff(path: Path, data: Any, tag: str, scale: tuple[float, ...], classes: Any) -> Path:
    from ..ngff_labels import write_ngff_labels

    names, colors = classes
    unit = "pixel" if all(s == 1.0 for s in scale) else "um"
    return write_ngff_labels(
        path, data, name=tag, scale=scale, unit=unit, class_names=names, colors=colors
    )


def _failed(path: Path, exc: BaseException) -> ExportError:
    """``exc`` of the step writing ``path`` as an :class:`ExportError` that names ``path``."""
    from ..outputs import describe_os_error

    text = str(exc).strip() or type(exc).__name__
    plain_os = isinstance(exc, OSError) and not isinstance(exc, InvalidImageError | ValueError)
    if plain_os:
        text = describe_os_error(exc)
    if str(path) not in text:
        text = f"{path}: {text}"
    return ExportError(text, isinstance(exc, OSError) or "not writable" in text)


def _export_job(tasks: list[Task]) -> Any:
    """Worker: run the export tasks one by one, each holding its target's lock file
    (:class:`napari_unet.outputs.OutputLock`), yielding what was written."""
    from ..outputs import OutputLock

    for path, write, describe in tasks:
        try:
            with OutputLock(path, "export"):
                written = write()
        except Exception as exc:
            raise _failed(path, exc) from exc
        yield ("written", describe(written))


def _recorded_result(data: Any, source: Path | None) -> Any:
    """The zarr array that may hold ``data``'s completion record: ``data`` itself, else the
    zarr array ``source`` (the file the layer was read from), else None."""
    if getattr(data, "attrs", None) is not None:
        return data
    if source is None or source.suffix != ".zarr":
        return None
    try:
        import zarr

        opened = zarr.open(str(source), mode="r")
    except Exception:  # not readable as zarr: nothing to check
        return None
    return opened if tuple(getattr(opened, "shape", ())) == tuple(data.shape) else None


def incomplete(data: Any, what: str, source: Path | None = None) -> str | None:
    """Why a result read by the window is incomplete (``completion.check_complete``), or None."""
    from ..completion import IncompleteResultError, check_complete

    array = _recorded_result(data, source)
    if array is None:
        return None
    try:
        check_complete(array, what=what)
    except IncompleteResultError as exc:
        return str(exc)
    return None


def _pngs_written(folder: Path) -> Callable[[list[Path]], str]:
    return lambda files: f"{folder} ({len(files)} PNG)"


class ExportWidget(UNetWidget):
    """Write the masks, probabilities and model to a folder."""

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
        self.mask_fmt = QComboBox()
        self.mask_fmt.addItems(list(MASK_FORMATS))
        self.mask_fmt.setToolTip(
            "TIFF: Fiji-readable multipage TIFF; OME-Zarr: OME-NGFF labels with the class "
            "names, colours and pixel size (napari-ome-zarr, Fiji/MoBIE, webKnossos)"
        )
        form.addRow("Masks as", self.mask_fmt)
        self.png = QCheckBox("also one PNG per slice")
        form.addRow(self.png)
        self.probs_fmt = QComboBox()
        self.probs_fmt.addItems(["TIFF", "zarr"])
        prow = QHBoxLayout()
        self.probs = QCheckBox("probabilities as")
        prow.addWidget(self.probs)
        prow.addWidget(self.probs_fmt, 1)
        form.addRow(prow)
        self.model = QCheckBox("model checkpoint (.pt)")
        form.addRow(self.model)
        self.bioimageio = QCheckBox("model as bioimage.io package (.zip)")
        self.bioimageio.setToolTip(
            "for ilastik, deepImageJ, QuPath, BiaPy and bioimage.io: weights, the U-Net's code, "
            "a test crop of the slice on screen, the normalisation and class names"
        )
        if (missing := bioimageio_missing()) is not None:
            self.bioimageio.setEnabled(False)
            self.bioimageio.setToolTip(missing)
        form.addRow(self.bioimageio)
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

    def _output_folder(self) -> Path | None:
        """The chosen folder, created if needed; None after telling the user why not."""
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
        from ..outputs import OutputError, probe_writable

        try:  # a file is really created there: catches read-only mounts, /proc, a full disk
            probe_writable(folder / "export", "export folder")
        except OutputError as exc:
            self.error(str(exc))
            return None
        return folder

    def _mask_tasks(self, folder: Path, prefix: str) -> list[Task] | None:
        """Masks of the training labels and/or the prediction (read in the worker, never copied)."""
        what = self.what.currentText()
        wanted = (
            ("labels", "training labels", self.state.labels_layer,
             "no training labels layer to export: create one in '1 Annotate'"),
            ("prediction", "prediction", self.state.prediction_layer,
             "no prediction to export: run '5 Predict' first"),
        )  # fmt: skip
        tasks: list[Task] = []
        for tag, choice, layer, missing in wanted:
            if what not in (choice, "both"):
                continue
            if layer is None:
                if what == choice:
                    self.error(missing)
                    return None
                continue
            problem = incomplete(layer.data, f"layer {layer.name!r}", image_source_path(layer))
            if problem is not None:
                self.error(f"not exported: {problem}")
                return None
            scale = tuple(float(s) for s in layer.scale)
            ending = MASK_FORMATS[self.mask_fmt.currentText()]
            path = folder / f"{prefix}_{tag}{ending}"
            if ending == ".tif":
                tasks.append((path, partial(write_mask_tiff, path, layer.data, scale), str))
            else:
                classes = (list(self.state.class_names), list(self.state.class_colors))
                write = partial(_save_ngff, path, layer.data, tag, scale, classes)
                tasks.append((path, write, lambda p: f"{p} (OME-NGFF labels)"))
            if self.png.isChecked():
                pngs = folder / f"{prefix}_{tag}_png"
                tasks.append((pngs, partial(write_pngs, pngs, layer.data), _pngs_written(pngs)))
        return tasks

    def _other_tasks(self, folder: Path, prefix: str) -> list[Task] | None:
        """The probabilities and the model, when ticked."""
        tasks: list[Task] = []
        if self.probs.isChecked():
            probs = self.state.probabilities
            if probs is None:
                self.error(
                    "no probabilities: predict with 'probabilities of' ticked in '5 Predict'"
                )
                return None
            if (problem := incomplete(probs, "the probabilities")) is not None:
                self.error(f"not exported: {problem}")
                return None
            image = self.state.image_layer
            scale = tuple(float(s) for s in image.scale) if image is not None else (1.0,) * 3
            if self.probs_fmt.currentText() == "TIFF":
                path = folder / f"{prefix}_probabilities.tif"
                tasks.append((path, partial(write_probabilities_tiff, path, probs, scale), str))
            else:
                path = folder / f"{prefix}_probabilities.zarr"
                tasks.append((path, partial(write_probabilities_zarr, path, probs), str))
        if self.model.isChecked():
            if self.state.model is None:
                self.error("no model in memory to export: train one in '4 Train'")
                return None
            path = folder / f"{prefix}_unet.pt"
            metadata = dict(self.state.metadata)
            tasks.append((path, partial(_save_model, path, self.state.model, metadata), str))
        if self.bioimageio.isChecked():
            task = self._bioimageio_task(folder, prefix)
            if task is None:
                return None
            tasks.append(task)
        return tasks

    def _bioimageio_task(self, folder: Path, prefix: str) -> Task | None:
        """The bioimage.io package of the model in memory, tested on the slice on screen."""
        if self.state.model is None:
            self.error("no model in memory to export: train one in '4 Train'")
            return None
        image = self.state.image_layer
        data, z = None, None
        if image is not None:
            data = image.data[0] if getattr(image, "multiscale", False) else image.data
            if len(data.shape) == 3:  # the slice on screen, in the layer's own indices
                z = round(float(image.world_to_data(self.viewer.dims.point)[0]))
                z = min(max(z, 0), int(data.shape[0]) - 1)
        path = folder / f"{prefix}_bioimageio.zip"
        write = partial(
            _save_bioimageio, path, self.state.model, dict(self.state.metadata), data, z, prefix
        )
        return (path, write, lambda p: f"{p} (bioimage.io model)")

    def _tasks(self, folder: Path) -> list[Task] | None:
        """Everything ticked that can be written (None after saying what is missing)."""
        prefix = self._prefix()
        masks = self._mask_tasks(folder, prefix)
        others = self._other_tasks(folder, prefix) if masks is not None else None
        if masks is None or others is None:
            return None
        if not masks + others:
            self.error("nothing to export: tick something, or create labels / run a prediction")
            return None
        return masks + others

    def export(self) -> Job | None:
        """Check the folder and inputs, then write everything in a worker."""
        tasks = None
        if self.busy():
            self.warning("an export is already running")
        elif (folder := self._output_folder()) is not None:
            tasks = self._tasks(folder)
        if tasks is None:
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
            on_disk = getattr(exc, "on_disk", isinstance(exc, OSError))
            on_disk = on_disk or "not writable" in msg or "could not write" in msg
            if on_disk and "choose another folder" not in msg:  # a write error, not the data
                msg += "; choose another folder or free some disk space"
            self.error(msg)
        else:
            self.error(friendly_error(exc, "export failed"))

    def _on_finished(self) -> None:
        self.export_btn.setEnabled(True)
        if not self._failed:
            self.info(f"exported {len(self.written)} item(s) to {self.folder.text().strip()}")
        self.export_finished.emit(not self._failed)
