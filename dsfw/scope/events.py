"""One ``GET /events`` connection to dockerd, kept open for the resolver's cache.

dockerd reports every change that can move a name (create, rename, destroy,
tag...) on its event stream.  The watcher keeps one such stream, feeds each
event to the cache, and reconnects with exponential backoff when it breaks.
While it is not connected the cache is not trusted (a change may be missed),
and on every (re)connection the cache is cleared, since events that happened
while it was down are lost.
"""
from __future__ import annotations

import structlog
from twisted.application.service import Service
from twisted.internet.defer import ensureDeferred
from twisted.python.failure import Failure

from dsfw import jsoncodec
from dsfw.edge.upstream import DockerPool, ResponseHead
from dsfw.scope.cache import TargetCache

log = structlog.get_logger("dsfw.scope")

MAX_EVENT_LINE = 1 << 20
INITIAL_BACKOFF = 0.1
MAX_BACKOFF = 10.0


class _EventSink:
    """Splits dockerd's event stream into lines and hands each event on."""

    def __init__(self, watcher: "EventWatcher"):
        self._watcher = watcher
        self._buf = b""
        self.connection = None

    def head_received(self, head: ResponseHead) -> None:
        if head.status != 200:
            self._watcher._broken(f"dockerd answered {head.status} to GET /events")
            self._abort()
            return
        self._watcher._connected()

    def body_received(self, data: bytes) -> None:
        self._buf += data
        while True:
            line, sep, rest = self._buf.partition(b"\n")
            if not sep:
                break
            self._buf = rest
            if line.strip():
                self._watcher._event(line)
        if len(self._buf) > MAX_EVENT_LINE:
            self._watcher._broken("an event line exceeds the limit")
            self._abort()

    def _abort(self) -> None:
        if self.connection is not None and self.connection.transport is not None:
            self.connection.transport.abortConnection()

    def body_finished(self) -> None:
        self._watcher._broken("dockerd ended the event stream")

    def hijacked(self, head, connection, leftover) -> None:
        connection.transport.abortConnection()
        self._watcher._broken("dockerd hijacked the event stream")

    def failed(self, reason: Failure) -> None:
        self._watcher._broken(reason.getErrorMessage())


class EventWatcher(Service):
    """Keeps dockerd's event stream open and the cache in step with it."""

    def __init__(self, pool: DockerPool, clock, cache: TargetCache, listeners=()):
        self._pool = pool
        self._clock = clock
        self._cache = cache
        self._listeners = list(listeners)
        self._backoff = INITIAL_BACKOFF
        self._retry = None
        self._sink: _EventSink | None = None
        self.connected = False
        self.connections = 0

    def trusted(self) -> bool:
        return self.connected and self.running

    def startService(self) -> None:
        super().startService()
        self._connect()

    def stopService(self):
        super().stopService()
        self.connected = False
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._sink is not None:
            self._sink._abort()

    def _connect(self) -> None:
        self._retry = None
        if not self.running:
            return
        ensureDeferred(self._open()).addErrback(lambda f: self._broken(f.getErrorMessage()))

    async def _open(self) -> None:
        conn = await self._pool.acquire(fresh=True)
        sink = _EventSink(self)
        sink.connection = conn
        self._sink = sink
        if not self.running:
            sink._abort()
            return
        conn.send(b"GET /events HTTP/1.1\r\nHost: docker\r\n\r\n", None, sink)

    def _connected(self) -> None:
        self._cache.clear()  # whatever happened while disconnected is unknown
        self.connected = True
        self.connections += 1
        self._backoff = INITIAL_BACKOFF
        log.info("scope.events_connected")

    def _event(self, line: bytes) -> None:
        try:
            event = jsoncodec.loads(line)
            kind = event.get("Type") or ""
            action = event.get("Action") or ""
            actor = event.get("Actor") or {}
            ident = actor.get("ID") if isinstance(actor, dict) else None
        except (ValueError, AttributeError):
            log.warning("scope.event_unreadable")
            self._cache.clear()
            return
        self._cache.event(kind, action, ident if isinstance(ident, str) else None)
        for listener in self._listeners:
            listener(event)

    def _broken(self, why: str) -> None:
        was = self.connected
        self.connected = False
        self._cache.clear()
        if not self.running or self._retry is not None:
            return
        if was:
            log.warning("scope.events_lost", error=why, retry_in=self._backoff)
        self._retry = self._clock.callLater(self._backoff, self._connect)
        self._backoff = min(self._backoff * 2, MAX_BACKOFF)
