"""Dataset discovery, the demo generator, and `fireflyhpc export` (CLI in-process)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from fireflyhpc.cli import main
from fireflyhpc.datasets import datasets_index, discover, firefly_startup
from fireflyhpc.demo import COUNTS, build_groups, ensure_demo
from fireflyhpc.errors import ConfigError, ExitStatus
from fireflyhpc.fireflydata import (
    ParticleData,
    ParticleGroup,
    read_dataset,
    write_dataset,
)


def make_dataset(directory: Path, n: int = 5) -> Path:
    write_dataset(directory, [ParticleGroup("P", ParticleData([0.5] * (3 * n)))])
    return directory


# ---------------------------------------------------------------- discovery

def test_discover_dataset_and_directory_of_datasets(tmp_path: Path) -> None:
    single = make_dataset(tmp_path / "one" / "snap")
    make_dataset(tmp_path / "runs" / "snap")          # same name: gets a suffix
    make_dataset(tmp_path / "runs" / "deep" / "er" / "x")
    (tmp_path / "runs" / ".hidden").mkdir()
    make_dataset(tmp_path / "runs" / ".hidden" / "h")
    found = discover([single, tmp_path / "runs", single])  # the repeat is dropped
    assert [(d.name, d.url_path) for d in found] == [
        ("snap", "data/snap/"), ("x", "data/x/"), ("snap-2", "data/snap-2/")]
    assert found[0].root == single.resolve()
    assert datasets_index(found) == {"datasets": [
        {"name": "snap", "path": "data/snap/"}, {"name": "x", "path": "data/x/"},
        {"name": "snap-2", "path": "data/snap-2/"}]}
    assert firefly_startup(found) == {"0": "data/snap", "1": "data/x", "2": "data/snap-2"}


def test_discover_names_are_url_safe(tmp_path: Path) -> None:
    [ds] = discover([make_dataset(tmp_path / "my run #1 ü")])
    assert ds.name == "my-run-1" and ds.url_path == "data/my-run-1/"


@pytest.mark.parametrize("kind", ["missing", "file", "empty"])
def test_discover_rejects_bad_directories(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "x"
    if kind == "file":
        target.write_text("")
    elif kind == "empty":
        target.mkdir()
    with pytest.raises(ConfigError, match="does not exist|not a directory|no Firefly dataset"):
        discover([target])


# ---------------------------------------------------------------- demo

def test_demo_groups_are_deterministic_and_sized() -> None:
    a, b = build_groups(scale=0.001), build_groups(scale=0.001)
    assert [g.name for g in a] == ["DiskStars", "BulgeStars", "Gas"]
    assert [g.data for g in a] == [g.data for g in b]
    assert [g.data.npart for g in a] == [int(COUNTS[g.name] * 0.001) for g in a]
    assert sum(COUNTS.values()) == 1_000_000
    disk = a[0].data.coordinates
    radii = sorted((disk[i] ** 2 + disk[i + 1] ** 2) ** 0.5 for i in range(0, len(disk), 3))
    heights = sorted(abs(disk[i + 2]) for i in range(0, len(disk), 3))
    assert 3 < radii[len(radii) // 2] < 8 and heights[len(heights) // 2] < 0.6  # a thin disk


def test_ensure_demo_writes_once_into_the_cache(demo_dataset: Path) -> None:
    info = read_dataset(demo_dataset)
    assert info.npart() == 1_000_000
    assert sum(len(files) for files in info.groups.values()) >= 5  # several files
    assert info.settings["partsColors"]["Gas"][:3] == [0.35, 0.6, 1.0]
    before = {p.name: p.stat().st_mtime_ns for p in demo_dataset.iterdir()}
    assert ensure_demo(demo_dataset.parent.parent) == demo_dataset  # cached: not rewritten
    assert {p.name: p.stat().st_mtime_ns for p in demo_dataset.iterdir()} == before
    assert not [p for p in demo_dataset.parent.iterdir() if p.name.startswith(".build-")]


# ---------------------------------------------------------------- export

def run_cli(*args: str | Path) -> int:
    return main(["export", *map(str, args)])


def test_export_writes_a_static_site(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_dataset(tmp_path / "in" / "snap")
    site = tmp_path / "site"
    assert run_cli(site, data) == 0
    assert "exported 1 dataset(s) (snap)" in capsys.readouterr().out
    for name in ("index.html", "app.js", "style.css", ".nojekyll", "datasets.json"):
        assert (site / name).is_file(), name
    assert json.loads((site / "datasets.json").read_text()) == {
        "datasets": [{"name": "snap", "path": "data/snap/"}]}
    assert sorted(p.name for p in (site / "data" / "snap").iterdir()) == sorted(
        p.name for p in data.iterdir())
    assert read_dataset(site / "data" / "snap").npart() == 5
    html = (site / "index.html").read_text()
    assert 'src="./app.js"' in html and "http" not in html  # relative URLs only


def test_export_refuses_non_empty_target_without_force(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    data = make_dataset(tmp_path / "snap")
    site = tmp_path / "site"
    site.mkdir()
    (site / "keep.txt").write_text("mine")
    assert run_cli(site, data) == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("fireflyhpc: error: export target") and "--force" in err
    assert len(err.splitlines()) == 1 and not (site / "index.html").exists()
    assert run_cli(site, data, "--force") == 0
    assert (site / "keep.txt").read_text() == "mine" and (site / "data" / "snap").is_dir()


@pytest.mark.parametrize("kind", ["missing", "not-a-dataset", "nothing"])
def test_export_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      kind: str) -> None:
    args: list[str | Path] = [tmp_path / "site"]
    if kind == "missing":
        args.append(tmp_path / "nope")
    elif kind == "not-a-dataset":
        (tmp_path / "empty").mkdir()
        args.append(tmp_path / "empty")
    assert run_cli(*args) == 3
    err = capsys.readouterr().err
    assert err.startswith("fireflyhpc: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "site").exists()


def test_export_target_inside_dataset_is_refused(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    data = make_dataset(tmp_path / "snap")
    assert run_cli(data / "site", data) == 3
    assert "inside dataset" in capsys.readouterr().err


def git(site: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(site), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_export_gh_pages_makes_one_commit(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no user git identity to fall back on
    monkeypatch.delenv("GIT_AUTHOR_NAME", raising=False)
    data = make_dataset(tmp_path / "snap")
    site = tmp_path / "site"
    assert run_cli(site, data, "--gh-pages") == 0
    assert "branch gh-pages" in capsys.readouterr().out
    assert git(site, "rev-parse", "--abbrev-ref", "HEAD") == "gh-pages"
    assert git(site, "rev-list", "--count", "HEAD") == "1"
    assert git(site, "status", "--porcelain") == ""
    tracked = git(site, "ls-files").splitlines()
    wanted = {"index.html", "app.js", "datasets.json", ".nojekyll", "data/snap/filenames.json"}
    assert wanted <= set(tracked)
    assert git(site, "remote") == ""
    author = git(site, "log", "-1", "--format=%an <%ae>")
    assert author == "fireflyhpc export <fireflyhpc@localhost>"
    local_name = subprocess.run(["git", "-C", str(site), "config", "--local", "--get", "user.name"],
                                capture_output=True, text=True)
    assert local_name.returncode == 1  # the identity was for that one commit only
    # an existing repository is refused rather than committed into
    assert run_cli(site, data, "--gh-pages", "--force") == 3
    assert "already a git repository" in capsys.readouterr().err


def test_export_demo(tmp_path: Path, demo_dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fireflyhpc.demo.default_cache_dir", lambda: demo_dataset.parent.parent)
    assert run_cli(tmp_path / "site", "--demo") == 0
    index = json.loads((tmp_path / "site" / "datasets.json").read_text())
    assert index == {"datasets": [{"name": "demo-galaxy", "path": "data/demo-galaxy/"}]}
    assert read_dataset(tmp_path / "site" / "data" / "demo-galaxy").npart() == 1_000_000
    assert os.access(tmp_path / "site" / "data" / "demo-galaxy" / "filenames.json", os.R_OK)


# ---------------------------------------------------------------- export: what may leave

def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("fireflyhpc: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and "[" not in err  # one sentence, not a Python list
    return err


def _leaky_dataset(tmp_path: Path) -> tuple[Path, str]:
    """A dataset holding ``etcdir -> /etc`` and ``link_out.txt -> a secret outside``."""
    secret = "the secret outside, 7f3a9c\n"
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text(secret)
    data = make_dataset(tmp_path / "in" / "leaky")
    (data / "etcdir").symlink_to("/etc")
    (data / "link_out.txt").symlink_to(tmp_path / "outside" / "secret.txt")
    return data, secret


@pytest.mark.parametrize("gh_pages", [False, True], ids=["plain", "gh-pages"])
def test_export_refuses_links_that_leave_the_dataset(tmp_path: Path, gh_pages: bool,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    good = make_dataset(tmp_path / "in" / "good")  # copied first, then the export fails
    data, secret = _leaky_dataset(tmp_path)
    site = tmp_path / "out" / "site"
    flags = ["--gh-pages"] if gh_pages else []
    before = sorted(tmp_path.iterdir())
    assert run_cli(site, good, data, *flags) == 3
    assert "dataset leaky: etcdir is a link to /etc, outside the dataset" in \
        _one_error_line(capsys)
    (data / "etcdir").unlink()
    assert run_cli(site, good, data, *flags) == 3
    assert "dataset leaky: link_out.txt is a link to" in _one_error_line(capsys)
    # no partial site, no staging folder, not even the parent folder made for it
    assert sorted(tmp_path.iterdir()) == before
    leaked = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink()
              and p.read_bytes() == secret.encode()]
    assert leaked == [tmp_path / "outside" / "secret.txt"]


def test_export_copies_what_serve_serves(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "snap")
    (data / "sub").mkdir()
    (data / "sub" / "notes.txt").write_text("notes\n")
    (data / "again.json").symlink_to(data / "filenames.json")  # a link inside: followed
    (data / "same").symlink_to("sub")
    (data / ".hidden").write_text("private\n")
    site = tmp_path / "site"
    assert run_cli(site, data) == 0
    out = site / "data" / "snap"
    assert (out / "again.json").read_bytes() == (data / "filenames.json").read_bytes()
    assert not (out / "again.json").is_symlink() and not (out / "same").is_symlink()
    assert (out / "same" / "notes.txt").read_text() == "notes\n"
    assert not (out / ".hidden").exists()


def test_export_link_looping_back_is_refused(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    data = make_dataset(tmp_path / "snap")
    (data / "sub").mkdir()
    (data / "sub" / "up").symlink_to("..")
    assert run_cli(tmp_path / "site", data) == 3
    assert "sub/up links back to" in _one_error_line(capsys)
    assert not (tmp_path / "site").exists()


def test_export_git_failure_leaves_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_dataset(tmp_path / "snap")
    (tmp_path / "no-tools").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))
    site = tmp_path / "site"
    site.mkdir()  # an empty target stays as it was
    assert run_cli(site, data, "--gh-pages") == ExitStatus.LOCAL
    assert "git is not installed" in _one_error_line(capsys)
    assert list(site.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["no-tools", "site", "snap"]


def test_export_empty_target_name_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["export", "", "--demo"]) == 3
    assert "the export target is an empty name" in _one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []
    data = make_dataset(tmp_path / "snap")
    assert main(["export", "site", "", str(data)]) == 3
    assert "a data directory is an empty name" in _one_error_line(capsys)
    assert not (tmp_path / "site").exists()


@pytest.mark.parametrize("manifest,problem", [
    ('{"Gas": [["snap/Gas000.ffly", 5]', "not valid JSON"),
    ('[["snap/Gas000.ffly", 5]]', "expected a JSON object"),
    ('{"Gas": "snap/Gas000.ffly"}', "'Gas' is not a list"),
])
def test_malformed_manifest_is_refused_naming_the_file(tmp_path: Path, manifest: str,
                                                      problem: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    data = make_dataset(tmp_path / "runs" / "snap")
    (data / "filenames.json").write_text(manifest)
    with pytest.raises(ConfigError, match=problem):
        discover([tmp_path / "runs"])
    assert run_cli(tmp_path / "site", tmp_path / "runs") == 3
    err = _one_error_line(capsys)
    assert f"{data / 'filenames.json'}: {problem}" in err
    assert not (tmp_path / "site").exists()
