"""Starting and stopping the payload web server on a compute node.

The payload runs as the user, inside the job's environment (the profile's setup
lines), in its own session and process group (``setsid``), so stopping it means
signalling that whole group. Everything it leaves on disk lives in one 0700 run
folder in the user's cluster home, ``~/.fireflyhpc/run/<job>-<session>/``.

How the pieces travel, so that nothing secret is on a command line:

- the shell script is a constant; the payload argv and the run folder are its
  positional arguments (``sh -c SCRIPT sh ARG...``), quoted once, at the SSH
  boundary (:func:`fireflyhpc.ssh.remote.build_command`);
- the access token is the first line of the script's stdin; the script exports it
  as ``FIREFLYHPC_TOKEN`` for the server (only the user can read a process's
  environment). A token file (0600) is written only while no session holds the
  server (detached, or kept after its session lost the connection: see
  :mod:`fireflyhpc.session.lifeline`), so that a later ``connect --job`` can reuse it;
- the port is picked by the server itself (``--port 0``) and read back from its
  ready file: no pick-then-bind race.

Pure builders (:func:`payload_argv`, :func:`start_script`) are separated from the
calls that run them (:func:`start_payload`, :func:`stop_payload`, ...).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Protocol, Sequence

from fireflyhpc.errors import ConfigError, RemoteCommandError, ServerError, SSHError
from fireflyhpc.validate import PAYLOAD_APPS

log = logging.getLogger(__name__)

RUN_ROOT = ".fireflyhpc/run"  # relative to the remote $HOME
READY_TIMEOUT = 60.0  # seconds the server may take to start listening
# Seconds between looks for the ready file (its wait is the whole start's): often at
# first, while a server usually comes up, then at a pace that costs the node nothing.
READY_POLL, READY_POLL_FAST_FOR, READY_POLL_SLOW = 0.02, 3.0, 0.1
_RUN_NAME = re.compile(r"[0-9]+(?:_[0-9]+)?-[0-9a-f]{8}")


class Runner(Protocol):
    """What the launcher needs from a connection (a :class:`fireflyhpc.ssh.Connection`)."""

    def run(self, argv: Sequence[str], *, timeout: float | None = None, check: bool = True,
            input: bytes | str | None = None) -> object: ...  # noqa: A002


@dataclass(frozen=True)
class PayloadSpec:
    """What to run on the node.

    ``kind`` is ``auto`` (Firefly's app if the cluster Python has it, else the
    bundled viewer), ``builtin``, ``firefly``, ``firefly-flask`` or ``command`` (then ``command`` is
    the user's one-line shell command containing ``{port}``).
    """

    kind: str = "auto"
    python: str = "python3"
    setup: tuple[str, ...] = ()
    data_dirs: tuple[str, ...] = ()
    command: str | None = None
    bind: str = "127.0.0.1"
    ports: tuple[int, int] | None = None  # the profile's port_range; None: any free port

    @property
    def ports_arg(self) -> str:
        """``--port`` of ``fireflyhpc serve``: ``LOW-HIGH``, or ``0`` for any free port."""
        return "0" if self.ports is None else f"{self.ports[0]}-{self.ports[1]}"

    @classmethod
    def from_setting(cls, payload: str, **values: object) -> "PayloadSpec":
        """The spec for a profile/flag ``payload`` value (a :data:`PAYLOAD_APPS` name or a command)."""
        if payload in PAYLOAD_APPS:
            return cls(kind=payload, **values)  # type: ignore[arg-type]
        return cls(kind="command", command=payload, **values)  # type: ignore[arg-type]

    @property
    def enforces_token(self) -> bool:
        """False for a user command: fireflyhpc cannot make it check a token."""
        return self.kind != "command"


@dataclass(frozen=True)
class RemoteServer:
    """A payload server running on ``node``: its process group, port and run folder."""

    node: str
    pgid: int
    port: int
    run_name: str
    app: str = ""  # the web app the server chose (firefly, builtin, custom), if it said

    @property
    def run_dir(self) -> str:
        """The run folder, relative to the remote home."""
        return f"{RUN_ROOT}/{self.run_name}"


def is_run_name(name: str) -> bool:
    """True if ``name`` has the form of a run folder name (``JOB-SESSION``)."""
    return bool(_RUN_NAME.fullmatch(name))


def run_name(job_id: str, session_id: str) -> str:
    """The run folder name of a session (validated: it becomes a remote path)."""
    name = f"{job_id}-{session_id}"
    if not _RUN_NAME.fullmatch(name):
        raise ConfigError(f"bad job or session id for a run folder: {name!r}")
    return name


def payload_argv(spec: PayloadSpec, ready_file: str) -> list[str]:
    """The argv of the fireflyhpc payload server (the :data:`PAYLOAD_APPS` kinds).

    No data folder means the demo galaxy. ``ready_file`` is relative to the
    remote home (the server runs there).
    """
    if spec.kind not in PAYLOAD_APPS:
        raise ValueError(f"payload_argv is for {'/'.join(PAYLOAD_APPS)}, not {spec.kind!r}")
    argv = [spec.python, "-m", "fireflyhpc", "serve", *spec.data_dirs]
    if not spec.data_dirs:
        argv.append("--demo")
    argv += ["--port", spec.ports_arg, "--host", spec.bind, "--no-browser", "--ready-file",
             ready_file, "--app", spec.kind]
    return argv


# Python for a user command's port: a free one in argv[1] (LOW-HIGH, from a random
# start; "0": any), checked by binding it on loopback.
PICK_PORT = """\
import random, socket, sys
low, _, high = sys.argv[1].partition("-")
ports = list(range(int(low), int(high or low) + 1))
start = random.randrange(len(ports))
for port in ports[start:] + ports[:start]:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        print(s.getsockname()[1])
        break
else:
    sys.exit("no free port in " + sys.argv[1])
"""

# $1: run folder (relative to $HOME); $2: "server", "step" or "command"; the rest: the
# argv of the server (step: of the srun that starts it on another host), or (command)
# one shell command line. Prints "pid PID" then, for the server or step, the ready
# file's JSON; for a command, "port PORT". Exit 3: it died early. The host the process
# group lives on goes to the run folder's "host" (kept servers are looked for there
# only); a step's token to its "token" file (0600), which the step's task reads and
# removes. With FIREFLYHPC_FIND set (see fireflyhpc.session.kept), that script runs
# first with FIREFLYHPC_FIND_JOB: if it prints a kept server, "kept " and that line,
# and nothing starts.
START_SCRIPT = r"""
cd || exit 4
umask 077
dir=$1; kind=$2; shift 2
if [ -n "${FIREFLYHPC_FIND:-}" ]; then
    kept=$(sh -c "$FIREFLYHPC_FIND" sh "$FIREFLYHPC_FIND_JOB")
    [ -n "$kept" ] && { printf 'kept %s\n' "$kept"; exit 0; }
    unset FIREFLYHPC_FIND FIREFLYHPC_FIND_JOB
fi
mkdir -p "$dir" || exit 4
uname -n >"$dir/host" || exit 4
IFS= read -r FIREFLYHPC_TOKEN || exit 4
if [ "$kind" = step ]; then
    printf '%s\n' "$FIREFLYHPC_TOKEN" >"$dir/token" || exit 4
    unset FIREFLYHPC_TOKEN
else
    export FIREFLYHPC_TOKEN
fi
{setup}
cd || exit 4
if [ "$kind" = command ]; then
    port=$("$FIREFLYHPC_PYTHON" -c "$PICK_PORT" "$FIREFLYHPC_PORTS") || exit 4
    cmd=$(printf '%s\n' "$1" | sed "s/{{port}}/$port/g")
    setsid sh -c "$cmd" >"$dir/server.log" 2>&1 </dev/null &
else
    # stdout carries the token URL: keep it out of files; the port is in the ready file.
    # (Not a group leader here, setsid does not fork: $! is the new group's leader.)
    setsid "$@" >/dev/null 2>>"$dir/server.log" </dev/null &
fi
pid=$!
echo "$pid" >"$dir/pgid"
echo "pid $pid"
i=0
while [ "$i" -lt {ticks} ]; do
    if [ "$kind" = command ]; then
        "$FIREFLYHPC_PYTHON" -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$port" 2>/dev/null && { echo "port $port"; exit 0; }
    elif [ -s "$dir/ready.json" ]; then
        cat "$dir/ready.json"; exit 0
    fi
    kill -0 "$pid" 2>/dev/null || { tail -n 15 "$dir/server.log" >&2; exit 3; }
    # (a sleep without fractions, as POSIX asks no more, waits a whole second instead)
    if [ "$i" -lt {fast} ]; then sleep {poll}; else sleep {slow}; fi 2>/dev/null || sleep 1
    i=$((i + 1))
done
tail -n 15 "$dir/server.log" >&2
kill -TERM "-$pid" 2>/dev/null
exit 5
"""

# $1: run folder; $2: process group. TERM the group, wait up to ~5 s, then KILL it;
# remove the run folder. Only a group whose leader is recorded in the folder is touched.
STOP_SCRIPT = r"""
cd || exit 4
dir=$1; pg=$2
if [ -f "$dir/pgid" ] && [ "$(cat "$dir/pgid")" = "$pg" ]; then
    kill -TERM "-$pg" 2>/dev/null
    i=0
    while kill -0 "-$pg" 2>/dev/null && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    kill -KILL "-$pg" 2>/dev/null
fi
rm -rf -- "$dir"
"""

ALIVE_SCRIPT = 'kill -0 "-$1" 2>/dev/null'

def start_script(setup: Sequence[str], timeout: float = READY_TIMEOUT) -> str:
    """The launch script with the profile's ``setup`` lines in place (pure)."""
    body = "\n".join(setup) if setup else ":"
    fast = round(min(timeout, READY_POLL_FAST_FOR) / READY_POLL)
    ticks = max(1, fast + int(max(0.0, timeout - fast * READY_POLL) / READY_POLL_SLOW))
    script = START_SCRIPT
    for key, value in (("{ticks}", ticks), ("{fast}", fast), ("{poll}", READY_POLL),
                       ("{slow}", READY_POLL_SLOW)):
        script = script.replace(key, str(value))
    script = script.replace("{{port}}", "{port}")
    return script.replace("{setup}", body)


def start_argv(spec: PayloadSpec, name: str, timeout: float = READY_TIMEOUT) -> list[str]:
    """The argv (for the SSH layer to quote) that starts ``spec`` in run folder ``name``."""
    run_dir = f"{RUN_ROOT}/{name}"
    script = start_script(spec.setup, timeout)
    if spec.kind == "command":
        assert spec.command is not None
        return ["env", f"FIREFLYHPC_PYTHON={spec.python}", f"FIREFLYHPC_PORTS={spec.ports_arg}",
                f"PICK_PORT={PICK_PORT}", "sh", "-c", script, "sh", run_dir, "command",
                spec.command]
    return ["env", f"FIREFLYHPC_PYTHON={spec.python}", "sh", "-c", script, "sh", run_dir,
            "server", *payload_argv(spec, f"{run_dir}/ready.json")]


def parse_start_output(stdout: str, node: str, name: str) -> RemoteServer:
    """The server a successful start script described; ServerError if unreadable."""
    pgid = port = None
    app = ""
    text = stdout.strip()
    for line in text.splitlines():
        words = line.split()
        if len(words) == 2 and words[0] in ("pid", "port") and words[1].isdigit():
            if words[0] == "pid":
                pgid = int(words[1])
            else:
                port = int(words[1])
    if "{" in text:  # the ready file's JSON, possibly over several lines
        try:
            ready = json.loads(text[text.index("{"):])
            port, app = int(ready["port"]), str(ready.get("app") or "")
        except (ValueError, KeyError, TypeError, AttributeError):
            port = None
    if pgid is None or port is None:
        raise ServerError(f"the payload on {node} did not report its pid and port: "
                          f"{text[:200]!r}")
    return RemoteServer(node=node, pgid=pgid, port=port, run_name=name, app=app)


def auto_choice(app: str, python: str) -> str:
    """What ``--payload auto`` turned out to serve, in words (pure)."""
    if app == "firefly":
        return f"serving Firefly's own app (firefly is installed for {python})"
    return (f"serving the bundled viewer (no firefly for {python}; "
            "`fireflyhpc remote-install --with-firefly` adds it)")


def start_payload(conn: Runner, spec: PayloadSpec, *, node: str, name: str, token: str,
                  timeout: float = READY_TIMEOUT, argv: Sequence[str] | None = None
                  ) -> RemoteServer:
    """Start ``spec`` on the node ``conn`` runs on, wait until it listens, return it.

    ``argv``: the start script's argv if not :func:`start_argv`'s (an srun step, see
    :mod:`fireflyhpc.session.srun`: then ``conn`` is the login node, which holds srun).
    The token goes on stdin. Raises ServerError (with the tail of the server's log)
    if it dies or does not listen within ``timeout`` s; SSHError if the connection fails.
    """
    argv = list(argv) if argv is not None else start_argv(spec, name, timeout)
    stdout = run_start(conn, argv, spec=spec, node=node, token=token, timeout=timeout)
    return started_server(conn, stdout, node=node, name=name)


def run_start(conn: Runner, argv: Sequence[str], *, spec: PayloadSpec, node: str, token: str,
              timeout: float = READY_TIMEOUT) -> str:
    """Run a start script's ``argv`` with the token on stdin; its stdout. Raises
    ServerError, said as :func:`start_payload` says it, or SSHError."""
    try:
        result = conn.run(argv, input=token + "\n", timeout=timeout + 30)
    except RemoteCommandError as exc:
        tail = " | ".join(line for line in exc.stderr.strip().splitlines()[-6:] if line)
        why = {3: "exited at once", 4: "could not be set up", 5: f"did not listen within "
               f"{timeout:g} s"}.get(exc.exit_code, f"failed (exit {exc.exit_code})")
        hint = None
        if "No module named" in exc.stderr:
            hint = (f"fireflyhpc is missing on the cluster for {spec.python}: run "
                    "`fireflyhpc remote-install --cluster NAME`, or set python = in the profile")
        elif "not found" in exc.stderr:
            hint = "check the profile's python and setup lines"
        raise ServerError(f"the payload on {node} {why}: {tail or 'no output'}", hint=hint) \
            from None
    return str(getattr(result, "stdout", ""))


def started_server(conn: Runner, stdout: str, *, node: str, name: str) -> RemoteServer:
    """The server a start script's ``stdout`` describes. One that started but cannot be
    read is stopped (nothing is left behind) and ServerError raised."""
    try:
        server = parse_start_output(stdout, node, name)
    except ServerError:
        pgid = _first_pid(stdout)
        if pgid is not None:  # started but unreadable: do not leave it behind
            conn.run(["sh", "-c", STOP_SCRIPT, "sh", f"{RUN_ROOT}/{name}", str(pgid)],
                     check=False, timeout=30)
        raise
    log.info("payload started on %s: process group %d, port %d", node, server.pgid, server.port)
    return server


def _first_pid(stdout: str) -> int | None:
    for line in stdout.splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == "pid" and words[1].isdigit():
            return int(words[1])
    return None


def stop_payload(conn: Runner, server: RemoteServer, *, timeout: float = 30.0) -> None:
    """End the server's whole process group and remove its run folder.

    Raises SSHError or RemoteCommandError if the node could not be reached.
    """
    conn.run(["sh", "-c", STOP_SCRIPT, "sh", server.run_dir, str(server.pgid)],
             timeout=timeout)
    log.info("payload stopped on %s (process group %d)", server.node, server.pgid)


def payload_alive(conn: Runner, server: RemoteServer, *, timeout: float = 20.0) -> bool:
    """True while any process of the server's group lives, False once none does.

    Only the node's own answer counts: raises SSHError when the node was not reached
    or the command ended without an exit status (a connection lost meanwhile).
    """
    result = conn.run(["sh", "-c", ALIVE_SCRIPT, "sh", str(server.pgid)], check=False,
                      timeout=timeout)
    code = getattr(result, "exit_code", -1)
    if code not in (0, 1):
        raise SSHError(f"cannot tell whether the payload on {server.node} runs "
                       f"(exit status {code})")
    return code == 0
