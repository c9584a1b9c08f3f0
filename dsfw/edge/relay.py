"""Forwarding one decided request to dockerd and streaming its answer back.

The request dockerd receives is serialized here from the
:class:`~dsfw.input.request.CanonicalRequest` the policy saw -- never from the
client's bytes.  The response is streamed to the twisted.web request with
dockerd's connection registered as the producer, so a slow client pauses
dockerd instead of growing dsfw's memory.
"""
from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web.iweb import UNKNOWN_LENGTH

from dsfw.edge import hijack
from dsfw.input.request import CanonicalRequest
from dsfw.edge.upstream import DockerConnection, DockerPool, ResponseHead

def serialize_request(req: CanonicalRequest, body_length: int | None,
                      chunked: bool = False) -> bytes:
    """dsfw's own request head for dockerd: canonical target, canonical headers, own framing."""
    lines = [req.method.encode("ascii") + b" " + req.target.forward_target() + b" HTTP/1.1",
             b"Host: docker"]
    for name, value in req.headers:
        lines.append(name.encode("ascii") + b": " + value.encode("latin-1"))
    if req.upgrade:
        lines.append(b"Connection: Upgrade")
        lines.append(b"Upgrade: " + req.upgrade.encode("ascii"))
    if chunked:
        lines.append(b"Transfer-Encoding: chunked")
    elif body_length is not None:
        lines.append(b"Content-Length: %d" % body_length)
    return b"\r\n".join(lines) + b"\r\n\r\n"


# Spooled bodies (build contexts) are sent in large reads: one cooperator
# step per 64 kB was most of an upload's relay cost.
_BODY_READ_SIZE = 1 << 20


def _write_response_head(request, head: ResponseHead, body_follows: bool) -> None:
    """dockerd's status and end-to-end headers, re-framed by the server for this hop.

    The head goes out at once -- dockerd flushes it early for waits and
    streams, and clients (``docker run``'s wait) block until they see it --
    unless body bytes read with it follow at once: then both go in one write.
    """
    lines, length = head.relayed()
    request.write_head(head.status, head.reason, lines, length, hold=body_follows)


class _RequestSink:
    """Streams one dockerd response into a twisted.web request."""

    def __init__(self, request, connection: DockerConnection, done: Deferred, on_hijack_close):
        self._request = request
        self._connection = connection
        self._done = done
        self._started = False
        self._client_gone = False
        self._on_hijack_close = on_hijack_close
        request.notify_lost(self._client_lost)

    def head_received(self, head: ResponseHead) -> None:
        if self._client_gone:
            return
        self._started = True
        _write_response_head(self._request, head, self._connection.body_follows)
        self._request.registerProducer(self._connection.transport, True)

    def body_received(self, data: bytes) -> None:
        if not self._client_gone:
            self._request.write(data)

    def body_finished(self) -> None:
        if not self._client_gone:
            self._request.unregisterProducer()
            self._request.finish()
        self._fire(None)

    def hijacked(self, head: ResponseHead, connection: DockerConnection, leftover: bytes) -> None:
        self._started = True
        if self._client_gone:
            connection.transport.abortConnection()
        else:
            hijack.splice(self._request, head, connection, leftover, self._on_hijack_close)
        self._fire("hijacked")

    def failed(self, reason: Failure) -> None:
        if self._started and not self._client_gone:
            # Too late for an error status: the client sees a cut stream.
            self._request.unregisterProducer()
            transport = self._request.channel.transport
            if transport is not None:
                transport.abortConnection()
            self._fire(None)
            return
        self._fire(reason)

    def _client_lost(self, reason: Failure) -> None:
        """The client went away: close dockerd's side so nothing leaks."""
        self._client_gone = True
        transport = self._connection.transport
        if transport is not None:
            transport.abortConnection()

    @property
    def started(self) -> bool:
        return self._started

    def _fire(self, result) -> None:
        d, self._done = self._done, None
        if d is not None:
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)


class Relay:
    """Sends canonical requests to dockerd over a :class:`DockerPool`."""

    def __init__(self, reactor, pool: DockerPool, cooperator=None):
        self._reactor = reactor
        self._pool = pool
        self._cooperator = cooperator

    async def forward(self, request, req: CanonicalRequest, body: bytes | None,
                      stream, stream_length: int | None,
                      may_hijack: bool, on_hijack_close=None, answer_filter=None):
        """Relay ``req``; returns when the response is streamed or hijacked.

        ``answer_filter(sink, connection)``, when given, wraps the sink the
        response goes to (:mod:`dsfw.scope.filter`: filtered answers).
        ``stream`` is a spooled file (a rewritten build context) of
        ``stream_length`` bytes, or the client's body as an ``IBodyProducer``
        relayed as it arrives (chunked to dockerd when its length is unknown).
        Raises :class:`~dsfw.errors.UpstreamUnavailable` if dockerd cannot be
        reached or fails before the response started (the caller answers 502),
        or the producer's own error (a 413 while the body arrives).  A reused
        keep-alive connection that dockerd had closed is retried once on a
        fresh one, as long as no response byte arrived; a live body cannot
        be replayed, so it always gets a fresh connection.
        """
        live = stream is not None and hasattr(stream, "startProducing")
        chunked = live and stream.length == UNKNOWN_LENGTH
        if body is not None:
            length = len(body)
        elif live:
            length = None if chunked else stream.length
        elif stream is not None:
            length = stream_length
        elif req.method in ("POST", "PUT", "PATCH"):
            length = 0
        else:
            length = None
        head = serialize_request(req, length, chunked)
        fresh = live
        while True:
            conn = await self._pool.acquire(fresh=fresh)
            done: Deferred = Deferred()
            sink = _RequestSink(request, conn, done, on_hijack_close)
            producer = stream if live else None
            if stream is not None and not live and stream_length:
                stream.seek(0)
                # twisted.web.client loads pyOpenSSL when it can: imported on the first
                # spooled body, after makeService chose the reactor's TLS (dsfw.edge._twisted).
                from twisted.web.client import FileBodyProducer
                kwargs = {"cooperator": self._cooperator} if self._cooperator else {}
                producer = FileBodyProducer(stream, readSize=_BODY_READ_SIZE, **kwargs)
            conn.send(head, body, sink if answer_filter is None else answer_filter(sink, conn),
                      head_only=req.method == "HEAD", may_hijack=may_hijack,
                      body_producer=producer, chunked=chunked)
            try:
                return await done
            except Exception:
                if conn.reused and not conn.received_any and not sink.started and not fresh:
                    fresh = True
                    continue
                raise
