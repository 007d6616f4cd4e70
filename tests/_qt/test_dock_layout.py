"""The docks as ``napari-unet`` opens them: in a 1500 x 950 window every tab title is shown in
full (none elided) and Train and Predict are one click away."""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QTabBar

from napari_unet._qt import WIDGETS
from napari_unet._qt._dock_layout import dock_of, open_docks


def _our_tab_bar(window) -> QTabBar:
    names = set(WIDGETS.values())
    bars = [
        bar
        for bar in window.findChildren(QTabBar)
        if bar.isVisible() and names & {bar.tabText(i) for i in range(bar.count())}
    ]
    assert len(bars) == 1, [[b.tabText(i) for i in range(b.count())] for b in bars]
    return bars[0]


def _full_size(bar: QTabBar, title: str):
    """The size a tab of ``bar`` needs to show ``title`` unelided (a probe tab bar of the same
    shape and style: ``tabSizeHint`` of napari's own bar is not callable from Python)."""
    probe = QTabBar(bar.parentWidget())
    probe.setShape(bar.shape())
    probe.setElideMode(Qt.TextElideMode.ElideNone)
    probe.addTab(title)
    size = probe.tabSizeHint(0)
    probe.deleteLater()
    return size


def test_every_tab_is_readable_in_a_1500_by_950_window(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1500, 950)
    widgets = open_docks(viewer)
    qtbot.waitUntil(lambda: window.width() == 1500 and window.height() == 950, timeout=5000)
    qtbot.wait(100)
    bar = _our_tab_bar(window)
    titles = [bar.tabText(i) for i in range(bar.count())]
    assert titles == list(WIDGETS.values())  # workflow order, names without a suffix
    vertical = bar.shape() in (
        QTabBar.Shape.RoundedEast, QTabBar.Shape.RoundedWest,
        QTabBar.Shape.TriangularEast, QTabBar.Shape.TriangularWest,
    )  # fmt: skip
    inside = bar.rect()
    for i, title in enumerate(titles):
        rect, full = bar.tabRect(i), _full_size(bar, title)
        length, needed = (
            (rect.height(), full.height()) if vertical else (rect.width(), full.width())
        )
        assert length >= needed, f"tab {title!r} is elided: {length} < {needed} px"
        text = bar.fontMetrics().horizontalAdvance(title)
        assert length >= text, f"tab {title!r}: {length} px for {text} px of text"
        assert inside.contains(rect), f"tab {title!r} lies outside its tab bar"
    bottom_right = bar.mapTo(window, inside.bottomRight())
    assert window.rect().contains(bottom_right)  # the whole tab bar is in the window

    # one click: pressing the Train (then Predict) tab brings that dock to the front
    for key in ("train", "predict"):
        index = titles.index(WIDGETS[key])
        qtbot.mouseClick(bar, Qt.MouseButton.LeftButton, pos=bar.tabRect(index).center())
        qtbot.waitUntil(lambda k=key: not widgets[k].visibleRegion().isEmpty(), timeout=5000)
        assert bar.currentIndex() == index
        assert dock_of(widgets[key]).windowTitle() == WIDGETS[key]
