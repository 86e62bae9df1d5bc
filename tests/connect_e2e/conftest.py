"""Fixtures of the connect end-to-end tests (helpers live in connect_e2e_helpers.py)."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from connect_e2e_helpers import Bench  # noqa: E402


@pytest.fixture(scope="session")
def bench(cluster, cluster_payload_python: str, tmp_path_factory) -> Iterator[Bench]:  # type: ignore[no-untyped-def]
    """The bench's own profile (`$MINICLUSTER_DIR/fireflyhpc.toml`, cluster `mini`), whose
    python is the venv `fireflyhpc remote-install` made (the `cluster_payload_python`
    fixture); a private session-state folder for the CLI subprocesses."""
    state = tmp_path_factory.mktemp("connect-state")
    config = cluster.dir / "fireflyhpc.toml"
    if not config.exists():
        pytest.fail(f"the bench wrote no {config}", pytrace=False)
    text = config.read_text()
    assert cluster_payload_python in text, "profile and remote-install disagree"
    # Our own job name, so that jobs of other test sessions on the bench never count as ours.
    assert text.rstrip().splitlines()[-1] and "[clusters.mini]" in text
    tables = [line for line in text.splitlines() if line.startswith("[")]
    assert tables[-1] == "[clusters.mini]", tables
    job_name = f"ffe2e-{secrets.token_hex(3)}"
    mine = tmp_path_factory.mktemp("connect-config") / "fireflyhpc.toml"
    mine.write_text(text.rstrip("\n") + f'\njob_name = "{job_name}"\n')
    yield Bench(cluster=cluster, config=mine, state_home=state, job_name=job_name)


@pytest.fixture
def cleanup_jobs(bench: Bench) -> Iterator[list[str]]:
    """Job ids a test adds here are cancelled at its end, whatever happens."""
    jobs: list[str] = []
    yield jobs
    bench.scancel(*jobs)


