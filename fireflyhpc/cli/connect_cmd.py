"""`fireflyhpc connect` and `fireflyhpc stop`: thin over fireflyhpc.session."""

from __future__ import annotations

import sys

import click

from fireflyhpc import browser, terminal
from fireflyhpc import validate as v
from fireflyhpc.errors import ExitStatus
from fireflyhpc.signals import StopSignals, signal_name


class StatusLine:
    """Progress on stderr: one ``\\r``-rewritten line on a terminal, plain lines otherwise."""

    def __init__(self, stream=None) -> None:  # type: ignore[no-untyped-def]
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._width = 0

    def __call__(self, text: str) -> None:
        if self.tty:
            pad = max(0, self._width - len(text))
            self.stream.write("\r" + text + " " * pad)
            self._width = len(text)
            terminal.line_open(self.done)  # a prompt now would have to end it first
        else:
            self.stream.write(f"fireflyhpc: {text}\n")
        self.stream.flush()

    def done(self) -> None:
        """End the rewritten line (before any other output)."""
        terminal.line_closed(self.done)
        if self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0

    def say(self, text: str) -> None:
        """A message on its own line."""
        self.done()
        self.stream.write(f"fireflyhpc: {text}\n")
        self.stream.flush()


def open_browser(url: str, line: StatusLine) -> None:
    """Open ``url`` in the user's graphical browser, without blocking; without a
    display (Linux over SSH, a container) say so instead."""
    if not browser.open_browser(url):
        line.say("no display here: open the URL above in your browser")


@click.command("connect")
@click.argument("node", required=False)
@click.option("--cluster", help="Cluster profile (default: FIREFLYHPC_CLUSTER, then "
              "default_cluster).")
@click.option("--job", "job_id", metavar="ID", help="Attach to your running job ID.")
@click.option("--port", "local_port", metavar="LPORT", help="Local port on 127.0.0.1 "
              "(default: any free port).")
@click.option("--template", help="Job template to submit (see `fireflyhpc templates list`).")
@click.option("--partition", help="Slurm partition.")
@click.option("--time", "time_limit", metavar="T", help="Time limit, e.g. 30, 1:00:00.")
@click.option("--account", help="Slurm account.")
@click.option("--cpus", help="CPUs for the job.")
@click.option("--mem", help="Memory for the job, e.g. 4G.")
@click.option("--data", "data_dirs", multiple=True, metavar="DIR",
              help="Data folder on the cluster to serve (repeatable; default: the demo).")
@click.option("--payload", help='auto (default), builtin, firefly, firefly-flask (Firefly\'s '
              'Flask server: Load New Data, data from Python), or a command with {port}, '
              'e.g. "python3 -m http.server {port} --bind 127.0.0.1".')
@click.option("--no-browser", is_flag=True, help="Print the URL; do not open a browser.")
@click.option("--detach", is_flag=True, help="Leave job and server running and return; "
              "`connect --job ID` reuses the server later.")
@click.option("--keep-job", is_flag=True, help="Do not cancel the job this command submits.")
@click.option("--linger", metavar="DURATION", help="How long the node keeps the server (and "
              "the job this command submitted) after losing this command, e.g. to a sleeping "
              "laptop: 90s, 10m, 2h; 0: no grace (default: the profile's, else 10m).")
@click.option("--accept-new-host-key", is_flag=True,
              help="Accept and record unknown host keys (never changed ones).")
@click.pass_obj
def connect_command(obj: object, node: str | None, cluster: str | None, job_id: str | None,
                    local_port: str | None, template: str | None, partition: str | None,
                    time_limit: str | None, account: str | None, cpus: str | None,
                    mem: str | None, data_dirs: tuple[str, ...], payload: str | None,
                    no_browser: bool, detach: bool, keep_job: bool, linger: str | None,
                    accept_new_host_key: bool) -> int:
    """Show a web viewer running on a compute node in your browser.

    Without NODE or --job, submits a job (from the cluster's template) and waits for
    it; with --job ID or NODE, uses your running job. Starts the payload on the node,
    forwards a local port through the login node, prints the URL (one stdout line)
    and opens it. Runs until Ctrl-C, the job ending or the server dying; then stops
    the server, closes the tunnel and cancels the job if it submitted it.

    SSH goes through your own ssh client and config (see the global --ssh): with your
    ControlMaster to the login node live nothing is asked, otherwise ssh asks (a code,
    a passphrase) once for the whole session.
    """
    from fireflyhpc.session import ConnectRequest, open_session

    request = ConnectRequest(
        cluster=cluster, node=node, job_id=job_id,
        local_port=v.parse_port(local_port, what="--port", allow_zero=True)
        if local_port else None,
        linger=linger,
        template=template, partition=partition, time=time_limit, account=account, cpus=cpus,
        mem=mem, data_dirs=tuple(data_dirs), payload=payload, keep_job=keep_job, detach=detach,
        config=getattr(obj, "config", None), ssh_config=getattr(obj, "ssh_config", None),
        accept_new_host_key=accept_new_host_key, ssh=getattr(obj, "ssh", None))
    line = StatusLine()
    with StopSignals() as signals:
        stop = signals.event
        signals.on_stop(lambda signum: line.say(f"{signal_name(signum)}: stopping and "
                                                "cleaning up"))
        try:
            session = open_session(request, progress=line, stop=stop)
        except KeyboardInterrupt:
            line.say("stopped before the viewer was ready; everything started was cleaned up")
            return int(ExitStatus.INTERRUPTED)
        finally:
            line.done()
        try:
            if detach:
                record = session.detach()
                line.say(f"detached: job {session.job_id} and the server on {session.node} "
                         f"keep running (session {record.id}); `fireflyhpc connect --job "
                         f"{session.job_id}` reuses it, `fireflyhpc stop {record.id}` ends it")
                return 0
            click.echo(session.url)
            line.say(f"job {session.job_id} on {session.node}, port {session.remote_port} -> "
                     f"127.0.0.1:{session.local_port} (session {session.id}); Ctrl-C to stop")
            if not no_browser:
                open_browser(session.url or "", line)
            ending = session.watch(warn=line.say)
        finally:
            session.close()
    line.say(ending.message + "; cleaned up")
    if ending.error is not None:
        return int(ending.error.exit_status)
    return 0


@click.command("stop")
@click.argument("session_id", metavar="[ID]", required=False)
@click.option("--all", "stop_all", is_flag=True, help="Stop every session.")
@click.pass_obj
def stop_command(obj: object, session_id: str | None, stop_all: bool) -> None:
    """End a session as Ctrl-C would (see `fireflyhpc status` for the IDs).

    A running connect is signalled and waited for; a detached session's server (and
    job, if fireflyhpc submitted it) are ended over SSH.
    """
    from fireflyhpc.session.stopping import stop_sessions

    if bool(session_id) == stop_all:
        raise click.UsageError("name one session ID, or pass --all")
    for message in stop_sessions(session_id, ssh_config=getattr(obj, "ssh_config", None),
                                 config=getattr(obj, "config", None),
                                 ssh=getattr(obj, "ssh", None)):
        click.echo(message)


commands = [connect_command, stop_command]
