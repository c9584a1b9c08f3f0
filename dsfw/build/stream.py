"""The rest of a canonical build context, sent to dockerd while it is rewritten.

Once the Dockerfile a build uses is settled and judged, the worker thread that
rewrites the context (:func:`dsfw.build.context.rewrite_context`) writes the
remaining canonical tar here instead of into the spool, and the reactor
produces it into dockerd's connection.  At most ``high`` bytes wait in
between: beyond that the thread blocks, so the client (whose own feed then
fills) is paused until dockerd takes more.  If the rewrite refuses the context
half-way, :meth:`ContextStream.fail` fails the producer: the upstream request
is aborted before its last chunk, dockerd's untar sees a cut body and builds
nothing (docs/builds.md).

The contents of a large file need no rewriting; the rewrite has the reactor
send them here straight from the client's reads (:meth:`ContextStream.put`,
:meth:`dsfw.edge.feed.BodyFeed.bypass`), in order after what the thread wrote.
"""
from __future__ import annotations

import collections
import threading

from twisted.internet.defer import Deferred, fail
from twisted.web.iweb import UNKNOWN_LENGTH

from dsfw.errors import DsfwError


class StreamClosed(DsfwError):
    """The request ended (refused, dockerd or the client gone) while the context was sent."""

    status = 400


class ContextStream:
    """File-like writer in the worker thread, ``IBodyProducer`` (chunked) on the reactor."""

    length = UNKNOWN_LENGTH

    def __init__(self, reactor, high: int = 4 << 20):
        self._reactor = reactor
        self._high = high
        self._cond = threading.Condition()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._closed: BaseException | None = None  # seen by the thread
        self._scheduled = False
        # reactor side
        self._consumer = None
        self._done: Deferred | None = None
        self._paused = False
        self._eof = False
        self._error: BaseException | None = None
        self._drained = None  # called once there is room again (a paused bypass)

    # -- worker thread side ----------------------------------------------------

    def write(self, data) -> int:
        data = bytes(data)
        with self._cond:
            while self._size >= self._high and self._closed is None:
                self._cond.wait()
            if self._closed is not None:
                raise self._closed
            self._chunks.append(data)
            self._size += len(data)
            schedule = not self._scheduled
            self._scheduled = True
        if schedule:
            self._reactor.callFromThread(self._deliver)
        return len(data)

    def flush(self) -> None:
        pass

    # -- reactor side ------------------------------------------------------------

    def put(self, data: bytes) -> bool:
        """Take ``data`` on the reactor, after what waits; False once ``high`` bytes wait."""
        with self._cond:
            if self._closed is not None:
                raise self._closed
            direct = not self._chunks and self._consumer is not None and not self._paused
            if not direct:
                self._chunks.append(data)
                self._size += len(data)
                return self._size < self._high
        self._consumer.write(data)
        return True

    def when_drained(self, callback) -> None:
        self._drained = callback
        self._deliver()

    def startProducing(self, consumer) -> Deferred:
        if self._error is not None:
            return fail(self._error)
        self._consumer = consumer
        self._done = done = Deferred()
        self._deliver()
        return done

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._deliver()

    def stopProducing(self) -> None:
        """dockerd answered or went away: stop the thread's writes."""
        self._consumer = None
        self._done = None
        self.close()

    def finish(self) -> None:
        """The thread wrote the whole canonical tar."""
        self._eof = True
        self._deliver()

    def failed(self, exc: BaseException) -> None:
        """The rewrite refused the context after sending began: abort the upstream request."""
        if self._error is None:
            self._error = exc
        self.close()
        done, self._done, self._consumer = self._done, None, None
        if done is not None:
            done.errback(exc)

    def close(self) -> None:
        """Wake a blocked thread with an error; drop what waits."""
        with self._cond:
            if self._closed is None:
                self._closed = StreamClosed("the build request ended while its context was sent")
            self._chunks.clear()
            self._size = 0
            self._cond.notify_all()

    def _deliver(self) -> None:
        with self._cond:
            self._scheduled = False
        while self._consumer is not None and not self._paused:
            with self._cond:
                if not self._chunks:
                    break
                data = self._chunks.popleft()
                self._size -= len(data)
                self._cond.notify_all()
            self._consumer.write(data)
        if self._drained is not None and self._size < self._high // 2 and not self._paused:
            drained, self._drained = self._drained, None
            drained()
        if self._eof and self._consumer is not None and not self._chunks:
            done, self._done, self._consumer = self._done, None, None
            done.callback(None)
