"""Helpers of the fault-injection suite: a tiny network, CLI runs, subprocesses to kill."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time

import pytest
import torch

from napari_unet.model import UNet

#: a tiny real training run of the CLI (about a second on one thread)
FAST = ["--iterations", "4", "--patch-size", "32", "--batch-size", "1", "--device", "cpu",
        "--threads", "1", "-q"]  # fmt: skip
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def tiny_unet(seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    return UNet(depth=2, base_channels=4, padding="same", norm="batch")


def one_line_error(capsys: pytest.CaptureFixture[str], code: int, *needles: str) -> str:
    """The single 'napari-unet: error:' line of a failed command (exit status 2)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("napari-unet: error:")]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``napari-unet ARGS`` in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "napari_unet.cli", *args],
        capture_output=True, text=True, env=ENV, timeout=timeout,
    )  # fmt: skip


def python(code: str) -> subprocess.Popen[str]:
    """Start ``python -c CODE`` with piped stdout (line-buffered)."""
    return subprocess.Popen(
        [sys.executable, "-u", "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=ENV,
    )  # fmt: skip


def wait_for(proc: subprocess.Popen[str], marker: str, timeout: float = 60) -> None:
    """Read ``proc``'s stdout until a line holds ``marker``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if marker in line:
                return
            if not line and proc.poll() is not None:
                break
    proc.kill()
    raise AssertionError(f"{marker!r} never printed; stderr: {proc.stderr.read()}")  # type: ignore[union-attr]


def fill_disk(folder) -> None:
    """Write a file into ``folder`` until its file system is full (ENOSPC)."""
    import errno

    with open(os.path.join(folder, "filler.bin"), "wb", buffering=0) as fh:
        block = b"\0" * 65536
        try:
            while True:
                fh.write(block)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
        try:
            while True:
                fh.write(b"\0" * 512)
        except OSError:
            pass


def part_files(folder) -> list[str]:
    """Hidden temporary files in ``folder``."""
    return sorted(n for n in os.listdir(folder) if n.endswith((".part", ".tmp")))
