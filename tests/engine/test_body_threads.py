"""The engine's reusable daemon threads for abandonable node bodies."""

from __future__ import annotations

import threading

import pytest

from worker.body_threads import BodyThreads


def test_sequential_bodies_reuse_one_thread():
    threads = BodyThreads()

    first = threads.submit(lambda _: threading.get_ident(), None).result(timeout=5)
    second = threads.submit(lambda _: threading.get_ident(), None).result(timeout=5)

    assert first == second


def test_a_stuck_body_does_not_hold_up_the_next_one():
    threads = BodyThreads()
    release = threading.Event()
    stuck = threads.submit(lambda event: event.wait(30), release)

    answer = threads.submit(lambda value: value * 2, 21).result(timeout=5)

    assert answer == 42
    assert not stuck.done()
    release.set()
    assert stuck.result(timeout=5) is True


def test_a_body_that_raises_hands_its_error_to_the_caller():
    threads = BodyThreads()

    def fail(_: object) -> None:
        raise ValueError("broken body")

    future = threads.submit(fail, None)

    assert isinstance(future.exception(timeout=5), ValueError)
    assert threads.submit(lambda _: "still serving", None).result(timeout=5)


def test_waiting_for_a_body_that_has_not_ended_times_out_and_can_wait_again():
    threads = BodyThreads()
    release = threading.Event()
    pending = threads.submit(lambda event: event.wait(30) and "ended", release)

    with pytest.raises(TimeoutError):
        pending.result(timeout=0.01)
    assert not pending.done()
    release.set()
    assert pending.result(timeout=5) == "ended"
    assert pending.done()
    assert pending.result(timeout=0) == "ended"


def test_a_body_that_raises_raises_in_the_waiting_thread():
    threads = BodyThreads()

    def fail(_: object) -> None:
        raise KeyError("no such node")

    pending = threads.submit(fail, None)

    with pytest.raises(KeyError, match="no such node"):
        pending.result(timeout=5)
