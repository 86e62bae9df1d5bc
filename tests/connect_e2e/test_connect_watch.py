"""The watch loop's verdicts: a lost cluster is mended, not an end; a failure across a
pause of this process proves nothing; and the pause detector that tells them apart."""

from __future__ import annotations

import threading
from typing import Callable

import pytest

from fireflyhpc import validate
from fireflyhpc.clock import PauseDetector, boottime
from fireflyhpc.errors import FireflyHPCError, SSHError
from fireflyhpc.scheduler import Backoff
from fireflyhpc.session.request import Ending
from fireflyhpc.session.watch import watch_loop
from fireflyhpc.ssh import RemoteTimeoutError

FAST = Backoff(initial=0.01, factor=1.0, maximum=0.01)


def test_pauses_are_ticks_far_longer_than_asked_for() -> None:
    clock = PauseDetector(tick=1.0, threshold=4.0)
    boot, wall = 1000.0, 1_700_000_000.0
    clock.observe(boot, wall)
    before = clock.mark()
    for _ in range(5):  # a busy machine: ticks a bit late, no pause
        boot, wall = boot + 2.5, wall + 2.5
        assert clock.observe(boot, wall) == 0.0
    assert not clock.paused_since(before)
    boot, wall = boot + 46.0, wall + 46.0  # SIGSTOP for 45 s: both clocks moved on
    assert clock.observe(boot, wall) == pytest.approx(45.0)
    assert clock.paused_since(before) and clock.last_pause == pytest.approx(45.0)
    after = clock.mark()
    assert not clock.paused_since(after)
    # A suspended machine whose steady clock stood still: the wall clock tells.
    boot, wall = boot + 1.0, wall + 3600.0
    assert clock.observe(boot, wall) == pytest.approx(3599.0)
    assert clock.paused_since(after)


def test_a_recent_pause_is_remembered_for_a_while() -> None:
    clock = PauseDetector(tick=1.0, threshold=4.0)
    now = boottime()
    clock.observe(now - 700.0, 0.0)
    clock.observe(now - 600.0, 100.0)  # a pause of 99 s that ended 600 s ago
    assert clock.paused_for(within=120) == 0.0 and clock.last_pause == pytest.approx(99.0)
    clock.observe(now - 10.0, 690.0)  # and one of 589 s that ended just now
    assert clock.paused_for(within=120) == pytest.approx(589.0)


class Script:
    """A session check that plays a list of outcomes (an Ending, None, or an error;
    a callable is called first, e.g. to make the clock see a pause)."""

    def __init__(self, outcomes: list[object], stop: threading.Event) -> None:
        self.outcomes = outcomes
        self.stop = stop
        self.thorough: list[bool] = []

    def __call__(self, thorough: bool) -> Ending | None:
        self.thorough.append(thorough)
        if not self.outcomes:
            self.stop.set()
            return None
        outcome = self.outcomes.pop(0)
        if callable(outcome):
            outcome = outcome()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome  # type: ignore[return-value]


def run(outcomes: list[object], *, clock: PauseDetector | None = None,
        time_left: Callable[[], float | None] = lambda: 3600.0) -> tuple[Ending, Script,
                                                                         list[str]]:
    stop = threading.Event()
    check = Script(outcomes, stop)
    said: list[str] = []
    ending = watch_loop(check, time_left=time_left, warn_at=60, job_id="7", stop=stop,
                        warn=said.append, backoff=FAST,
                        on_lost=lambda exc: said.append(f"lost: {exc}"),
                        on_back=lambda took: said.append("back"),
                        pauses=clock or PauseDetector())
    return ending, check, said


def test_a_lost_cluster_is_reconnected_not_an_ending() -> None:
    ending, check, said = run([None, SSHError("link down"), RemoteTimeoutError(["x"], -1),
                               SSHError("refused"), None, None])
    assert ending.requested and ending.message == "stopped"
    assert said == ["lost: link down", "back"]
    # After the first failure every check is thorough (reconnect, re-attach) until one works.
    assert check.thorough == [False, False, True, True, True, False, False]


def test_the_job_ending_ends_the_watch() -> None:
    gone = Ending("job 7 was cancelled", requested=False, error=FireflyHPCError("x"))
    ending, _, said = run([None, gone, None])
    assert ending is gone and said == []


def test_a_failure_across_a_pause_is_tried_again_silently() -> None:
    clock = PauseDetector(tick=1.0, threshold=4.0)
    clock.observe(0.0, 0.0)

    def paused() -> SSHError:  # the process slept while this check waited
        clock.observe(46.0, 46.0)
        return SSHError("Timeout opening channel.")

    ending, check, said = run([None, paused, None, None], clock=clock)
    assert said == [] and ending.requested
    assert check.thorough == [False, False, True, False, False]


def test_a_second_failure_after_a_pause_counts() -> None:
    clock = PauseDetector(tick=1.0, threshold=4.0)
    clock.observe(0.0, 0.0)

    def paused() -> SSHError:
        clock.observe(46.0, 46.0)
        return SSHError("Timeout opening channel.")

    _, check, said = run([paused, SSHError("no route"), None], clock=clock)
    assert said == ["lost: no route", "back"] and check.thorough == [False, True, True, False]


def test_lost_past_the_jobs_time_limit_ends_the_watch() -> None:
    left = iter([100.0, -5.0])
    ending, _, said = run([SSHError("down"), SSHError("down")],
                          time_left=lambda: next(left, -5.0))
    assert not ending.requested and "lost the connection" in ending.message
    assert "time limit has passed" in ending.message and isinstance(ending.error, SSHError)
    assert said[0] == "lost: down"


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("10m", 600), ("2h", 7200),
                                           ("1d", 86400), ("0:08", 8), ("0:10:00", 600),
                                           ("0", 0), (0, 0)])
def test_linger_durations(text: object, seconds: int) -> None:
    assert validate.duration(text) == seconds


@pytest.mark.parametrize("text", ["10", 10, "1.5m", "ten", "", "0:99", "31d", True, "-1m"])
def test_linger_durations_refused(text: object) -> None:
    with pytest.raises(ValueError, match="expected a duration like 90s, 10m"):
        validate.duration(text)
