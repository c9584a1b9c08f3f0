"""Small JSON questions to dockerd, over the edge's own connection pool.

The resolver and the event watcher ask dockerd through the same
:class:`~dsfw.edge.upstream.DockerPool` the relay uses (no second client
library, no second set of connections).  Answers are bounded in size and
time: an oversized or late answer is an error, and the caller fails closed.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import quote

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from dsfw import jsoncodec
from dsfw.edge.upstream import DockerPool, ResponseHead
from dsfw.errors import UpstreamUnavailable

DEFAULT_MAX_ANSWER = 4 << 20
DEFAULT_TIMEOUT = 5.0

# What dsfw's path encoding leaves alone (as CanonicalTarget.forward_target).
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


def api_path(template: str, ref: str) -> bytes:
    """``template`` with ``{ref}`` replaced by ``ref``, percent-encoded for dockerd."""
    return quote(template.replace("{ref}", ref), safe=_PATH_SAFE).encode("ascii")


class _BodySink:
    """Collects one bounded response."""

    def __init__(self, done: Deferred, max_bytes: int):
        self._done = done
        self._max = max_bytes
        self._status = 0
        self._parts: list[bytes] = []
        self._size = 0
        self.connection = None

    def head_received(self, head: ResponseHead) -> None:
        self._status = head.status

    def body_received(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._max:
            self._parts.clear()
            if self.connection is not None and self.connection.transport is not None:
                self.connection.transport.abortConnection()
            self.failed(Failure(UpstreamUnavailable(
                f"dockerd's answer exceeds {self._max} bytes")))
            return
        self._parts.append(data)

    def body_finished(self) -> None:
        if not self._done.called:
            self._done.callback((self._status, b"".join(self._parts)))

    def hijacked(self, head, connection, leftover) -> None:
        connection.transport.abortConnection()
        self.failed(Failure(UpstreamUnavailable("dockerd hijacked a lookup")))

    def failed(self, reason: Failure) -> None:
        if not self._done.called:
            self._done.errback(reason)


def _ask(conn, clock, path: bytes, timeout: float, max_bytes: int) -> Deferred:
    done: Deferred = Deferred()
    sink = _BodySink(done, max_bytes)
    sink.connection = conn
    conn.send(b"GET " + path + b" HTTP/1.1\r\nHost: docker\r\n\r\n", None, sink)

    def timed_out(result, _timeout):
        if conn.transport is not None:
            conn.transport.abortConnection()
        raise UpstreamUnavailable(f"dockerd did not answer GET {path.decode()} within {timeout:g} s")

    return done.addTimeout(timeout, clock, onTimeoutCancel=timed_out)


async def get(pool: DockerPool, clock, path: bytes, *, timeout: float = DEFAULT_TIMEOUT,
              max_bytes: int = DEFAULT_MAX_ANSWER) -> tuple[int, bytes]:
    """``GET path`` on dockerd: ``(status, body)``.

    Raises :class:`UpstreamUnavailable` when dockerd cannot be reached, is
    late or answers more than ``max_bytes``.
    """
    fresh = False
    while True:
        conn = await pool.acquire(fresh=fresh)
        try:
            status, body = await _ask(conn, clock, path, timeout, max_bytes)
            break
        except UpstreamUnavailable:
            # a pooled keep-alive connection dockerd had closed: once more, fresh
            if conn.reused and not conn.received_any and not fresh:
                fresh = True
                continue
            raise
    return status, body


async def get_json(pool: DockerPool, clock, path: bytes, *, timeout: float = DEFAULT_TIMEOUT,
                   max_bytes: int = DEFAULT_MAX_ANSWER) -> tuple[int, Any]:
    """:func:`get`, with the answer parsed: ``(status, JSON value or None)`` (orjson:
    a container's inspect answer in a fifth of the standard library's time; dockerd's
    Go types hold no integer beyond 64 bits)."""
    status, body = await get(pool, clock, path, timeout=timeout, max_bytes=max_bytes)
    if not body.strip():
        return status, None
    try:
        return status, jsoncodec.loads(body)
    except ValueError:
        raise UpstreamUnavailable(f"dockerd answered GET {path.decode()} with malformed JSON") from None
