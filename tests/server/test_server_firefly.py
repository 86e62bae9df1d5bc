"""Firefly's own web app, served read-only from the installed firefly package,
with the served datasets offered through a generated startup.json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Iterator

import pytest
from serverkit import GAS_BYTES, LiveServer, start_in_process

from fireflyhpc.datasets import discover
from fireflyhpc.server.app import create_app
from fireflyhpc.server.firefly import firefly_manifest, rename_entry
from fireflyhpc.server.viewers import FIREFLY, choose_app, firefly_app_dir


def test_rename_entry_golden() -> None:
    assert rename_entry("galaxy/Gas000.ffly", "galaxy-2") == "galaxy-2/Gas000.ffly"
    assert rename_entry("galaxy/sub/Gas000.ffly", "g") == "g/sub/Gas000.ffly"
    assert rename_entry("Gas000.ffly", "g") == "g/Gas000.ffly"


def test_firefly_manifest_golden() -> None:
    raw = json.dumps({"Gas": [["snap/Gas000.ffly", 10], ["snap/Gas001.ffly", 5]],
                      "options": [["snap/Settings.json", 0]], "extra": {"x": 1}}).encode()
    assert firefly_manifest(raw, "snap-2") == {
        "Gas": [["snap-2/Gas000.ffly", 10], ["snap-2/Gas001.ffly", 5]],
        "options": [["snap-2/Settings.json", 0]], "extra": {"x": 1}}
    with pytest.raises(ValueError):
        firefly_manifest(b"[]", "x")


def test_auto_picks_firefly_when_installed() -> None:
    app = choose_app("auto")
    assert app.kind == FIREFLY and app.root == firefly_app_dir()


@pytest.fixture
def firefly_server(data_tree: Path, tmp_path: Path) -> Iterator[LiveServer]:
    """Firefly's app with two datasets that are both called "galaxy"."""
    other = tmp_path / "other" / "galaxy"
    shutil.copytree(data_tree / "galaxy", other, symlinks=True)
    (other / "Gas000.ffly").write_bytes(b"second dataset")
    datasets = discover([data_tree, other])
    assert [d.name for d in datasets] == ["galaxy", "galaxy-2"]
    app = create_app(choose_app("firefly"), datasets, "firefly-test-token-123")
    live, stop = start_in_process(app, "firefly-test-token-123")
    try:
        yield live
    finally:
        stop()


def test_firefly_app_and_its_static_files(firefly_server: LiveServer) -> None:
    response, body = firefly_server.request("/")
    assert response.status == 200 and b"runLocal(" in body
    firefly_dir = Path(firefly_app_dir() or "")
    response, body = firefly_server.request("/static/js/viewer/initViewer.js")
    assert response.status == 200
    assert body == (firefly_dir / "static/js/viewer/initViewer.js").read_bytes()
    assert response.getheader("Content-Type").startswith("text/javascript")
    # the package's own sample startup.json and data dir are never served
    response, body = firefly_server.request("/static/data/startup.json")
    assert json.loads(body) == {"0": "data/galaxy", "1": "data/galaxy-2"}
    response, _ = firefly_server.request("/static/data/FIRESampleData/filenames.json")
    assert response.status == 404


def test_firefly_manifests_resolve_to_each_datasets_files(firefly_server: LiveServer) -> None:
    expected = {"galaxy": GAS_BYTES, "galaxy-2": b"second dataset"}
    for name, gas in expected.items():
        response, body = firefly_server.request(f"/static/data/{name}/filenames.json")
        assert response.status == 200
        assert response.getheader("Content-Type") == "application/json"
        manifest = json.loads(body)
        assert manifest["Gas"] == [[f"{name}/Gas000.ffly", 10]]
        # Firefly fetches static/data/<entry>
        response, body = firefly_server.request(f"/static/data/{manifest['Gas'][0][0]}")
        assert response.status == 200 and body == gas
        response, body = firefly_server.request(f"/static/data/{manifest['options'][0][0]}")
        assert json.loads(body) == {"loaded": True}


@pytest.mark.parametrize("path", ["/static/data/galaxy/../../secret.txt",
                                  "/static/data/galaxy/escape",
                                  "/static/data/galaxy/%2e%2e/stray.txt",
                                  "/static/data/../../secret.txt"])
def test_firefly_data_paths_are_contained(firefly_server: LiveServer, path: str) -> None:
    response, _ = firefly_server.request(path)
    assert response.status == 404


def test_dataset_written_by_fireflys_reader(tmp_path: Path) -> None:
    """Firefly's own Reader output, served to Firefly's app: every manifest entry
    (particles and settings) resolves under static/data/."""
    np = pytest.importorskip("numpy")
    data_reader = pytest.importorskip("firefly.data_reader")
    reader = data_reader.Reader(datadir=str(tmp_path / "snap"), write_startup=False,
                                max_npart_per_file=400)
    reader.static_data_dir = str(tmp_path / "static-data")  # keep site-packages untouched
    (tmp_path / "static-data").mkdir()
    reader.addParticleGroup(data_reader.ParticleGroup(
        "Stars", np.random.default_rng(1).normal(size=(1000, 3)), loud=False))
    reader.writeToDisk(loud=False)

    datasets = discover([tmp_path / "snap"])
    app = create_app(choose_app("firefly"), datasets, "reader-test-token-1234")
    live, stop = start_in_process(app, "reader-test-token-1234")
    try:
        _, body = live.request("/static/data/startup.json")
        assert json.loads(body) == {"0": "data/snap"}
        _, body = live.request("/static/data/snap/filenames.json")
        manifest = json.loads(body)
        entries = [entry[0] for files in manifest.values() for entry in files]
        assert len(manifest["Stars"]) == 3 and manifest["options"]
        for entry in entries:
            response, body = live.request(f"/static/data/{entry}")
            assert response.status == 200 and body, entry
    finally:
        stop()
