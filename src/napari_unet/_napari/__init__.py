"""npe2 contributions (reader, writer, sample data).

These thin functions turn napari-unet's Qt-free I/O into napari layer data and
turn its errors into napari notifications, so a bad file never produces a
traceback dialog.
"""
