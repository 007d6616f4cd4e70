"""Sub-panels of the napari-unet docks (run row, loss plot, model source, class and slice tables).

A panel is a plain Qt widget fed by its dock; it never imports a dock module.
"""
