"""What a tiled prediction reports besides its result: cancellation and warnings."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["NonFiniteWarning", "PredictionCancelled", "ProgressCallback", "TilingWarning"]

ProgressCallback = Callable[[int, int], "bool | None"]


class PredictionCancelled(Exception):
    """Raised by ``predict_tiled`` when the ``progress`` callback returns ``False``.

    Attributes
    ----------
    done_slices : int
        Number of leading Z-slices that were completely predicted and written
        to ``out`` (slices ``0 .. done_slices - 1``).  Later slices were not
        written (``out`` still holds what it held before there), except the
        finished blocks of a slice larger than one block that was in progress.
    total_slices : int
        Number of slices of the image (1 for a 2-D image).
    """

    def __init__(self, done_slices: int, total_slices: int) -> None:
        self.done_slices = int(done_slices)
        self.total_slices = int(total_slices)
        super().__init__(
            f"prediction cancelled after {self.done_slices} of {self.total_slices} slice(s)"
        )


class TilingWarning(UserWarning):
    """Emitted when the tiling had to change on the fly (e.g. after a CUDA OOM)."""


class NonFiniteWarning(UserWarning):
    """The image had NaN/inf pixels: they were predicted as the mean intensity.

    ``count`` such pixels of ``total``, on the slices ``slices`` (``[0]`` for a 2-D image).
    """

    def __init__(self, count: int, total: int, slices: list[int]) -> None:
        self.count, self.total, self.slices = int(count), int(total), list(slices)
        where = "" if len(slices) <= 1 else f" on {len(slices)} slices"
        super().__init__(
            f"the image has {self.count:,} NaN/inf pixel(s) of {self.total:,}{where}: they "
            "were predicted as the mean intensity"
        )
