"""launch = "auto" (the default): SSH to the node when it accepts, else the payload as an
srun step. The node's sshd is really stopped here, so these tests are ordered last."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Iterator

import pytest

from connect_e2e_helpers import assert_nothing_left, http_get, one_error_line, url_parts

pytestmark = [pytest.mark.cluster, pytest.mark.cluster_disruptive]


def default_launch_config(bench, tmp_path: Path, extra: str = "") -> Path:  # type: ignore[no-untyped-def]
    """The bench profile without its `launch` line: the default applies."""
    lines = [ln for ln in bench.config.read_text().splitlines() if not ln.startswith("launch")]
    config = tmp_path / "fireflyhpc.toml"
    config.write_text("\n".join(lines) + "\n" + extra)
    return config


@pytest.fixture
def nodes_without_sshd(bench) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """Every compute node's sshd stopped for the test, started again afterwards."""
    try:
        for node in bench.cluster.nodes:
            out = bench.cluster.minicluster_command("sshd", node, "stop")
            assert out.returncode == 0, out.stdout + out.stderr
        yield
    finally:
        for node in bench.cluster.nodes:
            out = bench.cluster.minicluster_command("sshd", node, "start")
            assert out.returncode == 0, out.stdout + out.stderr


def test_default_launch_falls_back_to_srun_when_nodes_refuse_ssh(  # type: ignore[no-untyped-def]
        bench, cleanup_jobs, nodes_without_sshd, tmp_path) -> None:
    config = default_launch_config(bench, tmp_path)
    run = bench.connect(config=config)
    url = run.wait_url(timeout=120)
    port, token = url_parts(url)
    record = next(s for s in bench.sessions() if s["local_port"] == port)
    job_id = str(record["job_id"])
    cleanup_jobs.append(job_id)
    assert record["launch"] == "srun"
    said = [ln for ln in run.stderr_text.splitlines() if "starting the payload with srun" in ln]
    assert len(said) == 1 and "ssh to node" in said[0] and "launch = \"auto\"" in said[0], \
        run.stderr_text
    status, body = http_get(port, "/datasets.json", token)
    assert status == 200 and json.loads(body)
    steps = bench.cluster.ssh("login1", ["squeue", "-h", "-s", "-j", job_id, "-o", "%j"]).stdout
    assert "fireflyhpc-payload" in steps
    assert run.stop(signal.SIGINT) == 0, run.stderr_text
    assert_nothing_left(bench, job_id, port)


def test_default_launch_names_both_attempts_when_neither_works(  # type: ignore[no-untyped-def]
        bench, nodes_without_sshd, tmp_path) -> None:
    """A payload command cannot run as an srun step: with SSH refused too, the one error
    line names both attempts, and the job it submitted is cancelled."""
    config = default_launch_config(bench, tmp_path)
    before = set(bench.squeue())
    out = bench.run("connect", "--no-browser", "--payload", "python3 -m http.server {port}",
                    config=config, timeout=180)
    assert out.returncode == 3, out.stderr
    line = one_error_line(out.stderr)
    assert "ssh to the node failed" in line and "srun failed too" in line, line
    assert set(bench.squeue()) <= before, "a job was left queued"
    assert bench.sessions() == []


def test_default_launch_uses_ssh_where_nodes_accept_it(bench, cleanup_jobs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = default_launch_config(bench, tmp_path)
    job_id = bench.sbatch()
    cleanup_jobs.append(job_id)
    bench.wait_running(job_id)
    run = bench.connect("--job", job_id, config=config)
    port, token = url_parts(run.wait_url())
    record = next(s for s in bench.sessions() if s["local_port"] == port)
    assert record["launch"] == "ssh"
    assert "with srun" not in run.stderr_text
    assert http_get(port, "/datasets.json", token)[0] == 200
    (proc,) = bench.payloads(job_id)
    assert "127.0.0.1" in proc.cmdline()  # ssh launch: the server binds the node's loopback
    assert run.stop(signal.SIGINT) == 0, run.stderr_text
    assert_nothing_left(bench, job_id, port, job_gone=False)
