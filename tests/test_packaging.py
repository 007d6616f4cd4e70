"""The manifest ships inside the package, for editable installs and for the wheel."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

NPE2 = "from npe2.cli import main; import sys; sys.argv = ['npe2', *sys.argv[1:]]; main()"


def _npe2(python: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [python, "-c", NPE2, *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_manifest_inside_package_matches_repo_root() -> None:
    import napari_unet

    packaged = Path(napari_unet.__file__).parent / "napari.yaml"
    assert packaged.is_file()
    assert packaged.read_text() == (ROOT / "napari.yaml").read_text()


def test_npe2_validate_and_list_current_install() -> None:
    res = _npe2(sys.executable, "validate", "napari-unet")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "valid" in (res.stdout + res.stderr).lower()
    res = _npe2(sys.executable, "list")
    assert "napari-unet" in res.stdout, res.stdout + res.stderr


def test_every_manifest_command_resolves() -> None:
    """Each python_name in the manifest imports (catches typos before napari does)."""
    from npe2 import PluginManifest

    pm = PluginManifest.from_file(ROOT / "napari.yaml")
    for cmd in pm.contributions.commands or []:
        mod, _, attr = cmd.python_name.partition(":")
        module = __import__(mod, fromlist=[attr])
        assert callable(getattr(module, attr)), cmd.python_name


@pytest.mark.slow
def test_wheel_installs_in_fresh_venv_and_validates(tmp_path: Path) -> None:
    """Build the wheel, install it (no deps) into a new venv whose dependencies come
    from this environment minus napari-unet itself, then run npe2 there."""
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(dist),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(dist.glob("napari_unet-*.whl"))
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert "napari_unet/napari.yaml" in names
    assert any(n.endswith("entry_points.txt") for n in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = str(venv / "bin" / "python")
    # the dependencies: this environment's site-packages without napari-unet
    deps = tmp_path / "deps"
    deps.mkdir()
    site = Path(sysconfig.get_paths()["purelib"])
    for entry in site.iterdir():
        if entry.name.startswith(("napari_unet", "__editable__", "napari-unet")):
            continue
        if entry.suffix == ".pth":
            continue
        os.symlink(entry, deps / entry.name)
    new_site = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(new_site, "zz_deps.pth").write_text(str(deps) + "\n")
    subprocess.run(
        [py, "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    where = subprocess.run(
        [py, "-c", "import napari_unet, pathlib; print(pathlib.Path(napari_unet.__file__).parent)"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    ).stdout.strip()
    assert where.startswith(str(venv)), where  # the wheel's copy, not the source tree
    res = _npe2(py, "validate", "napari-unet", env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    res = _npe2(py, "list", env=env)
    assert "napari-unet" in res.stdout, res.stdout + res.stderr
    # the console script is installed and answers
    out = subprocess.run(
        [str(venv / "bin" / "napari-unet"), "--version"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0 and "napari-unet" in out.stdout, out.stderr
