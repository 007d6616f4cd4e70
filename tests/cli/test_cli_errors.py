"""Bad arguments and bad files: one line on stderr, exit status 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_unet.cli import main
from napari_unet.io import write_labels_tiff


def _one_line_error(capsys, code: int, *needles: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("napari-unet: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def files(cli_data: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    small = tmp_path / "small.tif"
    write_labels_tiff(small, np.ones((2, 40, 40), np.uint8))
    text = tmp_path / "notes.tif"
    text.write_text("this is not a TIFF")
    folder = tmp_path / "a_folder"
    folder.mkdir()
    return {**cli_data, "small": small, "text": text, "folder": folder, "tmp": tmp_path}


def _train(f: dict[str, Path], *extra: str, labels: str = "labels") -> list[str]:
    return ["train", "--image", str(f["image"]), "--labels", str(f[labels]),
            "--iterations", "1", "--device", "cpu", "--out", str(f["tmp"] / "m.pt"), *extra]  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--slices", "a"], "cannot read 'a'"),
        (["--slices", "3-1"], "goes backwards"),
        (["--slices", "0,,1"], "empty item"),
        (["--slices", "0,7"], "out of range"),
        (["--slices", "0-4"], "out of range"),
        (["--val-slices", "9"], "out of range"),
        (["--slices", "0,1", "--val-slices", "1"], "both --slices and --val-slices"),
        (["--device", "tpu"], "unknown device"),
        (["--model", "nosuch.pt"], "not a preset"),
        (["--class-names", "a,b,c"], "3 name(s)"),
    ],
)
def test_train_bad_arguments(files, capsys, extra: list[str], needle: str) -> None:
    _one_line_error(capsys, main(_train(files, *extra)), needle)


def test_train_bad_files(files, capsys) -> None:
    f = files
    cases = [
        (["train", "--image", str(f["tmp"] / "missing.tif"), "--labels", str(f["labels"])], "no such file"),
        (["train", "--image", str(f["text"]), "--labels", str(f["labels"])], "not a TIFF"),
        (["train", "--image", str(f["image"]), "--labels", str(f["small"])], "does not match"),
        (["train", "--image", str(f["folder"]), "--labels", str(f["labels"])], "folder"),
    ]  # fmt: skip
    for argv, needle in cases:
        _one_line_error(capsys, main([*argv, "--iterations", "1"]), needle)


def test_train_unwritable_output_fails_before_training(files, capsys) -> None:
    base = _train(files)[:-2]
    _one_line_error(
        capsys, main([*base, "--out", str(files["tmp"] / "nope" / "m.pt")]), "does not exist"
    )
    _one_line_error(capsys, main([*base, "--out", str(files["folder"])]), "is a folder")
    _one_line_error(capsys, main([*base, "--out", str(files["text"] / "m.pt")]), "is not a folder")


def test_train_sparse_255_labels_suggest_dense(files, capsys) -> None:
    _one_line_error(capsys, main(_train(files, labels="labels255")), "--dense")


def test_train_dense_needs_two_values(files, capsys, tmp_path: Path) -> None:
    ones = tmp_path / "ones.tif"
    write_labels_tiff(ones, np.full((3, 96, 96), 7, np.uint8))
    argv = ["train", "--image", str(files["image"]), "--labels", str(ones), "--dense",
            "--iterations", "1", "--out", str(tmp_path / "m.pt")]  # fmt: skip
    _one_line_error(capsys, main(argv), "at least two values")


def test_train_no_labels_on_selected_slices(files, capsys, tmp_path: Path) -> None:
    sparse = np.zeros((3, 96, 96), np.uint8)
    sparse[2, 10:20, 10:20] = 2
    path = tmp_path / "sparse.tif"
    write_labels_tiff(path, sparse)
    argv = ["train", "--image", str(files["image"]), "--labels", str(path), "--slices", "0-1",
            "--iterations", "1", "--out", str(tmp_path / "m.pt")]  # fmt: skip
    _one_line_error(capsys, main(argv), "no labelled pixels")


def test_argparse_errors_exit_2(files) -> None:
    with pytest.raises(SystemExit) as exc:
        main(_train(files, "--iterations", "0"))
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "train",
                "--image",
                "x.tif",
                "--labels",
                "y.tif",
                "--minutes",
                "1",
                "--iterations",
                "2",
            ]
        )
    assert exc.value.code == 2


def test_predict_errors(files, trained_model: Path, capsys) -> None:
    f = files
    base = ["predict", "--model", str(trained_model), "--image", str(f["image"])]
    cases = [
        (["predict", "--model", str(f["tmp"] / "none.pt"), "--image", str(f["image"])], "not found"),
        (["predict", "--model", str(f["text"]), "--image", str(f["image"])], "not a napari-unet checkpoint"),
        ([*base[:3], "--image", str(f["text"])], "not a TIFF"),
        ([*base, "--out", str(f["tmp"] / "x.png")], ".tif, .tiff or .zarr"),
        ([*base, "--out", str(f["tmp"] / "no" / "x.tif")], "does not exist"),
        ([*base, "--out", str(f["folder"])], "must end with"),
        ([*base, "--slices", "5"], "out of range"),
        ([*base, "--slices", "x-y"], "cannot read"),
        ([*base, "--device", "quantum"], "unknown device"),
        ([*base, "--out", str(f["tmp"] / "big.tif"), "--max-memory", "0.00001"], "--max-memory"),
    ]  # fmt: skip
    for argv, needle in cases:
        _one_line_error(capsys, main(argv), needle)
    assert not (f["tmp"] / "big.tif").exists()


def test_evaluate_errors(files, capsys) -> None:
    f = files
    cases = [
        (["evaluate", "--prediction", str(f["small"]), "--truth", str(f["labels"])], "does not match"),
        (["evaluate", "--prediction", str(f["tmp"] / "no.tif"), "--truth", str(f["labels"])], "no such file"),
        (["evaluate", "--prediction", str(f["labels"]), "--truth", str(f["text"])], "not a TIFF"),
        (["evaluate", "--prediction", str(f["labels"]), "--truth", str(f["labels"]), "--slices", "3"], "out of range"),
        (["evaluate", "--prediction", str(f["labels"]), "--truth", str(f["labels"]),
          "--membrane-class", "9"], "membrane value 9"),
        (["evaluate", "--prediction", str(f["labels"]), "--truth", str(f["labels"]),
          "--json", str(f["tmp"] / "no" / "m.json")], "does not exist"),
        (["evaluate", "--prediction", str(f["tmp"] / "no.zarr"), "--truth", str(f["labels"])], "no such zarr"),
    ]  # fmt: skip
    for argv, needle in cases:
        _one_line_error(capsys, main(argv), needle)


def test_evaluate_float_tiff_is_rejected(files, capsys, tmp_path: Path) -> None:
    probs = tmp_path / "float.tif"
    tifffile.imwrite(probs, np.zeros((3, 96, 96), np.float32), photometric="minisblack")
    argv = ["evaluate", "--prediction", str(probs), "--truth", str(files["labels"])]
    _one_line_error(capsys, main(argv), "integers")


def test_console_script_one_line_error_and_success(files, tmp_path: Path) -> None:
    """The installed `napari-unet` script: exit status and a one-line stderr."""
    exe = Path(sys.executable).with_name("napari-unet")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "napari_unet.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    bad = subprocess.run(
        [*cmd, "train", "--image", str(tmp_path / "missing.tif"), "--labels", str(files["labels"])],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2
    err_lines = bad.stderr.strip().splitlines()
    assert len(err_lines) == 1 and "Traceback" not in bad.stderr, bad.stderr
    assert err_lines[0].startswith("napari-unet: error: ") and "missing.tif" in err_lines[0]

    bad_slices = subprocess.run(
        [*cmd, "evaluate", "--prediction", str(files["labels"]), "--truth", str(files["labels"]),
         "--slices", "1-x"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert bad_slices.returncode == 2
    assert len(bad_slices.stderr.strip().splitlines()) == 1, bad_slices.stderr

    ok = subprocess.run(
        [*cmd, "evaluate", "--prediction", str(files["labels"]), "--truth", str(files["labels"]),
         "--json", str(tmp_path / "self.json")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "pixel error" in ok.stdout and "0.0000" in ok.stdout


def test_huge_slice_ranges_are_refused_before_expansion(files, trained_model: Path, capsys) -> None:
    huge = "0-99999999999999999999"
    f = files
    cases = [
        _train(f, "--slices", huge),
        _train(f, "--val-slices", huge),
        ["predict", "--model", str(trained_model), "--image", str(f["image"]), "--slices", huge],
        ["evaluate", "--prediction", str(f["labels"]), "--truth", str(f["labels"]), "--slices", huge],
    ]  # fmt: skip
    for argv in cases:
        t0 = time.perf_counter()
        _one_line_error(capsys, main(argv), "99999999999999999999", "out of range")
        assert time.perf_counter() - t0 < 5, argv


def test_tifffile_log_lines_stay_off_stderr(files, tmp_path: Path) -> None:
    """A file tifffile complains about (OME frames missing): only napari-unet's own lines."""
    path = tmp_path / "ome.tif"
    tifffile.imwrite(path, np.full((3, 16, 16), 2, np.uint8), ome=True, metadata={"axes": "ZYX"})
    raw = path.read_bytes()
    path.write_bytes(raw.replace(b'SizeZ="3"', b'SizeZ="5"', 1))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "napari_unet.cli", "evaluate", "--prediction", str(path),
         "--truth", str(path), "--membrane-class", "2"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "OME series" not in done.stderr and "tifffile" not in done.stderr, done.stderr
