"""The U-Net of Ronneberger, Fischer & Brox (MICCAI 2015), with optional modern extras.

The defaults are the paper's network; ``padding="same"``, ``norm`` and ``dropout`` are the extras.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Literal

import torch
from torch import nn

from .checks import check_int

__all__ = ["NORMS", "PADDINGS", "PRESETS", "UNet", "center_crop"]

PADDINGS: tuple[str, ...] = ("valid", "same")
NORMS: tuple[str | None, ...] = (None, "batch", "instance", "group")
PRESETS: tuple[str, ...] = ("paper", "small")

_MAX_DEPTH = 10

Size = int | tuple[int, int]


def _group_count(channels: int, max_groups: int = 8) -> int:
    """The largest divisor of ``channels`` that is <= ``max_groups`` (GroupNorm groups)."""
    for groups in range(min(max_groups, channels), 0, -1):
        if channels % groups == 0:
            return groups
    return 1  # pragma: no cover - 1 always divides


def _make_norm(norm: str | None, channels: int) -> nn.Module | None:
    if norm is None:
        return None
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if norm == "group":
        return nn.GroupNorm(_group_count(channels), channels)
    raise ValueError(f"unknown norm {norm!r}")  # pragma: no cover - validated earlier


class _DoubleConv(nn.Sequential):
    """Two 3x3 convolutions, each followed by an optional norm and a ReLU."""

    def __init__(self, in_ch: int, out_ch: int, pad: int, norm: str | None) -> None:
        layers: list[nn.Module] = []
        for c_in in (in_ch, out_ch):
            layers.append(nn.Conv2d(c_in, out_ch, kernel_size=3, padding=pad, bias=norm is None))
            norm_layer = _make_norm(norm, out_ch)
            if norm_layer is not None:
                layers.append(norm_layer)
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


def center_crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Centre-crop the last two dimensions of ``x`` to ``(height, width)`` (a view)."""
    h, w = x.shape[-2], x.shape[-1]
    if h == height and w == width:
        return x
    top = (h - height) // 2
    left = (w - width) // 2
    return x[..., top : top + height, left : left + width]


class UNet(nn.Module):
    """U-Net for semantic segmentation (Ronneberger et al. 2015).

    With the defaults this is the network of the paper exactly: five levels,
    two unpadded 3x3 convolutions + ReLU per level, 2x2 max-pooling, channels
    doubling from 64 to 1024, 2x2 up-convolutions halving them, centre-cropped
    skip connections and a final 1x1 convolution (a 572x572 input tile gives a
    388x388 output tile).

    Parameters
    ----------
    in_channels : int, default 1
        Number of image channels.
    n_classes : int, default 2
        Number of output channels (logits); output channel ``k - 1`` is class ``k``.
    depth : int, default 5
        Number of resolution levels (the paper uses 5, i.e. 4 poolings); 1 to 10.
    base_channels : int, default 64
        Channels of the first level; they double at every level.
    padding : {"valid", "same"}, default "valid"
        ``"valid"``: unpadded convolutions exactly as in the paper; the output is
        smaller than the input by :attr:`context` pixels and only some input sizes
        are possible (see :meth:`output_size`, :meth:`valid_input_size`).
        ``"same"``: 3x3 convolutions zero-padded by one pixel (PyTorch's standard
        zero padding); output size = input size, and the input size must be a
        multiple of :attr:`size_multiple`.
    norm : {None, "batch", "instance", "group"}, default None
        Normalisation layer after each 3x3 convolution (before the ReLU).
        ``"group"`` uses ``GroupNorm`` with the largest divisor of the channel
        count that is <= 8 groups; ``"instance"`` uses an affine ``InstanceNorm2d``.
        When a norm is used the convolutions have no bias (it would be cancelled).
        Note that ``"instance"`` and ``"group"`` normalise with statistics of the
        current tile, so tiled predictions depend slightly on the tile size;
        ``"batch"`` uses running statistics in eval mode and does not.
    dropout : float, default 0.0
        If > 0, a ``Dropout2d`` with this probability is applied at the end of the
        contracting path (after the bottom level's convolutions), as in the paper.

    Notes
    -----
    Weights are initialised as in the paper: Gaussian with standard deviation
    ``sqrt(2 / N)``, ``N`` the number of incoming connections of a unit (He
    initialisation); the final 1x1 convolution uses ``sqrt(1 / N)`` (it has no
    ReLU after it), biases are zero.

    ``forward`` accepts ``channels_last`` tensors; it validates the input shape
    and raises ``ValueError`` for an impossible spatial size.

    Examples
    --------
    >>> net = UNet()
    >>> net.output_size(572)
    388
    >>> net.n_parameters()
    31030658
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = 2,
        depth: int = 5,
        base_channels: int = 64,
        padding: Literal["valid", "same"] = "valid",
        norm: Literal["batch", "instance", "group"] | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, 1)
        self.n_classes = check_int("n_classes", n_classes, 1)
        self.depth = check_int("depth", depth, 1, _MAX_DEPTH)
        self.base_channels = check_int("base_channels", base_channels, 1)
        if not isinstance(padding, str) or padding.lower() not in PADDINGS:
            raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
        self.padding: str = padding.lower()
        if isinstance(norm, str) and norm.lower() == "none":
            norm = None
        if norm is not None and (not isinstance(norm, str) or norm.lower() not in NORMS):
            raise ValueError(f"norm must be None, 'batch', 'instance' or 'group', got {norm!r}")
        self.norm: str | None = None if norm is None else norm.lower()
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real):
            raise TypeError(f"dropout must be a number in [0, 1), got {dropout!r}")
        if not (0.0 <= float(dropout) < 1.0):
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.dropout = float(dropout)

        pad = 1 if self.padding == "same" else 0
        channels = [self.base_channels * 2**level for level in range(self.depth)]

        self.encoders = nn.ModuleList()
        c_in = self.in_channels
        for c in channels[:-1]:
            self.encoders.append(_DoubleConv(c_in, c, pad, self.norm))
            c_in = c
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.bottom = _DoubleConv(c_in, channels[-1], pad, self.norm)
        self.drop = nn.Dropout2d(self.dropout) if self.dropout > 0 else nn.Identity()

        self.upsamplers = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in range(self.depth - 2, -1, -1):
            c_low, c_skip = channels[level + 1], channels[level]
            self.upsamplers.append(nn.ConvTranspose2d(c_low, c_skip, kernel_size=2, stride=2))
            self.decoders.append(_DoubleConv(2 * c_skip, c_skip, pad, self.norm))
        self.head = nn.Conv2d(channels[0], self.n_classes, kernel_size=1)
        self._init_weights()

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.ConvTranspose2d):
                # stride == kernel: every output unit sees exactly one tap per input channel
                std = math.sqrt(2.0 / module.in_channels)
                nn.init.normal_(module.weight, 0.0, std)
            elif isinstance(module, nn.Conv2d):
                fan_in = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
                gain = 1.0 if module is self.head else 2.0
                nn.init.normal_(module.weight, 0.0, math.sqrt(gain / fan_in))
            else:
                continue
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    # --------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits ``(N, n_classes, h', w')`` for an input ``(N, in_channels, h, w)``.

        ``(h', w') == self.output_size((h, w))``.
        """
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"UNet expects a tensor of shape (N, {self.in_channels}, H, W), "
                f"got {tuple(x.shape)}"
            )
        if not torch.jit.is_scripting() and not torch.compiler.is_compiling():
            self.output_size((int(x.shape[-2]), int(x.shape[-1])))  # raises if impossible
        skips: list[torch.Tensor] = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = self.pool(x)
        x = self.drop(self.bottom(x))
        for upsample, decoder, skip in zip(self.upsamplers, self.decoders, reversed(skips)):
            x = upsample(x)
            skip = center_crop(skip, x.shape[-2], x.shape[-1])
            x = decoder(torch.cat([skip, x], dim=1))
        return self.head(x)

    # ---------------------------------------------------------------- config
    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments: ``UNet(**net.config)`` builds the same architecture."""
        return {
            "in_channels": self.in_channels,
            "n_classes": self.n_classes,
            "depth": self.depth,
            "base_channels": self.base_channels,
            "padding": self.padding,
            "norm": self.norm,
            "dropout": self.dropout,
        }

    def n_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters (all, or only those with ``requires_grad``)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    @classmethod
    def preset(cls, name: str, n_classes: int = 2, in_channels: int = 1) -> UNet:
        """Build a named architecture.

        Parameters
        ----------
        name : {"paper", "small"}
            ``"paper"``: the network of Ronneberger et al. (the defaults, 31M
            parameters, valid padding).  ``"small"``: a fast preset that trains
            on a CPU -- ``padding="same"``, ``depth=4``, ``base_channels=16``,
            ``norm="batch"`` (about 0.5M parameters).  Batch norm uses running
            statistics at inference, so tiled predictions do not depend on the
            tile size.
        n_classes, in_channels : int
            As in :class:`UNet`.

        Returns
        -------
        UNet
        """
        if not isinstance(name, str) or name.lower() not in PRESETS:
            raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
        if name.lower() == "paper":
            return cls(in_channels=in_channels, n_classes=n_classes)
        return cls(
            in_channels=in_channels,
            n_classes=n_classes,
            depth=4,
            base_channels=16,
            padding="same",
            norm="batch",
        )

    # ------------------------------------------------------------ geometry
    @property
    def size_multiple(self) -> int:
        """``2**(depth - 1)``: the total down-sampling factor of the network."""
        return 2 ** (self.depth - 1)

    @property
    def _valid_context(self) -> int:
        # each 3x3 valid conv at level l removes 2 * 2**l input pixels; two per block;
        # down path levels 0..depth-1, up path levels depth-2..0
        m = self.size_multiple
        return 4 * (2 * m - 1) + 4 * (m - 1)

    @property
    def receptive_field(self) -> int:
        """Side length of the receptive field of one output pixel (same for both paddings)."""
        return self._valid_context + 1

    @property
    def context(self) -> int:
        """Pixels of context the network needs: the tile overlap to use when tiling.

        ``"valid"``: input size minus output size (184 for the paper's net); a tile
        of size ``s`` yields the central ``s - context`` pixels, so input tiles must
        overlap by exactly ``context``.

        ``"same"``: a recommended overlap between adjacent input tiles, computed as
        the receptive-field radius ``(receptive_field - 1) / 2`` rounded up to a
        multiple of :attr:`size_multiple` (so it is even); each tile then discards
        ``context / 2`` pixels along a shared edge.  E.g. 96 at depth 5, 48 for the
        "small" preset (depth 4).  This is not bit-exact (the theoretical exact
        overlap is the full valid context) but the effective receptive field of a
        trained U-Net is much smaller than its theoretical one, so seams vanish.
        """
        if self.padding == "valid":
            return self._valid_context
        radius = self._valid_context // 2
        m = self.size_multiple
        return -(-radius // m) * m

    # valid padding: an input of size m*t + 8m - 4 gives a bottom map of t pixels
    # (after its convs) and an output of m*t - 4m + 4 pixels.
    def _t_min(self) -> int:
        if self.depth == 1:
            return 1
        if self.depth == 2:
            return 3
        return 4

    def _valid_in(self, t: int) -> int:
        m = self.size_multiple
        return m * t + 8 * m - 4

    def _output_1d(self, n: int, what: str) -> int:
        m = self.size_multiple
        if self.padding == "same":
            if n >= m and n % m == 0:
                return n
            lower = max(m, (n // m) * m)
            upper = max(m, -(-n // m) * m)
            raise ValueError(self._bad_size_message(n, what, lower, upper))
        offset = n - self._valid_in(0)
        if offset % m == 0 and offset // m >= self._t_min():
            t = offset // m
            return m * t - 4 * m + 4
        t_min = self._t_min()
        if n < self._valid_in(t_min):
            lower = upper = self._valid_in(t_min)
        else:
            lower = self._valid_in(offset // m)
            upper = self._valid_in(-(-offset // m))
        raise ValueError(self._bad_size_message(n, what, lower, upper))

    def _bad_size_message(self, n: int, what: str, lower: int, upper: int) -> str:
        nearest = f"{lower}" if lower == upper else f"{lower} or {upper}"
        rule = (
            f"a multiple of {self.size_multiple}"
            if self.padding == "same"
            else "such that every level's feature map is even before pooling"
        )
        return (
            f"input {what}{n} is not possible for this U-Net (padding={self.padding!r}, "
            f"depth={self.depth}): it must be {rule}; the nearest valid sizes are {nearest}"
        )

    @staticmethod
    def _parse_size(size: Any, arg: str) -> tuple[list[int], bool]:
        if isinstance(size, (tuple, list)):
            if len(size) != 2:
                raise ValueError(f"{arg} must be an int or a (height, width) pair, got {size!r}")
            return [check_int(arg, s, 1) for s in size], True
        return [check_int(arg, size, 1)], False

    def output_size(self, size: Size) -> Size:
        """Output spatial size for an input of spatial size ``size``.

        Parameters
        ----------
        size : int or (int, int)
            Input side length, or ``(height, width)``.

        Returns
        -------
        int or tuple of int
            Same kind as ``size``.

        Raises
        ------
        ValueError
            If the size is impossible for this network; the message names the
            nearest valid sizes (see :meth:`valid_input_size`).
        """
        sizes, is_pair = self._parse_size(size, "size")
        if not is_pair:
            return self._output_1d(sizes[0], "size ")
        return (
            self._output_1d(sizes[0], "height "),
            self._output_1d(sizes[1], "width "),
        )

    def valid_input_size(self, min_size: Size) -> Size:
        """Smallest valid input size that is >= ``min_size`` (per dimension).

        Parameters
        ----------
        min_size : int or (int, int)

        Returns
        -------
        int or tuple of int
            Same kind as ``min_size``.
        """
        sizes, is_pair = self._parse_size(min_size, "min_size")
        m = self.size_multiple
        out = []
        for n in sizes:
            if self.padding == "same":
                out.append(max(m, -(-n // m) * m))
            else:
                t = max(self._t_min(), -(-(n - self._valid_in(0)) // m))
                out.append(self._valid_in(t))
        return tuple(out) if is_pair else out[0]

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config.items())
