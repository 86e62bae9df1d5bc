"""A small token-protected HTTP server the tunnel tests run on a compute node.

    python3 tunnel_node_server.py HOST PORT      (the token is the first line of stdin)

GET /hello             -> "hello from <hostname> as <user>"
GET /blob?seed=S&n=N   -> N bytes of random.Random(S).randbytes, in 1 MiB pieces
Every request needs the header ``Authorization: Bearer <token>``; otherwise 403.
Prints ``ready PORT`` once listening (PORT 0 picks a free one). Standard library
only (it runs as the bench user with the system Python).
"""

from __future__ import annotations

import getpass
import hmac
import random
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

PIECE = 2**20
TOKEN = ""


def blob_pieces(seed: int, size: int):
    """The bytes /blob sends, as an iterator of pieces (the tests use it too)."""
    rng = random.Random(seed)
    left = size
    while left > 0:
        n = min(PIECE, left)
        yield rng.randbytes(n)
        left -= n


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        given = self.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {TOKEN}".encode()):
            return self._send(403, b"forbidden\n")
        url = urlparse(self.path)
        if url.path == "/hello":
            return self._send(200, f"hello from {socket.gethostname()} as "
                                   f"{getpass.getuser()}\n".encode())
        if url.path == "/blob":
            query = parse_qs(url.query)
            seed, size = int(query["seed"][0]), int(query["n"][0])
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            for piece in blob_pieces(seed, size):
                self.wfile.write(piece)
            return None
        return self._send(404, b"not found\n")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main() -> None:
    global TOKEN
    TOKEN = sys.stdin.readline().strip()
    server = ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Handler)
    server.daemon_threads = True
    print(f"ready {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
