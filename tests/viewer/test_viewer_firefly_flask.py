"""Firefly's own Flask server (``serve --app firefly-flask``) in real Chromium: the
page comes up with its Socket.IO connection through the token's cookie, Load New
Data lists the served folder and refuses others, and data sent from Python with
the token appears in the page. In a notebook frame (a page of another origin) the
page's Socket.IO runs under the frame's key: data, settings and streamed frames
go both ways, and a socket without the key is refused."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
from notebook_pages import NotebookHost, origin_of
from viewer_chromium import Page

from fireflyhpc import notebook
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

    browse_served_folder_only(page, str(firefly_dataset.resolve()))

    # data sent from Python (with the token) replaces what the page shows
    reader = data_reader.ArrayReader(
        coordinates=[np.random.default_rng(1).normal(size=(500, 3))], UInames=["Sent"],
        write_to_disk=False)
    send_reader(reader, port=flask_server.port)
    page.wait_for(LOADED.format(count=500), timeout=120)
    assert page.evaluate("viewerParams.partsKeys") == ["Sent"]


def browse_served_folder_only(page: Page, root: str, origin: str | None = None) -> None:
    """Load New Data (the GUI's button): the picker's folder list starts at the
    served folder ``root``, and anything else is refused in the page's own words.
    ``origin``: the page is a frame of that origin."""
    page.evaluate("loadNewData()", origin)
    page.wait_for("!!document.getElementById('dataPickerBrowse')", timeout=60,
                  frame_origin=origin)
    page.evaluate("document.getElementById('dataPickerBrowse').click()", origin)
    path_shown = "(document.getElementById('dataBrowserPath') || {}).textContent"
    page.wait_for(f"{path_shown} === {json.dumps(root)}", timeout=60, frame_origin=origin)
    page.evaluate("requestBrowse('/')", origin)
    page.wait_for("document.body.innerText.includes('Only the served data folders')",
                  timeout=60, frame_origin=origin)
    assert page.evaluate(path_shown, origin) == root


def settings_call(server: ServerHandle, route: str, settings: Any = None) -> Any:
    """Firefly's settings exchange as its notebooks do it, with the token:
    GET /get_settings, or POST /post_settings with ``settings``."""
    body = None if settings is None else json.dumps(json.dumps({"settings": settings})).encode()
    request = urllib.request.Request(
        server.base_url.rstrip("/") + route, data=body, method="GET" if body is None else "POST",
        headers={"Authorization": f"Bearer {server.token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        text = answer.read()
    return json.loads(text) if body is None else text.decode()


SOCKET_STATE = ("socketParams.socket.connected && socketParams.joined && "
                "[socketParams.socket.io.engine.transport.name, socketParams.socket.io.opts.path,"
                " location.pathname]")
# A second Socket.IO connection from the frame, by the page's own client, at a path
# other than the frame's key: refused before any Socket.IO packet.
STRANGER_SOCKET = """new Promise(done => {{
  const s = io(location.origin + '/Firefly', {{path: {path}, transports: ['websocket'],
                                              reconnection: false}});
  s.on('connect', () => {{ s.close(); done('connected'); }});
  s.on('connect_error', () => {{ s.close(); done('refused'); }});
}})"""
POLL_STATUS = "fetch({path} + 'socket.io/?EIO=4&transport=polling').then(r => r.status)"


def test_socketio_in_a_notebook_frame(page: Page, flask_server: ServerHandle,
                                      firefly_dataset: Path) -> None:
    np = pytest.importorskip("numpy")
    data_reader = pytest.importorskip("firefly.data_reader")
    host = NotebookHost("127.0.0.1")
    try:
        cell = notebook.show(flask_server, width=900, height=650)._repr_html_()
        assert flask_server.token and flask_server.token not in cell
        origin = origin_of(flask_server.base_url)
        page.navigate(host.page("firefly-flask", cell, "localhost"))  # another site
        page.wait_for(LOADED.format(count=13_000), timeout=150, frame_origin=origin)
        transport, socket_path, page_path = page.wait_for(SOCKET_STATE, timeout=60,
                                                          frame_origin=origin)
        assert page_path.startswith("/_frame/") and flask_server.token not in page_path
        assert (transport, socket_path) == ("websocket", page_path + "socket.io/")

        # data from Python reaches the frame over its socket
        reader = data_reader.ArrayReader(
            coordinates=[np.random.default_rng(2).normal(size=(500, 3))], UInames=["Sent"],
            write_to_disk=False)
        send_reader(reader, port=flask_server.port)
        page.wait_for(LOADED.format(count=500), timeout=120, frame_origin=origin)
        assert page.evaluate("viewerParams.partsKeys", origin) == ["Sent"]

        # Load New Data in the frame: the list (/browse), then the served folder
        # loaded through the socket (load_data_path) and its files under the key
        root = str(firefly_dataset.resolve())
        browse_served_folder_only(page, root, origin)
        page.evaluate(f"submitDataPath({json.dumps(root)})", origin)
        page.wait_for(LOADED.format(count=13_000), timeout=120, frame_origin=origin)
        assert sorted(page.evaluate("viewerParams.partsKeys", origin)) == ["Cloud", "Halo"]

        # settings go both ways: Python asks, the frame answers; Python sends, it applies
        settings = settings_call(flask_server, "/get_settings")
        assert sorted(settings["partsColors"]) == ["Cloud", "Halo"]
        settings["partsColors"]["Halo"] = [0.0, 1.0, 0.0, 1.0]
        assert settings_call(flask_server, "/post_settings", settings) == "Done"
        green = "JSON.stringify(viewerParams.partsColors.Halo) === '[0,1,0,1]'"
        page.wait_for(green, timeout=60, frame_origin=origin)
        assert settings_call(flask_server, "/get_settings")["partsColors"]["Halo"] == \
            [0.0, 1.0, 0.0, 1.0]

        # frames streamed by the viewer (POST /stream_input) come back over the socket
        page.evaluate("window.streamed = 0; socketParams.socket.on('update_streamer', "
                      "() => window.streamed += 1); viewerParams.streamerActive = true", origin)
        page.wait_for("window.streamed > 0", timeout=60, frame_origin=origin)

        # without the frame's key, no handshake: another key, or the server's root
        # (a cross-site frame sends no cookie)
        stranger = "/_frame/" + "A" * 43 + "/"
        for path in (stranger, "/"):
            assert page.evaluate(POLL_STATUS.format(path=json.dumps(path)), origin) == 403, path
            assert page.evaluate(STRANGER_SOCKET.format(path=json.dumps(path + "socket.io/")),
                                 origin) == "refused", path
        assert page.evaluate(STRANGER_SOCKET.format(path=json.dumps(socket_path)),
                             origin) == "connected"
        # the key does not open the routes meant for Python
        assert page.evaluate("fetch('get_settings').then(r => r.status)", origin) == 403
    finally:
        host.close()
