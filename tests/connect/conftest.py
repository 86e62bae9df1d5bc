"""Fixtures of the connect-building-blocks tests (config, templates, Slurm, aliases)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence

import pytest
from connect_testutil import openssh_runner

from fireflyhpc.scheduler import Scheduler


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    """An environment with its own HOME/XDG dirs and no FIREFLYHPC_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIREFLYHPC_")}
    home = tmp_path / "home"
    home.mkdir()
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
               XDG_STATE_HOME=str(home / ".local" / "state"))
    env.pop("ZDOTDIR", None)
    return env


@pytest.fixture
def slurm(cluster) -> Iterator[Scheduler]:  # type: ignore[no-untyped-def]
    """A Scheduler on the mini cluster's login node; cancels every job it submitted."""
    scheduler = Scheduler(openssh_runner(cluster.ssh_config, cluster.login_host),
                          where=cluster.login_host)
    submitted: list[str] = []
    original = scheduler.submit

    def submit(script: str, extra_args: Sequence[str] = ()) -> str:
        job_id = original(script, extra_args)
        submitted.append(job_id)
        return job_id

    scheduler.submit = submit  # type: ignore[method-assign]
    try:
        yield scheduler
    finally:
        if submitted:
            scheduler.cancel(submitted)
