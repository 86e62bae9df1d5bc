"""Firefly's own Flask server (``serve --app firefly-flask``) in real Chromium: the
page comes up with its Socket.IO connection through the token's cookie, Load New
Data lists the served folder and refuses others, and data sent from Python with
the token appears in the page."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest
from viewer_chromium import Page

from fireflyhpc.server import ServerHandle, spawn_server
from fireflyhpc.server.firefly_flask import send_reader

pytestmark = [pytest.mark.browser, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

LOADED = ("typeof viewerParams !== 'undefined' && viewerParams.ready === true "
          "&& typeof countParts === 'function' && countParts() === {count}")


@pytest.fixture
def flask_server(firefly_dataset: Path, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerHandle]:
    monkeypatch.setenv("FIREFLYHPC_RUNTIME_DIR", str(tmp_path / "runtime"))
    handle = spawn_server(firefly_dataset, app="firefly-flask")
    try:
        yield handle
    finally:
        handle.stop()


def test_load_new_data_and_data_from_python(page: Page, flask_server: ServerHandle,
                                            firefly_dataset: Path) -> None:
    np = pytest.importorskip("numpy")
    data_reader = pytest.importorskip("firefly.data_reader")
    page.navigate(flask_server.url)
    page.wait_for(LOADED.format(count=13_000), timeout=150)
    assert page.evaluate("viewerParams.usingSocket") is True
    assert page.evaluate("socketParams.socket.connected") is True

    # Load New Data: the picker's folder list starts at the served folder...
    root = str(firefly_dataset.resolve())
    page.evaluate("loadNewData()")  # the GUI's Load New Data button
    page.wait_for("!!document.getElementById('dataPickerBrowse')", timeout=60)
    page.evaluate("document.getElementById('dataPickerBrowse').click()")
    path_shown = "(document.getElementById('dataBrowserPath') || {}).textContent"
    page.wait_for(f"{path_shown} === {json.dumps(root)}", timeout=60)
    # ... and anything else is refused, in the page's own words
    page.evaluate("requestBrowse('/')")
    page.wait_for("document.body.innerText.includes('Only the served data folders')",
                  timeout=60)
    assert page.evaluate(path_shown) == root

    # data sent from Python (with the token) replaces what the page shows
    reader = data_reader.ArrayReader(
        coordinates=[np.random.default_rng(1).normal(size=(500, 3))], UInames=["Sent"],
        write_to_disk=False)
    send_reader(reader, port=flask_server.port)
    page.wait_for(LOADED.format(count=500), timeout=120)
    assert page.evaluate("viewerParams.partsKeys") == ["Sent"]
