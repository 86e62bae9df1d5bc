"""The benchmark's payload (a tiny TCP server) and its measuring clients.

Protocol, one command line per connection:
  ``SOURCE n``  the server sends n bytes, then closes;
  ``SINK n``    the server reads n bytes, then answers ``OK``;
  ``ECHO``      the server echoes 1 KiB messages until the client closes.

Run the server with ``python3 tunnel_payload.py HOST PORT`` (it prints ``ready``).
Standard library only, so it runs anywhere a Python 3 does.
"""

from __future__ import annotations

import socket
import socketserver
import statistics
import sys
import threading
import time

MSG = 1024
CHUNK = 256 * 1024
_ZEROS = b"\0" * CHUNK


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        words = self.rfile.readline().split()
        if words[:1] == [b"SOURCE"]:
            left = int(words[1])
            while left > 0:
                n = min(left, CHUNK)
                self.wfile.write(_ZEROS[:n])
                left -= n
        elif words[:1] == [b"SINK"]:
            left = int(words[1])
            while left > 0:
                data = self.rfile.read1(min(left, CHUNK))
                if not data:
                    return
                left -= len(data)
            self.wfile.write(b"OK\n")
        elif words[:1] == [b"ECHO"]:
            while True:
                data = self.rfile.read(MSG)
                if len(data) < MSG:
                    return
                self.wfile.write(data)
                self.wfile.flush()


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve(host: str, port: int) -> None:
    """Serve forever on host:port; print ``ready`` once listening."""
    with _Server((host, port), _Handler) as server:
        print("ready", flush=True)
        server.serve_forever()


def _connect(port: int, timeout: float = 60.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def download(port: int, size: int) -> int:
    """Fetch ``size`` bytes through ``port``; return how many arrived."""
    with _connect(port) as sock:
        sock.sendall(b"SOURCE %d\n" % size)
        got = 0
        buf = bytearray(CHUNK)
        while got < size:
            n = sock.recv_into(buf)
            if not n:
                break
            got += n
        return got


def bulk(port: int, size: int) -> float:
    """MiB/s of one ``size``-byte download (0 if it came up short)."""
    start = time.perf_counter()
    got = download(port, size)
    elapsed = time.perf_counter() - start
    return size / elapsed / 2**20 if got == size else 0.0


def round_trips(port: int, count: int = 1000) -> tuple[float, float]:
    """Median and p99 (ms) of ``count`` sequential 1 KiB echoes on one connection."""
    times = []
    message = b"x" * MSG
    with _connect(port) as sock:
        sock.sendall(b"ECHO\n")
        for _ in range(count):
            start = time.perf_counter()
            sock.sendall(message)
            got = 0
            while got < MSG:
                chunk = sock.recv(MSG - got)
                if not chunk:
                    raise ConnectionError("echo connection closed")
                got += len(chunk)
            times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


def parallel(port: int, conns: int = 64, size: int = 16 * 2**20) -> tuple[int, float]:
    """``conns`` simultaneous downloads of ``size`` bytes: (how many complete, MiB/s)."""
    done = [0] * conns

    def one(i: int) -> None:
        try:
            done[i] = download(port, size) == size
        except OSError:
            done[i] = 0

    threads = [threading.Thread(target=one, args=(i,)) for i in range(conns)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    elapsed = time.perf_counter() - start
    complete = sum(done)
    return complete, complete * size / elapsed / 2**20


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
