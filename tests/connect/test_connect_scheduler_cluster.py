"""The Scheduler against the real Slurm of the mini cluster, through the real OpenSSH
client: submit the shipped template, see the job run on a node, parse, cancel; Slurm's
own refusal; a job held pending on the small partition, with its reason."""

from __future__ import annotations

import time

import pytest

from fireflyhpc import config as cfg
from fireflyhpc.scheduler import templates as tpl
from fireflyhpc.errors import SchedulerError
from fireflyhpc.scheduler import Backoff, JobState, Scheduler

pytestmark = pytest.mark.cluster
FAST = Backoff(0.3, 1.5, 2.0)


def job_script(cluster, **flags: object) -> str:  # type: ignore[no-untyped-def]
    profile = cfg.parse_profile("mini", {"login": cluster.login_host, "time": "5"}, "<test>")
    settings = cfg.resolve(flags, {}, profile)
    template = tpl.find_template("firefly", None)
    return tpl.render_template(template.text, tpl.template_values(settings), name="firefly")


def test_partitions_match_the_bench(cluster, slurm: Scheduler) -> None:  # type: ignore[no-untyped-def]
    parts = {p.name: p for p in slurm.partitions()}
    assert sorted(parts) == sorted(cluster.partitions)
    assert parts[cluster.default_partition].default
    assert list(parts[cluster.small_partition].nodes) == cluster.small_partition_nodes
    assert parts[cluster.small_partition].time_limit == cluster.small_partition_maxtime_min * 60


def test_submit_template_runs_on_a_node_then_cancel(cluster, slurm: Scheduler) -> None:  # type: ignore[no-untyped-def]
    job_id = slurm.submit(job_script(cluster, job_name="ff-sched-test"))
    job = slurm.wait_running(job_id, timeout=90, backoff=FAST)
    assert job.state is JobState.RUNNING and len(job.nodes) == 1
    node = job.nodes[0]
    assert node in cluster.nodes
    assert job.name == "ff-sched-test" and job.user == cluster.user
    assert job.time_limit == 300 and 0 < (job.time_left or 0) <= 300
    # The job really holds that node: its batch script's sleep runs there as the user.
    found = None
    for _ in range(40):  # the output file appears once the script has started
        proc = cluster.ssh(node, ["cat", f"fireflyhpc-{job_id}.out"])
        if proc.returncode == 0 and proc.stdout:
            found = proc.stdout
            break
        time.sleep(0.25)
    assert found == f"fireflyhpc: job {job_id} holds {node} until it is cancelled or its " \
                    "time is up\n"
    mine = slurm.jobs(me=True, nodes=[node])
    assert job_id in [j.job_id for j in mine]
    slurm.cancel([job_id])
    gone = slurm.wait([job_id], lambda s: s[job_id] is None or s[job_id].state.finished,
                      timeout=60, backoff=FAST)
    assert gone[job_id] is None or gone[job_id].state.finished
    slurm.cancel([job_id])  # again: already gone, not an error
    cluster.ssh(node, ["rm", "-f", f"fireflyhpc-{job_id}.out"])


def test_bad_partition_fails_at_once_with_slurms_message(cluster, slurm: Scheduler) -> None:  # type: ignore[no-untyped-def]
    before = {j.job_id for j in slurm.jobs(me=True)}
    with pytest.raises(SchedulerError) as info:
        slurm.submit(job_script(cluster, partition="nosuchpartition"))
    message = str(info.value)
    assert message.startswith("sbatch refused the job: ")
    assert "Invalid partition name specified" in message and "\n" not in message
    assert {j.job_id for j in slurm.jobs(me=True)} == before  # nothing was queued


def test_time_over_the_partition_limit_is_refused(cluster, slurm: Scheduler) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SchedulerError, match="Requested time limit is invalid"):
        slurm.submit(job_script(cluster, partition=cluster.small_partition, time="10"))


def test_pending_job_shows_its_reason_and_start_estimate(cluster, slurm: Scheduler) -> None:  # type: ignore[no-untyped-def]
    small = cluster.small_partition
    filler = slurm.submit(job_script(cluster, partition=small, cpus=2, job_name="ff-filler"))
    slurm.wait([filler], lambda s: s[filler] is not None and not s[filler].state.waiting
               or s[filler] is not None and s[filler].reason not in (None, "None"),
               timeout=60, backoff=FAST)
    held = slurm.submit(job_script(cluster, partition=small, cpus=2, job_name="ff-held"))
    states = slurm.wait([filler, held], lambda s: s[held] is not None and s[held].reason
                        is not None, timeout=60, backoff=FAST)
    job = states[held]
    assert job is not None and job.state is JobState.PENDING
    assert job.reason in ("Resources", "Priority"), job.reason
    assert job.nodes == ()
    estimates = slurm.start_estimates([held, filler])
    assert held in estimates and estimates[held].reason == job.reason
    slurm.cancel([held, filler])
    after = slurm.poll([held, filler])
    assert all(j is None or j.state.finished for j in after.values())


def test_scheduler_over_the_ssh_layer(cluster) -> None:  # type: ignore[no-untyped-def]
    """The SSH layer's SSHConnection.run plugs in as the runner as it is (it raises
    RemoteCommandError for non-zero exits; the Scheduler reads Slurm's words from it)."""
    from fireflyhpc.ssh.connection import SSHConnection

    with SSHConnection.open(cluster.login_host, ssh_config=str(cluster.ssh_config)) as conn:
        scheduler = Scheduler(conn.run, where=cluster.login_host)
        assert {p.name for p in scheduler.partitions()} == set(cluster.partitions)
        with pytest.raises(SchedulerError, match="Invalid partition name specified"):
            scheduler.submit(job_script(cluster, partition="nosuchpartition"))
        job_id = scheduler.submit(job_script(cluster, job_name="ff-sched-ssh"))
        try:
            job = scheduler.wait_running(job_id, timeout=90, backoff=FAST)
            assert job.nodes and job.nodes[0] in cluster.nodes
        finally:
            scheduler.cancel([job_id])
        after = scheduler.poll([job_id])[job_id]
        assert after is None or after.state.finished
        cluster.ssh(cluster.login_host, ["rm", "-f", f"fireflyhpc-{job_id}.out"])


def wait_for_output(cluster, path: str, needle: str) -> str:  # type: ignore[no-untyped-def]
    text = ""
    for _ in range(80):  # bounded: about 20 s
        proc = cluster.ssh(cluster.login_host, ["cat", path])
        text = proc.stdout
        if needle in text:
            break
        time.sleep(0.25)
    return text


@pytest.mark.parametrize("importable", [True, False])
def test_env_template_runs_setup_lines_in_the_job(cluster, slurm: Scheduler,  # type: ignore[no-untyped-def]
                                                  importable: bool) -> None:
    """firefly-env: the profile's setup lines run verbatim inside the job, then the remote
    Python is asked for fireflyhpc and flask (here: tiny modules made in the user's home,
    present or not), and the answer lands in the job's output file."""
    folder = f"ff-env-{int(time.time() * 1000) % 10**9}"
    if importable:
        made = cluster.ssh(cluster.login_host, ["sh", "-c", f"mkdir -p {folder}/fireflyhpc && "
                                                f"echo '__version__ = \"9.9\"' > "
                                                f"{folder}/fireflyhpc/__init__.py && "
                                                f": > {folder}/flask.py"])
        assert made.returncode == 0, made.stderr
    setup = [f'export PYTHONPATH="$HOME/{folder}"',
             "echo \"setup ran: 'quoted' $((6 * 7))\""]
    profile = cfg.parse_profile("mini", {"login": cluster.login_host, "time": "5",
                                         "setup": setup, "python": "/usr/bin/python3"}, "<t>")
    settings = cfg.resolve({"job_name": "ff-env-test"}, {}, profile)
    template = tpl.find_template("firefly-env", None)
    job_id = slurm.submit(tpl.render_template(template.text, tpl.template_values(settings),
                                              name="firefly-env"))
    try:
        job = slurm.wait_running(job_id, timeout=90, backoff=FAST)
        out = wait_for_output(cluster, f"fireflyhpc-{job_id}.out", "fireflyhpc: ")
        out = wait_for_output(cluster, f"fireflyhpc-{job_id}.out",
                              "environment ready" if importable else "cannot import")
    finally:
        slurm.cancel([job_id])
        cluster.ssh(cluster.login_host, ["rm", "-rf", folder, f"fireflyhpc-{job_id}.out"])
    lines = out.splitlines()
    assert lines[0] == f"fireflyhpc: job {job_id} on {job.nodes[0]}: setting up the environment"
    assert lines[1] == "setup ran: 'quoted' 42"
    if importable:
        assert lines[2:4] == ["fireflyhpc 9.9", "fireflyhpc: environment ready"]
    else:
        assert "ModuleNotFoundError: No module named 'fireflyhpc'" in out
        assert lines[-1] == "fireflyhpc: the remote Python cannot import fireflyhpc and flask"
