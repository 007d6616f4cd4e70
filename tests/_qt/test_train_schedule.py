"""The Train dock's learning-rate schedule and loss choices (from TrainConfig's field bounds)."""

from __future__ import annotations

from qt_helpers import dock

from napari_unet.fields import field_bounds
from napari_unet.losses import LOSS_MODES
from napari_unet.training import TrainConfig


def _items(combo) -> list:
    return [combo.itemData(i) for i in range(combo.count())]


def test_schedule_choices_and_cyclic_fields(make_napari_viewer) -> None:
    tr = dock(make_napari_viewer(), "4 Train")
    s = tr.settings
    assert _items(s.schedule) == list(field_bounds(TrainConfig)["lr_schedule"].choices)
    assert {"cosine", "constant", "cyclic"} <= set(_items(s.schedule))
    assert set(_items(tr.loss_combo)) == set(LOSS_MODES)
    assert s.schedule.currentData() == TrainConfig().lr_schedule
    # cosine: the lowest rate is shown, the period is not
    assert not s.min_lr.isHidden() and s.period.isHidden()
    s.schedule.setCurrentIndex(s.schedule.findData("cyclic"))
    assert not s.period.isHidden() and not s.min_lr.isHidden()
    assert tr.state.config.lr_schedule == "cyclic"
    s.min_lr.setText("1e-5")
    s.min_lr.editingFinished.emit()
    s.period.setValue(300)
    cfg = tr.state.config
    assert (cfg.lr_schedule, cfg.min_learning_rate, cfg.lr_period) == ("cyclic", 1e-5, 300)
    s.schedule.setCurrentIndex(s.schedule.findData("constant"))
    assert s.period.isHidden() and s.min_lr.isHidden()
    # the dock follows the state (a loaded recipe, a script)
    tr.state.update_config(lr_schedule="cyclic", min_learning_rate=2e-4, lr_period=50)
    assert s.schedule.currentData() == "cyclic" and not s.period.isHidden()
    assert float(s.min_lr.text()) == 2e-4 and s.period.value() == 50
    tr.state.update_config(min_learning_rate=None)
    assert s.min_lr.text() == ""
    # a lowest rate above the rate is refused with the config's message; the state keeps its value
    s.min_lr.setText("0.5")
    s.min_lr.editingFinished.emit()
    assert tr.state.config.min_learning_rate is None
    assert "above learning_rate" in tr.status.text()
    s.min_lr.setText("abc")
    s.min_lr.editingFinished.emit()
    assert "lowest learning rate 'abc' is not a number" in tr.status.text()


def test_jaccard_loss_choice_reaches_the_config(make_napari_viewer) -> None:
    tr = dock(make_napari_viewer(), "4 Train")
    for mode in ("jaccard", "wce+jaccard"):
        tr.loss_combo.setCurrentIndex(tr.loss_combo.findData(mode))
        assert tr.state.config.loss == mode
        assert "Jaccard" in tr.loss_combo.currentText()
