"""ContextStream: the bounded hand-over from the rewrite thread to dockerd's connection."""
from __future__ import annotations

import threading

import pytest
from twisted.web.iweb import UNKNOWN_LENGTH

from dsfw.build.context import AmbiguousContext
from dsfw.build.stream import ContextStream, StreamClosed


class Reactor:
    """Runs what the thread hands over when the test says (the reactor's turn)."""

    def __init__(self):
        self.calls = []

    def callFromThread(self, f, *args):
        self.calls.append((f, args))

    def turn(self):
        calls, self.calls = self.calls, []
        for f, args in calls:
            f(*args)


class Consumer:
    def __init__(self):
        self.data = []

    def write(self, data):
        self.data.append(data)


def test_pieces_flow_in_order_and_the_end_fires_after_the_last():
    reactor, consumer = Reactor(), Consumer()
    stream = ContextStream(reactor, high=100)
    assert stream.length == UNKNOWN_LENGTH
    stream.write(b"a" * 10)
    done = stream.startProducing(consumer)
    stream.write(b"b" * 10)
    reactor.turn()
    stream.finish()
    assert b"".join(consumer.data) == b"a" * 10 + b"b" * 10
    assert done.called


def test_the_writer_blocks_at_the_high_mark_until_the_reactor_takes_more():
    reactor, consumer = Reactor(), Consumer()
    stream = ContextStream(reactor, high=100)
    stream.startProducing(consumer)
    stream.pauseProducing()  # dockerd is slow
    stream.write(b"x" * 100)
    wrote = threading.Event()
    writer = threading.Thread(target=lambda: (stream.write(b"y"), wrote.set()))
    writer.start()
    assert not wrote.wait(0.3)  # blocked: 100 bytes wait already
    stream.resumeProducing()
    assert wrote.wait(5)
    writer.join()
    reactor.turn()
    assert b"".join(consumer.data) == b"x" * 100 + b"y"


def test_a_refusal_after_sending_began_fails_the_producer_and_wakes_the_writer():
    reactor, consumer = Reactor(), Consumer()
    stream = ContextStream(reactor, high=10)
    done = stream.startProducing(consumer)
    stream.pauseProducing()
    stream.write(b"x" * 10)
    errors = []

    def write():
        try:
            stream.write(b"y")
        except StreamClosed as e:
            errors.append(e)

    writer = threading.Thread(target=write)
    writer.start()
    stream.failed(AmbiguousContext("late duplicate"))
    writer.join(5)
    assert errors and not writer.is_alive()
    failures = []
    done.addErrback(failures.append)
    assert failures and failures[0].check(AmbiguousContext)


def test_a_failure_before_the_relay_started_is_its_first_answer():
    stream = ContextStream(Reactor())
    stream.failed(AmbiguousContext("x"))
    failures = []
    stream.startProducing(Consumer()).addErrback(failures.append)
    assert failures and failures[0].check(AmbiguousContext)
    with pytest.raises(StreamClosed):
        stream.write(b"more")


def test_stop_producing_drops_what_waits_and_stops_the_writer():
    reactor = Reactor()
    stream = ContextStream(reactor, high=10)
    stream.startProducing(Consumer())
    stream.pauseProducing()
    stream.write(b"x" * 10)
    stream.stopProducing()  # dockerd answered early
    with pytest.raises(StreamClosed):
        stream.write(b"y")
