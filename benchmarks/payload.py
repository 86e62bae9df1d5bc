#!/usr/bin/env python3
"""Payload benchmark: `fireflyhpc serve` against `python -m http.server`, same files, one run.

Run by hand (not in CI):  python3 benchmarks/payload.py [--big-mib 1024] [--small 500]

Measures, for each server:
- 500 sequential GETs of small files (requests/s), with one client per server
  that keeps its connection open as long as the server allows and reconnects
  when the server closes it; the number of TCP connections it had to open is
  reported. The two clients take turns in blocks of 25 requests;
- one GET of a 1 GiB file (MB/s, best of --repeat runs, page cache warm).
Measurements of the two servers are interleaved (alternating which goes first)
and the median of --repeat runs is reported, because a shared machine is noisy;
the servers' own CPU time per measurement (psutil) is printed too, as it is far
less sensitive to what else runs on the machine. Prints a table and the
payload/http.server ratios. Both servers bind loopback.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import psutil

SMALL_SIZE = 4096
SMALL_FILES = 50


@dataclass
class Target:
    name: str
    host: str
    port: int
    prefix: str  # URL path prefix of the dataset directory
    headers: dict[str, str]
    process: subprocess.Popen[str]


def make_files(root: Path, big_mib: int) -> Path:
    """root/bench: filenames.json, SMALL_FILES small .ffly files and big.ffly."""
    data = root / "bench"
    data.mkdir(parents=True)
    (data / "filenames.json").write_text('{"Gas": [["bench/small000.ffly", 1]]}\n')
    for i in range(SMALL_FILES):
        (data / f"small{i:03d}.ffly").write_bytes(os.urandom(SMALL_SIZE))
    block = os.urandom(1 << 20)
    with open(data / "big.ffly", "wb") as handle:
        for _ in range(big_mib):
            handle.write(block)
    return data


def _first_line(process: subprocess.Popen[str], timeout: float = 60) -> str:
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.append(process.stdout.readline()),  # type: ignore[union-attr]
                              daemon=True)
    reader.start()
    reader.join(timeout)
    if not out or not out[0]:
        process.kill()
        raise SystemExit(f"server did not start: {process.args!r}")
    return out[0]


def start_payload(data: Path) -> Target:
    token = secrets.token_urlsafe(32)
    process = subprocess.Popen(
        [sys.executable, "-m", "fireflyhpc", "serve", str(data), "--no-browser"],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ, FIREFLYHPC_TOKEN=token))
    line = _first_line(process)
    match = re.match(r"http://([\d.]+):(\d+)/", line)
    assert match, line
    return Target("fireflyhpc serve", match[1], int(match[2]), f"/data/{data.name}/",
                  {"Authorization": f"Bearer {token}"}, process)


def start_http_server(root: Path) -> Target:
    process = subprocess.Popen(
        [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1",
         "--directory", str(root)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = _first_line(process)
    match = re.search(r"port (\d+)", line)
    assert match, line
    return Target("python -m http.server", "127.0.0.1", int(match[1]), "/bench/", {}, process)


class SmallClient:
    """Sequential small GETs against one server over one http.client connection,
    kept open as long as the server allows; reconnects are counted."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.conn = http.client.HTTPConnection(target.host, target.port, timeout=60)
        self.opened = 0
        self.done = 0
        self.elapsed = 0.0
        self.cpu = 0.0
        self.process = psutil.Process(target.process.pid)

    def run(self, count: int) -> None:
        before = self.process.cpu_times()
        start = time.perf_counter()
        for _ in range(count):
            if self.conn.sock is None:
                self.conn.connect()
                self.opened += 1
            name = f"small{self.done % SMALL_FILES:03d}.ffly"
            self.conn.request("GET", self.target.prefix + name, headers=self.target.headers)
            response = self.conn.getresponse()
            body = response.read()
            if response.status != 200 or len(body) != SMALL_SIZE:
                raise SystemExit(f"{self.target.name}: bad response {response.status}")
            if response.will_close:
                self.conn.close()
            self.done += 1
        self.elapsed += time.perf_counter() - start
        after = self.process.cpu_times()
        self.cpu += (after.user + after.system) - (before.user + before.system)


def small_gets(targets: list[Target], count: int, block: int = 25) -> dict[str, SmallClient]:
    """``count`` GETs per server, in blocks of ``block`` alternating between the
    servers, so that both see the same load from the rest of the machine."""
    clients = {t.name: SmallClient(t) for t in targets}
    for i in range(0, count, block):
        order = targets if (i // block) % 2 == 0 else targets[::-1]
        for target in order:
            clients[target.name].run(min(block, count - i))
    for client in clients.values():
        client.conn.close()
    return clients


def big_get(target: Target, size: int) -> float:
    """MB/s (10^6 bytes/s) for one GET of big.ffly."""
    conn = http.client.HTTPConnection(target.host, target.port, timeout=120)
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    received = 0
    start = time.perf_counter()
    conn.request("GET", f"{target.prefix}big.ffly", headers=target.headers)
    response = conn.getresponse()
    while True:
        n = response.readinto(view)
        if not n:
            break
        received += n
    elapsed = time.perf_counter() - start
    conn.close()
    if response.status != 200 or received != size:
        raise SystemExit(f"{target.name}: got {received} of {size} bytes ({response.status})")
    return size / elapsed / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big-mib", type=int, default=1024, help="large file size in MiB")
    parser.add_argument("--small", type=int, default=500, help="number of small GETs")
    parser.add_argument("--repeat", type=int, default=7, help="runs per measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fireflyhpc-bench-") as tmp:
        root = Path(tmp)
        print(f"writing {args.big_mib} MiB test file and {SMALL_FILES} small files in {root} ...",
              flush=True)
        data = make_files(root, args.big_mib)
        size = (data / "big.ffly").stat().st_size
        with open(data / "big.ffly", "rb") as handle:  # warm the page cache
            while handle.read(1 << 24):
                pass
        targets = [start_payload(data), start_http_server(root)]
        results: dict[str, dict[str, list[float]]] = {
            t.name: {"rps": [], "conns": [], "mbs": [], "cpu_small": [], "cpu_big": []}
            for t in targets}
        try:
            for run in range(args.repeat):
                order = targets if run % 2 == 0 else targets[::-1]
                for name, client in small_gets(targets, args.small).items():
                    results[name]["rps"].append(client.done / client.elapsed)
                    results[name]["conns"].append(client.opened)
                    results[name]["cpu_small"].append(client.cpu)
                for target in order:
                    mbs, cpu = with_cpu(target, lambda: big_get(target, size))
                    results[target.name]["mbs"].append(mbs)
                    results[target.name]["cpu_big"].append(cpu)
        finally:
            for target in targets:
                target.process.terminate()
                target.process.wait(30)
        report(results, args)
    return 0


def with_cpu(target: Target, measure: Callable[[], Any]) -> tuple[Any, float]:
    """Run ``measure``; also return the server process's CPU seconds it took."""
    process = psutil.Process(target.process.pid)
    before = process.cpu_times()
    result = measure()
    after = process.cpu_times()
    return result, (after.user + after.system) - (before.user + before.system)


def report(results: dict[str, dict[str, list[float]]], args: argparse.Namespace) -> None:
    med = statistics.median
    print()
    print(f"median of {args.repeat} interleaved runs; {args.small} sequential GETs of "
          f"{SMALL_SIZE} B files; one GET of a {args.big_mib} MiB file")
    print(f"{'server':24} {'small GETs/s':>13} {'TCP conns':>10} {'CPU ms':>8} "
          f"{'big MB/s':>10} {'CPU s':>7}")
    for name, r in results.items():
        print(f"{name:24} {med(r['rps']):13.0f} {max(r['conns']):10.0f} "
              f"{med(r['cpu_small']) * 1000:8.0f} {med(r['mbs']):10.0f} {med(r['cpu_big']):7.2f}")
    payload, baseline = results["fireflyhpc serve"], results["python -m http.server"]
    rps_ratio = med(payload["rps"]) / med(baseline["rps"])
    mbs_ratio = med(payload["mbs"]) / med(baseline["mbs"])
    print()
    print(f"small requests: payload/http.server = {rps_ratio:.2f}x "
          f"({'ahead' if rps_ratio > 1 else 'BEHIND'}; target: ahead)")
    print(f"large file:     payload/http.server = {mbs_ratio:.2f}x "
          f"({'within 20%' if mbs_ratio >= 0.8 else 'MORE THAN 20% SLOWER'}; target: >= 0.80)")
    print(f"(CPU ms = server CPU for the {args.small} GETs; CPU s = server CPU for the big file)")


if __name__ == "__main__":
    sys.exit(main())
