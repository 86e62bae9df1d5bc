"""A non-editable install ships the top-level config/ and slurm_templates/ files.

setup.py maps those folders into the wheel as fireflyhpc/config and
fireflyhpc/slurm_templates; an editable install would hide a mistake there, so this
builds a real wheel from a copy of the source tree and installs it into a directory,
offline.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = {"config": "*.toml", "slurm_templates": "*.sbatch"}


def source_files() -> list[str]:
    """Files a clean clone would have (tracked, plus new files not ignored)."""
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return [line for line in out.splitlines() if (ROOT / line).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built by pip from a copy of the source tree."""
    if shutil.which("git") is None:
        pytest.skip("needs git to list the source files")
    src = tmp_path_factory.mktemp("src")
    for name in source_files():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    # Offline (test traffic stays on this machine): the build backend comes from the
    # test extras (setuptools, wheel) instead of an isolated build env from an index.
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                           "--no-build-isolation", "--no-index",
                           "--disable-pip-version-check", "-w", str(out), str(src)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    (built,) = out.glob("fireflyhpc-*.whl")
    return built


def expected_files() -> list[str]:
    """Wheel paths of every data file present in the shipped folders."""
    return [f"fireflyhpc/{folder}/{path.name}"
            for folder, pattern in SHIPPED.items() for path in sorted((ROOT / folder).glob(pattern))]


def test_wheel_contains_config_and_slurm_templates(wheel: Path) -> None:
    expected = expected_files()
    if not expected:
        pytest.skip("no config/*.toml or slurm_templates/*.sbatch in the source tree yet")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert [name for name in expected if name not in names] == []
    assert "fireflyhpc/__init__.py" in names


def test_installed_copy_has_the_files_next_to_its_package(wheel: Path, tmp_path) -> None:
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet",
                           "--no-index", "--disable-pip-version-check",
                           "--target", str(target), str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    # A fresh interpreter that finds the installed copy first, not the editable checkout.
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import fireflyhpc; "
            "print(fireflyhpc.__file__)")
    where = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True,
                           text=True, timeout=60, cwd=tmp_path)
    package = Path(where.stdout.strip()).parent
    assert package == target / "fireflyhpc", where.stderr
    for name in expected_files():
        assert (target / name).is_file(), name
