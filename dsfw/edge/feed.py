"""A request body read by a worker thread while it arrives.

A build context is rewritten by blocking code (:mod:`dsfw.build.context`)
on a worker thread; the reactor must not store the client's bytes first.
:class:`BodyFeed` is the hand-over: the reactor writes each piece as it is
read from the client, the thread ``read``s them, and at most ``high`` bytes
wait in between -- beyond that the client is paused until the thread catches
up.  So the only copy of a context dsfw keeps is the rewritten one.
"""
from __future__ import annotations

import collections
import threading

from twisted.python.failure import Failure

from dsfw.errors import DsfwError


class FeedClosed(DsfwError):
    """The request ended (refused, client gone) while the thread was reading."""

    status = 400


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

    def start(self) -> "BodyFeed":
        """Start reading the body (on the reactor thread)."""
        self._producer.startProducing(self).addCallbacks(self._finished, self._failed)
        return self

    # -- reactor side ------------------------------------------------------------

    def write(self, data: bytes) -> None:
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
            self._cond.notify()
        if not done:
            self._producer.stopProducing()

    def _resume(self) -> None:
        with self._cond:
            if self._error is not None or not self._paused:
                return
            self._paused = False
        self._producer.resumeProducing()

    # -- worker thread side ---------------------------------------------------------

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
