"""remote-install and doctor: the pure parts, and the local wheel making (no cluster)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import fireflyhpc
from fireflyhpc.errors import ConfigError
from fireflyhpc.remote import doctor, install, target, wheels

LINUX = target.RemotePython(
    command="python3", executable="/usr/bin/python3", version=(3, 11, 2),
    implementation="cpython", platform="linux-x86_64", libc=("glibc", "2.28"),
    home="/home/u", markers={"python_version": "3.11", "sys_platform": "linux",
                             "platform_machine": "x86_64", "python_full_version": "3.11.2"})
HOSTILE = ["a'; echo foo", "$(touch /tmp/pwned)", "line\nbreak", "`id`", "*", ""]


def test_probe_program_output_is_parsed_with_banners_before_it() -> None:
    out = subprocess.run([sys.executable, "-c", target.PROBE_PROGRAM], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    found = target.parse_probe("python3", "Welcome to the cluster!\n\n" + out)
    assert found.version == tuple(sys.version_info[:3])
    assert found.implementation == "cpython" and found.has_venv
    assert found.home == str(Path.home())
    assert found.markers["python_version"] == f"{sys.version_info[0]}.{sys.version_info[1]}"


def test_probe_garbage_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="did not answer like Python 3"):
        target.parse_probe("python3", "Python 2.7.18\n")


@pytest.mark.parametrize("version,venv,match", [((3, 9, 18), True, "needs 3.10"),
                                                 ((3, 11, 2), False, "no venv module")])
def test_unusable_python_says_what_to_do(version, venv, match) -> None:
    py = target.RemotePython(**{**LINUX.__dict__, "version": version, "has_venv": venv})
    with pytest.raises(ConfigError, match=match) as err:
        py.require_supported()
    assert err.value.hint


def test_platform_tags_and_pip_args_golden() -> None:
    assert target.pip_target_args(LINUX) == [
        "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
        "--abi", "cp311",
        *sum((["--platform", f"manylinux_2_{m}_x86_64"] for m in range(28, 16, -1)), []),
        "--platform", "manylinux2014_x86_64", "--platform", "manylinux2010_x86_64",
        "--platform", "manylinux1_x86_64", "--platform", "linux_x86_64"]
    musl = target.RemotePython(**{**LINUX.__dict__, "libc": ("", ""), "platform": "linux-aarch64"})
    assert target.platform_tags(musl) == ["linux_aarch64"]


def test_default_and_explicit_prefixes() -> None:
    assert target.resolve_prefix(None, LINUX, "1.2") == "/home/u/.local/share/fireflyhpc/venv-1.2"
    xdg = target.RemotePython(**{**LINUX.__dict__, "data_home": "/scratch/u/data"})
    assert target.default_prefix(xdg, "1.2") == "/scratch/u/data/fireflyhpc/venv-1.2"
    assert target.resolve_prefix("~/v", LINUX, "1") == "/home/u/v"
    assert target.resolve_prefix("rel/./v/", LINUX, "1") == "/home/u/rel/v"
    for bad in ("~/a b", "/x;rm", "/tmp/$HOME", "~", "/"):
        with pytest.raises(ConfigError):
            target.resolve_prefix(bad, LINUX, "1")


def test_setup_lines_wrap_argv_without_reparsing_it() -> None:
    assert target.with_setup((), ["python3", "-V"]) == ["python3", "-V"]
    argv = target.with_setup(["export FOO=bar", "cd /"], ["printf", "%s|", "$FOO", *HOSTILE])
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout
    assert out == "|".join(["$FOO", *HOSTILE]) + "|"


def test_select_requirements_payload_only_with_remote_markers() -> None:
    requires = ["click>=8.1", "paramiko>=3.4", "invoke>=2.0", "flask>=2.3", "werkzeug>=2.3",
                "waitress>=3.0", "tomli>=2.0; python_version < '3.11'",
                "pytest>=7; extra == 'test'", "psutil>=5.9", "platformdirs>=3.0"]
    assert wheels.select_requirements(requires, LINUX.markers) == [
        "click>=8.1", "flask>=2.3", "werkzeug>=2.3", "waitress>=3.0", "psutil>=5.9",
        "platformdirs>=3.0"]
    py310 = {**LINUX.markers, "python_version": "3.10", "python_full_version": "3.10.12"}
    assert "tomli>=2.0" in wheels.select_requirements(requires, py310)
    assert "paramiko>=3.4" in wheels.select_requirements(requires, py310, deps="all")
    assert not any("pytest" in r for r in wheels.select_requirements(requires, py310, "all"))


def test_pip_download_argv_golden(tmp_path: Path) -> None:
    assert wheels.pip_download_argv(["flask>=2.3"], ["--only-binary=:all:"], tmp_path) == [
        sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--quiet",
        "--dest", str(tmp_path), "--only-binary=:all:", "flask>=2.3"]


def test_marker_text_round_trips() -> None:
    data = json.loads(install.marker_text("1.0", "complete", "upload", "payload", "/v/bin/python",
                                          "abc"))
    assert {k: data[k] for k in ("format", "version", "state", "mode", "deps", "python",
                                 "build")} == {"format": 1, "version": "1.0", "state": "complete",
                                               "mode": "upload", "deps": "payload",
                                               "python": "/v/bin/python", "build": "abc"}


def test_doctor_render_golden() -> None:
    ok = doctor.Check("partitions", doctor.PASS, "debug*, short", hint="unused")
    bad = doctor.Check("remote python", doctor.FAIL, "/x does not run", hint="run remote-install")
    skip = doctor.Check("Flask importable", doctor.SKIP, "needs the remote python")
    assert doctor.render(ok) == "✓ partitions: debug*, short"
    assert doctor.render(bad) == "✗ remote python: /x does not run  -> run remote-install"
    assert doctor.render(bad, ("OK  ", "WARN", "FAIL")).startswith("FAIL remote python")
    assert doctor.render(skip) == "- Flask importable: needs the remote python"


@pytest.fixture(scope="module")
def source_wheel(tmp_path_factory) -> wheels.ProjectWheel:
    """The project wheel as remote-install builds it from this checkout (fresh cache)."""
    return wheels.project_wheel(tmp_path_factory.mktemp("cache"))


def test_project_wheel_is_this_version_with_shipped_files(source_wheel) -> None:
    assert source_wheel.version == fireflyhpc.__version__
    assert source_wheel.build  # built from a checkout: keyed by its source digest
    names = set(zipfile.ZipFile(source_wheel.path).namelist())
    assert "fireflyhpc/server/app.py" in names and "fireflyhpc/cli/remote_cmd.py" in names
    assert any(n.startswith("fireflyhpc/slurm_templates/") for n in names)
    assert not any("/tests/" in n or n.startswith("tests/") for n in names)
    assert any(r.startswith("flask") for r in source_wheel.requires)


def test_regular_install_is_repacked_into_an_installable_wheel(source_wheel, tmp_path) -> None:
    """A non-editable install has no source tree: its RECORD is turned back into a wheel."""
    import importlib.metadata

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet",
                    "--disable-pip-version-check", "--target", str(site),
                    str(source_wheel.path)], check=True, timeout=300, capture_output=True)
    (info,) = site.glob("fireflyhpc-*.dist-info")
    repacked = wheels.repack_installed(importlib.metadata.Distribution.at(info), tmp_path / "out")
    original = {n for n in zipfile.ZipFile(source_wheel.path).namelist()
                if not n.endswith(("/RECORD", "/WHEEL"))}
    again = set(zipfile.ZipFile(repacked).namelist())
    assert original <= again
    assert wheels.wheel_metadata(repacked) == (source_wheel.version, source_wheel.requires)
    site2 = tmp_path / "site2"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet",
                    "--disable-pip-version-check", "--target", str(site2), str(repacked)],
                   check=True, timeout=300, capture_output=True)
    code = "import sys; sys.path.insert(0, sys.argv[1]); import fireflyhpc; print(fireflyhpc.__file__)"
    where = subprocess.run([sys.executable, "-c", code, str(site2)], capture_output=True,
                           text=True, timeout=60, cwd=tmp_path, check=True).stdout
    assert Path(where.strip()).parent == site2 / "fireflyhpc"
    assert (site2 / "fireflyhpc" / "remote" / "install.py").is_file()


def test_firefly_requirement_and_doctor_line() -> None:
    from types import SimpleNamespace

    from fireflyhpc.remote.doctor import FAIL, PASS, firefly_check
    from fireflyhpc.remote.firefly_install import requirement

    assert requirement("") == "firefly" and requirement("3.6.0") == "firefly==3.6.0"
    with pytest.raises(ConfigError):
        requirement("3.6; rm -rf ~")
    auto = SimpleNamespace(cluster="mini", payload="auto")
    check = firefly_check("3.6.0", auto)  # type: ignore[arg-type]
    assert (check.status, check.detail) == (PASS, "firefly 3.6.0; connect serves Firefly's own app")
    missing = firefly_check(None, auto)  # type: ignore[arg-type]
    assert missing.status == PASS and "--with-firefly" in missing.detail
    needed = firefly_check(None, SimpleNamespace(cluster="mini", payload="firefly"))  # type: ignore[arg-type]
    assert needed.status == FAIL and "--with-firefly" in (needed.hint or "")
