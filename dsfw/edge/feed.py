"""A request body read by a worker thread while it arrives.

A build context is rewritten by blocking code (:mod:`dsfw.build.context`)
on a worker thread; the reactor must not store the client's bytes first.
:class:`BodyFeed` is the hand-over: the reactor writes each piece as it is
read from the client, the thread ``read``s them, and at most ``high`` bytes
wait in between -- beyond that the client is paused until the thread catches
up.  So the only copy of a context dsfw keeps is the rewritten one.

Where the thread has nothing to look at (the contents of a large file in a
plain tar), it hands the next bytes back to the reactor: :meth:`BodyFeed.bypass`
sends them from the client's reads straight into a :class:`BypassSink` (the
canonical context's stream to dockerd) while the thread waits, so most of an
upload crosses dsfw without a thread hop (docs/benchmarks.md, "Build uploads").
Backpressure then runs from the sink: full, it pauses the client; drained,
it resumes it.
"""
from __future__ import annotations

import collections
import threading
from typing import Callable, Protocol

from twisted.python.failure import Failure

from dsfw.errors import DsfwError


class FeedClosed(DsfwError):
    """The request ended (refused, client gone) while the thread was reading."""

    status = 400


class BypassSink(Protocol):
    """Where bypassed bytes go, on the reactor thread."""

    def put(self, data: bytes) -> bool:
        """Take ``data``; False once full (raise when closed)."""

    def when_drained(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once (on the reactor) when there is room again."""


class BodyFeed:
    """Consumer of a request body on the reactor, file-like reader in a thread."""

    def __init__(self, reactor, producer, high: int = 4 << 20, low: int = 1 << 20):
        self._reactor = reactor
        self._producer = producer
        self._high = high
        self._low = low
        self._cond = threading.Condition()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._eof = False
        self._error: BaseException | None = None
        self._paused = False
        # bypass: bytes still to send around the thread, where, and whether the reactor started
        self._bypass_left = 0
        self._bypass_sink: BypassSink | None = None
        self._bypassing = False
        self._bypass_started = False

    def start(self) -> "BodyFeed":
        """Start reading the body (on the reactor thread)."""
        self._producer.startProducing(self).addCallbacks(self._finished, self._failed)
        return self

    # -- reactor side ------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._bypassing:
            take = self._bypass_left
            if take < len(data):
                data, rest = data[:take], data[take:]
                self._pass(data)
                self.write(rest)
            else:
                self._pass(data)
            return
        with self._cond:
            if self._error is not None:
                return
            self._chunks.append(data)
            self._size += len(data)
            self._cond.notify()
            pause = self._size > self._high and not self._paused
            if pause:
                self._paused = True
        if pause:
            self._producer.pauseProducing()

    def _finished(self, _) -> None:
        with self._cond:
            self._eof = True
            self._cond.notify()

    def _failed(self, reason: Failure) -> None:
        with self._cond:
            if self._error is None:
                self._error = reason.value
            self._cond.notify()

    def close(self) -> None:
        """The request is over: wake the thread with an error, stop reading the client."""
        with self._cond:
            done = self._eof or self._error is not None
            if self._error is None:
                self._error = FeedClosed("the request ended before its body was read")
            self._chunks.clear()
            self._bypassing = False  # nothing more goes to the sink
            self._cond.notify()
        if not done:
            self._producer.stopProducing()

    def _resume(self) -> None:
        with self._cond:
            if self._error is not None or not self._paused:
                return
            self._paused = False
        self._producer.resumeProducing()

    def _start_bypass(self) -> None:
        """The thread asked for a bypass: what waits goes first, then what arrives."""
        with self._cond:
            if self._error is not None or self._bypass_sink is None:
                return
            taken = []
            left = self._bypass_left
            while self._chunks and left:
                data = self._chunks.popleft()
                if len(data) > left:
                    data, rest = data[:left], data[left:]
                    self._chunks.appendleft(rest)
                taken.append(data)
                left -= len(data)
                self._size -= len(data)
            self._bypassing = left > 0
            self._bypass_started = True
            self._cond.notify()  # the body may have ended already
        for data in taken:
            self._pass(data)
        if self._bypassing and self._size < self._low:
            self._resume()  # the queue is gone; only the sink holds the client now

    def _pass(self, data: bytes) -> None:
        sink = self._bypass_sink
        try:
            room = sink.put(data)
        except Exception as e:  # the sink closed (dockerd gone, request over)
            with self._cond:
                self._bypassing = False
                if self._error is None:
                    self._error = e
                self._cond.notify()
            return
        with self._cond:
            self._bypass_left -= len(data)
            if not self._bypass_left:
                self._bypassing = False
                self._bypass_sink = None
                self._cond.notify()
            pause = not room and not self._paused
            if pause:
                self._paused = True
        if pause:
            self._producer.pauseProducing()
            sink.when_drained(self._resume)

    # -- worker thread side ---------------------------------------------------------

    def bypass(self, size: int, sink: BypassSink) -> int:
        """Send the next ``size`` bytes of the body to ``sink`` from the reactor; how many went.

        Blocks until they went, the body ended (fewer) or the request failed (raises).
        """
        with self._cond:
            if self._error is not None:
                raise self._error
            self._bypass_left = size
            self._bypass_sink = sink
        self._reactor.callFromThread(self._start_bypass)
        with self._cond:
            while self._error is None and self._bypass_left and not (
                    self._eof and self._bypass_started):
                self._cond.wait()
            left = self._bypass_left
            self._bypass_left = 0
            self._bypass_sink = None
            self._bypassing = self._bypass_started = False
            if self._error is not None:
                raise self._error
        return size - left

    def read(self, size: int = -1) -> bytes:
        with self._cond:
            while not self._chunks and not self._eof and self._error is None:
                self._cond.wait()
            if self._error is not None:
                raise self._error
            if not self._chunks:
                return b""
            data = self._chunks.popleft()
            if 0 <= size < len(data):
                data, rest = data[:size], data[size:]
                self._chunks.appendleft(rest)
            self._size -= len(data)
            resume = self._paused and self._size < self._low
        if resume:
            self._reactor.callFromThread(self._resume)
        return data
