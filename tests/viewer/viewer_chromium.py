"""Drive Debian's headless Chromium over the DevTools protocol, for browser tests.

One reusable helper: :class:`Chromium` starts a fresh browser (own profile in a
temporary directory, loopback only, software WebGL through SwiftShader) and
:class:`Page` talks to its tab over the DevTools websocket: navigate, evaluate
JavaScript (also inside an embedded frame of another origin, whether Chromium
runs it in the page's process or its own), wait for a condition, collect
console errors, take a screenshot.
:func:`png_pixels` decodes the screenshot (zlib + PNG filters) so a test can
count the pixels that are not background.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import time
import urllib.request
import zlib
from pathlib import Path
from typing import Any

import websocket

CHROMIUM = os.environ.get("FIREFLYHPC_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--mute-audio",
    # WebGL without a GPU: ANGLE on SwiftShader (software rasteriser)
    "--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
    "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
    "--window-size=900,700",
]


class BrowserError(RuntimeError):
    """The browser did not start, or a DevTools call failed or timed out."""


def available() -> bool:
    """True if the Chromium binary exists."""
    return os.access(CHROMIUM, os.X_OK)


class Page:
    """One tab, over its DevTools websocket. Records console errors as they come."""

    def __init__(self, ws_url: str) -> None:
        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        # out-of-process frames (other sites) become child sessions on this socket
        self.call("Target.setAutoAttach", {"autoAttach": True, "waitForDebuggerOnStart": False,
                                           "flatten": True})

    def close(self) -> None:
        self.ws.close()

    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = 60,
             session_id: str | None = None) -> Any:
        """Send one DevTools command (to a child session if given) and return its
        result (events are kept)."""
        self.next_id += 1
        my_id = self.next_id
        message = {"id": my_id, "method": method, "params": params or {}}
        if session_id is not None:
            message["sessionId"] = session_id
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                message = json.loads(self.ws.recv())
            except (websocket.WebSocketException, OSError) as exc:
                raise BrowserError(f"{method}: DevTools connection failed: {exc!r}") from exc
            if message.get("id") == my_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)
        raise BrowserError(f"{method}: no answer in {timeout}s")

    def evaluate(self, expression: str, frame_origin: str | None = None) -> Any:
        """The value of a JavaScript expression (promises awaited), in the page or,
        with ``frame_origin`` (``http://host:port``), in its frame of that origin."""
        params: dict[str, Any] = {"expression": expression, "returnByValue": True,
                                  "awaitPromise": True}
        session_id = None
        if frame_origin is not None:
            session_id, context = self._frame(frame_origin)
            if context is not None:
                params["contextId"] = context
        result = self.call("Runtime.evaluate", params, session_id=session_id)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def _frame(self, origin: str) -> tuple[str | None, int | None]:
        """Where a frame of ``origin`` runs: (child session, None) for an
        out-of-process frame, (None, execution context) for one in this process."""
        self.call("Runtime.evaluate", {"expression": "0"})  # collects the events so far
        sessions: dict[str, str] = {}  # sessionId -> url
        targets: dict[str, str] = {}  # sessionId -> targetId
        contexts: dict[int, str] = {}  # default-world context id -> origin
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Target.attachedToTarget" and params["targetInfo"]["type"] == "iframe":
                sessions[params["sessionId"]] = params["targetInfo"]["url"]
                targets[params["sessionId"]] = params["targetInfo"]["targetId"]
            elif method == "Target.targetInfoChanged" and \
                    params["targetInfo"].get("type") == "iframe":
                for session, _ in list(sessions.items()):
                    if targets.get(session) == params["targetInfo"]["targetId"]:
                        sessions[session] = params["targetInfo"]["url"]
            elif method == "Target.detachedFromTarget":
                sessions.pop(params.get("sessionId", ""), None)
            elif method == "Runtime.executionContextCreated" and "sessionId" not in event:
                context = params["context"]
                if context.get("auxData", {}).get("isDefault"):
                    contexts[context["id"]] = context.get("origin", "")
            elif method == "Runtime.executionContextDestroyed" and "sessionId" not in event:
                contexts.pop(params["executionContextId"], None)
            elif method == "Runtime.executionContextsCleared" and "sessionId" not in event:
                contexts.clear()
        for session, url in reversed(list(sessions.items())):
            if url.startswith(origin):
                return session, None
        for context, context_origin in reversed(list(contexts.items())):
            if context_origin == origin:
                return None, context
        raise BrowserError(f"no frame of {origin} in the page")

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", {"url": url})

    def wait_for(self, expression: str, timeout: float = 90, interval: float = 0.25,
                 frame_origin: str | None = None) -> Any:
        """Poll ``expression`` (in the page, or its frame of ``frame_origin``) until it
        is truthy; return it. Raises BrowserError on timeout."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression, frame_origin)
            except BrowserError:
                value = None  # e.g. during a navigation
            if value:
                return value
            time.sleep(interval)
        raise BrowserError(f"timed out after {timeout}s waiting for {expression} "
                           f"(last: {value!r}); "
                           f"console errors: {self.console_errors()}")

    def wait_frames(self, count: int = 3) -> None:
        """Return once the page has produced ``count`` more animation frames: everything
        changed before the call (styles, a render loop's draws) has been painted."""
        script = (f"new Promise(done => {{ let left = {int(count)}; const tick = () => "
                  "--left > 0 ? requestAnimationFrame(tick) : done(true); "
                  "requestAnimationFrame(tick); })")
        if self.evaluate(script) is not True:
            raise BrowserError("the page produced no animation frames")

    def console_errors(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads seen so far."""
        out = []
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                args = params["args"]
                out.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
            elif method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                exception = details.get("exception", {})
                out.append(exception.get("description") or details.get("text", ""))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                entry = params["entry"]
                out.append(f"{entry.get('text')} {entry.get('url', '')}".strip())
        return out

    def screenshot(self) -> bytes:
        """A PNG of the visible page."""
        return base64.b64decode(self.call("Page.captureScreenshot", {"format": "png"})["data"])


class Chromium:
    """A headless Chromium with a fresh profile; use as a context manager."""

    def __init__(self) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="fireflyhpc-chromium-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def __enter__(self) -> "Chromium":
        # Chromium keeps its singleton socket in $TMPDIR: inside the profile, it goes with it.
        tmp = self.profile / "tmp"
        tmp.mkdir()
        with open(self.profile / "stderr.log", "wb") as log:
            self.proc = subprocess.Popen(
                [CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                start_new_session=True, env={**os.environ, "TMPDIR": str(tmp)})
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.proc.poll() is None:
            if port_file.is_file() and port_file.read_text().strip():
                self.port = int(port_file.read_text().split()[0])
                return self
            time.sleep(0.1)
        tail = self.stderr_text()[-2000:]
        self.__exit__(None, None, None)
        raise BrowserError(f"chromium did not open its DevTools port; stderr ends: {tail}")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc is not None:  # its renderer and GPU processes, if any outlived it
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)

    def stderr_text(self) -> str:
        path = self.profile / "stderr.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def new_page(self) -> Page:
        """A new tab (about:blank) and a DevTools connection to it."""
        url = f"http://127.0.0.1:{self.port}/json/new?about:blank"
        req = urllib.request.Request(url, method="PUT")
        with urllib.request.urlopen(req, timeout=30) as response:
            target = json.load(response)
        return Page(target["webSocketDebuggerUrl"])


def png_pixels(png: bytes) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit RGB/RGBA PNG: (width, height, rows of raw pixel bytes)."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, width = 8, b"", 0
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        body = png[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, color_type = struct.unpack(">IIBB", body[:10])
            if depth != 8 or color_type not in (2, 6) or body[12] != 0:
                raise ValueError("only 8-bit, non-interlaced RGB/RGBA PNGs are supported")
            bpp = 3 if color_type == 2 else 4
        elif kind == b"IDAT":
            idat += body
    raw = zlib.decompress(idat)
    stride, rows, prev = width * bpp, [], bytearray(width * bpp)
    for y in range(height):
        start = y * (stride + 1)
        ftype, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
            if ftype == 1:
                line[i] = (line[i] + a) & 255
            elif ftype == 2:
                line[i] = (line[i] + b) & 255
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line) if bpp == 3 else bytes(v for j, v in enumerate(line) if j % 4 != 3))
        prev = line
    return width, height, rows


def lit_pixels(png: bytes, background: tuple[int, int, int] = (0, 0, 0), tolerance: int = 24,
               box: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)) -> int:
    """How many pixels inside ``box`` (fractions x0, y0, x1, y1) differ from ``background``."""
    width, height, rows = png_pixels(png)
    x0, x1 = int(box[0] * width), int(box[2] * width)
    count = 0
    for row in rows[int(box[1] * height):int(box[3] * height)]:
        for x in range(x0, x1):
            r, g, b = row[3 * x:3 * x + 3]
            diff = max(abs(r - background[0]), abs(g - background[1]), abs(b - background[2]))
            if diff > tolerance:
                count += 1
    return count
