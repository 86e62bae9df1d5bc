"""Opening a session: for the CLI (:func:`open_session`) and for Python/Jupyter (:func:`connect`)."""

from __future__ import annotations

import atexit
import logging
import threading
from typing import TYPE_CHECKING, Any

from fireflyhpc.session.login import LoginOpening
from fireflyhpc.session.request import ConnectRequest, Say

if TYPE_CHECKING:
    from fireflyhpc.session.core import Session
    from fireflyhpc.session.records import SessionStore

log = logging.getLogger(__name__)


def open_session(request: ConnectRequest, *, progress: Say = log.info,
                 store: SessionStore | None = None,
                 stop: threading.Event | None = None) -> Session:
    """Do everything up to a working URL and return the open :class:`Session`.

    Everything local (settings, node name, job script) is checked before anything
    remote happens. ``progress`` receives status text (the waiting line, the steps);
    ``stop``, when set (e.g. by a signal handler), abandons the setup: KeyboardInterrupt
    is raised after cleaning up. Raises ConfigError, SSHError, SchedulerError,
    ServerError or TunnelError; whatever it had started is undone then.
    """
    settings = request.settings()
    login = settings.require_login()
    if request.node is not None:
        from fireflyhpc.session.jobs import check_node

        check_node(request.node)
    script = None
    if not (request.job_id or request.node):
        from fireflyhpc.session.steps import render_job_script

        script = render_job_script(request, settings)
    stop = stop or threading.Event()
    progress(f"connecting to {login}")
    # The login (a handshake, a code, or only a look for the user's master) goes on
    # while the rest of the session's code loads.
    opening = LoginOpening(request, settings, stop)
    try:
        from fireflyhpc.session.core import Session
        from fireflyhpc.session.records import SessionStore

        session = Session(request=request, settings=settings, store=store or SessionStore(),
                          stop_requested=stop)
    except BaseException:
        opening.close()
        raise
    session.open(script, progress, login=opening)
    return session


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
    atexit.register(session.close)
    return session
