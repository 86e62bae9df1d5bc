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
from fireflyhpc.session import launch, lifeline
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
        from fireflyhpc.session.srun import start_step

        assert self.job_id and self.node
        spec = payload_spec(self.settings, self.request.data_dirs)
        self.launched_with = "srun"
        if not self.submitted and self._reuse_detached(self._login, progress):
            return
        progress(f"starting the payload on {self.node} with srun")
        self._server = start_step(self._login, spec, job_id=self.job_id, node=self.node,
                                  token=self.token, name=launch.run_name(self.job_id, self.id))
        self._say_app_choice(progress)
        self._attach(self._login)

    def _start_with_ssh(self, conn: Any, progress: Say) -> None:
        assert self.job_id and self.node
        spec = payload_spec(self.settings, self.request.data_dirs)
        name = launch.run_name(self.job_id, self.id)
        if not self.submitted and self._reuse_detached(conn, progress):
            return
        if not spec.enforces_token:
            log.warning("a custom payload command cannot be made to check fireflyhpc's "
                        "token: anyone on %s who finds its port can use it", self.node)
        progress(f"starting the payload on {self.node}")
        self._server = launch.start_payload(conn, spec, node=self.node, name=name,
                                            token=self.token)
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

    def _reuse_detached(self, conn: Any, progress: Say) -> bool:
        """Take over a server of this job kept on the host ``conn`` runs on (the node;
        the login node for srun steps): detached, or left lingering by a session that
        lost its connection (or was killed)."""
        assert self.job_id and self.node
        found = lifeline.find_kept(conn, self.job_id, self.node)
        if found is None:
            return False
        self._server, self.token = found.server, found.token
        # That session's duties pass to this one: if fireflyhpc submitted the job,
        # leaving cancels it, as leaving that session would have.
        self.submitted = self.store.take_over(self.job_id) or found.cancels_job
        self._attach(conn)
        what = "detached server" if found.detached else "server a lost session left"
        progress(f"reusing the {what} on {self.node} (port {self._server.port})")
        return True
