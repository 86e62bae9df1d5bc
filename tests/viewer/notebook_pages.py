"""Notebook-like pages for the IFrame tests: a tiny HTTP server on a chosen loopback
address that serves pages holding a display's HTML (as Jupyter puts a cell's
``_repr_html_`` output into its page), and a check that the embedded viewer
loaded inside the frame."""

from __future__ import annotations

import http.server
import threading
from urllib.parse import urlsplit

from viewer_chromium import Page

READY = ("['ready', 'error'].includes(document.body && document.body.dataset.state) && "
         "document.body.dataset.state")


class NotebookHost:
    """Serves ``/<name>`` pages on ``address`` (port 0: any free one) in a thread."""

    def __init__(self, address: str) -> None:
        pages: dict[str, bytes] = {}
        self.pages = pages

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
                body = pages.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((address, 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def page(self, name: str, cell_html: str, host: str | None = None) -> str:
        """Publish a notebook-like page with one output cell; return its URL
        (``host``: the name to use in the URL, e.g. ``localhost``)."""
        self.pages[f"/{name}"] = (
            "<!doctype html><html><head><meta charset='utf-8'><title>notebook</title></head>"
            "<body style='margin:0;background:#fff'><div class='output'>"
            f"{cell_html}</div></body></html>").encode()
        return f"http://{host or self.server.server_address[0]}:{self.port}/{name}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def open_notebook(page: Page, url: str, server_origin: str, timeout: float = 120) -> str:
    """Open a notebook page and wait until the viewer inside its frame (of
    ``server_origin``) is ready or failed; return that state."""
    page.navigate(url)
    state: str = page.wait_for(READY, timeout=timeout, frame_origin=server_origin)
    return state

