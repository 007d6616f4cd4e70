"""Per-viewer shared state of the napari-unet widgets.

The seven widgets of one viewer share one :class:`UNetState`: the image and
training-labels layers, the class names and colours, the augmentation
settings (Train and the augmentation preview use the same object), the model
in memory with its metadata, and the last prediction layer.  Widgets listen
to its Qt signals to stay in sync.

The state also owns the viewer-shutdown hook: when the viewer's window
closes (or the application quits) it emits :attr:`UNetState.shutting_down`
*synchronously*, and the widgets stop and wait for their background jobs, so
no worker outlives the viewer.
"""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QEvent, QObject, QTimer, Signal
from qtpy.QtWidgets import QApplication, QWidget

from ..augment import Augmentation
from ..sample_data import CLASS_NAMES
from ._common import default_colors

if TYPE_CHECKING:
    import napari
    from napari.layers import Image, Labels, Layer

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
    """What the napari-unet widgets of one viewer share."""

    image_changed = Signal(object)
    labels_changed = Signal(object)
    classes_changed = Signal()
    augmentation_changed = Signal()
    model_changed = Signal()
    prediction_changed = Signal(object)
    weights_changed = Signal()
    #: emitted once, synchronously, when the viewer closes: stop your workers now
    shutting_down = Signal()

    def __init__(self, viewer: napari.Viewer) -> None:
        super().__init__()
        self._viewer_ref = weakref.ref(viewer)
        self.image_layer: Image | None = None
        self.labels_layer: Labels | None = None
        self.prediction_layer: Labels | None = None
        self.probability_layer: Image | None = None
        self.class_names: list[str] = list(CLASS_NAMES)
        self.class_colors: list[str] = default_colors(len(self.class_names))
        self.augmentation: Augmentation = Augmentation()
        #: border weight map settings shared by the weight-map preview and Train
        #: (TrainConfig's w0, sigma, class_weights, object_class; None = last class)
        self.weight_settings: dict[str, Any] = {
            "w0": 10.0,
            "sigma": 5.0,
            "class_weights": "balanced",
            "object_class": None,
        }
        #: full (K, Z, H, W) softmax of the last prediction (numpy or zarr), if kept
        self.probabilities: Any = None
        self.model: Any = None
        self.metadata: dict[str, Any] = {}
        self.checkpoint_path: str | None = None
        self.widgets: weakref.WeakValueDictionary[str, QWidget] = weakref.WeakValueDictionary()
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
        self.classes_changed.emit()

    def set_augmentation(self, aug: Augmentation) -> None:
        aug.validate()
        self.augmentation = aug
        self.augmentation_changed.emit()

    def set_weight_settings(self, **settings: Any) -> None:
        unknown = set(settings) - set(self.weight_settings)
        if unknown:
            raise ValueError(f"unknown weight map settings: {sorted(unknown)}")
        self.weight_settings.update(settings)
        self.weights_changed.emit()

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
