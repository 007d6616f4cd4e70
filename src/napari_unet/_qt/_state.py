"""Per-viewer shared state of the napari-unet docks: what they share and the signals they observe.

Docks never call each other: they publish facts and requests here and listen to its signals.
"""

from __future__ import annotations

import dataclasses
import logging
import weakref
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QEvent, QObject, QTimer, Signal
from qtpy.QtWidgets import QApplication, QWidget

from ..classes import DEFAULT_CLASS_NAMES, default_colors

if TYPE_CHECKING:
    import napari
    from napari.layers import Image, Labels, Layer

    from ..augment import Augmentation
    from ..training import TrainConfig

logger = logging.getLogger("napari_unet")
_STATES: weakref.WeakKeyDictionary[Any, UNetState] = weakref.WeakKeyDictionary()


class _CloseFilter(QObject):
    """Event filter on the viewer's main window: a Close event shuts the jobs down."""

    def __init__(self, state: UNetState, window: QObject) -> None:
        super().__init__(window)
        self._state_ref = weakref.ref(state)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Close:
            state = self._state_ref()
            if state is not None:
                if event.spontaneous():
                    # the user clicked the close button: napari may still ask for
                    # confirmation, so only shut down once the window is really gone
                    QTimer.singleShot(0, state._shutdown_if_closed)
                else:
                    state.shutdown()
        return False


class UNetState(QObject):
    """What the napari-unet docks of one viewer share.

    :attr:`config` is the one home of the training, weight-map and augmentation
    settings, built from ``TrainConfig()``; the viewer closing emits
    :attr:`shutting_down` synchronously so the docks stop their workers.
    """

    image_changed = Signal(object)
    labels_changed = Signal(object)
    classes_changed = Signal()
    #: the training configuration changed (any field)
    config_changed = Signal()
    #: ``config.augmentation`` changed (emitted after ``config_changed``)
    augmentation_changed = Signal()
    model_changed = Signal()
    prediction_changed = Signal(object)
    #: ``{z: class counts}`` of the labelled slices (published by Annotate)
    labelled_slices_changed = Signal(object)
    #: the full softmax of the last prediction, or None (published by Predict)
    probabilities_changed = Signal(object)
    #: slices (list, or None = unknown) whose labels were edited outside a paint stroke
    labels_edited = Signal(object)
    #: somebody asked the Train dock to start (Correct's "fine-tune")
    training_requested = Signal()
    training_busy_changed = Signal(bool)
    #: the unlabelled slices ranked by the model's uncertainty (a ``suggest.Ranking``), or None
    suggestions_changed = Signal(object)
    #: emitted once, synchronously, when the viewer closes: stop your workers now
    shutting_down = Signal()

    def __init__(self, viewer: napari.Viewer) -> None:
        from ..training import TrainConfig

        super().__init__()
        self._viewer_ref = weakref.ref(viewer)
        self.image_layer: Image | None = None
        self.labels_layer: Labels | None = None
        self.prediction_layer: Labels | None = None
        self.probability_layer: Image | None = None
        self.class_names: list[str] = list(DEFAULT_CLASS_NAMES)
        self.class_colors: list[str] = default_colors(len(self.class_names))
        self.config: TrainConfig = TrainConfig()
        self.labelled_slices: dict[int, Any] = {}
        #: full (K, Z, H, W) softmax of the last prediction (numpy or zarr), if kept
        self.probabilities: Any = None
        self.training_busy = False
        #: ``suggest.Ranking`` of the unlabelled slices for the model in memory, or None
        self.suggestions: Any = None
        self.model: Any = None
        self.metadata: dict[str, Any] = {}
        #: metadata of the checkpoint the prediction layer was made with (None: the model in
        #: memory made it, or nothing did); Objects reads its stored parameters from it
        self.prediction_metadata: dict[str, Any] | None = None
        self.checkpoint_path: str | None = None
        self.closed = False
        self._window_ref: weakref.ref[QObject] | None = None
        self._filter: _CloseFilter | None = None
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)
        viewer.layers.events.removed.connect(self._on_layer_removed)
        viewer.layers.events.inserted.connect(self._on_layer_inserted)
        for layer in viewer.layers:
            if self.image_layer is None and is_source_image(layer):
                self.image_layer = layer

    # -- viewer --------------------------------------------------------------------------
    @property
    def viewer(self) -> napari.Viewer | None:
        return self._viewer_ref()

    def attach_window(self, window: QWidget) -> None:
        """Watch ``window`` (the viewer's main window, found by a docked widget) for Close."""
        current = self._window_ref() if self._window_ref is not None else None
        if current is window:
            return
        self._window_ref = weakref.ref(window)
        self._filter = _CloseFilter(self, window)
        window.installEventFilter(self._filter)

    # -- setters (emit signals only on change) ---------------------------------------------
    def set_image_layer(self, layer: Image | None) -> None:
        if layer is not self.image_layer:
            self.image_layer = layer
            self.image_changed.emit(layer)

    def set_labels_layer(self, layer: Labels | None) -> None:
        if layer is not self.labels_layer:
            self.labels_layer = layer
            self.labels_changed.emit(layer)

    def set_classes(self, names: list[str], colors: list[str]) -> None:
        if len(names) != len(colors):
            raise ValueError("one colour per class is needed")
        if not names:
            raise ValueError("at least one class is needed")
        self.class_names = list(names)
        self.class_colors = list(colors)
        if self.config.object_class is not None and self.config.object_class > len(names):
            self.update_config(object_class=None)  # the border objects: the last class again
        self.classes_changed.emit()

    # -- training configuration -----------------------------------------------------------
    @property
    def augmentation(self) -> Augmentation:
        return self.config.augmentation

    def update_config(self, **fields: Any) -> None:
        """Replace fields of :attr:`config` (validated by TrainConfig; ValueError leaves it as is)."""
        names = {f.name for f in dataclasses.fields(self.config)}
        unknown = sorted(set(fields) - names)
        if unknown:
            raise ValueError(f"unknown training settings: {', '.join(unknown)}")
        try:
            config = dataclasses.replace(self.config, **fields)
            config.validate()
        except (TypeError, ValueError) as exc:
            raise ValueError(str(exc)) from exc
        old_aug = self.config.augmentation
        self.config = config
        self.config_changed.emit()
        if config.augmentation != old_aug:
            self.augmentation_changed.emit()

    def set_augmentation(self, aug: Augmentation) -> None:
        aug.validate()
        self.update_config(augmentation=aug)

    # -- published facts -------------------------------------------------------------------
    def set_labelled_slices(self, slices: dict[int, Any]) -> None:
        self.labelled_slices = dict(slices)
        self.labelled_slices_changed.emit(self.labelled_slices)

    def set_probabilities(self, probabilities: Any) -> None:
        self.probabilities = probabilities
        self.probabilities_changed.emit(probabilities)

    def set_suggestions(self, ranking: Any) -> None:
        self.suggestions = ranking
        self.suggestions_changed.emit(ranking)

    def mark_labels_edited(self, slices: Any = None) -> None:
        """Tell the docks that ``slices`` (None: unknown ones) of the labels were edited."""
        zs = None if slices is None else sorted({int(z) for z in slices})
        self.labels_edited.emit(zs)

    def request_training(self) -> bool:
        """Ask the Train dock to start; False when no Train dock is open to hear it."""
        try:
            listening = self.receivers(self.training_requested) > 0
        except TypeError:  # a Qt binding that wants the signature string
            listening = True
        self.training_requested.emit()
        return listening

    def set_training_busy(self, busy: bool) -> None:
        if bool(busy) != self.training_busy:
            self.training_busy = bool(busy)
            self.training_busy_changed.emit(self.training_busy)

    def set_model(
        self, model: Any, metadata: dict[str, Any], checkpoint: str | None = None
    ) -> None:
        self.model = model
        self.metadata = dict(metadata or {})
        if checkpoint is not None:
            self.checkpoint_path = str(checkpoint)
        self.model_changed.emit()

    def set_prediction_layer(self, layer: Labels | None) -> None:
        self.prediction_layer = layer
        self.prediction_changed.emit(layer)

    def set_prediction_metadata(self, metadata: dict[str, Any] | None) -> None:
        """The metadata of the checkpoint that made the prediction (None: the model in memory)."""
        new = None if metadata is None else dict(metadata)
        if new == self.prediction_metadata:
            return  # e.g. every run with the model in memory: nothing the docks show changed
        self.prediction_metadata = new
        self.prediction_changed.emit(self.prediction_layer)

    def object_metadata(self) -> dict[str, Any]:
        """Where the objects step's stored parameters come from: the checkpoint that made the
        prediction, else the model in memory."""
        if self.prediction_metadata is not None:
            return self.prediction_metadata
        return self.metadata

    def _on_layer_inserted(self, event: Any) -> None:
        if self.image_layer is None and is_source_image(event.value):
            self.set_image_layer(event.value)

    def _on_layer_removed(self, event: Any) -> None:
        layer: Layer = event.value
        if layer is self.image_layer:
            self.set_image_layer(None)
        if layer is self.labels_layer:
            self.set_labels_layer(None)
        if layer is self.prediction_layer:
            self.set_prediction_layer(None)
        if layer is self.probability_layer:
            self.probability_layer = None

    # -- shutdown --------------------------------------------------------------------------
    def _shutdown_if_closed(self) -> None:
        window = self._window_ref() if self._window_ref is not None else None
        try:
            still_open = window is not None and window.isVisible()
        except RuntimeError:  # the window was deleted
            still_open = False
        if not still_open:
            self.shutdown()

    def shutdown(self) -> None:
        """Tell every widget to stop its background work (idempotent)."""
        if self.closed:
            return
        self.closed = True
        logger.debug("napari-unet: viewer closing, stopping background jobs")
        self.shutting_down.emit()


def is_generated(layer: Any) -> bool:
    """Whether napari-unet made ``layer`` (previews, weight map, predictions...)."""
    md = getattr(layer, "metadata", None) or {}
    return bool(isinstance(md, dict) and (md.get("napari_unet") or {}).get("generated"))


def is_source_image(layer: Any) -> bool:
    """A grayscale Image layer the user opened (not one napari-unet generated)."""
    from napari.layers import Image

    return isinstance(layer, Image) and not layer.rgb and not is_generated(layer)


def unwrap_viewer(viewer: Any) -> Any:
    """The viewer behind napari's ``PublicOnlyProxy`` (so layer identity checks work)."""
    return getattr(viewer, "__wrapped__", viewer)


def get_state(viewer: napari.Viewer) -> UNetState:
    """The :class:`UNetState` of ``viewer`` (created on first use)."""
    viewer = unwrap_viewer(viewer)
    state = _STATES.get(viewer)
    if state is None:
        state = UNetState(viewer)
        _STATES[viewer] = state
    return state
