"""A connect session: a Slurm job, the payload on its node, the tunnel, one URL; and the way back.

A :class:`Session` (a context manager) opens in steps, each a method of its own
(:meth:`Session.open` runs them): the job is submitted or found, the payload started
on the node (or a detached server reused), the chained tunnel opened, and the URL
answered 200 through it. :meth:`Session.watch` blocks until Ctrl-C/stop, the job
ending or the server dying, reconnecting and re-attaching (a new lifeline, the same
server, port and token) whenever the cluster was lost meanwhile; :meth:`Session.close`
undoes everything this session did (payload, tunnel, the job if it submitted it) and
:meth:`Session.detach` leaves job and server running for a later ``connect --job``.
Nothing outside this class touches its connections or remote pieces.
"""

from __future__ import annotations

import importlib
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from fireflyhpc.clock import pause_detector
from fireflyhpc.config import ResolvedSettings
from fireflyhpc.errors import FireflyHPCError, ServerError, SSHError
from fireflyhpc.scheduler import Backoff, Scheduler
from fireflyhpc.session import jobs, launch, lifeline
from fireflyhpc.session.login import LoginOpening
from fireflyhpc.session.records import SessionRecord, SessionStore, new_id
from fireflyhpc.session.request import ConnectRequest, Ending, Say
from fireflyhpc.session.payload import PayloadSteps
from fireflyhpc.session.steps import payload_spec
from fireflyhpc.session.watch import (job_ending, server_ending, unreachable, wait_http_ok,
                                      watch_loop)
from fireflyhpc.urls import token_url

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 8.0  # seconds a connection may take to answer a keepalive
WATCH_TIMEOUT = 60.0  # seconds the watch's squeue may take before the cluster counts as lost
# What _open_forward loads: both tunnel backends (which one is used shows later), http.client.
TUNNEL_MODULES = ("fireflyhpc.tunnel.build", "fireflyhpc.tunnel.openssh", "http.client")


def _load_modules(names: Sequence[str]) -> None:
    """Import ``names`` (in a thread of its own: see Session.open)."""
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # the import proper, where used, will say what is wrong
            log.debug("could not preload %s: %s", name, exc)


@dataclass
class Session(PayloadSteps):
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
    launched_with: str | None = None  # how the payload was started: "ssh" or "srun"
    reconnecting_since: float | None = None  # epoch seconds; None while connected
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    stop_requested: threading.Event = field(default_factory=threading.Event)
    _login: Any = None
    _node_conn: Any = None
    _server: launch.RemoteServer | None = None
    _tunnel: Any = None
    _lifeline: lifeline.Lifeline | None = None
    _closed: bool = False
    _recorded: bool = False

    # -- the pieces ---------------------------------------------------------------------
    @property
    def login(self) -> str:
        """The login host this session goes through."""
        return self.settings.require_login()

    @property
    def server(self) -> launch.RemoteServer | None:
        """The payload server on the node, once started (or reused)."""
        return self._server

    def scheduler(self, timeout: float = 120.0) -> Scheduler:
        """Slurm on the login node, over this session's SSH connection (each command
        may take ``timeout`` seconds)."""
        conn = self._login

        def run(argv: Sequence[str], *, input: str | None = None) -> Any:  # noqa: A002
            return conn.run(argv, input=input, check=False, timeout=timeout)

        return Scheduler(run, where=self.login)

    def node_conn(self) -> Any:
        """An SSH connection to the node through the login node (reopened if it broke)."""
        if self._node_conn is None or not self._node_conn.is_active():
            if not self._login.is_active():
                self._login.reconnect()
            assert self.node is not None
            self._node_conn = self._login.connect_to(self.node)
        return self._node_conn

    def payload_conn(self) -> Any:
        """The connection to the host where the server's process group lives, which
        holds and ends it: the node, or for an srun step the login node (reconnected
        if it broke)."""
        if self.launched_with != "srun":
            return self.node_conn()
        if not self._login.is_active():
            self._login.reconnect()
        return self._login

    def _cancels_job(self) -> bool:
        return self.submitted and not self.request.keep_job

    # -- opening, step by step ------------------------------------------------------------
    def open(self, script: str | None, progress: Say, login: LoginOpening) -> None:
        """Run every step up to a working URL; ``script`` is the sbatch script to submit
        (None: attach to the requested job or node); ``login``: the login connection on
        its way (see :func:`~.api.open_session`). Undoes everything on failure and
        raises KeyboardInterrupt when a stop was requested meanwhile."""
        steps: list[Callable[[], object]] = [
            lambda: self._choose_job(script, progress),
            lambda: self._start_payload(progress),
            lambda: self._open_forward(progress),
            self._confirm_hold,
            self.record,
        ]
        # The tunnel's modules load while ssh logs in (the first wait of the session),
        # not between the payload's start and the first page.
        threading.Thread(target=_load_modules, args=(TUNNEL_MODULES,), daemon=True,
                         name="fireflyhpc-preload").start()
        try:
            self._login = login.result()
            for step in steps:
                self._check_stop()
                step()
            self._check_stop()
        except BaseException:
            login.close()
            self.close()
            raise

    def _check_stop(self) -> None:
        if self.stop_requested.is_set():
            raise KeyboardInterrupt

    def _choose_job(self, script: str | None, progress: Say) -> None:
        """Submit ``script`` and wait for it to run, or find the requested running job."""
        scheduler = self.scheduler()
        if script is None:
            job = jobs.find_job(scheduler, job_id=self.request.job_id,
                                node=self.request.node).job
            self.job_id = job.job_id
        else:
            self.job_id = scheduler.submit(script)
            self.submitted = True
            self.record()
            progress(f"submitted job {self.job_id}")
            job = jobs.wait_until_running(scheduler, self.job_id, progress,
                                          stop=self.stop_requested.is_set)
        self.node = job.nodes[0]
        if job.time_left is not None:
            self.time_limit_end = time.time() + job.time_left
        self.time_limit = job.time_limit
        self.record()
        progress(f"job {self.job_id} runs on {self.node}")

    def _open_forward(self, progress: Say) -> None:
        """Open the chained tunnel to the server and check the URL answers 200 through it."""
        from fireflyhpc.tunnel import TunnelRequest, open_tunnel

        assert self._server is not None and self.node
        # The tunnel rides this session's login connection: nothing is asked again (a
        # one-time code covers the whole session) and, with OpenSSH, the bytes move in
        # ssh's own masters.
        req = TunnelRequest(node=self.node, remote_port=self._server.port, login=self.login,
                            local_port=self.settings.local_port or 0,
                            hop="direct" if self.launched_with == "srun" else self.settings.hop,
                            ssh_config=self.request.ssh_config, backend=self.settings.ssh,
                            accept_new_host_key=self.request.accept_new_host_key,
                            reuse=self._login)
        progress(f"opening the tunnel to {self.node}:{self._server.port}")
        self._tunnel = open_tunnel(req)
        port = int(self._tunnel.url.rsplit(":", 1)[1].strip("/"))
        self.local_port, self.remote_port = port, self._server.port
        base = f"http://127.0.0.1:{port}/"
        enforced = payload_spec(self.settings, self.request.data_dirs).enforces_token
        wait_http_ok(base, self.token if enforced else None,
                     stop=self.stop_requested.is_set, any_answer=not enforced)
        self.url = token_url(base, self.token if enforced else None)

    def _confirm_hold(self) -> None:
        """Wait for the node to confirm the lifeline started with the payload."""
        if self._lifeline is not None:
            self._lifeline.confirm()

    # -- recording ------------------------------------------------------------------------
    def record(self, *, detached: bool = False) -> SessionRecord:
        """Write (or update) this session's entry in the session store."""
        rec = SessionRecord.for_this_process(
            id=self.id, cluster=self.settings.cluster, job_id=self.job_id, node=self.node,
            local_port=self.local_port, remote_port=self.remote_port, url=self.url,
            submitted_by_us=self._cancels_job(), time_limit_end=self.time_limit_end,
            detached=detached, login=self.login, launch=self.launched_with,
            reconnecting_since=self.reconnecting_since,
            remote_pgid=self._server.pgid if self._server else None)
        self._recorded = True
        return self.store.add(rec)

    # -- watching -------------------------------------------------------------------------
    def watch(self, *, warn: Say = log.warning, backoff: Backoff = jobs.WATCH_BACKOFF) -> Ending:
        """Block until a stop is requested, the job ends or the server dies; say which.

        Polls squeue and the server's process group with backoff. Losing the cluster
        (the network, a sleep, a login node's sshd) is said through ``warn`` and
        recorded (``status``: reconnecting), then mended: reconnect, and re-attach to
        the same server while the node keeps it (``linger``).
        """
        assert self.job_id is not None
        pauses = pause_detector()
        ending = watch_loop(self._check_once, time_left=self._time_left,
                            warn_at=jobs.warn_before(self.time_limit), job_id=self.job_id,
                            stop=self.stop_requested, warn=warn, backoff=backoff,
                            on_lost=lambda exc: self._lost(exc, warn),
                            on_back=lambda took: self._back(took, warn), pauses=pauses)
        # Gone while connect was away longer than the node waits: say that, not just "ended".
        away = max(pauses.paused_for(within=120), 0.0 if self.reconnecting_since is None
                   else time.time() - self.reconnecting_since)
        if not ending.requested and self.settings.linger and away > self.settings.linger:
            ending.message += (f" (connect was away for {jobs.clock_text(away)}, longer than "
                               f"the node keeps a server without it: linger "
                               f"{jobs.clock_text(self.settings.linger)})")
        return ending

    def _check_once(self, thorough: bool) -> Ending | None:
        assert self.job_id is not None
        if thorough:
            self._reconnect_if_dead()
        job = self.scheduler(timeout=WATCH_TIMEOUT).job(self.job_id)
        ending = job_ending(self.job_id, job, self._time_left())
        if ending is not None:
            return ending
        if job is not None and job.time_left is not None:
            self.time_limit_end = time.time() + job.time_left
        if self._server is None:
            return None
        dead = not self._hold() or not launch.payload_alive(self.payload_conn(), self._server)
        return server_ending(self._server.node) if dead else None

    def _time_left(self) -> float | None:
        return None if self.time_limit_end is None else self.time_limit_end - time.time()

    def _reconnect_if_dead(self) -> None:
        """Probe the connections (a dead link or a paused process can leave one looking
        up); reconnect those that do not answer. Raises SSHError if that fails."""
        if not (self._login.is_active() and self._login.probe(PROBE_TIMEOUT)):
            log.info("no answer from %s: reconnecting", self.login)
            self._login.reconnect()
            self._node_conn = None
        elif self._node_conn is not None and not (self._node_conn.is_active()
                                                  and self._node_conn.probe(PROBE_TIMEOUT)):
            log.info("no answer from %s: reconnecting", self.node)
            self._node_conn.close()
            self._node_conn = None

    def _hold(self) -> bool:
        """Re-attach if our lifeline has ended (its connection was lost): a new lifeline
        for the same server. False if the server has ended meanwhile."""
        if self._lifeline is None or self._lifeline.attached():
            return True
        self._lifeline.drop()  # kept (ended) until a new one holds: then we try again
        try:
            self._attach(self.payload_conn())
            assert self._lifeline is not None
            self._lifeline.confirm()
        except ServerError:
            self._lifeline = None
            return False
        log.info("re-attached to the server on %s", self.node)
        return True

    def _lost(self, exc: FireflyHPCError, warn: Say) -> None:
        self.reconnecting_since = time.time()
        self._record_state()
        linger = self.settings.linger
        kept = (f"the server on {self.node} waits {jobs.clock_text(linger)} for this session"
                if linger else f"the server on {self.node} ends once its node notices")
        warn(f"lost the connection to the cluster ({exc}); reconnecting ({kept})")

    def _back(self, took: float, warn: Say) -> None:
        self.reconnecting_since = None
        self._record_state()
        warn(f"reconnected after {jobs.clock_text(took)}: same server, same URL")

    def _record_state(self) -> None:
        try:
            self.record()
        except (OSError, FireflyHPCError) as exc:  # the watch goes on without it
            log.warning("could not update the session entry: %s", exc)

    # -- ending ---------------------------------------------------------------------------
    def close(self) -> None:
        """Undo what this session did: tunnel, payload, the job if it submitted it
        (not with keep_job), the session entry, the connections. Never raises."""
        if self._closed:
            return
        self._closed = True
        self._cleanup(stop_server=True, cancel=self._cancels_job())

    def detach(self) -> SessionRecord:
        """Leave job and server running until the job ends (the lifeline keeps the token
        in a 0600 file in the run folder); close the tunnel and connections; record the
        session as detached. Raises ServerError or SSHError if the node did not take it."""
        if self._server is None:
            raise ServerError("nothing to detach: the payload is not running")
        if not self._hold() or self._lifeline is None:
            raise ServerError(f"nothing to detach: the payload on {self.node} has ended")
        held, self._lifeline = self._lifeline, None
        if not held.release(detach=True):
            raise SSHError(f"{self.node} did not confirm keeping the server")
        self._closed = True
        if self._tunnel is not None:
            self._tunnel.close()
        self.url = None
        self.local_port = None
        rec = self.record(detached=True)
        self._close_connections()
        return rec

    def _cleanup(self, *, stop_server: bool, cancel: bool) -> None:
        steps: list[tuple[str, Callable[[], object]]] = []
        if self._tunnel is not None:
            steps.append(("close the tunnel", self._tunnel.close))
        if stop_server and self._server is not None:
            server = self._server
            steps.append((f"stop the payload on {server.node}",
                          lambda: launch.stop_payload(self.payload_conn(), server)))
        if self._lifeline is not None:
            held = self._lifeline
            steps.append(("close the lifeline", lambda: held.release(detach=False)))
        if cancel and self.job_id:
            job_id = self.job_id
            steps.append((f"cancel job {job_id}", lambda: self._cancel(job_id)))
        if self._recorded:
            steps.append(("remove the session entry", lambda: self.store.remove(self.id)))
        unreached = False
        for what, step in steps:
            try:
                step()
            except Exception as exc:  # cleanup goes on; say what could not be undone
                log.warning("could not %s: %s", what, exc)
                unreached = unreached or unreachable(exc)
        if unreached and self._lifeline is not None and self.settings.linger:
            also = f" and cancels job {self.job_id}" if cancel else ""
            log.warning("the node ends the server%s by itself %s after losing this session",
                        also, jobs.clock_text(self.settings.linger))
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

    # -- display in Jupyter ---------------------------------------------------------------
    def iframe(self, width: int | str = "100%", height: int = 600) -> Any:
        """The viewer for a notebook cell (see :func:`fireflyhpc.notebook.show`)."""
        if not self.url:
            raise ServerError("the session is not open")
        from fireflyhpc.notebook import show

        return show(self.url, width=width, height=height)

    def _repr_html_(self) -> str:
        return (f'<a href="{self.url}" target="_blank">{self.url}</a> '
                f'(job {self.job_id} on {self.node})')

