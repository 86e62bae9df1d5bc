"""StopSignals: the one setup of Ctrl-C/SIGTERM/SIGHUP for serve, connect and tunnel."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from fireflyhpc.signals import STOP_SIGNALS, StopSignals, signal_name


def test_first_signal_sets_the_event_and_runs_callbacks_once() -> None:
    seen: list[int] = []
    called = threading.Event()
    with StopSignals() as stop:
        stop.on_stop(lambda signum: (seen.append(signum), called.set()))
        assert not stop.is_set()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.event.wait(30) and called.wait(30)
        os.kill(os.getpid(), signal.SIGHUP)  # later signals change nothing
        late: list[int] = []
        stop.on_stop(late.append)  # registered after the signal: runs at once
    assert seen == [signal.SIGTERM] and late == [signal.SIGTERM]
    assert stop.signum == signal.SIGTERM


def test_handlers_are_given_back() -> None:
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    with StopSignals() as stop:
        assert all(signal.getsignal(sig) != before[sig] for sig in STOP_SIGNALS)
    assert {sig: signal.getsignal(sig) for sig in STOP_SIGNALS} == before
    assert not stop.is_set()


def test_a_signal_inside_a_catch_all_is_not_lost() -> None:
    # waitress's loop catches whatever its handlers raise; a stop must survive that.
    with StopSignals() as stop:
        for _ in range(1000):
            try:
                os.kill(os.getpid(), signal.SIGINT)
                sum(range(1000))
            except BaseException:  # noqa: BLE001 (the point of the test)
                pytest.fail("the handler raised")
            if stop.is_set():
                break
        assert stop.event.wait(30)
    assert stop.signum == signal.SIGINT


def test_interrupt_raises_keyboard_interrupt_in_the_main_thread() -> None:
    with pytest.raises(KeyboardInterrupt), StopSignals(interrupt=True) as stop:
        os.kill(os.getpid(), signal.SIGHUP)
        threading.Event().wait(30)  # interrupted long before that
    assert stop.event.wait(30) and stop.signum == signal.SIGHUP


def test_a_failing_callback_does_not_stop_the_others() -> None:
    seen: list[int] = []
    with StopSignals() as stop:
        stop.on_stop(lambda signum: 1 // 0)
        stop.on_stop(seen.append)
        os.kill(os.getpid(), signal.SIGTERM)
        stop.event.wait(30)
    assert seen == [signal.SIGTERM]


def test_signal_names() -> None:
    assert signal_name(signal.SIGINT) == "Ctrl-C"
    assert signal_name(signal.SIGTERM) == "SIGTERM"
    assert signal_name(signal.SIGUSR1) == f"signal {int(signal.SIGUSR1)}"
