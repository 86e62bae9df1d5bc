"""From a real (non-editable) install: the code finds the shipped example config and
job templates, although ``fireflyhpc/config.py`` (the module) and ``fireflyhpc/config/``
(the shipped folder) share a name in the wheel."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    """The project built as a wheel from a copy of its files, installed into a folder."""
    if shutil.which("git") is None:
        pytest.skip("needs git to list the source files")
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard"],
                           capture_output=True, text=True, timeout=30, check=True).stdout
    src = tmp_path_factory.mktemp("src")
    for name in files.splitlines():
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    out, site = tmp_path_factory.mktemp("wheel"), tmp_path_factory.mktemp("site")
    # Offline: the build backend comes from the test extras, not from an index.
    for argv in (["wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(out),
                  f"{src}/"],
                 ["install", "--no-deps", "--no-index", "--target", str(site)]):
        if argv[0] == "install":
            argv.append(str(next(out.glob("fireflyhpc-*.whl"))))
        proc = subprocess.run([sys.executable, "-m", "pip", *argv, "--quiet",
                               "--disable-pip-version-check"], capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr
    return site


def run_installed(site: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from fireflyhpc.cli import main; "
            "sys.exit(main(sys.argv[2:]))")
    return subprocess.run([sys.executable, "-c", code, str(site), *args], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})


def test_installed_copy_lists_and_renders_templates(installed: Path, tmp_path: Path) -> None:
    listing = run_installed(installed, tmp_path, "templates", "list")
    assert listing.returncode == 0, listing.stderr
    assert f"firefly              shipped  {installed}/fireflyhpc/slurm_templates/firefly." \
           "sbatch" in listing.stdout
    rendered = run_installed(installed, tmp_path, "templates", "render", "firefly")
    assert rendered.returncode == 0 and "#SBATCH --time=1:00:00" in rendered.stdout


def test_installed_copy_writes_the_example_config(installed: Path, tmp_path: Path) -> None:
    proc = run_installed(installed, tmp_path, "config", "init", str(tmp_path / "c.toml"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "c.toml").read_text() == \
        (ROOT / "config" / "fireflyhpc.example.toml").read_text()
