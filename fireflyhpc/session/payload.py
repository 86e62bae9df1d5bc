"""How a :class:`~fireflyhpc.session.core.Session` gets its payload onto the node: over
ssh, as an srun step, or ``auto`` (ssh when the node accepts it, else srun); reusing a
server kept on the node when attaching to a job.

:class:`PayloadSteps` is a part of ``Session`` kept in a module of its own (the class is
large); nothing else uses it, and it touches nothing but the session's own fields.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from fireflyhpc.errors import ConfigError, FireflyHPCError, ServerError, SSHError
from fireflyhpc.session import kept, launch, lifeline
from fireflyhpc.session.request import Say
from fireflyhpc.session.steps import payload_spec

if TYPE_CHECKING:
    from fireflyhpc.config import ResolvedSettings
    from fireflyhpc.session.records import SessionStore
    from fireflyhpc.session.request import ConnectRequest

log = logging.getLogger("fireflyhpc.session.core")


class PayloadSteps:
    """The payload steps of a Session (see the module doc)."""

    # The Session fields these steps read and set (declared here for the type checker).
    request: ConnectRequest
    settings: ResolvedSettings
    id: str
    store: SessionStore
    job_id: str | None
    node: str | None
    submitted: bool
    launched_with: str | None
    token: str
    _login: Any
    _server: launch.RemoteServer | None
    _lifeline: lifeline.Lifeline | None

    if TYPE_CHECKING:  # Session's own methods
        def node_conn(self) -> Any: ...

        def _cancels_job(self) -> bool: ...

    def _start_payload(self, progress: Say) -> None:
        """Start the payload (or reuse a detached server of this job, attach only) the
        way the profile says: ``ssh`` to the node, ``srun`` from the login node, or
        ``auto``: ssh when the node accepts it, else srun (said, and recorded)."""
        assert self.node
        if self.settings.launch == "srun":
            self._start_with_srun(progress)
            return
        try:
            conn = self.node_conn()
        except SSHError as refused:
            if self.settings.launch != "auto":
                raise
            self._fall_back_to_srun(refused, progress)
            return
        self.launched_with = "ssh"
        self._start_with_ssh(conn, progress)

    def _fall_back_to_srun(self, refused: SSHError, progress: Say) -> None:
        """launch = "auto" after SSH to the node failed: srun, or one error naming both."""
        progress(f"ssh to {self.node} failed ({refused}); starting the payload with srun "
                 "instead (launch = \"auto\")")
        try:
            self._start_with_srun(progress)
        except FireflyHPCError as also:
            family = ConfigError if isinstance(also, ConfigError) else ServerError
            raise family(f"cannot start the payload on {self.node}: ssh to the node failed "
                         f"({refused}), and srun failed too ({also})",
                         hint="see `fireflyhpc doctor`") from None

    def _start_with_srun(self, progress: Say) -> None:
        """The payload as a step of the job, held on the login node (see :mod:`.srun`),
        or a server of this job that a lost srun session left there."""
        from fireflyhpc.session.srun import start_step_argv

        assert self.job_id and self.node
        spec = payload_spec(self.settings, self.request.data_dirs)
        name = launch.run_name(self.job_id, self.id)
        self.launched_with = "srun"
        progress(f"starting the payload on {self.node} with srun{self._or_reuse()}")
        argv = start_step_argv(spec, job_id=self.job_id, node=self.node, name=name)
        self._start(self._login, spec, name, progress, argv)

    def _start_with_ssh(self, conn: Any, progress: Say) -> None:
        assert self.job_id and self.node
        spec = payload_spec(self.settings, self.request.data_dirs)
        if not spec.enforces_token:
            log.warning("a custom payload command cannot be made to check fireflyhpc's "
                        "token: anyone on %s who finds its port can use it", self.node)
        progress(f"starting the payload on {self.node}{self._or_reuse()}")
        self._start(conn, spec, launch.run_name(self.job_id, self.id), progress)

    def _or_reuse(self) -> str:
        return "" if self.submitted else f" (unless job {self.job_id} has one kept there)"

    def _start(self, conn: Any, spec: launch.PayloadSpec, name: str, progress: Say,
               argv: list[str] | None = None) -> None:
        """Start the payload through ``conn`` (``argv``: the start script's, if not the
        default one); when attaching to a job, take back a server of it kept there
        instead, if there is one (one command either way: see :mod:`.kept`)."""
        assert self.job_id and self.node
        if self.submitted:  # a job of our own: nothing of it can be kept yet
            self._server = launch.start_payload(conn, spec, node=self.node, name=name,
                                                token=self.token, argv=argv)
        else:
            started = kept.start_or_reuse(conn, spec, job_id=self.job_id, node=self.node,
                                          name=name, token=self.token, argv=argv)
            if isinstance(started, kept.KeptServer):
                self._take_back(started, conn, progress)
                return
            self._server = started
        self._say_app_choice(progress)
        self._attach(conn)

    def _attach(self, conn: Any) -> None:
        """Hold the server with a new lifeline on ``conn`` (see :mod:`.lifeline`); its
        :meth:`~.lifeline.Lifeline.confirm` is the caller's (connect's opening confirms it
        once the tunnel answers, so the node's answer and the tunnel overlap)."""
        assert self._server is not None and self.job_id is not None
        self._lifeline = lifeline.Lifeline(conn, self._server, token=self.token,
                                           linger=self.settings.linger, job_id=self.job_id,
                                           cancel_job=self._cancels_job())

    def _say_app_choice(self, progress: Say) -> None:
        """With payload auto, say which web app the server chose."""
        if self.settings.payload == "auto" and self._server is not None:
            progress(launch.auto_choice(self._server.app, self.settings.python))

    def _take_back(self, found: kept.KeptServer, conn: Any, progress: Say) -> None:
        """Hold a server of this job that was kept on the host ``conn`` runs on: detached,
        or left lingering by a session that lost its connection (or was killed)."""
        assert self.job_id and self.node
        self._server, self.token = found.server, found.token
        # That session's duties pass to this one: if fireflyhpc submitted the job,
        # leaving cancels it, as leaving that session would have.
        self.submitted = self.store.take_over(self.job_id) or found.cancels_job
        self._attach(conn)
        what = "detached server" if found.detached else "server a lost session left"
        progress(f"reusing the {what} on {self.node} (port {self._server.port})")
