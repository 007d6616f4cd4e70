"""The docks as ``napari-unet`` opens them: in a 1500 x 950 window every tab title is shown in
full (none elided) and Train and Predict are one click away; docks opened one by one from
napari's Plugins menu join the same vertical tab group."""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QDockWidget, QMenu, QTabBar

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


_VERTICAL = (
    QTabBar.Shape.RoundedEast, QTabBar.Shape.RoundedWest,
    QTabBar.Shape.TriangularEast, QTabBar.Shape.TriangularWest,
)  # fmt: skip


def _assert_readable(window, bar: QTabBar, titles: list[str]) -> None:
    """Vertical tabs, each long enough for its full title, all inside the window."""
    assert bar.shape() in _VERTICAL, bar.shape()
    inside = bar.rect()
    for i, title in enumerate(titles):
        length, needed = bar.tabRect(i).height(), _full_size(bar, title).height()
        assert length >= needed, f"tab {title!r} is elided: {length} < {needed} px"
        text = bar.fontMetrics().horizontalAdvance(title)
        assert length >= text, f"tab {title!r}: {length} px for {text} px of text"
        assert inside.contains(bar.tabRect(i)), f"tab {title!r} lies outside its tab bar"
    assert window.rect().contains(bar.mapTo(window, inside.bottomRight()))


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
    _assert_readable(window, bar, titles)

    # one click: pressing the Train (then Predict) tab brings that dock to the front
    for key in ("train", "predict"):
        index = titles.index(WIDGETS[key])
        qtbot.mouseClick(bar, Qt.MouseButton.LeftButton, pos=bar.tabRect(index).center())
        qtbot.waitUntil(lambda k=key: not widgets[k].visibleRegion().isEmpty(), timeout=5000)
        assert bar.currentIndex() == index
        assert dock_of(widgets[key]).windowTitle() == WIDGETS[key]


def _menu_action(menu: QMenu, text: str):
    """The action titled ``text`` (napari adds " (napari U-Net)") in ``menu`` or its submenus."""
    for action in menu.actions():
        if action.menu() is not None:
            found = _menu_action(action.menu(), text)
            if found is not None:
                return found
        elif action.text().replace("&", "").split(" (")[0] == text:
            return action
    return None


def _dock_titled(window, title: str) -> QDockWidget | None:
    return next((d for d in window.findChildren(QDockWidget) if d.windowTitle() == title), None)


def test_docks_opened_one_by_one_join_one_vertical_tab_group(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1500, 950)
    opened = ["train", "predict", "annotate"]
    for key in opened:  # as a user does: Plugins > napari U-Net > 4 Train, ...
        action = _menu_action(viewer.window.plugins_menu, WIDGETS[key])
        assert action is not None, f"no Plugins menu entry {WIDGETS[key]!r}"
        action.trigger()
        qtbot.waitUntil(lambda k=key: _dock_titled(window, WIDGETS[k]) is not None, timeout=5000)
    # the public API napari's menu stands for, without tabify
    viewer.window.add_plugin_dock_widget("napari-unet", WIDGETS["export"])
    opened.append("export")
    qtbot.waitUntil(lambda: _dock_titled(window, WIDGETS["export"]) is not None, timeout=5000)
    qtbot.wait(100)
    docks = {k: _dock_titled(window, WIDGETS[k]) for k in opened}
    group = set(window.tabifiedDockWidgets(docks["train"]))
    assert group == {docks[k] for k in opened[1:]}  # one tab group, not a vertical split
    bar = _our_tab_bar(window)
    titles = [bar.tabText(i) for i in range(bar.count())]
    assert titles == [WIDGETS[k] for k in opened]  # in the order they were opened
    assert bar.currentIndex() == titles.index(WIDGETS["export"])  # the last one in front
    _assert_readable(window, bar, titles)
    # a dock opened again from the menu toggles (napari's behaviour), the group stays
    _menu_action(viewer.window.plugins_menu, WIDGETS["train"]).trigger()
    qtbot.waitUntil(lambda: not docks["train"].isVisible(), timeout=5000)
    _menu_action(viewer.window.plugins_menu, WIDGETS["train"]).trigger()
    qtbot.waitUntil(lambda: docks["train"].isVisible(), timeout=5000)
    assert docks["train"] in window.tabifiedDockWidgets(docks["predict"])
