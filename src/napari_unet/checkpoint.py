"""Saving and safely loading trained U-Nets: one ``torch.save`` file of tensors and JSON values.

Loading never executes code from the file (``weights_only``) and checks the configuration, the
tensors' shapes and the metadata before building anything; saving refuses non-finite weights.
"""

from __future__ import annotations

import io
import numbers
import os
import re
import reprlib
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from .model import UNet
from .outputs import replace_atomically

__all__ = [
    "CONFIG_BOUNDS",
    "FORMAT",
    "FORMAT_VERSION",
    "CheckpointError",
    "CheckpointWriteError",
    "load_checkpoint",
    "nonfinite_weight",
    "save_checkpoint",
]

FORMAT = "napari-unet-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A file is not a valid napari-unet checkpoint (or could not be read)."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file does not exist (both a ``CheckpointError`` and a ``FileNotFoundError``)."""


class CheckpointWriteError(CheckpointError, OSError):
    """The checkpoint could not be written (disk full, permissions, ...); the old file is kept."""


#: accepted model configurations, checked before anything is built: (lowest, highest)
CONFIG_BOUNDS: dict[str, tuple[int, int]] = {
    "in_channels": (1, 64),
    "n_classes": (1, 1024),
    "depth": (1, 10),
    "base_channels": (1, 1024),
}
_CONFIG_KEYS = frozenset({*CONFIG_BOUNDS, "padding", "norm", "dropout"})


def _json_like(value: Any, where: str) -> Any:
    """Return ``value`` converted to plain JSON-like Python objects, or raise ``TypeError``."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise TypeError(
                f"{where} is a numpy array of dtype {value.dtype}: only bool, integer and "
                "float arrays can be stored in checkpoint metadata"
            )
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_json_like(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(
                    f"{where} has a key {k!r} of type {type(k).__name__}: metadata dict keys "
                    "must be strings"
                )
            out[k] = _json_like(v, f"{where}[{k!r}]")
        return out
    hint = " (use .tolist() or .item())" if isinstance(value, torch.Tensor) else ""
    raise TypeError(
        f"{where} has type {type(value).__name__}{hint}: checkpoint metadata may only hold "
        "None, bool, int, float, str, lists/tuples, dicts with str keys and numpy numbers/arrays"
    )


def save_checkpoint(path: str | os.PathLike[str], model: UNet, **metadata: Any) -> Path:
    """Save ``model`` and ``metadata`` to ``path`` atomically.

    The file holds a plain dict: ``format``, ``format_version``,
    ``napari_unet_version``, ``model_config`` (:attr:`UNet.config`),
    ``state_dict`` (CPU tensors) and ``metadata`` (JSON-like values).

    The file is first written to a temporary file in the same directory and
    then moved over ``path`` with ``os.replace``, so an interrupted save never
    leaves a truncated checkpoint behind.  Missing parent directories are created.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file (conventionally ``*.pt``).
    model : UNet
        The network; its weights are copied to the CPU.
    **metadata
        JSON-like values (``class_names``, ``class_colors``, ``normalization``,
        ``label_mapping``, ``history``, ``iterations``, ``augmentation``, ...).
        numpy scalars and arrays are converted to Python numbers and lists,
        tuples to lists; anything else raises ``TypeError``.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    if not isinstance(model, UNet):
        raise TypeError(f"model must be a napari_unet UNet, got {type(model).__name__}")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    meta = {key: _json_like(value, f"metadata[{key!r}]") for key, value in metadata.items()}
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "napari_unet_version": __version__,
        "model_config": dict(model.config),
        "state_dict": {
            k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()
        },
        "metadata": meta,
    }
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"cannot save a checkpoint to {path}: it is a directory")
    bad = nonfinite_weight(model)
    if bad is not None:
        raise CheckpointError(
            f"{path}: not saved: weight {bad!r} contains NaN or infinite values (the training "
            "diverged; lower the learning rate); an existing file there is unchanged"
        )
    buffer = io.BytesIO()
    torch.save(payload, buffer)  # in memory first: disk errors then come with an errno
    data = buffer.getbuffer()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointWriteError(f"{path}: could not create its folder: {exc.strerror}") from exc

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    def verify(tmp: Path) -> None:
        if tmp.stat().st_size != len(data):
            raise OSError(f"only {tmp.stat().st_size} of {len(data)} bytes were written")
        torch.load(tmp, map_location="cpu", weights_only=True, mmap=True)

    return replace_atomically(path, write, suffix=".pt", error=CheckpointWriteError, verify=verify)


def nonfinite_weight(model: torch.nn.Module) -> str | None:
    """The name of the first weight or buffer of ``model`` with NaN/inf values, or None."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[UNet, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_checkpoint`, without executing code.

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint file.
    map_location : str or torch.device, default "cpu"
        Device for the weights and the returned model.

    Returns
    -------
    model : UNet
        The network in eval mode, on ``map_location``.
    metadata : dict
        The metadata saved with it.

    Raises
    ------
    CheckpointError
        If the file is missing (then also a ``FileNotFoundError``), unreadable,
        not a napari-unet checkpoint, written by a newer format version, tampered
        with (e.g. a pickle that would run code), or its weights do not fit its
        model configuration or contain NaN/infinite values.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    if not isinstance(map_location, (str, torch.device)):
        raise TypeError(
            f"map_location must be a device name or torch.device, got {type(map_location).__name__}"
        )
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError(f"checkpoint file not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a napari-unet checkpoint file")
    payload = _read_payload(path, map_location)
    config = payload.get("model_config")
    state = payload.get("state_dict")
    metadata = payload.get("metadata", {})
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: the checkpoint has no valid 'model_config'")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: the checkpoint has no valid 'state_dict'")
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{path}: the checkpoint 'metadata' is not a dict")
    model = _build_model(path, config, state)
    _check_metadata(path, metadata, model.n_classes)
    model.to(map_location)
    model.eval()
    return model, metadata


def _read_payload(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    """The checkpoint dict of ``path``, loaded without executing code, of a format we read."""
    try:
        with warnings.catch_warnings():
            # foreign pickles trigger a "Detected pickle protocol" warning before failing
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError (bad zip), EOFError, ...
        detail = _load_failure(exc)
        raise CheckpointError(
            f"{path} is not a napari-unet checkpoint or was tampered with: {detail}"
        ) from exc

    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a napari-unet checkpoint (missing 'format': {FORMAT!r}); "
            "was it saved by another program?"
        )
    version = payload.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"{path}: invalid checkpoint format_version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} uses checkpoint format version {version}, newer than this napari-unet "
            f"supports ({FORMAT_VERSION}); please update napari-unet"
        )
    if version < 1:
        raise CheckpointError(f"{path}: invalid checkpoint format_version {version!r}")
    return payload


def _load_failure(exc: BaseException) -> str:
    """One line on why ``torch.load`` refused a file (never torch's advice to load it unsafely)."""
    text = str(exc).strip()
    inner = re.search(r"WeightsUnpickler error:\s*(.*?)(?:\n\n|$)", text, re.S)
    if inner is not None:
        detail = inner.group(1).strip()
        found = re.match(r"Unsupported global: GLOBAL (\S+)", detail)
        if found:
            return (
                f"it refers to the Python object {found.group(1)}, which napari-unet never "
                "loads (it could run code)"
            )
        if detail.startswith("Unsupported operand"):
            return "its content is not a torch checkpoint (unreadable pickle data)"
    if "weights_only" in text or "Weights only" in text:
        return (
            "it holds Python objects other than tensors and plain values, which napari-unet "
            "never loads (they could run code)"
        )
    return text.splitlines()[0] if text else type(exc).__name__


def _short(value: Any) -> str:
    return reprlib.repr(value)


def _check_config(path: Path, config: dict[str, Any]) -> None:
    """Bounds of the configuration's sizes (before anything is allocated)."""
    unknown = sorted(str(k) for k in config if k not in _CONFIG_KEYS)
    if unknown:
        raise CheckpointError(
            f"{path}: invalid model configuration: unknown key(s) {_short(unknown)}"
        )
    for key, (low, high) in CONFIG_BOUNDS.items():
        value = config.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise CheckpointError(
                f"{path}: invalid model configuration: {key} must be an integer "
                f"{low}..{high}, got {_short(value)}"
            )


def _check_shapes(path: Path, config: dict[str, Any], state: dict[str, torch.Tensor]) -> None:
    """The tensors of ``state`` against the model of ``config``, built without memory."""
    try:
        with torch.device("meta"):
            skeleton = UNet(**config)
    except (TypeError, ValueError) as exc:
        text = str(exc) if len(str(exc)) <= 200 else str(exc)[:200] + "..."
        raise CheckpointError(
            f"{path}: invalid model configuration {_short(config)}: {text}"
        ) from exc
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    problems = [f"missing {k!r}" for k in expected if k not in state]
    problems += [f"unexpected {_short(k)}" for k in state if k not in expected]
    problems += [
        f"{k!r} has shape {tuple(state[k].shape)}, expected {shape}"
        for k, shape in expected.items()
        if k in state and tuple(state[k].shape) != shape
    ]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise CheckpointError(
            f"{path}: the saved weights do not match the saved model configuration: "
            f"{'; '.join(problems[:3])}{more}"
        )


def _build_model(path: Path, config: dict[str, Any], state: dict[str, torch.Tensor]) -> UNet:
    """The UNet of ``config`` with the weights ``state``, all finite, checked before building."""
    _check_config(path, config)
    _check_shapes(path, config, state)
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path}: weight {name!r} contains NaN or infinite values")
    model = UNet(**config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise CheckpointError(
            f"{path}: the saved weights do not match the saved model configuration: "
            f"{' '.join(line.strip() for line in first[:3])}"
        ) from exc
    return model


# --------------------------------------------------------------------------- metadata


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_normalization(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, Mapping) and all(_is_number(value.get(k)) for k in ("mean", "std")):
        mean, std = float(value["mean"]), float(value["std"])
        if np.isfinite(mean) and np.isfinite(std) and std > 0:
            return None
    return "needs finite numbers 'mean' and 'std' > 0"


def _check_label_mapping(value: Any, n_classes: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        return "must be a {file value: class} dict"
    for key, cls in value.items():
        if not (isinstance(key, str) and key.isdigit() and int(key) <= 2**32 - 1):
            return f"file values must be whole numbers 0..{2**32 - 1}, got {_short(key)}"
        if isinstance(cls, bool) or not isinstance(cls, int) or not 1 <= cls <= n_classes:
            return f"classes must be 1..{n_classes}, got {_short(cls)}"
    if len(set(value.values())) != len(value):
        return "maps two file values to the same class"
    return None


def _check_strings(value: Any, longest: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > CONFIG_BOUNDS["n_classes"][1]:
        return f"must be a list of at most {CONFIG_BOUNDS['n_classes'][1]} strings"
    for item in value:
        if not isinstance(item, str) or not 0 < len(item) <= longest or not item.isprintable():
            return (
                f"entries must be printable strings of 1..{longest} characters, got {_short(item)}"
            )
    return None


def _check_count(value: Any) -> str | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return None
    return "must be a whole number >= 0"


def _check_records(value: Any) -> str | None:
    """A list of flat dicts (one per iteration) of numbers, strings and None."""
    if value is None:
        return None
    flat = (int, float, str, type(None))
    if isinstance(value, list) and all(
        isinstance(entry, dict) and all(isinstance(v, flat) for v in entry.values())
        for entry in value
    ):
        return None
    return "must be a list of {name: number} dicts"


def _check_metadata(path: Path, metadata: dict[str, Any], n_classes: int) -> None:
    """One-line ``CheckpointError`` for a known metadata entry of the wrong kind."""
    from .normalization import check_intensity
    from .objects import check_objects_table

    def intensity(value: Any) -> str | None:
        if value is None:
            return None
        try:
            check_intensity(value)
        except ValueError as exc:
            return str(exc).removeprefix("intensity ")
        return None

    checks = {
        "normalization": _check_normalization,
        "label_mapping": lambda v: _check_label_mapping(v, n_classes),
        "class_names": lambda v: _check_strings(v, 200),
        "class_colors": lambda v: _check_strings(v, 64),
        "iterations": _check_count,
        "history": _check_records,
        "validation_history": _check_records,
        "intensity": intensity,
        "objects": check_objects_table,
    }
    for key, check in checks.items():
        problem = check(metadata.get(key))
        if problem is not None:
            raise CheckpointError(
                f"{path}: invalid metadata {key!r}: {problem}, got {_short(metadata[key])}"
                if "got" not in problem
                else f"{path}: invalid metadata {key!r}: {problem}"
            )
