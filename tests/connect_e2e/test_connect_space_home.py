"""A cluster user whose home directory path has a space in it (`/home/ff space`) and
whose login shell is tcsh (sshd runs every command with it): remote-install, then
connect with setup lines, with srun."""

from __future__ import annotations

import json
import shlex
import signal
import sys
from pathlib import Path

import pytest

from connect_e2e_helpers import http_get, url_parts, wait_for

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

pytestmark = pytest.mark.cluster

MARK = "a b; $(nothing) 'quoted'"


@pytest.fixture(scope="module")
def space_python(bench) -> str:  # type: ignore[no-untyped-def]
    """remote-install as the space user: what it prints is taken as is."""
    login = bench.cluster.ssh_host("login1", bench.cluster.space_user)
    out = bench.run("remote-install", "--login", login, "--index", "no", timeout=600)
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if ln.strip().startswith("python = "))
    python = tomllib.loads(line.strip())["python"]
    assert python.startswith("/home/ff space/"), python
    return str(python)


def _config(bench, tmp_path: Path, python: str, launch: str) -> Path:  # type: ignore[no-untyped-def]
    login = bench.cluster.ssh_host("login1", bench.cluster.space_user)
    text = "\n".join([
        'default_cluster = "mini"', "[clusters.mini]", f'login = "{login}"',
        f'partition = "{bench.cluster.default_partition}"', 'time = "0:10:00"',
        f"python = {json.dumps(python)}", f'launch = "{launch}"', f'job_name = "{bench.job_name}"',
        f"setup = [{json.dumps('export FFSPACE_MARK=' + shlex.quote(MARK))}]",
    ])
    config = tmp_path / f"space-{launch}.toml"
    config.write_text(text + "\n")
    return config


def _squeue(bench, job_id: str) -> str:  # type: ignore[no-untyped-def]
    return bench.cluster.ssh("login1", ["squeue", "-h", "-j", job_id, "-o", "%T"],
                             user=bench.cluster.space_user).stdout.strip()


# srun only: the bench's ssh_config names node1/node2 for its main user, so an ssh hop
# from the login node would log in to the node as that user, not this one.
@pytest.mark.parametrize("launch", ["srun"])
def test_connect_for_a_user_whose_home_has_a_space(  # type: ignore[no-untyped-def]
        bench, space_python: str, tmp_path: Path, launch: str) -> None:
    run = bench.connect(config=_config(bench, tmp_path, space_python, launch))
    job_id = None
    try:
        port, token = url_parts(run.wait_url(timeout=180))
        record = next(s for s in bench.sessions() if s["local_port"] == port)
        job_id = str(record["job_id"])
        assert record["launch"] == launch
        status, body = http_get(port, "/datasets.json", token)
        assert status == 200 and json.loads(body)
        (proc,) = bench.payloads(job_id)
        assert proc.username() == bench.cluster.space_user
        assert proc.cmdline()[0] == space_python
        # the setup line ran in the payload's shell, its value intact
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
        assert f"FFSPACE_MARK={MARK}".encode() in environ
        run_dirs = list((Path("/home/ff space") / ".fireflyhpc" / "run").glob(f"{job_id}-*"))
        assert len(run_dirs) == 1
        assert run.stop(signal.SIGINT) == 0, run.stderr_text
        assert wait_for(lambda: not bench.payloads(job_id), 20)
        assert wait_for(lambda: "RUNNING" not in _squeue(bench, job_id), 30)
        assert not run_dirs[0].exists()
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
        if job_id:  # a killed connect's lifeline ends the payload; the job goes here
            bench.cluster.run_in("login1", ["scancel", job_id])
