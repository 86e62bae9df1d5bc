"""Firefly's own Flask server (``--app firefly-flask``) behind the token: every
route and the Socket.IO traffic refused without it, its pages and the settings
exchange working with it, Socket.IO under a notebook frame's key (and refused
under any other), Load New Data confined to the served folders, data sent from
Python reaching the browser's room."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import socketio
import websocket
from serverkit import SECRET, ServeProcess, start_serve, stop_serve

from fireflyhpc.datasets import discover
from fireflyhpc.errors import ServerError
from fireflyhpc.notebook import frame_ticket
from fireflyhpc.server.firefly_flask import PYTHON_ONLY, send_reader, served_root

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# Firefly's Flask routes, with the method each takes.
ROUTES = [("GET", "/"), ("GET", "/gui"), ("GET", "/viewer"), ("GET", "/combined"),
          ("GET", "/VR"), ("GET", "/stream"), ("GET", "/browse?path=/"),
          ("POST", "/data_input"), ("GET", "/get_settings?timeout=1"),
          ("POST", "/post_settings"), ("GET", "/get_selected_data?waitTime=1"),
          ("POST", "/stream_input"), ("GET", "/userdata/default/data/x"),
          ("GET", "/static/js/misc/socketParams.js"),
          ("GET", "/socket.io/?EIO=4&transport=polling")]


def test_served_root_golden(data_tree: Path, tmp_path: Path) -> None:
    datasets = discover([data_tree])
    galaxy = str((data_tree / "galaxy").resolve())
    (data_tree / "galaxy" / "sub").mkdir()
    assert served_root(datasets, galaxy) == galaxy
    assert served_root(datasets, galaxy + "/") == galaxy
    assert served_root(datasets, galaxy + "/sub") == galaxy + "/sub"
    assert served_root(datasets, galaxy + "//sub/") == galaxy + "/sub"
    assert served_root(datasets, galaxy + "/inside.ffly") == galaxy + "/Gas000.ffly"
    for refused in (str(data_tree), str(tmp_path), "/", galaxy + "/..",
                    galaxy + "/sub/../..", galaxy + "/../galaxy", galaxy + "/escape",
                    galaxy + "/escape_dir", galaxy + "/escape_dir/secret.txt",
                    galaxy + "/.hidden", galaxy + "x", "galaxy", "~", ""):
        assert served_root(datasets, refused) is None, refused


@pytest.fixture
def flask_serve(data_tree: Path, tmp_path: Path) -> Iterator[ServeProcess]:
    serve = start_serve([str(data_tree), "--app", "firefly-flask"], tmp_path)
    try:
        yield serve
    finally:
        assert stop_serve(serve) == 0
        # stdout held the URL line only: Firefly's own progress prints went to stderr
        assert serve.process.stdout is not None and serve.process.stdout.read() == ""


def fetch_with_headers(url: str, method: str = "GET", token: str | None = None,
                       body: bytes | None = None, headers: dict[str, str] | None = None
                       ) -> tuple[int, Any, bytes]:
    """(status, response headers, body) of one request (redirects followed)."""
    headers = dict(headers or {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if body is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.headers, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def fetch(url: str, method: str = "GET", token: str | None = None,
          body: bytes | None = None) -> tuple[int, bytes]:
    status, _, text = fetch_with_headers(url, method, token, body)
    return status, text


def test_every_route_and_socketio_need_the_token(flask_serve: ServeProcess) -> None:
    base = flask_serve.base.rstrip("/")
    for method, route in ROUTES:
        body = b'"{}"' if method == "POST" else None
        status, text = fetch(base + route, method, body=body)
        assert status == 403 and b"Access token needed" in text, route
        status, _ = fetch(base + route, method, token="wrong-token", body=body)
        assert status == 403, route
    status, text = fetch(base + "/", token=flask_serve.token)
    assert status == 200 and b"runLocal(" in text
    status, text = fetch(base + "/socket.io/?EIO=4&transport=polling", token=flask_serve.token)
    assert status == 200 and b'"sid"' in text
    ws_url = base.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(ws_url, timeout=10)
    assert refused.value.status_code == 403
    sock = websocket.create_connection(ws_url, timeout=10,
                                       header=[f"Authorization: Bearer {flask_serve.token}"])
    try:
        assert sock.recv().startswith("0{")  # the Engine.IO open packet
    finally:
        sock.close()


# Firefly's pages, each with the script that points its Socket.IO at the page's
# own prefix ("./": the server's root here).
PAGES = ["/", "/gui", "/viewer", "/combined", "/VR", "/stream", "/default"]


def test_pages_work_with_the_token(flask_serve: ServeProcess) -> None:
    base = flask_serve.base.rstrip("/")
    for route in PAGES:
        status, headers, text = fetch_with_headers(base + route, token=flask_serve.token)
        assert status == 200, route
        assert b"static/js/misc/socketParams.js" in text, route  # Firefly's page
        assert b'new URL("./", location.href)' in text and b'"socket.io/"' in text, route
        assert headers["Referrer-Policy"] == "no-referrer", route
        assert headers.get("Access-Control-Allow-Origin") is None, route
    # the pages that run Firefly's GUI and viewer over Socket.IO load its client
    for route in ("/gui", "/viewer", "/combined", "/VR", "/stream"):
        assert b"static/lib/socket.io.min.js" in fetch(base + route, token=flask_serve.token)[1]
    status, text = fetch(base + "/static/lib/socket.io.min.js", token=flask_serve.token)
    assert status == 200 and b"Socket.IO v4" in text


def frame_prefix(serve: ServeProcess) -> str:
    """A notebook frame's key path (``/_frame/<key>/``), from a ticket the way
    ``show()`` gets one and the frame redeems it."""
    ticket = frame_ticket(serve.base, serve.token)
    parts = urllib.parse.urlsplit(serve.base)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        conn.request("GET", f"/?ticket={ticket}")
        answer = conn.getresponse()
        answer.read()
    finally:
        conn.close()
    location = answer.getheader("Location") or ""
    assert answer.status == 303 and location.startswith("_frame/"), (answer.status, location)
    return "/" + location


def test_socketio_under_a_frame_key_and_nowhere_else(flask_serve: ServeProcess) -> None:
    base = flask_serve.base.rstrip("/")
    framed = base + frame_prefix(flask_serve)
    # the frame's page points its Socket.IO at the frame's own path ...
    for route in ("", "gui", "viewer", "combined", "VR", "stream"):
        status, text = fetch(framed + route)
        assert status == 200 and b'new URL("./", location.href)' in text, route
    # ... where both transports are served, with the key as the only credential
    status, text = fetch(framed + "socket.io/?EIO=4&transport=polling")
    assert status == 200 and b'"sid"' in text
    ws = framed.replace("http://", "ws://") + "socket.io/?EIO=4&transport=websocket"
    sock = websocket.create_connection(ws, timeout=10)
    try:
        assert sock.recv().startswith("0{")
    finally:
        sock.close()
    # Socket.IO's own origin check: the notebook page (another origin) gets no
    # handshake even with the key, and no CORS header opens one
    status, headers, _ = fetch_with_headers(framed + "socket.io/?EIO=4&transport=polling",
                                            headers={"Origin": "http://localhost:8888"})
    assert status == 400 and headers.get("Access-Control-Allow-Origin") is None
    # an unknown key, or none, gets no handshake: 403 for polling and websocket
    unknown = base + "/_frame/" + "A" * 43 + "/"
    for prefix in (unknown, base + "/"):
        status, text = fetch(prefix + "socket.io/?EIO=4&transport=polling")
        assert status == 403, prefix
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(
                prefix.replace("http://", "ws://") + "socket.io/?EIO=4&transport=websocket",
                timeout=10)
        assert refused.value.status_code == 403, prefix
    # the key opens what Firefly's page uses, not the routes meant for Python
    assert fetch(framed + "browse?path=")[0] == 200
    for route in PYTHON_ONLY:
        method = "POST" if route in ("/data_input", "/post_settings") else "GET"
        status, text = fetch(framed + route.lstrip("/"), method,
                             body=b'"{}"' if method == "POST" else None)
        assert status == 403 and b"Access token needed" in text, route


OTHER_USER = """
import json, sys, urllib.error, urllib.request
from pathlib import Path
base, registry, routes = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
try:
    print("registry:", sorted(p.name for p in registry.iterdir()))
except OSError as exc:
    print("registry: refused", exc.errno)
for method, route in routes:
    body = b'"{}"' if method == "POST" else None
    req = urllib.request.Request(base + route, data=body, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        status = urllib.request.urlopen(req, timeout=30).status
    except urllib.error.HTTPError as exc:
        status = exc.code
    print(route, status)
"""


def test_another_user_gets_no_listing_and_no_data(flask_serve: ServeProcess,
                                                  private_registry: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run a process as another user")
    proc = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                           sys.executable, "-I", "-c", OTHER_USER, flask_serve.base.rstrip("/"),
                           str(private_registry / "servers"), json.dumps(ROUTES)],
                          capture_output=True, text=True, timeout=120, cwd="/", check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("registry: refused")
    assert lines[1:] == [f"{route} 403" for _, route in ROUTES]


def browse(serve: ServeProcess, path: str) -> dict[str, Any]:
    query = urllib.parse.urlencode({"path": path})
    status, text = fetch(f"{serve.base}browse?{query}", token=serve.token)
    assert status == 200
    return json.loads(text)  # type: ignore[no-any-return]


def test_browse_sees_only_the_served_folders(flask_serve: ServeProcess, data_tree: Path,
                                             tmp_path: Path) -> None:
    galaxy = str((data_tree / "galaxy").resolve())
    first = browse(flask_serve, "")
    assert first["path"] == galaxy and first["parent"] is None and first["native"] is False
    assert first["shortcuts"] == [{"label": "galaxy", "path": galaxy}]
    assert first["self_hint"] == "firefly"
    # escape_dir is a symlink to the folder above: not listed
    assert first["dirs"] == []
    (data_tree / "galaxy" / "sub").mkdir()
    assert [d["name"] for d in browse(flask_serve, galaxy)["dirs"]] == ["sub"]
    assert browse(flask_serve, galaxy + "/sub")["parent"] == galaxy
    for outside in (str(tmp_path), "/", galaxy + "/..", galaxy + "/../galaxy/../..",
                    galaxy + "/escape_dir", galaxy + "/.hidden", "~", "sims",
                    "/etc"):
        answer = browse(flask_serve, outside)
        assert answer["path"] == "" and "served data folders" in answer["error"], outside
        assert "dirs" not in answer


DEFAULT_ROOM = "default_Firefly_AMG_ABG"


class FireflyRoom:
    """A Socket.IO client in Firefly's namespace and default room, recording events."""

    def __init__(self, serve: ServeProcess) -> None:
        self.events: list[tuple[str, Any]] = []
        self.done = threading.Event()
        self.settings: dict[str, Any] = {"useStereo": False}
        self.client = socketio.Client()
        for name in ("input_data", "data_error", "load_ffly_data", "show_loader",
                     "input_settings"):
            self.client.on(name, self._recorder(name), namespace="/Firefly")
        self.client.on("output_settings", self._send_settings, namespace="/Firefly")
        self.client.connect(serve.base.rstrip("/"), namespaces=["/Firefly"],
                            headers={"Authorization": f"Bearer {serve.token}"},
                            transports=["websocket"], wait_timeout=30)
        # Firefly's page joins the room its server names (the default one); the call
        # returns once the server handled it
        self.client.call("join", {"room": DEFAULT_ROOM}, namespace="/Firefly", timeout=30)

    def _recorder(self, name: str) -> Any:
        def record(message: Any = None) -> None:
            self.events.append((name, message))
            if name == "input_settings":  # Firefly's viewer takes them as its options
                self.settings = message
            if name in ("data_error", "load_ffly_data", "input_settings") or (
                    name == "input_data" and message.get("status") == "done"):
                self.done.set()
        return record

    def _send_settings(self, message: Any = None) -> None:
        # what Firefly's viewer answers when the server asks for its settings
        self.client.emit("send_settings", {"settings": self.settings, "room": DEFAULT_ROOM},
                         namespace="/Firefly")

    def wait(self) -> list[tuple[str, Any]]:
        assert self.done.wait(60), self.events
        self.done.clear()
        events, self.events = self.events, []
        return events


@pytest.fixture
def room(flask_serve: ServeProcess) -> Iterator[FireflyRoom]:
    client = FireflyRoom(flask_serve)
    try:
        yield client
    finally:
        client.client.disconnect()


def test_data_sent_from_python_reaches_the_room(flask_serve: ServeProcess,
                                                room: FireflyRoom) -> None:
    from firefly.data_reader import ArrayReader

    reader = ArrayReader(coordinates=[np.arange(30.0).reshape(10, 3)], UInames=["Stars"],
                         write_to_disk=False)
    port = int(flask_serve.base.rsplit(":", 1)[1].strip("/"))
    send_reader(reader, port=port)
    events = room.wait()
    data = [message for name, message in events if name == "input_data"
            and message.get("status") == "data"]
    stars = [json.loads(value) for message in data for key, value in message.items()
             if key.endswith("Stars000.json")]
    assert len(stars) == 1 and len(stars[0]["Coordinates_flat"]) == 30
    # without the token Firefly's own sender is refused, and nothing reaches the room
    status, _ = fetch(flask_serve.base + "data_input", "POST", body=b'"{}"')
    assert status == 403
    with pytest.raises(ServerError, match="no fireflyhpc server"):
        send_reader(reader, port=port + 1 if port < 65535 else 1)
    # with a second server of ours (this test process, registered), port= must choose
    from fireflyhpc.server import registry

    entry = registry.register("127.0.0.1", 1, "http://127.0.0.1:1/", "other-token")
    try:
        with pytest.raises(ServerError, match="several fireflyhpc servers"):
            send_reader(reader)
    finally:
        registry.unregister(entry)
    send_reader(reader)  # one server again: no port needed
    assert room.wait()[-1] == ("input_data", {"status": "done"})


def test_load_data_path_only_loads_served_folders(flask_serve: ServeProcess, data_tree: Path,
                                                  tmp_path: Path, room: FireflyRoom) -> None:
    galaxy = str((data_tree / "galaxy").resolve())
    for outside in (str(tmp_path), galaxy + "/..", galaxy + "/escape_dir", "~"):
        room.client.emit("load_data_path", {"path": outside}, namespace="/Firefly")
        assert room.wait() == [("data_error", {
            "message": "Only the served data folders can be loaded."})], outside
    room.client.emit("load_data_path", {"path": galaxy}, namespace="/Firefly")
    events = dict(room.wait())
    assert events["load_ffly_data"]["filepath"] == f"userdata/{DEFAULT_ROOM}/data/galaxy"
    files = f"{flask_serve.base}userdata/{DEFAULT_ROOM}/data/"
    status, body = fetch(files + "galaxy/Settings.json", token=flask_serve.token)
    assert status == 200 and json.loads(body) == {"loaded": True}
    for outside in ("stray.txt", "galaxy/escape", "galaxy/escape_dir/secret.txt",
                    "galaxy/.hidden", "galaxy/%2e%2e/stray.txt"):
        status, body = fetch(files + outside, token=flask_serve.token)
        assert status == 404 and SECRET.encode() not in body, outside
    room.client.emit("native_browse", namespace="/Firefly")
    assert room.wait()[0][0] == "data_error"


def test_settings_exchange_with_the_token(flask_serve: ServeProcess, room: FireflyRoom) -> None:
    """Firefly's contract (its passing_settings notebook): GET /get_settings gives the
    viewer's settings, POST /post_settings (a JSON string of {"settings": ...})
    sends settings to it."""
    base = flask_serve.base
    status, text = fetch(base + "get_settings", token=flask_serve.token)
    assert status == 200 and json.loads(text) == {"useStereo": False}
    settings = {"useStereo": True, "partsColors": {"Stars": [0.0, 1.0, 0.0, 1.0]}}
    body = json.dumps(json.dumps({"settings": settings})).encode()
    status, text = fetch(base + "post_settings", "POST", token=flask_serve.token, body=body)
    assert (status, text) == (200, b"Done")
    assert room.wait() == [("input_settings", settings)]
    status, text = fetch(base + "get_settings", token=flask_serve.token)
    assert status == 200 and json.loads(text) == settings
    # without the token: refused, and nothing reaches the room
    status, _ = fetch(base + "post_settings", "POST", body=body)
    assert status == 403
    assert fetch(base + "get_settings")[0] == 403
    assert room.events == []
