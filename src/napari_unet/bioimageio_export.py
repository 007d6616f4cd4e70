"""Writing a trained U-Net as a bioimage.io model package (spec 0.5), and reading one back.

The package (a zip built with :mod:`bioimageio.spec`'s model description classes) holds
``pytorch_state_dict`` weights with the architecture's source (``napari_unet.model.UNet``
and the argument checks it uses, as one self-contained file, built with the checkpoint's
configuration as keyword arguments), TorchScript weights of the same net, a test input cut
from the user's stack with the output our own code computes for it, a cover image, a README,
the normalisation and the class names, and the citation of Ronneberger et al. 2015. Any
consumer of bioimage.io models (bioimageio.core, ilastik, deepImageJ, ...) can run it
without napari-unet; :func:`load_bioimageio_model` reads it back into a :class:`UNet`.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from . import bioimageio_samples as samples
from .bioimageio_architecture import architecture_source
from .classes import reconcile_classes
from .model import UNet

__all__ = [
    "CITATION",
    "PackageInfo",
    "bioimageio_missing",
    "export_bioimageio",
    "load_bioimageio_model",
]

#: the paper every package cites
CITATION = {
    "text": (
        "Ronneberger, O., Fischer, P., Brox, T. U-Net: Convolutional Networks for Biomedical "
        "Image Segmentation. MICCAI 2015, LNCS 9351, 234-241."
    ),
    "doi": "10.1007/978-3-319-24574-4_28",
}
_TAGS = ("unet", "segmentation", "semantic-segmentation", "electron-microscopy", "2d", "pytorch")


@dataclass
class PackageInfo:
    """The optional metadata of a package; anything left empty gets a default."""

    name: str = ""
    description: str = ""
    authors: Sequence[str] = ()
    license: str = "CC-BY-4.0"
    tags: Sequence[str] = field(default_factory=lambda: list(_TAGS))
    #: the slice of the stack the test input is cut from (default: the middle one)
    z: int | None = None


def bioimageio_missing() -> str | None:
    """Why packages cannot be written here (bioimageio.spec not installed), or None."""
    try:
        found = importlib.util.find_spec("bioimageio.spec") is not None
    except ModuleNotFoundError:  # no "bioimageio" namespace at all
        found = False
    if found:
        return None
    return (
        "bioimage.io export needs bioimageio.spec: pip install 'napari-unet[bioimageio]' "
        "(or pip install bioimageio.spec bioimageio.core)"
    )


# --------------------------------------------------------------------------- description


def _name(info: PackageInfo, class_names: Sequence[str]) -> str:
    """A valid bioimage.io name (letters, digits, ``_+- ()``, 5..64 characters)."""
    import string

    allowed = set(string.ascii_letters + string.digits + "_+- ()")
    text = info.name.strip() or f"napari-unet U-Net ({', '.join(class_names)})"
    text = "".join(c if c in allowed else " " for c in text)
    text = " ".join(text.split())[:64].strip()
    return text if len(text) >= 5 else f"napari-unet {text}".strip()


def _channel_ids(names: Sequence[str]) -> list[str]:
    """Class names as bioimage.io channel names (unique, no spaces)."""
    out: list[str] = []
    for k, name in enumerate(names, start=1):
        ident = "_".join(str(name).split()) or f"class_{k}"
        out.append(ident if ident not in out else f"{ident}_{k}")
    return out


def _size_rules(model: UNet) -> tuple[int, int, int, int]:
    """(min input side, step, output offset, halo) of the spatial axes.

    ``valid``: the net already crops ``context`` pixels (offset ``-context``, no halo);
    ``same``: output = input, and ``context / 2`` pixels at each border are the halo a
    tiling consumer should crop (the overlap :mod:`napari_unet.tiling` uses).
    """
    step = model.size_multiple
    if model.padding == "valid":
        return model.valid_input_size(1), step, -model.context, 0
    halo = model.context // 2
    return model.valid_input_size(2 * halo + step), step, 0, halo


def _tensors(
    model: UNet, crop: np.ndarray, stats: Mapping[str, float] | None, channels: list[str],
    files: Mapping[str, Path],
) -> tuple[Any, Any]:  # fmt: skip
    """The input and output tensor descriptions."""
    from bioimageio.spec.model import v0_5 as bio

    minimum, step, offset, halo = _size_rules(model)
    raw, probs = bio.TensorId("raw"), bio.TensorId("probabilities")
    if stats is None:
        norm = bio.ZeroMeanUnitVarianceDescr(
            kwargs=bio.ZeroMeanUnitVarianceKwargs(eps=samples.ZMUV_EPS)
        )
    else:
        norm = bio.FixedZeroMeanUnitVarianceDescr(
            kwargs=bio.FixedZeroMeanUnitVarianceKwargs(
                mean=float(stats["mean"]), std=float(stats["std"])
            )
        )
    in_axes: list[Any] = [bio.BatchAxis(), bio.ChannelAxis(channel_names=["raw"])]
    out_axes: list[Any] = [bio.BatchAxis(), bio.ChannelAxis(channel_names=channels)]
    for a in ("y", "x"):
        axis = bio.AxisId(a)
        in_axes.append(
            bio.SpaceInputAxis(
                id=axis, size=bio.ParameterizedSize(min=minimum, step=step), concatenable=halo > 0
            )
        )
        ref = bio.SizeReference(tensor_id=raw, axis_id=axis, offset=offset)
        if halo:
            note = f"crop {halo} pixels at both ends when tiling"
            out_axes.append(
                bio.SpaceOutputAxisWithHalo(id=axis, size=ref, halo=halo, description=note)
            )
        else:
            note = f"centred: {-offset // 2} input pixels cut at both ends" if offset else ""
            out_axes.append(bio.SpaceOutputAxis(id=axis, size=ref, description=note))
    cropped = "" if offset == 0 else f"; {-offset // 2} pixels smaller than the input at each side"
    inp = bio.InputTensorDescr(
        id=raw,
        description="one 2D EM slice, grey values as in the training stack",
        axes=in_axes,
        test_tensor=bio.FileDescr(source=files["test_input"]),
        sample_tensor=bio.FileDescr(source=files["sample_input"]),
        data=bio.IntervalOrRatioDataDescr(type="float32"),
        preprocessing=[
            bio.EnsureDtypeDescr(kwargs=bio.EnsureDtypeKwargs(dtype="float32")),
            norm,
        ],
    )
    out = bio.OutputTensorDescr(
        id=probs,
        description=f"softmax probability of each class{cropped}",
        axes=out_axes,
        test_tensor=bio.FileDescr(source=files["test_output"]),
        sample_tensor=bio.FileDescr(source=files["sample_output"]),
        data=bio.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
        postprocessing=[bio.SoftmaxDescr(kwargs=bio.SoftmaxKwargs(axis=bio.AxisId("channel")))],
    )
    return inp, out


def _weights(model: UNet, files: Mapping[str, Path]) -> Any:
    from bioimageio.spec.model import v0_5 as bio

    version = bio.Version(torch.__version__.split("+")[0])
    arch = bio.ArchitectureFromFileDescr(
        source=files["architecture"], callable=bio.Identifier("UNet"), kwargs=dict(model.config)
    )
    return bio.WeightsDescr(
        pytorch_state_dict=bio.PytorchStateDictWeightsDescr(
            source=files["state_dict"], architecture=arch, pytorch_version=version
        ),
        torchscript=bio.TorchscriptWeightsDescr(
            source=files["torchscript"],
            pytorch_version=version,
            parent="pytorch_state_dict",
            comment="torch.jit.trace of the pytorch_state_dict net",
        ),
    )


def _readme(name: str, text: str, facts: Mapping[str, Any]) -> str:
    """The package's README.md."""
    norm = facts["normalization"]
    norm_text = (
        "each input is normalised with its own mean and standard deviation"
        if norm is None
        else f"`(x - {norm['mean']:.6g}) / {norm['std']:.6g}` (the training stack's statistics)"
    )
    classes = "\n".join(
        f"| {k} | {n} | `{c}` |"
        for k, (n, c) in enumerate(zip(facts["class_names"], facts["class_colors"]), 1)
    )
    return f"""# {name}

{text}

Exported by napari-unet {__version__}.

## Model

U-Net (Ronneberger et al. 2015), `{json.dumps(facts["model_config"])}`
({facts["parameters"]:,} parameters), trained for {facts["iterations"]} iterations.
Input: one 2D slice `(batch, channel, y, x)`, side `{facts["min_side"]} + n * {facts["step"]}`.
Output: the softmax probability of each class, `{facts["size_note"]}`.

Normalisation: {norm_text}. napari-unet itself also maps stacks whose intensity range
differs from the training stack's (another dtype, a rescaled copy) onto it; a bioimage.io
consumer applies the fixed statistics only, so give it data like the training stack's.

| class (label value) | name | colour |
|---|---|---|
{classes}

The label value of a pixel is `argmax(probabilities) + 1`.

## Test data

The test input is a crop of {facts["test_source"]}; the test output is what
napari-unet computes for it.

## Validation

Evaluate it on slices labelled by hand that were not used for training, e.g. with
`napari-unet evaluate` (pixel error, Rand and VI, IoU/Dice per class).

## Citation

{CITATION["text"]} doi:{CITATION["doi"]}
"""


def _napari_unet_config(model: UNet, metadata: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("class_names", "class_colors", "normalization", "intensity", "label_mapping",
            "iterations", "patch_size")  # fmt: skip
    out = {k: metadata[k] for k in keys if metadata.get(k) is not None}
    return {"version": __version__, "model_config": dict(model.config), **out}


# --------------------------------------------------------------------------- export


def _torchscript(model: UNet, example: torch.Tensor, path: Path) -> None:
    """Trace ``model`` and save it; the trace must match the net at another input size too."""
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # trace's deprecation and "might be incorrect" notes
        traced = torch.jit.trace(model, example, check_trace=False)
        side = example.shape[-1] + model.size_multiple
        other = torch.linspace(-1, 1, side * side).reshape(1, 1, side, side)
        other = other.repeat(1, model.in_channels, 1, 1)
        if not torch.allclose(traced(other), model(other), atol=1e-5, rtol=1e-4):
            raise RuntimeError("the TorchScript trace of the net does not generalise across sizes")
    traced.save(str(path))


def _write_files(
    folder: Path, model: UNet, crop: np.ndarray, net_input: np.ndarray, probs: np.ndarray,
    colors: Sequence[str], readme: str,
) -> dict[str, Path]:  # fmt: skip
    import imageio.v3 as iio
    import tifffile

    files = {
        "architecture": folder / "unet_architecture.py",
        "state_dict": folder / "weights.pt",
        "torchscript": folder / "weights_torchscript.pt",
        "test_input": folder / "test_input.npy",
        "test_output": folder / "test_output.npy",
        "sample_input": folder / "sample_input.tif",
        "sample_output": folder / "sample_output.tif",
        "cover": folder / "cover.png",
        "readme": folder / "README.md",
    }
    files["architecture"].write_text(architecture_source(), "utf-8")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, files["state_dict"])
    _torchscript(model, torch.from_numpy(net_input), files["torchscript"])
    np.save(files["test_input"], crop)
    np.save(files["test_output"], probs.astype(np.float32))
    tifffile.imwrite(files["sample_input"], crop[0, 0])
    tifffile.imwrite(files["sample_output"], probs[0].astype(np.float32))
    iio.imwrite(files["cover"], samples.cover_image(crop, probs, colors))
    files["readme"].write_text(readme, "utf-8")
    return files


def _describe(
    model: UNet, metadata: Mapping[str, Any], info: PackageInfo, crop: np.ndarray,
    stats: Mapping[str, float] | None, files: Mapping[str, Path], text: str, name: str,
) -> Any:  # fmt: skip

    from pydantic import ValidationError

    names, _ = reconcile_classes(model.n_classes, metadata.get("class_names"), None)
    authors = [a.strip().replace("/", "-") for a in info.authors if a.strip()]
    try:
        return _model_descr(model, metadata, info, crop, stats, files, text, name, names, authors)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "the description"
        raise ValueError(f"not a valid bioimage.io model: {where}: {first['msg']}") from None


def _license(text: str) -> Any:
    from bioimageio.spec.model import v0_5 as bio
    from pydantic import ValidationError

    try:
        return bio.LicenseId(text.strip())
    except ValidationError:
        raise ValueError(
            f"unknown licence {text!r}: use an SPDX id such as CC-BY-4.0, CC0-1.0, MIT or "
            "BSD-3-Clause"
        ) from None


def _model_descr(
    model: UNet, metadata: Mapping[str, Any], info: PackageInfo, crop: np.ndarray,
    stats: Mapping[str, float] | None, files: Mapping[str, Path], text: str, name: str,
    names: Sequence[str], authors: Sequence[str],
) -> Any:  # fmt: skip
    from bioimageio.spec.model import v0_5 as bio

    inp, out = _tensors(model, crop, stats, _channel_ids(names), files)
    return bio.ModelDescr(
        name=name,
        description=text,
        authors=[bio.Author(name=a) for a in authors or ["napari-unet user"]],
        cite=[bio.CiteEntry(text=CITATION["text"], doi=bio.Doi(CITATION["doi"]))],
        license=_license(info.license),
        tags=list(info.tags),
        documentation=bio.FileDescr(source=files["readme"]),
        covers=[bio.FileDescr(source=files["cover"])],
        inputs=[inp],
        outputs=[out],
        weights=_weights(model, files),
        config=bio.Config(napari_unet=_napari_unet_config(model, metadata)),  # type: ignore[call-arg]
    )


def export_bioimageio(
    path: str | Path,
    model: UNet,
    metadata: Mapping[str, Any] | None = None,
    image: Any = None,
    info: PackageInfo | None = None,
) -> Path:
    """Write ``model`` as a bioimage.io model package (a ``.zip``) at ``path``, atomically.

    Parameters
    ----------
    path : str or Path
        The package file to write (conventionally ``*.zip``).
    model : UNet
        The trained net (its weights are copied; it is not changed).
    metadata : dict, optional
        The checkpoint metadata (``class_names``, ``class_colors``, ``normalization``,
        ``iterations``, ...); anything missing gets a default. Without ``normalization``
        each input is normalised with its own statistics.
    image : array, optional
        ``(Z, H, W)`` or ``(H, W)`` stack (numpy, dask, zarr) the test input is cut from:
        a centre crop of slice ``info.z`` (default the middle one); default a synthetic slice.
    info : PackageInfo, optional
        Name, description, authors, licence, tags.

    Returns
    -------
    Path
        ``path``.
    """
    from bioimageio.spec import save_bioimageio_package

    from .outputs import replace_atomically

    if not isinstance(model, UNet):
        raise TypeError(f"model must be a napari_unet UNet, got {type(model).__name__}")
    if model.in_channels != 1:
        raise ValueError(
            f"only single-channel nets can be exported, this one has {model.in_channels}"
        )
    metadata = dict(metadata or {})
    info = info or PackageInfo()
    _license(info.license)  # before any work
    names, colors = reconcile_classes(
        model.n_classes, metadata.get("class_names"), metadata.get("class_colors")
    )
    stats = metadata.get("normalization")
    # a CPU copy in eval mode: the caller's net (maybe training or predicting) is not touched
    model = copy.deepcopy(model).cpu().eval()
    crop, source = samples.test_input(model, image, info.z)
    net_input = samples.net_input(crop, stats)
    probs = samples.probabilities(model, net_input)
    name = _name(info, names)
    text = info.description.strip() or (
        f"U-Net (Ronneberger et al. 2015) trained with napari-unet to segment 2D EM slices "
        f"into {', '.join(names)}."
    )
    facts = _facts(model, metadata, stats, names, colors, source)
    with tempfile.TemporaryDirectory(prefix="napari-unet-bioimageio-") as tmp:
        files = _write_files(
            Path(tmp), model, crop, net_input, probs, colors, _readme(name, text, facts)
        )
        descr = _describe(model, metadata, info, crop, stats, files, text, name)
        return replace_atomically(
            path, lambda t: save_bioimageio_package(descr, output_path=t), suffix=".zip"
        )


def _facts(
    model: UNet, metadata: Mapping[str, Any], stats: Mapping[str, float] | None,
    names: Sequence[str], colors: Sequence[str], source: str,
) -> dict[str, Any]:  # fmt: skip
    """What the README states about the net."""
    minimum, step, offset, halo = _size_rules(model)
    size_note = (
        f"output side = input side - {-offset}"
        if offset
        else f"same size as the input; crop {halo} pixels at each side when tiling"
    )
    return {
        "model_config": model.config, "parameters": model.n_parameters(),
        "iterations": metadata.get("iterations", "an unknown number of"),
        "normalization": stats, "class_names": names, "class_colors": colors,
        "min_side": minimum, "step": step, "test_source": source, "size_note": size_note,
    }  # fmt: skip


def load_bioimageio_model(path: str | Path) -> tuple[UNet, dict[str, Any]]:
    """The :class:`UNet` of a package written by :func:`export_bioimageio` (its
    ``pytorch_state_dict`` weights, loaded with ``weights_only=True``) and its
    ``config.napari_unet`` metadata (class names, normalisation, ...)."""
    from bioimageio.spec import load_model_description
    from bioimageio.spec.model import v0_5 as bio

    descr = load_model_description(path, perform_io_checks=False)
    if not isinstance(descr, bio.ModelDescr):
        raise ValueError(f"{path} is not a bioimage.io model of format 0.5")
    entry = descr.weights.pytorch_state_dict
    extra = dict(descr.config.model_extra or {}).get("napari_unet")
    if entry is None or not isinstance(extra, dict):
        raise ValueError(f"{path} was not exported by napari-unet (no napari_unet config)")
    model = UNet(**dict(entry.architecture.kwargs))
    reader = entry.get_reader()
    import io

    state = torch.load(io.BytesIO(reader.read()), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval(), {k: v for k, v in extra.items() if k not in ("version", "model_config")}
