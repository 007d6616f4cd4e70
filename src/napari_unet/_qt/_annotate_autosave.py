"""The autosave half of the Annotate dock: where the labels go, restoring them, saving them.

Small stacks: the labels TIFF (:class:`napari_unet.autosave.LabelsAutosave`, painted slices
copied on the GUI thread, compressed and written in a worker).  Big stacks: the on-disk labels
store (:class:`napari_unet.label_store.LabelStore`), restored lazily, whose painted chunks a
worker writes.  Mixed into :class:`.annotate.AnnotateWidget` (it uses that widget's state).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..autosave import (
    LabelsAutosave,
    SaveResult,
    autosave_path_for,
    restore_autosave,
)
from ..io import InvalidImageError
from ..label_store import LabelStore, label_store_path_for, open_label_store, uses_label_store
from ..labels import label_dtype
from ._common import friendly_error, sanitize_name
from ._layers import image_source_path
from ._workers import Job


def _autosave_job(autosave: LabelsAutosave | LabelStore, changes: dict[str, Any]) -> Any:
    """Worker: hash, compress and write what changed (``LabelsAutosave.save_changes``), or
    write a labels store's painted chunks (``LabelStore.save_changes``)."""
    yield autosave.save_changes(**changes)


class AutosaveMixin:
    """Autosave and restore of :class:`.annotate.AnnotateWidget`'s training labels."""

    def _read_autosave(self, shape: tuple[int, ...]) -> tuple[np.ndarray | None, Path | None]:
        """The autosaved labels (None if there are none or they cannot be used); their classes,
        validated whole (:func:`napari_unet.autosave.check_classes`), go to the shared state."""
        path = self.autosave_path()
        if path is not None and uses_label_store(shape):
            return self._open_store(path, shape)
        if not (self.restore_check.isChecked() and path is not None and path.exists()):
            return None, None
        data, classes, problem = restore_autosave(path, shape)
        if problem:
            self.warning(problem)
        if classes is not None:
            self.state.set_classes(*classes)
        return data, (path if data is not None else None)

    def _open_store(self, path: Path, shape: tuple[int, ...]) -> tuple[Any, Path | None]:
        """A big stack's labels store (:mod:`napari_unet.label_store`): restored lazily, else
        created empty on disk; the layer paints into its zarr array."""
        dtype = label_dtype(len(self.state.class_names))
        restore = self.restore_check.isChecked()
        store, restored, classes, problem = open_label_store(path, shape, dtype, restore)
        if problem:
            self.warning(problem)
        if classes is not None:
            self.state.set_classes(*classes)
        self._new_store = store
        return store.array, (path if restored else None)

    def autosave_path(self) -> Path | None:
        image = self.state.image_layer
        if image is None:
            return None
        if isinstance(self._autosave, LabelStore):
            return self._autosave.path  # a store stays where it was made
        source, stem = image_source_path(image), sanitize_name(image.name)
        where = label_store_path_for if uses_label_store(image.data.shape) else autosave_path_for
        return where(source, stem, self.autosave_box.folder())

    def set_autosave(
        self, interval: float | None = None, folder: str | os.PathLike | None = None
    ) -> None:
        """Scripting/test hook: change the interval (s) and/or the project folder."""
        self.autosave_box.configure(interval, folder)

    def _update_autosave_hint(self) -> None:
        path = self.autosave_path()
        self.autosave_box.show_target(path, self.last_saved_time)
        hint = ""
        if path is not None and self.state.labels_layer is None and path.exists():
            hint = f"Autosaved labels found: {path.name} (restored on 'Create training labels')"
            if path not in self._offered:
                self._offered.add(path)
                self.info(
                    f"autosaved labels found for {self.state.image_layer.name!r} ({path}): "
                    "press 'Create training labels' in '1 Annotate' to restore them"
                )
        self.autosave_hint.setText(hint)

    def _take_changes(self, path: Path) -> dict[str, Any]:
        """GUI thread: copies of the slices painted since the last autosave (only those)."""
        names, colors = self.state.class_names, self.state.class_colors
        if isinstance(self._autosave, LabelStore):  # the store knows its painted chunks
            self._changes.clear()
            return {"path": path, "names": list(names), "colors": list(colors)}
        return self._changes.take(self._adopted.data, path, names, colors)

    def _unsaved(self) -> bool:
        """Painted (or classes changed) since the last autosave."""
        return self._changes.pending or bool(getattr(self._autosave, "dirty", False))

    def _autosave_tick(self) -> None:
        path = self.autosave_path()
        if path is None or self._adopted is None or self._autosave is None:
            return
        if not self._unsaved() or self.busy("autosave"):
            return
        changes = self._take_changes(path)
        job = Job(
            _autosave_job,
            self._autosave,
            changes,
            on_yield=self._on_saved,
            on_error=self._on_save_error,
        )
        self.start_job("autosave", job)

    def _on_saved(self, result: SaveResult) -> None:
        if result.saved:
            self.save_count += 1
            self.last_saved = result.path
            self.last_saved_time = time.time()
            self._update_autosave_hint()

    def _on_save_error(self, exc: BaseException) -> None:
        self._changes.retry()  # the next save reads everything from the layer again
        self.autosave_box.pause()
        self.error(
            friendly_error(exc, "autosave of the labels failed")
            + " (autosave paused: choose a writable project folder and tick it again)"
        )

    def save_now(self) -> Path | None:
        """Save the labels synchronously (GUI thread); return the file written."""
        return self._save_sync() if self._adopted is not None else None

    def _save_sync(self) -> Path | None:
        path = self.autosave_path()
        job = self._jobs.get("autosave")
        if path is None or self._autosave is None or (job is not None and not job.wait(5.0)):
            return None
        try:
            self._on_saved(self._autosave.save_changes(**self._take_changes(path)))
        except (InvalidImageError, OSError, ValueError) as exc:
            self._changes.retry()
            self.error(friendly_error(exc, "saving the labels failed"))
            return None
        return path

    def before_shutdown(self) -> None:
        self.autosave_box.stop()
        if self._adopted is not None and self._unsaved():
            self._save_sync()  # a labels store writes only the chunks painted since the last tick
