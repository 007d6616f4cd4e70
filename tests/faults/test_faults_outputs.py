"""Output paths: checked before the work, never replaced silently or by two writers, rescued."""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import numpy as np
import pytest
from fault_helpers import FAST, fill_disk, one_line_error, part_files, python, wait_for

from napari_unet.checkpoint import load_checkpoint, save_checkpoint
from napari_unet.cli import main
from napari_unet.io import WriteError, write_labels_tiff
from napari_unet.outputs import OutputLock, OutputLockedError, clean_stale_temps

from fault_helpers import tiny_unet  # isort: skip


def _train(data: dict[str, Path], out: Path | str, *extra: str) -> list[str]:
    return ["train", "--image", str(data["image"]), "--labels", str(data["labels"]),
            "--out", str(out), *FAST, *extra]  # fmt: skip


def _predict(data: dict[str, Path], out: Path | str, *extra: str) -> list[str]:
    return ["predict", "--model", str(data["model"]), "--image", str(data["image"]),
            "--out", str(out), "--device", "cpu", "--threads", "1", "-q", *extra]  # fmt: skip


def test_proc_paths_are_refused_before_any_work(data, capsys):
    code = main(_train(data, "/proc/m.pt"))
    one_line_error(capsys, code, "/proc/m.pt", "cannot create a file in /proc")
    code = main(_predict(data, "/proc/p.tif"))
    one_line_error(capsys, code, "/proc/p.tif", "cannot create a file in /proc")
    code = main(["evaluate", "--prediction", str(data["truth"]), "--truth", str(data["truth"]),
                 "--json", "/proc/m.json"])  # fmt: skip
    one_line_error(capsys, code, "/proc/m.json")


def test_read_only_and_unwritable_folders(data, make_disk, capsys):
    ro = make_disk(read_only=True)
    code = main(_train(data, ro / "m.pt"))
    line = one_line_error(capsys, code, str(ro / "m.pt"))
    assert "read-only" in line or "not writable" in line
    with pytest.raises(WriteError, match=r"read-only|not writable"):
        write_labels_tiff(ro / "x.tif", np.ones((4, 4), np.uint8))


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into a mode 0500 folder")
def test_unwritable_folder_as_a_user(data, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        one_line_error(capsys, main(_train(data, ro / "m.pt")), "not writable")
    finally:
        ro.chmod(0o700)


def test_too_little_space_is_refused_before_training(data, make_disk, capsys):
    disk = make_disk("1m")  # the "small" preset's checkpoint needs about 2 MiB
    code = main(_train(data, disk / "m.pt"))
    one_line_error(capsys, code, "only", "MiB free", "free some space")
    assert "training on" not in capsys.readouterr().out
    assert os.listdir(disk) == []


def test_disk_full_at_the_final_save_rescues_the_model(data, make_disk, tmp_path, monkeypatch,
                                                         capsys):  # fmt: skip
    disk = make_disk("8m")
    monkeypatch.chdir(tmp_path)
    from napari_unet.cli import train as train_cli

    show = train_cli._show_iteration

    def fill_on_first(progress, event, max_s):
        if event.iteration == 1:
            fill_disk(disk)
        show(progress, event, max_s)

    monkeypatch.setattr(train_cli, "_show_iteration", fill_on_first)
    code = main(_train(data, disk / "m.pt"))
    err = capsys.readouterr().err
    assert code == 1, err
    assert "the disk is full" in err and str(disk / "m.pt") in err
    assert ".part" not in err  # the user's path, never a temporary file
    rescued = sorted(tmp_path.glob("m.rescued-*.pt"))
    assert len(rescued) == 1 and f"saved the model to {rescued[0]} instead" in err
    load_checkpoint(rescued[0])
    assert part_files(disk) == [] and not (disk / "m.pt").exists()


def test_existing_outputs_need_overwrite(data, tmp_path, capsys):
    out = tmp_path / "m.pt"
    save_checkpoint(out, tiny_unet(), note="keep me")
    before = out.read_bytes()
    one_line_error(capsys, main(_train(data, out)), "already exists", "--overwrite")
    assert out.read_bytes() == before
    assert main(_train(data, out, "--overwrite")) == 0
    assert load_checkpoint(out)[1].get("note") is None
    pred = tmp_path / "p.tif"
    assert main(_predict(data, pred)) == 0
    one_line_error(capsys, main(_predict(data, pred)), "already exists")
    assert main(_predict(data, pred, "--overwrite")) == 0


def test_files_get_the_users_umask(data, tmp_path):
    old = os.umask(0o027)
    try:
        ckpt = save_checkpoint(tmp_path / "m.pt", tiny_unet())
        tif = write_labels_tiff(tmp_path / "l.tif", np.ones((4, 4), np.uint8))
        assert main(_predict(data, tmp_path / "p.tif")) == 0
    finally:
        os.umask(old)
    for path in (ckpt, tif, tmp_path / "p.tif"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path


def test_a_second_writer_is_refused(data, tmp_path, capsys):
    out = tmp_path / "m.pt"
    with OutputLock(out, "--out"):
        code = main(_train(data, out))
        one_line_error(capsys, code, "is being written by another napari-unet run",
                       f"pid {os.getpid()}")  # fmt: skip
        with pytest.raises(OutputLockedError):
            OutputLock(out).acquire()
    assert not out.exists() and os.listdir(tmp_path) == []  # lock released and removed


def test_two_real_runs_on_the_same_out(data, tmp_path, capsys):
    out = tmp_path / "m.pt"
    argv = [a for a in _train(data, out, "--iterations", "100000") if a != "-q"]
    first = python(f"from napari_unet.cli import main; main({argv!r})")
    try:
        wait_for(first, "training on")
        code = main(_train(data, out))
        one_line_error(capsys, code, "being written by another napari-unet run",
                       f"pid {first.pid}")  # fmt: skip
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # kill -9 released the lock: the next run goes ahead
    assert main(_train(data, out, "--overwrite")) == 0
    load_checkpoint(out)


_HANG_IN_SAVE = """
import os, sys, time
from napari_unet import outputs
from napari_unet.checkpoint import save_checkpoint
from napari_unet.model import UNet
real = outputs.replace_atomically
def hang(path, write, **kw):
    def half(tmp):
        write(tmp)
        with open(tmp, "r+b") as fh:
            fh.truncate(os.path.getsize(tmp) // 2)
        print("WRITING", flush=True)
        time.sleep(60)
    return real(path, half, **kw)
import napari_unet.checkpoint as ck
ck.replace_atomically = hang
save_checkpoint(sys.argv[1], UNet(depth=3, base_channels=8))
"""


def test_kill_during_save_keeps_the_old_file_and_the_orphan_is_cleaned(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", tiny_unet(), note="old")
    proc = python(_HANG_IN_SAVE.replace("sys.argv[1]", repr(str(path))))
    try:
        wait_for(proc, "WRITING")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert load_checkpoint(path)[1] == {"note": "old"}  # untouched
    orphans = part_files(tmp_path)
    assert len(orphans) == 1 and f".p{proc.pid}-" in orphans[0]
    # the next run's first save there removes it (its process is gone)
    done = python(
        "from napari_unet.checkpoint import save_checkpoint\n"
        "from napari_unet.model import UNet\n"
        f"save_checkpoint({str(path)!r}, UNet(depth=2, base_channels=2), note='new')\n"
    )
    assert done.wait(60) == 0, done.stderr.read()
    assert part_files(tmp_path) == [] and load_checkpoint(path)[1] == {"note": "new"}
    assert clean_stale_temps(path) == []
