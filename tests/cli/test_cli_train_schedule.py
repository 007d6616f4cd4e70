"""`napari-unet train`'s learning-rate schedule and loss options reach the TrainConfig."""

from __future__ import annotations

from pathlib import Path

import pytest

from napari_unet.cli import build_parser, main
from napari_unet.cli.train import TrainingData, _config


def _cfg(tmp_path: Path, *extra: str):
    args = build_parser().parse_args(["train", "--image", "x.tif", "--labels", "y.tif", *extra])
    data = TrainingData(None, None, [0], [1], 2, None, None, 2, False)
    return _config(args, data, "small", tmp_path / "m.pt", "cpu")


def test_schedule_and_loss_options(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "--lr-schedule", "cyclic", "--min-lr", "1e-5", "--lr", "1e-4",
               "--lr-period", "400", "--loss", "wce+jaccard")  # fmt: skip
    assert (cfg.lr_schedule, cfg.min_learning_rate, cfg.learning_rate, cfg.lr_period) == (
        "cyclic", 1e-5, 1e-4, 400,
    )  # fmt: skip
    assert cfg.loss == "wce+jaccard"
    cfg.validate()
    plain = _cfg(tmp_path, "--lr-schedule", "constant", "--loss", "jaccard")
    assert (plain.lr_schedule, plain.loss, plain.min_learning_rate) == ("constant", "jaccard", None)


def test_bad_schedule_options_one_line(cli_data, tmp_path: Path, capsys) -> None:
    base = ["train", "--image", str(cli_data["image"]), "--labels", str(cli_data["labels"]),
            "--iterations", "1", "--device", "cpu", "--out", str(tmp_path / "m.pt")]  # fmt: skip
    code = main([*base, "--lr-schedule", "cyclic", "--lr", "1e-4", "--min-lr", "1e-3"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1, err
    assert "min_learning_rate 0.001 is above learning_rate 0.0001" in err[0]
    assert not (tmp_path / "m.pt").exists()
    with pytest.raises(SystemExit):
        main([*base, "--lr-schedule", "step"])
    assert "invalid choice: 'step'" in capsys.readouterr().err
