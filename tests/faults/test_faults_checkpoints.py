"""Crafted checkpoints: refused with one clear line before anything is built, never run or allocated."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from fault_helpers import ENV, one_line_error, tiny_unet

from napari_unet.checkpoint import FORMAT, CheckpointError, load_checkpoint, save_checkpoint
from napari_unet.cli import main


@pytest.fixture
def good(tmp_path):
    path = save_checkpoint(
        tmp_path / "good.pt", tiny_unet(), normalization={"mean": 1.0, "std": 2.0},
        label_mapping={"0": 1, "255": 2}, class_names=["a", "b"], class_colors=["#ff0000", "red"],
    )  # fmt: skip
    return torch.load(path, weights_only=True)


def _crafted(tmp_path, payload, name="crafted.pt"):
    path = tmp_path / name
    torch.save(payload, path)
    return path


def _load_with_little_memory(path) -> str:
    """``load_checkpoint(path)`` in a process limited to 3 GiB of address space: its error line."""
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))\n"
        "from napari_unet.checkpoint import CheckpointError, load_checkpoint\n"
        "try:\n"
        f"    load_checkpoint({str(path)!r})\n"
        "except CheckpointError as exc:\n"
        "    print('REFUSED', exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0 and done.stdout.startswith("REFUSED"), done.stderr[-2000:]
    return done.stdout


def test_huge_config_is_refused_without_allocating(tmp_path, good):
    config = {**good["model_config"], "base_channels": 100_000}
    path = _crafted(tmp_path, {**good, "model_config": config})
    assert "base_channels must be an integer 1..1024" in _load_with_little_memory(path)


def test_config_within_bounds_but_not_the_tensors_is_refused_before_building(tmp_path, good):
    config = {**good["model_config"], "base_channels": 1024, "depth": 8}  # 1e11 parameters
    path = _crafted(tmp_path, {**good, "model_config": config})
    assert "do not match the saved model configuration" in _load_with_little_memory(path)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"model_config": {"depth": 2, "base_channels": 4, "evil": 1}}, "unknown key(s)"),
        ({"model_config": {"depth": True, "base_channels": 4}}, "depth must be an integer"),
        ({"model_config": {"depth": 2, "base_channels": 4, "padding": "x" * 5000}}, "padding"),
        ({"metadata": {"normalization": {"mean": "x", "std": 1}}}, "'normalization': needs"),
        ({"metadata": {"normalization": {"mean": 0.0, "std": 0.0}}}, "'normalization'"),
        ({"metadata": {"label_mapping": {"99999999999": 1}}}, "file values must be whole"),
        ({"metadata": {"label_mapping": {"0": 7}}}, "classes must be 1..2"),
        ({"metadata": {"label_mapping": {"0": 1, "1": 1}}}, "same class"),
        ({"metadata": {"class_names": ["a", 3]}}, "'class_names'"),
        ({"metadata": {"class_names": ["x" * 500]}}, "1..200 characters"),
        ({"metadata": {"class_names": ["a"] * 5000}}, "at most 1024"),
        ({"metadata": {"class_colors": [[1, 2, 3]]}}, "'class_colors'"),
        ({"metadata": {"iterations": "many"}}, "'iterations': must be a whole number"),
        ({"metadata": {"history": {"a": 1}}}, "'history': must be a list"),
        ({"metadata": {"history": [{"loss": [[1.0]]}]}}, "'history': must be a list"),
        ({"metadata": {"intensity": {"dtype": "uint8", "low": 5, "high": 1}}}, "'intensity'"),
    ],
)
def test_bad_config_and_metadata_give_one_line(tmp_path, good, change, needle):
    payload = dict(good)
    for key, value in change.items():
        payload[key] = {**good[key], **value} if key == "metadata" else value
    path = _crafted(tmp_path, payload)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert needle in message and str(path) in message
    assert "\n" not in message and len(message) < 400


def test_deep_nesting_is_refused_or_ignored_and_pickles_never_suggest_unsafe_loads(tmp_path, good):
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    bad, unknown = tmp_path / "deep.pt", tmp_path / "unknown.pt"
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(50_000)  # only to write the files
    try:
        torch.save({**good, "metadata": {"history": [{"loss": deep}]}}, bad)
        torch.save({**good, "metadata": {"x": deep}}, unknown)
    finally:
        sys.setrecursionlimit(limit)
    with pytest.raises(CheckpointError, match="'history': must be a list") as info:
        load_checkpoint(bad)
    assert "\n" not in str(info.value)
    _, meta = load_checkpoint(unknown)  # unknown entries are kept and never used
    assert "x" in meta

    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    evil = _crafted(tmp_path, {"format": FORMAT, "format_version": 1, "x": Evil()}, "evil.pt")
    with pytest.raises(CheckpointError, match="tampered") as info:
        load_checkpoint(evil)
    text = str(info.value)
    assert "weights_only" not in text and "will likely succeed" not in text
    assert "never loads" in text


def test_cli_predict_with_a_crafted_checkpoint_is_one_line(tmp_path, good, data, capsys):
    path = _crafted(tmp_path, {**good, "metadata": {"normalization": {"mean": "x"}}})
    code = main(["predict", "--model", str(path), "--image", str(data["image"]),
                 "--out", str(tmp_path / "p.tif")])  # fmt: skip
    one_line_error(capsys, code, "invalid metadata 'normalization'")
    assert not (tmp_path / "p.tif").exists()
