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
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence
from urllib.parse import quote

from fireflyhpc import jobwatch, launch
from fireflyhpc.config import ResolvedSettings, config_path, load_settings, templates_dir
from fireflyhpc.errors import ConfigError, FireflyHPCError, ServerError
from fireflyhpc.session_watch import wait_http_ok
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
        """The viewer for a Jupyter cell (an IPython IFrame, or an object with HTML)."""
        if not self.url:
            raise ServerError("the session is not open")
        try:
            from IPython.display import IFrame
        except ImportError:
            return _Html(f'<iframe src="{self.url}" width="{width}" height="{height}" '
                         'frameborder="0"></iframe>')
        return IFrame(self.url, width=width, height=height)

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
        launch.keep_token(self.node_conn(), self._server, self.token)
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


class _Html:
    """Minimal rich-display object for environments without IPython."""

    def __init__(self, html: str) -> None:
        self.html = html

    def _repr_html_(self) -> str:
        return self.html

    def __str__(self) -> str:
        return self.html


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


def render_job_script(request: ConnectRequest, settings: ResolvedSettings) -> str:
    """The sbatch script from the chosen template (ConfigError for a bad template)."""
    from fireflyhpc.templates import find_template, render_template, template_values

    template = find_template(settings.template, templates_dir(config_path(request.config)))
    return render_template(template.text, template_values(settings), name=template.name)


def choose_job(session: Session, script: str | None, progress: Say) -> None:
    """Submit ``script`` and wait for it to run, or find the requested running job."""
    scheduler = session.scheduler()
    req = session.request
    if script is None:
        choice = jobwatch.find_job(scheduler, job_id=req.job_id, node=req.node)
        job = choice.job
        session.job_id = job.job_id
    else:
        session.job_id = scheduler.submit(script)
        session.submitted = True
        session.record()
        progress(f"submitted job {session.job_id}")
        job = jobwatch.wait_until_running(scheduler, session.job_id, progress,
                                          stop=session.stop_requested.is_set)
    session.node = job.nodes[0]
    if job.time_left is not None:
        session.time_limit_end = time.time() + job.time_left
    session.time_limit = job.time_limit
    session.record()
    progress(f"job {session.job_id} runs on {session.node}")


def payload_spec(session: Session) -> launch.PayloadSpec:
    """What to start on the node, from the settings and the request."""
    s = session.settings
    bind = "127.0.0.1" if s.hop in ("auto", "ssh") else "0.0.0.0"
    return launch.PayloadSpec.from_setting(s.payload, python=s.python, setup=tuple(s.setup),
                                           data_dirs=tuple(session.request.data_dirs), bind=bind)


def start_or_reuse(session: Session, progress: Say) -> None:
    """Reuse a detached server of this job (attach only), else start the payload."""
    assert session.job_id and session.node
    if session.settings.launch == "srun":
        from fireflyhpc.launch_srun import SrunPayload

        progress(f"starting the payload on {session.node} with srun")
        session._srun = SrunPayload(session._login, payload_spec(session), job_id=session.job_id,
                                    node=session.node, token=session.token,
                                    name=launch.run_name(session.job_id, session.id))
        session._server = session._srun.server
        return
    conn = session.node_conn()
    if not session.submitted:
        found = launch.find_detached(conn, session.job_id, session.node)
        if found is not None:
            session._server, session.token = found
            session._lifeline = launch.Lifeline(conn, session._server)
            progress(f"reusing the detached server on {session.node} "
                     f"(port {session._server.port})")
            _forget_detached(session.store, session.job_id)
            return
    spec = payload_spec(session)
    if not spec.enforces_token:
        log.warning("a custom payload command cannot be made to check fireflyhpc's token: "
                    "anyone on %s who finds its port can use it", session.node)
    progress(f"starting the payload on {session.node}")
    name = launch.run_name(session.job_id, session.id)
    session._server = launch.start_payload(conn, spec, node=session.node, name=name,
                                           token=session.token)
    cancel = session.job_id if session.submitted and not session.request.keep_job else None
    session._lifeline = launch.Lifeline(conn, session._server, cancel)


def _forget_detached(store: SessionStore, job_id: str) -> None:
    """Drop detached entries of ``job_id``: this session takes their server over."""
    for rec in store.list():
        if rec.detached and rec.job_id == job_id:
            store.remove(rec.id)


def open_forward(session: Session, progress: Say) -> None:
    """Open the chained tunnel to the server and check the URL answers 200 through it."""
    from fireflyhpc.tunnel import TunnelRequest, open_tunnel

    assert session._server is not None and session.node
    s = session.settings
    hop = "direct" if s.launch == "srun" else s.hop
    req = TunnelRequest(node=session.node, remote_port=session._server.port, login=session.login,
                        local_port=s.local_port or 0, hop=hop,
                        ssh_config=session.request.ssh_config,
                        accept_new_host_key=session.request.accept_new_host_key)
    progress(f"opening the tunnel to {session.node}:{session._server.port}")
    session._tunnel = open_tunnel(req)
    port = int(session._tunnel.url.rsplit(":", 1)[1].strip("/"))
    session.local_port, session.remote_port = port, session._server.port
    base = f"http://127.0.0.1:{port}/"
    spec = payload_spec(session)
    wait_http_ok(base, session.token if spec.enforces_token else None,
                 stop=session.stop_requested.is_set, any_answer=not spec.enforces_token)
    session.url = f"{base}?token={quote(session.token, safe='')}" if spec.enforces_token else base


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


def without_token(url: str | None) -> str | None:
    """``url`` with its ``?token=...`` removed (for logs)."""
    return url.split("?", 1)[0] if url else url


__all__ = ["ConnectRequest", "Ending", "Session", "connect", "open_session"]
