"""Every widget of the manifest docks; open_all_widgets; the U-Net menu."""

from __future__ import annotations

from pathlib import Path

import pytest
from qt_helpers import dock
from qtpy.QtWidgets import QWidget

from napari_unet._qt import WIDGETS, open_all_widgets


@pytest.mark.parametrize("name", list(WIDGETS.values()))
def test_widget_docks(make_napari_viewer, name: str) -> None:
    viewer = make_napari_viewer()
    widget = dock(viewer, name)
    assert isinstance(widget, QWidget)
    # docking twice returns the same widget instead of a second copy
    assert dock(viewer, name) is widget


def test_manifest_lists_the_eight_widgets() -> None:
    from npe2 import PluginManager

    pm = PluginManager.instance()
    names = [w.display_name for w in pm.iter_widgets() if w.plugin_name == "napari-unet"]
    assert names == list(WIDGETS.values())


def test_open_all_widgets_tabified(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer()
    widgets = open_all_widgets(viewer)
    assert list(widgets) == list(WIDGETS)
    docks = [w.parentWidget() for w in widgets.values()]
    while not hasattr(docks[0], "isFloating"):  # climb to the QDockWidget
        docks = [d.parentWidget() for d in docks]
    main = docks[0].parentWidget()
    tabbed = main.tabifiedDockWidgets(docks[0])
    assert set(tabbed) == set(docks[1:])
    # they share one state
    states = {id(w.state) for w in widgets.values()}
    assert len(states) == 1


def test_u_net_submenu_in_layers_segment(make_napari_viewer) -> None:
    from napari._app_model import get_app_model

    make_napari_viewer()
    app = get_app_model()
    subs = [getattr(item, "submenu", None) for item in app.menus.get_menu("napari/layers/segment")]
    assert "napari-unet.menu" in subs
    commands = [item.command.id for item in app.menus.get_menu("napari-unet.menu")]
    assert commands == [
        "napari-unet.annotate",
        "napari-unet.preview_augmentation",
        "napari-unet.preview_weights",
        "napari-unet.train",
        "napari-unet.predict",
        "napari-unet.correct",
        "napari-unet.export",
        "napari-unet.objects",
    ]


def test_train_dock_starts_from_the_train_config_defaults(make_napari_viewer) -> None:
    from napari_unet.training import TrainConfig

    tr = dock(make_napari_viewer(), "4 Train")
    defaults = TrainConfig()
    assert tr.batch.value() == defaults.batch_size
    assert tr.iterations.value() == defaults.iterations
    assert float(tr.lr.text()) == defaults.learning_rate


def test_train_dock_config_with_untouched_widgets_is_train_config(viewer_with_stack, tmp_path):
    """The window trains the recipe TrainConfig() states (loss weights and augmentation included)."""
    import dataclasses

    from napari_unet._qt.panels.train_settings import RUN_FIELDS
    from napari_unet.training import TrainConfig

    viewer, _image, _truth = viewer_with_stack()
    dock(viewer, "1 Annotate").create_labels()
    tr = dock(viewer, "4 Train")
    tr.folder_edit.setText(str(tmp_path))
    config = tr.build_config()
    defaults = TrainConfig()
    assert tr.state.config == defaults
    for f in dataclasses.fields(TrainConfig):
        if f.name not in RUN_FIELDS:
            assert getattr(config, f.name) == getattr(defaults, f.name), f.name
    for name in ("w0", "sigma", "class_weights", "object_class", "augmentation", "val_every"):
        assert getattr(config, name) == getattr(defaults, name), name
    # the run's context: where checkpoints go, Annotate's classes, the threads left to napari
    assert Path(config.checkpoint_path).parent == tmp_path
    assert config.class_names == list(tr.state.class_names)
    assert config.class_colors == list(tr.state.class_colors)
    assert config.n_classes == len(tr.state.class_names)
    assert config.num_threads == tr.threads.field()


def test_train_dock_edits_state_config_and_follows_it(make_napari_viewer):
    tr = dock(make_napari_viewer(), "4 Train")
    tr.batch.setValue(3)
    assert tr.state.config.batch_size == 3
    tr.state.update_config(iterations=77, learning_rate=5e-4)
    assert tr.iterations.value() == 77
    assert float(tr.lr.text()) == 5e-4
    tr.minutes.setValue(5.0)
    tr.iterations.setValue(0)  # no iteration limit: the time limit decides
    assert (tr.state.config.iterations, tr.state.config.max_minutes) == (None, 5.0)
    tr.minutes.setValue(0.0)  # no limit at all: refused, the state keeps its last valid config
    assert tr.state.config.max_minutes == 5.0
    assert "needs a limit" in tr.status.text()
