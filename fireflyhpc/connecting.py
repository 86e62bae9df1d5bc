"""``connect``: a Slurm job, the payload on its node, the tunnel, one URL; and the way back.

:func:`open_session` turns a :class:`ConnectRequest` into a ready :class:`Session`
(a context manager): the job is submitted or found, the payload started on the
node, the chained tunnel opened, and the URL answered 200 through it before it
returns. :meth:`Session.watch` blocks until Ctrl-C/stop, the job ending or the
server dying; :meth:`Session.close` undoes everything this session did (payload,
tunnel, the job if it submitted it) and :meth:`Session.detach` leaves job and
server running for a later ``connect --job``.

(Not called ``fireflyhpc/connect.py``: importing a submodule of that name would
shadow the ``fireflyhpc.connect()`` function on the package.)
"""

from __future__ import annotations

import logging
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from fireflyhpc import jobwatch, launch
from fireflyhpc.config import ResolvedSettings, load_settings
from fireflyhpc.errors import ConfigError, FireflyHPCError, ServerError
from fireflyhpc.connect_steps import choose_job, open_forward, render_job_script, \
    start_or_reuse
from fireflyhpc.scheduler import Backoff, Scheduler
from fireflyhpc.sessions import SessionRecord, SessionStore, new_id

log = logging.getLogger(__name__)

Say = Callable[[str], None]


@dataclass(frozen=True)
class ConnectRequest:
    """Everything ``fireflyhpc connect`` was asked for (None: use the profile/default)."""

    cluster: str | None = None
    node: str | None = None
    job_id: str | None = None
    local_port: int | None = None
    template: str | None = None
    partition: str | None = None
    time: str | None = None
    account: str | None = None
    cpus: int | str | None = None
    mem: str | None = None
    data_dirs: tuple[str, ...] = ()
    payload: str | None = None
    keep_job: bool = False
    config: str | None = None
    ssh_config: str | None = None
    accept_new_host_key: bool = False

    def flags(self) -> dict[str, Any]:
        """The settings given as flags, for :func:`fireflyhpc.config.resolve`."""
        return {"template": self.template, "partition": self.partition, "time": self.time,
                "account": self.account, "cpus": self.cpus, "mem": self.mem,
                "payload": self.payload, "local_port": self.local_port}


@dataclass
class Ending:
    """Why :meth:`Session.watch` returned: a message, and whether it was the user's wish."""

    message: str
    requested: bool
    error: FireflyHPCError | None = None


@dataclass
class Session:
    """One live connect session; see the module doc. Attributes fill in as it opens."""

    request: ConnectRequest
    settings: ResolvedSettings
    id: str = field(default_factory=new_id)
    store: SessionStore = field(default_factory=SessionStore)
    job_id: str | None = None
    node: str | None = None
    submitted: bool = False
    url: str | None = None
    local_port: int | None = None
    remote_port: int | None = None
    time_limit_end: float | None = None
    time_limit: int | None = None
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    stop_requested: threading.Event = field(default_factory=threading.Event)
    _login: Any = None
    _node_conn: Any = None
    _server: launch.RemoteServer | None = None
    _tunnel: Any = None
    _lifeline: launch.Lifeline | None = None
    _srun: Any = None
    _closed: bool = False
    _recorded: bool = False

    # -- the pieces ---------------------------------------------------------------------
    @property
    def login(self) -> str:
        """The login host this session goes through."""
        return self.settings.require_login()

    def scheduler(self) -> Scheduler:
        """Slurm on the login node, over this session's SSH connection."""
        conn = self._login

        def run(argv: Sequence[str], *, input: str | None = None) -> Any:  # noqa: A002
            return conn.run(argv, input=input, check=False, timeout=120)

        return Scheduler(run, where=self.login)

    def node_conn(self) -> Any:
        """An SSH connection to the node through the login node (reopened if it broke)."""
        if self._node_conn is None or not self._node_conn.is_active():
            if not self._login.is_active():
                self._login.reconnect()
            assert self.node is not None
            self._node_conn = self._login.connect_to(self.node)
        return self._node_conn

    @property
    def server(self) -> launch.RemoteServer | None:
        """The payload server on the node, once started (or reused)."""
        return self._server

    def iframe(self, width: int | str = "100%", height: int = 600) -> Any:
        """The viewer for a notebook cell (see :func:`fireflyhpc.notebook.show`)."""
        if not self.url:
            raise ServerError("the session is not open")
        from fireflyhpc.notebook import show

        return show(self.url, width=width, height=height)

    def _repr_html_(self) -> str:
        return (f'<a href="{self.url}" target="_blank">{self.url}</a> '
                f'(job {self.job_id} on {self.node})')

    # -- recording --------------------------------------------------------------------
    def record(self, *, detached: bool = False) -> SessionRecord:
        """Write (or update) this session's entry in the session store."""
        rec = SessionRecord.for_this_process(
            id=self.id, cluster=self.settings.cluster, job_id=self.job_id, node=self.node,
            local_port=self.local_port, remote_port=self.remote_port, url=self.url,
            submitted_by_us=self.submitted and not self.request.keep_job,
            time_limit_end=self.time_limit_end, detached=detached, login=self.login,
            remote_pgid=self._server.pgid if self._server else None)
        self._recorded = True
        return self.store.add(rec)

    # -- ending -----------------------------------------------------------------------
    def close(self) -> None:
        """Undo what this session did: tunnel, payload, the job if it submitted it
        (not with keep_job), the session entry, the connections. Never raises."""
        if self._closed:
            return
        self._closed = True
        self._cleanup(stop_server=True, cancel=self.submitted and not self.request.keep_job)

    def detach(self) -> SessionRecord:
        """Leave job and server running (token kept in a 0600 file in the run folder);
        close the tunnel and connections; record the session as detached."""
        if self._server is None:
            raise ServerError("nothing to detach: the payload is not running")
        if self._srun is not None:
            raise ConfigError("--detach is not supported with launch = \"srun\"")
        assert self.job_id is not None
        launch.keep_token(self.node_conn(), self._server, self.token, self.job_id)
        if self._lifeline is not None:
            self._lifeline.release(detach=True)
            self._lifeline = None
        self._closed = True
        if self._tunnel is not None:
            self._tunnel.close()
        self.url = None
        self.local_port = None
        rec = self.record(detached=True)
        self._close_connections()
        return rec

    def _cleanup(self, *, stop_server: bool, cancel: bool) -> None:
        steps: list[tuple[str, Callable[[], None]]] = []
        if self._tunnel is not None:
            steps.append(("close the tunnel", self._tunnel.close))
        if stop_server and self._srun is not None:
            steps.append(("stop the payload step", self._srun.stop))
        elif stop_server and self._server is not None:
            server = self._server
            steps.append((f"stop the payload on {server.node}",
                          lambda: launch.stop_payload(self.node_conn(), server)))
        if self._lifeline is not None:
            lifeline = self._lifeline
            steps.append(("close the lifeline", lambda: lifeline.release(detach=False)))
        if cancel and self.job_id:
            job_id = self.job_id
            steps.append((f"cancel job {job_id}", lambda: self._cancel(job_id)))
        if self._recorded:
            steps.append(("remove the session entry", lambda: _discard(self.store.remove(self.id))))
        for what, step in steps:
            try:
                step()
            except Exception as exc:  # cleanup goes on; say what could not be undone
                log.warning("could not %s: %s", what, exc)
        self._close_connections()

    def _cancel(self, job_id: str) -> None:
        if not self._login.is_active():
            self._login.reconnect()
        self.scheduler().cancel([job_id])
        log.info("job %s cancelled", job_id)

    def _close_connections(self) -> None:
        for conn in (self._node_conn, self._login):
            if conn is not None:
                conn.close()
        self._node_conn = None

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- watching -----------------------------------------------------------------------
    def watch(self, *, warn: Say = log.warning, backoff: Backoff = jobwatch.WATCH_BACKOFF,
              max_failures: int = 12) -> Ending:
        """Block until a stop is requested, the job ends or the server dies; say which.

        Polls squeue and the server's process group with backoff. Connection
        failures are retried (reconnecting) up to ``max_failures`` rounds in a row.
        """
        from fireflyhpc.session_watch import watch_session

        return watch_session(self, warn=warn, backoff=backoff, max_failures=max_failures)


def _discard(value: object) -> None:
    """Drop a return value (cleanup steps return nothing)."""


def load_request_settings(request: ConnectRequest) -> ResolvedSettings:
    """The resolved settings of ``request`` (flags > env > profile > defaults)."""
    return load_settings(request.config, request.flags(), cluster=request.cluster)


def open_session(request: ConnectRequest, *, progress: Say = log.info,
                 store: SessionStore | None = None,
                 stop: threading.Event | None = None) -> Session:
    """Do everything up to a working URL and return the open :class:`Session`.

    ``progress`` receives status text (the waiting line, the steps); ``stop``,
    when set (e.g. by a signal handler), abandons the setup: KeyboardInterrupt is
    raised after cleaning up. Raises ConfigError, SSHError, SchedulerError,
    ServerError or TunnelError; whatever it had started is undone then.
    """
    from fireflyhpc.ssh import SSHConnection

    settings = load_request_settings(request)
    login = settings.require_login()
    if request.node is not None:  # before any connection is opened
        jobwatch.check_node(request.node)
    script = None if (request.job_id or request.node) else render_job_script(request, settings)
    session = Session(request=request, settings=settings, store=store or SessionStore(),
                      stop_requested=stop or threading.Event())
    check = _stop_check(session)
    try:
        progress(f"connecting to {login}")
        session._login = SSHConnection.open(login, ssh_config=request.ssh_config,
                                            accept_new_host_key=request.accept_new_host_key)
        check()
        choose_job(session, script, progress)
        check()
        start_or_reuse(session, progress)
        check()
        open_forward(session, progress)
        session.record()
        check()
        return session
    except BaseException:
        session.close()
        raise


def _stop_check(session: Session) -> Callable[[], None]:
    def check() -> None:
        if session.stop_requested.is_set():
            raise KeyboardInterrupt

    return check


def connect(node: str | None = None, *, cluster: str | None = None, job: str | int | None = None,
            config: str | None = None, ssh_config: str | None = None,
            progress: Say | None = None, **options: Any) -> Session:
    """Open a session for Python/Jupyter; returns it ready (``.url``, ``.node``,
    ``.job_id``, ``.iframe()``, ``.close()``; a context manager).

    ``options`` are the other :class:`ConnectRequest` fields (partition, time,
    data_dirs, payload, keep_job, ...). Raises what :func:`open_session` raises.
    """
    if "data_dirs" in options:
        options["data_dirs"] = tuple(options["data_dirs"])
    request = ConnectRequest(cluster=cluster, node=node, job_id=None if job is None else str(job),
                             config=config, ssh_config=ssh_config, **options)
    session = open_session(request, progress=progress or log.info)
    import atexit

    atexit.register(session.close)
    return session


__all__ = ["ConnectRequest", "Ending", "Session", "connect", "open_session"]
