"""Servers kept on a node without a session, and taking one back.

A lifeline keeps its server when its session detaches or loses the connection (see
:mod:`fireflyhpc.session.lifeline`): the run folder then holds a ``token`` file. A
later ``connect --job ID`` takes such a server back instead of starting another.
:data:`FIND_SCRIPT` does the whole look on the host in one command: folders of
servers whose process group is gone are removed there (their tokens must not stay),
and the first live one is printed with its token. :func:`start_or_reuse` puts that
look in front of the payload's start script, so that attaching costs no round trip
more than starting: the node answers with a kept server, or starts one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Sequence

from fireflyhpc.errors import ServerError
from fireflyhpc.session.launch import (READY_TIMEOUT, PayloadSpec, RemoteServer, Runner,
                                       is_run_name, run_start, start_argv, started_server)

# $1: job id. For the run folders of that job that have a token file (a kept server)
# and whose process group lives on this host (its "host" file: the home is shared by
# the login node, where srun steps are held, and the nodes): a folder whose group is
# gone is removed; the first live one is printed, one line, and the script ends:
# "NAME PGID KEPT CANCELS TOKEN READY-JSON". KEPT is "detached" or "lingering";
# CANCELS is 1 when leaving it must cancel the job.
FIND_SCRIPT = r"""
cd || exit 0
host=$(uname -n)
for d in .fireflyhpc/run/"$1"-*; do
    [ -s "$d/token" ] && [ -s "$d/ready.json" ] && [ -s "$d/pgid" ] || continue
    [ "$(cat "$d/host" 2>/dev/null)" = "$host" ] || continue
    pg=$(cat "$d/pgid")
    kill -0 "-$pg" 2>/dev/null || { rm -rf -- "$d"; continue; }
    kept=$(cat "$d/kept" 2>/dev/null)
    cancels=0
    [ -f "$d/cancels" ] && cancels=1
    printf '%s %s %s %s %s %s\n' "${d##*/}" "$pg" "${kept:-detached}" "$cancels" \
        "$(cat "$d/token")" "$(tr -d '\n' <"$d/ready.json")"
    exit 0
done
"""

_TOKEN = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class KeptServer:
    """A server kept on the node without a session: detached, or lingering after its
    session lost the connection. ``cancels_job``: leaving it must cancel the job."""

    server: RemoteServer
    token: str
    detached: bool = True
    cancels_job: bool = False

    def __repr__(self) -> str:  # never show the token
        return (f"KeptServer(server={self.server!r}, detached={self.detached}, "
                f"cancels_job={self.cancels_job})")


def parse_find_output(stdout: str, node: str) -> KeptServer | None:
    """The kept server :data:`FIND_SCRIPT` printed, None if none (pure); a malformed
    line counts as none."""
    for line in stdout.splitlines():
        parts = line.split(" ", 5)
        if len(parts) != 6 or not is_run_name(parts[0]) or not parts[1].isdigit() \
                or parts[2] not in ("detached", "lingering") or parts[3] not in ("0", "1") \
                or not _TOKEN.fullmatch(parts[4]):
            continue
        try:
            port = int(json.loads(parts[5])["port"])
        except (ValueError, KeyError, TypeError):
            continue
        server = RemoteServer(node=node, pgid=int(parts[1]), port=port, run_name=parts[0])
        return KeptServer(server, parts[4], detached=parts[2] == "detached",
                          cancels_job=parts[3] == "1")
    return None


def start_or_reuse(conn: Runner, spec: PayloadSpec, *, job_id: str, node: str, name: str,
                   token: str, timeout: float = READY_TIMEOUT,
                   argv: Sequence[str] | None = None) -> RemoteServer | KeptServer:
    """A kept server of ``job_id`` on the host ``conn`` runs on, else ``spec`` started
    there as :func:`~fireflyhpc.session.launch.start_payload` starts it (``argv``
    likewise), in one command. Raises what that raises."""
    start = list(argv) if argv is not None else start_argv(spec, name, timeout)
    stdout = run_start(conn, ["env", f"FIREFLYHPC_FIND={FIND_SCRIPT}",
                              f"FIREFLYHPC_FIND_JOB={job_id}", *start],
                       spec=spec, node=node, token=token, timeout=timeout)
    if stdout.startswith("kept "):
        found = parse_find_output(stdout[len("kept "):], node)
        if found is None:
            raise ServerError(f"unreadable answer about a server kept on {node}: "
                              f"{stdout.split(' ', 3)[:3]!r}")
        return found
    return started_server(conn, stdout, node=node, name=name)


__all__ = ["FIND_SCRIPT", "KeptServer", "parse_find_output", "start_or_reuse"]
