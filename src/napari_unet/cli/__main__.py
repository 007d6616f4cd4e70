"""``python -m napari_unet.cli``: the ``napari-unet`` command.

The same entry point as the console script, for environments without it.
"""

import sys

from . import main

sys.exit(main())
