"""Draining on stop: wait for in-flight work, abort stragglers after the bound."""
from __future__ import annotations

from twisted.internet.task import Clock

from dsfw.edge.inflight import InFlight


def test_drain_waits_for_work_to_end():
    clock = Clock()
    inflight = InFlight(clock)
    aborted = []
    token = inflight.begin(lambda: aborted.append("a"))
    done = inflight.drain(10)
    assert inflight.draining and not done.called
    clock.advance(5)
    inflight.end(token)
    assert done.called and aborted == []
    assert not clock.getDelayedCalls()  # the abort timer was cancelled


def test_drain_aborts_what_is_still_open_after_the_bound():
    clock = Clock()
    inflight = InFlight(clock)
    aborted = []
    inflight.begin(lambda: aborted.append("stream"))
    inflight.begin(lambda: aborted.append("attach"))
    done = inflight.drain(2)
    clock.advance(1.9)
    assert not done.called
    clock.advance(0.2)
    assert done.called and sorted(aborted) == ["attach", "stream"] and len(inflight) == 0


def test_drain_with_nothing_in_flight_is_immediate():
    inflight = InFlight(Clock())
    assert inflight.drain(10).called
