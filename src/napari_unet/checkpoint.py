"""Saving and safely loading trained U-Nets: one ``torch.save`` file of tensors and JSON values.

Loading uses ``torch.load(..., weights_only=True)``, so it never executes code from the file.
"""

from __future__ import annotations

import numbers
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from .model import UNet

__all__ = ["FORMAT", "FORMAT_VERSION", "CheckpointError", "load_checkpoint", "save_checkpoint"]

FORMAT = "napari-unet-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A file is not a valid napari-unet checkpoint (or could not be read)."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file does not exist (both a ``CheckpointError`` and a ``FileNotFoundError``)."""


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        raise
    return path


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
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
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


def _build_model(path: Path, config: dict[str, Any], state: dict[str, torch.Tensor]) -> UNet:
    """The UNet of ``config`` with the weights ``state``, all finite."""
    try:
        model = UNet(**config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid model configuration {config!r}: {exc}") from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise CheckpointError(
            f"{path}: the saved weights do not match the saved model configuration: "
            f"{' '.join(line.strip() for line in first[:3])}"
        ) from exc
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path}: weight {name!r} contains NaN or infinite values")
    return model
