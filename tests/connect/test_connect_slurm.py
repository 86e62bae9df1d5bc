"""Slurm builders and parsers, on raw outputs captured from the mini cluster and on
hand-made outputs of the shapes real sites print; the Scheduler on a local runner."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Sequence

import pytest
from connect_testutil import read_golden

from fireflyhpc.session import jobs as jobwatch
from fireflyhpc.errors import RemoteCommandError, SchedulerError
from fireflyhpc.scheduler import Backoff, JobState, Result, Scheduler, expand_nodelist, slurm


# -- node lists --------------------------------------------------------------------------

@pytest.mark.parametrize("text,names", [
    ("node1", ["node1"]),
    ("node[1-3,5]", ["node1", "node2", "node3", "node5"]),
    ("gpu[01-03]-ib,login1", ["gpu01-ib", "gpu02-ib", "gpu03-ib", "login1"]),
    ("r[1-2]n[08-10]", ["r1n08", "r1n09", "r1n10", "r2n08", "r2n09", "r2n10"]),
    ("a[9-11]", ["a9", "a10", "a11"]),
    ("c[001-003],d7", ["c001", "c002", "c003", "d7"]),
    ("", []), ("(null)", []), ("None", []),
])
def test_expand_nodelist(text: str, names: list[str]) -> None:
    assert expand_nodelist(text) == names


@pytest.mark.parametrize("text", ["node[1-", "a[3-1]", "a[x]", "a,,b", "a[[1]]", "a]", "a b",
                                  "n[1-9999999]"])
def test_bad_nodelist_is_scheduler_error_with_raw(text: str) -> None:
    with pytest.raises(SchedulerError) as info:
        expand_nodelist(text)
    assert info.value.raw == text.strip()


# -- builders ----------------------------------------------------------------------------

def test_builders() -> None:
    assert slurm.sbatch_argv() == ["sbatch", "--parsable"]
    assert slurm.sbatch_argv(["-p", "x"]) == ["sbatch", "--parsable", "-p", "x"]
    fmt = "%i|%T|%r|%N|%L|%S|%l|%M|%P|%u|%j"
    assert slurm.squeue_argv(["1", "2_3"]) == ["squeue", "-o", fmt, "-j", "1,2_3"]
    assert slurm.squeue_argv(me=True, nodes=["node1"]) == ["squeue", "-o", fmt, "--me",
                                                           "-w", "node1"]
    assert slurm.squeue_argv(user="bob", states=["RUNNING"]) == ["squeue", "-o", fmt, "-u",
                                                                 "bob", "-t", "RUNNING"]
    assert slurm.squeue_start_argv(["7"]) == ["squeue", "--start", "-o", "%i|%S|%Y|%r",
                                              "-j", "7"]
    assert slurm.scancel_argv(["7", "8"]) == ["scancel", "7", "8"]
    assert slurm.sinfo_argv() == ["sinfo", "-o", "%P|%a|%l|%D|%c|%m|%N"]
    assert slurm.squeue_state_argv("12_3") == ["squeue", "-h", "-o", "%T", "-j", "12_3"]
    assert slurm.srun_step_argv("9", "node1", error_file="r/server.log") == [
        "srun", "--jobid=9", "--overlap", "--nodes=1", "--ntasks=1", "--nodelist=node1",
        "--input=none", "--output=/dev/null", "--error=r/server.log", "--open-mode=append",
        "--job-name=fireflyhpc-payload"]


@pytest.mark.parametrize("bad", ["7; rm -rf ~", "-1", "", "1 2", "$(id)"])
def test_builders_refuse_bad_job_ids(bad: str) -> None:
    with pytest.raises(SchedulerError, match="not a Slurm job id"):
        slurm.squeue_argv([bad])
    with pytest.raises(SchedulerError, match="not a Slurm job id"):
        slurm.scancel_argv([bad])
    with pytest.raises(SchedulerError, match="not a Slurm job id"):
        slurm.squeue_state_argv(bad)
    with pytest.raises(SchedulerError, match="not a Slurm job id"):
        slurm.srun_step_argv(bad, "node1", error_file="x")


def test_builders_refuse_bad_node_names() -> None:
    with pytest.raises(ValueError):
        slurm.squeue_argv(nodes=["node1;id"])
    with pytest.raises(ValueError):
        slurm.srun_step_argv("1", "node1 --export=ALL", error_file="x")


# -- parsers -----------------------------------------------------------------------------

def test_parse_sbatch() -> None:
    assert slurm.parse_sbatch("123\n") == "123"
    assert slurm.parse_sbatch("123;cluster2\n") == "123"
    with pytest.raises(SchedulerError) as info:
        slurm.parse_sbatch("Submitted batch job 123\n")
    assert info.value.raw == "Submitted batch job 123\n"


def test_parse_squeue_minicluster_capture() -> None:
    jobs = slurm.parse_squeue(read_golden("squeue_minicluster.txt"))
    assert [j.job_id for j in jobs] == ["1", "3", "2"]
    running, pending, _ = jobs
    assert running.state is JobState.RUNNING and running.nodes == ("node1",)
    assert running.reason is None and running.time_left == 119 and running.elapsed == 1
    assert running.start_time == datetime(2026, 11, 25, 18, 59, 36)
    assert running.time_limit == 120 and running.partition == "debug"
    assert running.user == "ffuser" and running.name == "sbatch"
    assert pending.state is JobState.PENDING and pending.reason == "Resources"
    assert pending.nodes == () and pending.start_time is None


def test_parse_squeue_by_header_name_in_any_order() -> None:
    jobs = {j.job_id: j for j in slurm.parse_squeue(read_golden("squeue_site.txt"))}
    assert list(jobs) == ["4242", "4243_7", "4244", "4245", "4246", "4247"]
    big = jobs["4242"]
    assert big.nodes == ("gpu01", "gpu02", "gpu03", "gpu07")
    assert big.time_left == 24 * 3600 * 2 - 2 and big.name == "viz|run 1"
    assert big.time_limit is None and big.elapsed is None  # columns absent: None
    assert jobs["4243_7"].start_time == datetime(2026, 1, 3, 10, 0, 0)
    assert jobs["4243_7"].reason == "Priority"
    assert jobs["4244"].time_left is None
    assert jobs["4244"].reason == "(ReqNodeNotAvail, UnavailableNodes:n[1-2])"
    assert jobs["4245"].state is JobState.COMPLETING and jobs["4245"].state.finished
    assert jobs["4246"].state is JobState.CANCELLED
    assert jobs["4247"].state is JobState.UNKNOWN and not jobs["4247"].state.finished


@pytest.mark.parametrize("raw,problem", [
    ("", "printed nothing"),
    ("JOBID|REASON\n1|x\n", "lacks column(s) STATE"),
    ("JOBID|STATE|REASON\n1|RUNNING\n", "row has 2 columns, header has 3"),
    ("JOBID|STATE\nabc|RUNNING\n", "bad job id 'abc'"),
    ("JOBID|STATE|NODELIST\n1|RUNNING|n[1-\n", "cannot read Slurm node list"),
])
def test_squeue_parse_errors_carry_the_raw_text(raw: str, problem: str) -> None:
    with pytest.raises(SchedulerError, match=problem.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[")) as info:
        slurm.parse_squeue(raw)
    assert info.value.raw is not None and info.value.raw.strip() in raw


def test_parse_squeue_start() -> None:
    (row,) = slurm.parse_squeue_start(read_golden("squeue_start_minicluster.txt"))
    assert (row.job_id, row.start_time, row.nodes, row.reason) == ("3", None, (), "Resources")
    (est,) = slurm.parse_squeue_start("JOBID|START_TIME|SCHEDNODES|REASON\n"
                                      "9|2026-02-03T04:05:06|n[3-4]|Priority\n")
    assert est.start_time == datetime(2026, 2, 3, 4, 5, 6) and est.nodes == ("n3", "n4")


def test_parse_sinfo() -> None:
    debug, short = slurm.parse_sinfo(read_golden("sinfo_minicluster.txt"))
    assert (debug.name, debug.default, debug.available, debug.time_limit) == \
        ("debug", True, True, None)
    assert debug.nodes == ("node1", "node2") and debug.node_count == 2
    assert (short.name, short.default, short.time_limit, short.nodes) == \
        ("short", False, 300, ("node2",))
    gpu, cpu, maint = slurm.parse_sinfo(read_golden("sinfo_site.txt"))
    assert gpu.nodes == ("gpu01", "gpu02", "gpu03") and gpu.node_count == 3  # merged rows
    assert gpu.time_limit == 2 * 86400 and cpu.default and not gpu.default
    assert not maint.available and maint.nodes == ()


@pytest.mark.parametrize("text,seconds", [("0:01", 1), ("1:59", 119), ("1:00:00", 3600),
                                          ("2-03:04:05", 2 * 86400 + 3 * 3600 + 245),
                                          ("5", 5), ("UNLIMITED", None), ("INVALID", None),
                                          ("infinite", None), ("NOT_SET", None)])
def test_parse_duration(text: str, seconds: int | None) -> None:
    assert slurm.parse_duration(text) == seconds


def test_slurm_message_keeps_slurms_words() -> None:
    assert slurm.slurm_message(read_golden("sbatch_bad_partition.stderr")) == \
        "invalid partition specified: nosuch; Batch job submission failed: " \
        "Invalid partition name specified"
    assert slurm.slurm_message("slurm_load_jobs error: Invalid job id specified\n") == \
        "Invalid job id specified"


def test_job_state_groups() -> None:
    assert JobState.PENDING.waiting and not JobState.PENDING.finished
    assert JobState.RUNNING.running and not JobState.RUNNING.finished
    for state in ("COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
        assert JobState(state).finished
    assert JobState.parse("") is JobState.UNKNOWN


# -- the Scheduler over a scripted local runner --------------------------------------------

class Replay:
    """A runner answering from a list of (expected argv prefix, Result) pairs, in order."""

    def __init__(self, answers: list[tuple[list[str], Result | Exception]]) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[list[str], str | None]] = []

    def __call__(self, argv: Sequence[str], *, input: str | None = None) -> Result:
        self.calls.append((list(argv), input))
        expected, answer = self.answers.pop(0)
        assert list(argv[: len(expected)]) == expected, argv
        if isinstance(answer, Exception):
            raise answer
        return answer


SQ_HEAD = "JOBID|STATE|REASON|NODELIST|TIME_LEFT|START_TIME|TIME_LIMIT|TIME|PARTITION|USER|NAME\n"


def row(job: str, state: str, node: str = "", reason: str = "None") -> str:
    return f"{job}|{state}|{reason}|{node}|9:00|N/A|10:00|1:00|debug|u|fireflyhpc\n"


def test_submit_sends_script_on_stdin_and_reports_slurm_refusal() -> None:
    runner = Replay([(["sbatch", "--parsable"], Result(0, "77\n", "")),
                     (["sbatch"], Result(1, "", read_golden("sbatch_bad_partition.stderr")))])
    scheduler = Scheduler(runner)
    assert scheduler.submit("#!/bin/bash\nhostname\n") == "77"
    assert runner.calls[0][1] == "#!/bin/bash\nhostname\n"
    with pytest.raises(SchedulerError, match="^sbatch refused the job: invalid partition "
                                             "specified: nosuch; Batch job") as info:
        scheduler.submit("#!/bin/bash\n", ["-p", "nosuch"])
    assert "Invalid partition name specified" in (info.value.raw or "")


def test_runner_that_raises_is_handled_like_one_that_returns() -> None:
    error = RemoteCommandError(["squeue"], 1, "slurm_load_jobs error: Invalid job id specified")
    scheduler = Scheduler(Replay([(["squeue"], error)]))
    assert scheduler.poll(["5"]) == {"5": None}


def test_missing_slurm_is_one_clear_error() -> None:
    scheduler = Scheduler(Replay([(["sinfo"], Result(127, "", "bash: sinfo: command not found"))]),
                          where="login1")
    with pytest.raises(SchedulerError, match="Slurm's sinfo is not available on login1"):
        scheduler.partitions()


def test_cancel_of_a_finished_job_is_fine_other_failures_are_not() -> None:
    runner = Replay([
        (["scancel", "5"], Result(1, "", "scancel: error: Kill job error on job id 5: "
                                         "Invalid job id specified\n")),
        (["scancel", "6"], Result(1, "", "scancel: error: Kill job error on job id 6: "
                                         "Access/permission denied\n"))])
    scheduler = Scheduler(runner)
    scheduler.cancel(["5"])
    scheduler.cancel([])  # no command at all
    with pytest.raises(SchedulerError, match="scancel 6 failed: Kill job error on job id 6: "
                                             "Access/permission denied"):
        scheduler.cancel(["6"])


def test_poll_asks_for_all_jobs_in_one_squeue() -> None:
    runner = Replay([
        (["squeue"], Result(0, SQ_HEAD + row("1", "PENDING", reason="Priority")
                            + row("2", "RUNNING", "n2"), "")),
        (["squeue"], Result(0, SQ_HEAD + row("2", "RUNNING", "n2"), "")),
    ])
    scheduler = Scheduler(runner)
    first = scheduler.poll(["1", "2"])
    assert first["1"] is not None and first["1"].reason == "Priority"
    assert first["2"] is not None and first["2"].nodes == ("n2",)
    assert scheduler.poll(["1", "2"])["1"] is None  # left the queue
    assert [call[0][-1] for call in runner.calls] == ["1,2"] * 2  # one batched squeue each


# -- waiting for a job to start (jobwatch.wait_until_running, what connect uses) -----------

START_HEAD = "JOBID|START_TIME|SCHEDNODES|REASON\n"


class FakeClock:
    """Time that passes only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def wait(runner: Replay, clock: FakeClock, **kwargs):  # type: ignore[no-untyped-def]
    lines: list[str] = []
    job = jobwatch.wait_until_running(Scheduler(runner), "7", lines.append,
                                      backoff=Backoff(1.0, 2.0, 1.5), sleep=clock.sleep,
                                      clock=clock, **kwargs)
    return job, lines


def test_wait_until_running_reports_each_poll_then_returns_the_running_job() -> None:
    runner = Replay([
        (["squeue", "-o"], Result(0, SQ_HEAD + row("7", "PENDING", reason="Priority"), "")),
        (["squeue", "--start"], Result(0, START_HEAD + "7|2099-01-01T12:00:00|(null)|Priority\n",
                                       "")),
        (["squeue", "-o"], Result(0, SQ_HEAD + row("7", "CONFIGURING", "n3"), "")),
        (["squeue", "--start"], Result(0, START_HEAD, "")),  # no estimate while configuring
        (["squeue", "-o"], Result(0, SQ_HEAD + row("7", "RUNNING", "n3"), "")),
    ])
    clock = FakeClock()
    job, lines = wait(runner, clock)
    assert job.job_id == "7" and job.state is JobState.RUNNING and job.nodes == ("n3",)
    assert [call[0][-2:] for call in runner.calls] == [["-j", "7"]] * 5  # one job, by id
    assert lines[0] == "job 7, PENDING, reason: Priority, expected start: 2099-01-01 12:00, " \
                       "waited 0:00"
    assert lines[1] == "job 7, CONFIGURING, waited 0:01"
    assert len(lines) == 2  # the running job is returned, not reported
    # Between polls it waits the backoff's delays (1, then 1.5), in steps of 0.2 s at most.
    assert max(clock.slept) <= 0.2 and round(sum(clock.slept), 6) == 2.5


@pytest.mark.parametrize("queue, message", [
    (SQ_HEAD + row("7", "CANCELLED"), "job 7 ended before it started (CANCELLED)"),
    (SQ_HEAD, "job 7 ended before it started (it left the queue)"),
    (SQ_HEAD + row("7", "PENDING", reason="PartitionTimeLimit"),
     "job 7 cannot start: Slurm says PartitionTimeLimit"),
])
def test_wait_until_running_fails_when_the_job_cannot_start(queue: str, message: str) -> None:
    runner = Replay([
        (["squeue", "-o"], Result(0, SQ_HEAD + row("7", "PENDING", reason="Resources"), "")),
        (["squeue", "--start"], Result(0, START_HEAD + "7|N/A|(null)|Resources\n", "")),
        (["squeue", "-o"], Result(0, queue, "")),
    ])
    clock = FakeClock()
    with pytest.raises(SchedulerError, match="^" + re.escape(message)):
        wait(runner, clock)
    assert not runner.answers  # failed at the second poll, not later


def test_wait_until_running_stops_when_asked() -> None:
    runner = Replay([
        (["squeue", "-o"], Result(0, SQ_HEAD + row("7", "PENDING", reason="Priority"), "")),
        (["squeue", "--start"], Result(0, START_HEAD + "7|N/A|(null)|Priority\n", "")),
        (["squeue", "-o"], Result(0, SQ_HEAD + row("7", "PENDING", reason="Priority"), "")),
        (["squeue", "--start"], Result(0, START_HEAD + "7|N/A|(null)|Priority\n", "")),
    ])
    clock = FakeClock()
    asked: list[float] = []

    def stop() -> bool:
        asked.append(clock.now)
        return clock.now >= 1001.5  # Ctrl-C during the second wait

    with pytest.raises(KeyboardInterrupt):
        wait(runner, clock, stop=stop)
    assert not runner.answers  # two polls, no third
    assert asked[-1] == pytest.approx(1001.6) and len(asked) == len(clock.slept) + 1


def test_old_slurm_without_me_falls_back_to_the_user_name() -> None:
    runner = Replay([
        (["squeue"], Result(1, "", "squeue: unrecognized option '--me'\nTry \"squeue --help\"")),
        (["id", "-un"], Result(0, "ffuser\n", "")),
        (["squeue"], Result(0, SQ_HEAD + row("4", "RUNNING", "n1"), "")),
        (["squeue"], Result(0, SQ_HEAD, "")),
    ])
    scheduler = Scheduler(runner)
    assert [j.job_id for j in scheduler.jobs(me=True)] == ["4"]
    assert runner.calls[2][0][-2:] == ["-u", "ffuser"]
    assert scheduler.jobs(me=True) == []  # from now on straight to -u
    assert runner.calls[3][0][-2:] == ["-u", "ffuser"] and len(runner.calls) == 4


def test_bad_state_filter_is_refused() -> None:
    with pytest.raises(SchedulerError, match="not a Slurm job state: 'R;id'"):
        slurm.squeue_argv(states=["R;id"])
