"""Bad input to `fireflyhpc connect`: one error line, a non-zero exit, nothing left behind
(no job queued, no payload on a node, no session entry)."""

from __future__ import annotations

from pathlib import Path

import pytest

from connect_e2e_helpers import one_error_line

pytestmark = pytest.mark.cluster


def _connect(bench, *args: str, config: Path | None = None):  # type: ignore[no-untyped-def]
    before = set(bench.squeue())
    out = bench.run("connect", "--no-browser", *args, timeout=120, config=config)
    assert out.returncode != 0, out.stderr
    line = one_error_line(out.stderr)
    assert out.stdout == "", out.stdout  # no URL
    assert set(bench.squeue()) <= before, "a job was left queued"
    assert bench.sessions() == []
    return line


def test_unknown_cluster(bench) -> None:  # type: ignore[no-untyped-def]
    line = _connect(bench, "--cluster", "nosuchcluster")
    assert "unknown cluster 'nosuchcluster'" in line and "mini" in line


def test_bad_partition_fails_with_slurms_message(bench) -> None:  # type: ignore[no-untyped-def]
    line = _connect(bench, "--cluster", "mini", "--partition", "nosuchpart")
    assert "sbatch refused the job" in line and "invalid partition" in line.lower()


def test_time_above_the_partition_limit_fails_at_once(bench) -> None:  # type: ignore[no-untyped-def]
    small = bench.cluster.small_partition
    limit = bench.cluster.small_partition_maxtime_min
    line = _connect(bench, "--cluster", "mini", "--partition", small, "--time", str(limit + 60))
    assert "job" in line and ("time limit" in line.lower() or "PartitionTimeLimit" in line)


@pytest.mark.parametrize("linger", ["10", "ten minutes", "-5m", "40d"])
def test_bad_grace_period(bench, linger: str) -> None:  # type: ignore[no-untyped-def]
    line = _connect(bench, "--cluster", "mini", "--linger", linger)
    assert f"--linger = '{linger}': expected a duration like 90s, 10m" in line


@pytest.mark.parametrize("node", ["node1;id", "$(touch /tmp/pwned)", "-oProxyCommand=id",
                                  "node1 node2"])
def test_node_with_shell_characters(bench, node: str) -> None:  # type: ignore[no-untyped-def]
    line = _connect(bench, "--cluster", "mini", "--", node)
    assert "node" in line and "expected a host name" in line
    assert not Path("/tmp/pwned").exists()


def test_node_where_the_user_has_no_job(bench) -> None:  # type: ignore[no-untyped-def]
    busy = set(bench.cluster.ssh("login1", ["squeue", "--me", "-h", "-t", "R", "-o", "%N"]
                                 ).stdout.split())
    free = [n for n in bench.cluster.nodes if n not in busy]
    if not free:
        pytest.skip("the bench user has jobs on every node right now")
    line = _connect(bench, "--cluster", "mini", free[0])
    assert f"you have no running job on {free[0]}" in line


def test_job_that_is_not_yours(bench) -> None:  # type: ignore[no-untyped-def]
    line = _connect(bench, "--cluster", "mini", "--job", "987654")
    assert "no job 987654" in line


def test_malformed_config(bench, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.toml"
    bad.write_text("[clusters.mini\nlogin = 'login1'\n")
    line = _connect(bench, "--cluster", "mini", config=bad)
    assert str(bad) in line and "invalid TOML" in line


def test_template_with_unknown_placeholder(bench, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "fireflyhpc.toml"
    config.write_text(bench.config.read_text())
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "broken.sbatch").write_text(
        "#!/bin/bash\n#SBATCH --time={{ time }}\necho {{ no_such_thing }}\nsleep 60\n")
    line = _connect(bench, "--cluster", "mini", "--template", "broken", config=config)
    assert "template broken line 3" in line and "unknown placeholder" in line


def test_busy_local_port_undoes_job_and_payload(bench) -> None:  # type: ignore[no-untyped-def]
    """A failure late in the setup (the tunnel's local port is taken) undoes the job it
    submitted and the payload it started."""
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        out = bench.run("connect", "--cluster", "mini", "--no-browser", "--port", str(port),
                        timeout=180)
    assert out.returncode != 0 and out.stdout == ""
    line = one_error_line(out.stderr)
    assert str(port) in line
    assert "submitted job" in out.stderr
    job_id = out.stderr.split("submitted job ", 1)[1].split()[0]
    assert job_id not in bench.squeue()
    assert not bench.payloads(job_id)
    assert bench.sessions() == []


def test_srun_launch_refuses_a_payload_command_before_submitting(  # type: ignore[no-untyped-def]
        bench, tmp_path: Path) -> None:
    """launch = "srun" cannot run a payload command (a step listens on the node's
    addresses, and only fireflyhpc's server checks a token): refused before any job is
    submitted (one line, exit 3), not after."""
    config = tmp_path / "fireflyhpc.toml"
    lines = [ln for ln in bench.config.read_text().splitlines() if not ln.startswith("launch")]
    config.write_text("\n".join(lines) + '\nlaunch = "srun"\n')
    out = bench.run("connect", "--cluster", "mini", "--no-browser", "--payload",
                    "python3 -m http.server {port}", config=config, timeout=120)
    assert out.returncode == 3, out.stderr
    line = one_error_line(out.stderr)
    assert 'a payload command is not supported with launch = "srun"' in line
    assert "submitted job" not in out.stderr and "connecting to" not in out.stderr
    assert bench.sessions() == []
