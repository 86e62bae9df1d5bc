"""The steps of :func:`fireflyhpc.connecting.open_session`, each on a :class:`Session`:
the job script, the job, the payload (started or reused), the forward and its check."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Callable

from fireflyhpc import jobwatch, launch
from fireflyhpc.config import ResolvedSettings, config_path, templates_dir
from fireflyhpc.session_watch import wait_http_ok
from fireflyhpc.sessions import SessionStore
from fireflyhpc.urls import token_url

if TYPE_CHECKING:
    from fireflyhpc.connecting import ConnectRequest, Session

log = logging.getLogger(__name__)

Say = Callable[[str], None]


def render_job_script(request: "ConnectRequest", settings: ResolvedSettings) -> str:
    """The sbatch script from the chosen template (ConfigError for a bad template)."""
    from fireflyhpc.templates import find_template, render_template, template_values

    template = find_template(settings.template, templates_dir(config_path(request.config)))
    return render_template(template.text, template_values(settings), name=template.name)


def choose_job(session: "Session", script: str | None, progress: Say) -> None:
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


def payload_spec(session: "Session") -> launch.PayloadSpec:
    """What to start on the node, from the settings and the request."""
    s = session.settings
    bind = "127.0.0.1" if s.hop in ("auto", "ssh") else "0.0.0.0"
    return launch.PayloadSpec.from_setting(s.payload, python=s.python, setup=tuple(s.setup),
                                           data_dirs=tuple(session.request.data_dirs), bind=bind)


def start_or_reuse(session: "Session", progress: Say) -> None:
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
            # The detached session's duties pass to this one: if fireflyhpc submitted
            # the job, leaving cancels it, as leaving that session would have.
            session.submitted = _forget_detached(session.store, session.job_id)
            cancel = session.job_id if session.submitted and not session.request.keep_job \
                else None
            session._lifeline = launch.Lifeline(conn, session._server, cancel)
            progress(f"reusing the detached server on {session.node} "
                     f"(port {session._server.port})")
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


def _forget_detached(store: SessionStore, job_id: str) -> bool:
    """Drop detached entries of ``job_id`` (this session takes their server over);
    True if one of them had submitted the job."""
    submitted = False
    for rec in store.list():
        if rec.detached and rec.job_id == job_id:
            submitted = submitted or rec.submitted_by_us
            store.remove(rec.id)
    return submitted


def open_forward(session: "Session", progress: Say) -> None:
    """Open the chained tunnel to the server and check the URL answers 200 through it."""
    from fireflyhpc.tunnel import TunnelRequest, open_tunnel

    assert session._server is not None and session.node
    s = session.settings
    hop = "direct" if s.launch == "srun" else s.hop
    login = session._login
    # A user who had to answer the login (a one-time code, a password, a passphrase)
    # would be asked again by a second client: the tunnel then rides this connection.
    reuse = login if login is not None and login.authenticator.asked_user else None
    req = TunnelRequest(node=session.node, remote_port=session._server.port, login=session.login,
                        local_port=s.local_port or 0, hop=hop,
                        ssh_config=session.request.ssh_config,
                        accept_new_host_key=session.request.accept_new_host_key, reuse=reuse)
    if reuse is not None:
        progress("your login needed answers, so the tunnel reuses that connection "
                 "(pure Python: slower than OpenSSH for big transfers)")
    progress(f"opening the tunnel to {session.node}:{session._server.port}")
    session._tunnel = open_tunnel(req)
    port = int(session._tunnel.url.rsplit(":", 1)[1].strip("/"))
    session.local_port, session.remote_port = port, session._server.port
    base = f"http://127.0.0.1:{port}/"
    spec = payload_spec(session)
    wait_http_ok(base, session.token if spec.enforces_token else None,
                 stop=session.stop_requested.is_set, any_answer=not spec.enforces_token)
    session.url = token_url(base, session.token if spec.enforces_token else None)
