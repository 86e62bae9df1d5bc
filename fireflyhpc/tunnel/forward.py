"""The hot path: copy bytes between a local socket and a channel, both ways.

One connection costs two threads (this one and a helper), each blocked in a
large ``recv``; connections never wait on each other. Half-close is passed on
in both directions, and both threads end when the connection ends, whichever
side ends it or fails.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Protocol

log = logging.getLogger(__name__)

# Large reads keep per-call overhead (Python + paramiko locking) small for bulk
# transfers; recv returns whatever is there, so small requests are not delayed.
RECV_SIZE = 256 * 1024


class Channel(Protocol):
    """What the pump needs from the far end (a paramiko Channel fits)."""

    def recv(self, nbytes: int) -> bytes: ...
    def sendall(self, data: bytes) -> None: ...
    def shutdown_write(self) -> None: ...
    def close(self) -> None: ...


class PumpStats:
    """Bytes moved by one connection, for logs and tests."""

    def __init__(self) -> None:
        self.up = 0  # local client -> remote
        self.down = 0  # remote -> local client


def pump(sock: socket.socket, chan: Channel, *, bufsize: int = RECV_SIZE,
         label: str = "") -> PumpStats:
    """Forward ``sock`` <-> ``chan`` until both directions end, then close both.

    Returns the byte counts. Never raises for network errors: a failure on one
    side tears the connection down on both (the usual outcome when a path dies).
    """
    stats = PumpStats()
    failed = threading.Event()

    def tear_down() -> None:
        failed.set()
        _quietly(sock.shutdown, socket.SHUT_RDWR)
        _quietly(chan.close)

    def upstream() -> None:
        try:
            while True:
                data = sock.recv(bufsize)
                if not data:
                    chan.shutdown_write()
                    return
                chan.sendall(data)
                stats.up += len(data)
        except (OSError, EOFError) as exc:
            log.debug("%s upstream ended: %s", label, exc)
            tear_down()

    helper = threading.Thread(target=upstream, name=f"up{label}", daemon=True)
    helper.start()
    try:
        while True:
            data = chan.recv(bufsize)
            if not data:
                _quietly(sock.shutdown, socket.SHUT_WR)
                break
            sock.sendall(data)
            stats.down += len(data)
    except (OSError, EOFError) as exc:
        log.debug("%s downstream ended: %s", label, exc)
        tear_down()
    finally:
        helper.join()
        _quietly(chan.close)
        _quietly(sock.close)
    return stats


def _quietly(func: object, *args: object) -> None:
    try:
        func(*args)  # type: ignore[operator]
    except (OSError, EOFError):
        pass
