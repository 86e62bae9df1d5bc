"""What a connect session is asked for, and how it ended: plain values, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from fireflyhpc.config import ResolvedSettings, load_settings
from fireflyhpc.errors import ConfigError, FireflyHPCError
from fireflyhpc.validate import PAYLOAD_APPS

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
    linger: str | int | None = None  # how long the node keeps the server without us
    data_dirs: tuple[str, ...] = ()
    payload: str | None = None
    keep_job: bool = False
    detach: bool = False
    config: str | None = None
    ssh_config: str | None = None
    accept_new_host_key: bool = False
    ssh: str | None = None  # the SSH backend (auto, openssh, paramiko); None: env, profile
    # Answers ssh's questions (a fireflyhpc.ssh.Prompter); None: ssh asks on the
    # terminal, or without one the notebook's input.
    prompter: Any = field(default=None, compare=False, repr=False)

    def flags(self) -> dict[str, Any]:
        """The settings given as flags, for :func:`fireflyhpc.config.resolve`."""
        return {"template": self.template, "partition": self.partition, "time": self.time,
                "account": self.account, "cpus": self.cpus, "mem": self.mem,
                "payload": self.payload, "local_port": self.local_port,
                "linger": self.linger, "ssh": self.ssh}

    def settings(self) -> ResolvedSettings:
        """The resolved settings of this request (flags > env > profile > defaults),
        checked against each other before anything remote happens.

        Raises ConfigError for a bad config file, profile or flag value, or a
        combination the launch cannot do.
        """
        settings = load_settings(self.config, self.flags(), cluster=self.cluster)
        if settings.launch == "srun" and settings.payload not in PAYLOAD_APPS:
            raise ConfigError("a payload command is not supported with launch = \"srun\"",
                              hint="a job step listens on the node's addresses, and only "
                                   "fireflyhpc's own server checks a token there; use "
                                   "launch = \"ssh\" where nodes accept SSH")
        return settings


@dataclass
class Ending:
    """Why a session's watch returned: a message, and whether it was the user's wish."""

    message: str
    requested: bool
    error: FireflyHPCError | None = None
