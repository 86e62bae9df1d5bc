"""Fixtures of the connect end-to-end tests (helpers live in connect_e2e_helpers.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from connect_e2e_helpers import Bench  # noqa: E402


def _remote_python(cluster) -> str:  # type: ignore[no-untyped-def]
    """The bench user's venv python, installed by `fireflyhpc remote-install`."""
    out = subprocess.run([sys.executable, "-m", "fireflyhpc", "--ssh-config",
                          str(cluster.ssh_config), "remote-install", "--login",
                          cluster.login_host, "--print-python"], capture_output=True,
                         text=True, timeout=900, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        pytest.fail(f"remote-install failed:\n{out.stderr}", pytrace=False)
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def bench(cluster, tmp_path_factory) -> Iterator[Bench]:  # type: ignore[no-untyped-def]
    """The bench's own profile (`$MINICLUSTER_DIR/fireflyhpc.toml`, cluster `mini`) if the
    bench wrote one; otherwise one made here around `fireflyhpc remote-install`."""
    state = tmp_path_factory.mktemp("connect-state")
    config = cluster.dir / "fireflyhpc.toml"
    if not config.exists():
        python = _remote_python(cluster)
        config = tmp_path_factory.mktemp("connect-config") / "fireflyhpc.toml"
        config.write_text(f'default_cluster = "mini"\n[clusters.mini]\nlogin = '
                          f'"{cluster.login_host}"\npartition = "{cluster.default_partition}"\n'
                          f'time = "10:00"\npython = "{python}"\n')
    yield Bench(cluster=cluster, config=config, state_home=state)


@pytest.fixture
def cleanup_jobs(bench: Bench) -> Iterator[list[str]]:
    """Job ids a test adds here are cancelled at its end, whatever happens."""
    jobs: list[str] = []
    yield jobs
    bench.scancel(*jobs)


