"""dsfw's own HTTP/1.1 server protocol: the firewall decides at the headers.

twisted.web's ``HTTPChannel`` stores a whole request body (memory, then a
temporary file) before ``render`` runs, and answers ``Expect: 100-continue``
by itself: a request the policy refuses has already cost its full upload.
Here ``render`` runs as soon as the request line and headers are in, and the
body is read only when the resource asks for it, through
:meth:`ServerRequest.body_producer` -- collected in memory up to a limit for a
JSON body the policy must see, or produced into dockerd's connection with
backpressure once a stream was allowed.  ``100 Continue`` goes out at that
moment and never for a refusal.  A body nobody asked for is discarded (up to
a small bound, as Go's server does) or the connection is closed.

The resource interface is kept (``render(request)`` -> ``NOT_DONE_YET``;
``method``, ``uri``, ``clientproto``, ``requestHeaders``, ``write``,
``finish``, ``registerProducer``, ``notifyFinish``), so the firewall stays a
twisted.web resource on a ``Site``; owning the protocol also means hijacked
connections are handed over without touching Twisted's private attributes.
"""
from __future__ import annotations

import structlog
from twisted.internet import interfaces
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.server import NOT_DONE_YET, Site
from zope.interface import implementer

from dsfw.edge._twisted import tune_socket, write_now
from dsfw.edge.http1 import (MAX_HEAD, HeadTooLarge, MalformedRequest, RequestBody, RequestHeaders, _Collector,
                             _framing, _tokens, parse_head)
from dsfw.edge.memo import BytesMemo
from dsfw.edge.peer import connection_opened
from dsfw.errors import BadRequest, error_body

log = structlog.get_logger("dsfw")

IDLE_TIMEOUT = 300
ABORT_TIMEOUT = 15
PIPELINE_BUFFER = 64 << 10  # bytes read ahead of an unfinished request before pausing
DISCARD_LIMIT = 256 << 10  # Go's maxPostHandlerReadBytes
_REASONS = {100: b"Continue", 101: b"Switching Protocols", 200: b"OK", 201: b"Created",
            204: b"No Content", 304: b"Not Modified", 400: b"Bad Request", 403: b"Forbidden",
            404: b"Not Found", 413: b"Request Entity Too Large",
            417: b"Expectation Failed", 431: b"Request Header Fields Too Large", 500: b"Internal Server Error", 502: b"Bad Gateway",
            503: b"Service Unavailable"}
_NO_BODY_STATUSES = frozenset({204, 304})

LINGER_BYTES = 4 << 20
LINGER_SECONDS = 1.0

HEAD, BODY, WAIT, HIJACKED, LINGER, CLOSED = (
    "head", "body", "wait", "hijacked", "linger", "closed")


class ServerRequest:
    """One request on an :class:`HTTPServerChannel`, with the resource interface."""

    def __init__(self, channel: "HTTPServerChannel", method: bytes, uri: bytes,
                 clientproto: bytes, headers: RequestHeaders, body: RequestBody,
                 persistent: bool, expect_continue: bool):
        self.channel = channel
        self.method = method
        self.uri = uri
        self.clientproto = clientproto
        self.requestHeaders = headers
        self.body = body
        self.persistent = persistent
        self.expect_continue = expect_continue
        self.code = 200
        self.code_message = None
        self.startedWriting = False
        self.finished = False
        self.disconnected = False
        self.hijacked = False
        self._chunked = False
        self._no_body = False
        self._producer = None
        self._finish_waiters: list[Deferred] = []
        self._lost_callbacks: list = []
        self._response_headers = None
        self._held = b""  # a response head waiting for the body that follows it
        self.raw_head: bytes | None = None  # request line and headers as received

    # -- request body --------------------------------------------------------

    @property
    def has_body(self) -> bool:
        return self.body.framing != "none"

    def body_producer(self, limit: int | None, option: str) -> RequestBody:
        """The body as an ``IBodyProducer``, refused with 413 past ``limit`` bytes.

        A declared ``Content-Length`` over the limit is refused at once.
        """
        body = self.body
        if limit is not None and body.framing == "length" and body.length > limit:
            body._limit = limit
            body._option = option
            raise body._too_large()
        self.body._limit = limit
        self.body._option = option
        return self.body

    def read_body(self, limit: int, option: str) -> Deferred:
        """The whole body in memory, or a 413 failure as soon as it passes ``limit``."""
        return self.read_body_parts(limit, option).addCallback(b"".join)

    def read_body_parts(self, limit: int, option: str) -> Deferred:
        """:meth:`read_body` as the pieces that arrived: a large body handed on as it
        is (dsfw.offload) is never joined, which would hold the reactor for one copy."""
        collector = _Collector()
        d = self.body_producer(limit, option).startProducing(collector)
        return d.addCallback(lambda _: collector.parts)

    # -- response ------------------------------------------------------------

    @property
    def responseHeaders(self) -> Headers:
        if self._response_headers is None:
            self._response_headers = Headers()
        return self._response_headers

    def setResponseCode(self, code: int, message: bytes | None = None) -> None:
        self.code = code
        self.code_message = message

    def write_head(self, status: int, reason: bytes | None, header_lines: list[bytes],
                   content_length: int | None, hold: bool = False) -> None:
        """Status line, ``header_lines`` (``Name: value``, end-to-end only) and this hop's framing.

        In one write, or with ``hold`` kept for the first body write or the
        finish, whichever comes first: an answer whose body is already at
        hand then leaves in one piece.  Only hold what is followed at once.
        """
        self.code = status
        self.startedWriting = True
        self._no_body = self.method == b"HEAD" or status in _NO_BODY_STATUSES
        lines = [b"HTTP/1.1 %d %s" % (status, reason or _REASONS.get(status, b"Unknown")),
                 *header_lines]
        if content_length is not None:
            lines.append(b"Content-Length: %d" % content_length)
        elif not self._no_body:
            if self.clientproto == b"HTTP/1.1":
                self._chunked = True
                lines.append(b"Transfer-Encoding: chunked")
            else:
                self.persistent = False  # an HTTP/1.0 body of unknown length ends at the close
        if not self.body.complete and not self.channel._may_discard(self):
            self.persistent = False
        if not self.persistent:
            if self.clientproto == b"HTTP/1.1":
                lines.append(b"Connection: close")
        elif self.clientproto == b"HTTP/1.0":
            lines.append(b"Connection: keep-alive")
        lines.append(b"\r\n")
        head = b"\r\n".join(lines)
        if hold:
            self._held = head
        else:
            write_now(self.channel.transport, head)

    def write(self, data: bytes) -> None:
        if self.finished or self.disconnected:
            return
        if not self.startedWriting:
            self._write_default_head(None)
        if self._no_body or not data:
            return
        held, self._held = self._held, b""
        if self._chunked:
            write_now(self.channel.transport, held + b"%x\r\n" % len(data), data, b"\r\n")
        elif held:
            write_now(self.channel.transport, held, data)
        else:
            write_now(self.channel.transport, data)

    def _write_default_head(self, length: int | None) -> None:
        lines = []
        if self._response_headers is not None:
            for name, values in self._response_headers.getAllRawHeaders():
                if name.lower() not in (b"content-length", b"connection", b"transfer-encoding"):
                    lines.extend(name + b": " + v for v in values)
                elif name.lower() == b"content-length" and length is None:
                    length = int(values[0])
        self.write_head(self.code, self.code_message, lines, length)

    def finish(self) -> None:
        if self.finished or self.disconnected:
            return
        if not self.startedWriting:
            self._write_default_head(0)
        held, self._held = self._held, b""
        if self._chunked:
            held += b"0\r\n\r\n"
        if held:
            write_now(self.channel.transport, held)
        self.finished = True
        self.unregisterProducer()
        self._lost_callbacks = []
        waiters, self._finish_waiters = self._finish_waiters, []
        for d in waiters:
            d.callback(None)
        self.channel._request_done(self)

    def notifyFinish(self) -> Deferred:
        d: Deferred = Deferred()
        if self.finished:
            d.callback(None)
        elif self.disconnected:
            d.errback(Failure(ConnectionDone("the client went away")))
        else:
            self._finish_waiters.append(d)
        return d

    def notify_lost(self, callback) -> None:
        """``callback(reason)`` when the client goes away before the answer is finished.

        What ``notifyFinish().addErrback(callback)`` gives, without a
        Deferred made and fired for every request that ends well.
        """
        self._lost_callbacks.append(callback)

    def registerProducer(self, producer, streaming: bool) -> None:
        self._producer = producer
        self.channel.transport.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        if self._producer is not None:
            self._producer = None
            transport = self.channel.transport
            if transport is not None:
                transport.unregisterProducer()

    def hijack(self, protocol: Protocol):
        """Hand the connection to ``protocol``; returns (transport, bytes already read)."""
        self.hijacked = True
        return self.channel._hijack(self, protocol)

    def _connection_lost(self, reason: Failure) -> None:
        self.disconnected = True
        self._producer = None
        if not self.body.complete:
            self.body.fail(ConnectionDone("the client closed the connection"))
        callbacks, self._lost_callbacks = self._lost_callbacks, []
        for callback in callbacks:
            callback(reason)
        waiters, self._finish_waiters = self._finish_waiters, []
        for d in waiters:
            d.errback(reason)


@implementer(interfaces.IHalfCloseableProtocol)
class HTTPServerChannel(Protocol):
    """Parses requests one at a time and hands each to the site's resource.

    States: ``head`` (reading a request head), ``body`` (a request is being
    answered; its body is read when asked for), ``wait`` (its body is read,
    pipelined bytes wait), ``hijacked`` (a splice owns the connection),
    ``closed``.
    """

    def __init__(self, site: "FirewallSite"):
        self.site = site
        self._state = HEAD
        self._buf = bytearray()
        self._current: ServerRequest | None = None
        self._body: RequestBody | None = None  # the body being read (the current or a discarded one)
        self._pauses: set[str] = set()
        self._advancing = False
        self._again = False
        self._timeout_call = None
        self._timing = False
        self._last = 0.0
        self._splice: Protocol | None = None
        self._linger_call = None
        self._linger_left = 0
        self._first = True

    # -- connection --------------------------------------------------------

    def connectionMade(self) -> None:
        tune_socket(self.transport)
        connection_opened(self)  # SO_PEERCRED as of connect(), logged for auditors
        if self.site.connections is not None:
            self.site.connections.opened(self.transport)
        self._set_timeout(True)

    def dataReceived(self, data: bytes) -> None:
        if self._state == HIJACKED:
            self._splice.dataReceived(data)
            return
        if self._state == CLOSED:
            return
        if self._state == LINGER:
            self._linger_left -= len(data)
            if self._linger_left < 0:
                self._end_linger()
            return
        if self._timing:
            self._last = self.site.reactor.seconds()
        body = self._body
        if self._state == BODY and not self._buf and body.active and not self._advancing:
            # The common case of an upload: hand the read straight on.
            try:
                data = (body.feed_bytes(data) if body.framing == "length"
                        else body.feed_chunked_bytes(data))
            except Exception as e:  # the consumer failed; the request's own error path decides
                body.fail(e)
            if not data:
                return
        self._buf += data
        self._advance()

    def readConnectionLost(self) -> None:
        if self._state == HIJACKED:
            self._splice.readConnectionLost()
            return
        if self._state == LINGER:
            self._end_linger()
            return
        request = self._current
        if request is None:
            self.transport.loseConnection()
            return
        request.persistent = False
        if not request.body.complete:
            request.body.fail(ConnectionDone("the client closed before its body was complete"))
        # A client that stops sending while its answer is pending has gone, as Go's server
        # sees it (it cancels the request's context on EOF): close, so that connectionLost
        # drops dockerd's side too. Otherwise a silent stream (GET /events) would hold both
        # connections until dockerd next wrote. Hijacked sessions keep half-close above.
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        if self._state == HIJACKED:
            self._splice.writeConnectionLost()

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        state, self._state = self._state, CLOSED
        if self.site.connections is not None:
            self.site.connections.closed(self.transport)
        self._set_timeout(False)
        call, self._timeout_call = self._timeout_call, None
        if call is not None and call.active():
            call.cancel()
        if self._linger_call is not None and self._linger_call.active():
            self._linger_call.cancel()
        if state == HIJACKED:
            self._splice.connectionLost(reason)
            return
        request, self._current = self._current, None
        if request is not None:
            request._connection_lost(reason)

    # -- parsing -------------------------------------------------------------

    def _advance(self) -> None:
        if self._advancing:
            self._again = True
            return
        self._advancing = True
        try:
            while True:
                self._again = False
                self._step()
                if ("buffer" in self._pauses and len(self._buf) <= PIPELINE_BUFFER
                        and self._state in (HEAD, BODY) and (self._body is None or self._body.active)):
                    self._pauses.discard("buffer")
                    if not self._pauses:
                        self.transport.resumeProducing()
                    self._again = True
                if not self._again:
                    break
        except HeadTooLarge as e:  # refused as it arrives, as Go's server does
            log.info("request.malformed", status=431, reason=str(e))
            self._refuse_early(431, f"dsfw: {e}; nothing was forwarded to dockerd")
        except MalformedRequest as e:
            self._malformed(str(e))
        finally:
            self._advancing = False

    def _step(self) -> None:
        while self._state in (HEAD, BODY, WAIT) and self._buf:
            if self._state == HEAD:
                if not self._read_head():
                    return
            elif self._state == BODY:
                body = self._body
                if not body.active:
                    # Undecided: read ahead at most PIPELINE_BUFFER.  Paused by
                    # dockerd: its own pause ("body") holds the client.
                    if not body.started and len(self._buf) > PIPELINE_BUFFER:
                        self._pause("buffer")
                    return
                if not body.feed(self._buf):
                    return
            else:
                if len(self._buf) > PIPELINE_BUFFER:
                    self._pause("buffer")
                return

    def _read_head(self) -> bool:
        if self._first and self._buf.startswith(b"\r\n"):
            del self._buf[:2]  # one stray CRLF after a body is tolerated, as Go does
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > MAX_HEAD:
                raise HeadTooLarge(f"request head larger than {MAX_HEAD} bytes")
            return False
        if end > MAX_HEAD:
            raise HeadTooLarge(f"request head larger than {MAX_HEAD} bytes")
        raw = bytes(self._buf[:end])
        del self._buf[:end + 4]
        self._first = False
        (method, target, version, headers, framing, length, persistent,
         expect) = _parsed_heads.get(raw, _parse_request_head, raw)
        if expect == "refuse":
            self._refuse_early(417, "dsfw: only 'Expect: 100-continue' is supported")
            return False
        expect_continue = expect == "continue"
        body = RequestBody(self, framing, length, None, "")
        request = ServerRequest(self, method, target, version, headers, body, persistent,
                                expect_continue)
        request.raw_head = raw
        self._current = request
        self._body = body
        self._state = BODY if framing != "none" else WAIT
        self._set_timeout(False)
        self._render(request)
        return True

    def _render(self, request: ServerRequest) -> None:
        try:
            result = self.site.resource.render(request)
        except Exception:
            log.error("request.failed", status=500, exc_info=True)
            result = error_body("dsfw: internal error, request denied")
            request.setResponseCode(500)
        if result is not NOT_DONE_YET and not request.finished:
            request.write_head(request.code, None, [b"Content-Type: application/json"],
                               len(result), hold=True)
            request.write(result)
            request.finish()

    def _malformed(self, why: str) -> None:
        """Unparsable HTTP: a Docker-style 400, and the connection is closed."""
        log.info("request.malformed", status=400, reason=why)
        request = self._current
        if request is not None and request.startedWriting:
            self.transport.abortConnection()
        else:
            self._refuse_early(400, "dsfw: malformed HTTP request refused (framing, header "
                                    "syntax or header size); nothing was forwarded to dockerd")
        if request is not None and not request.body.complete:
            request.body.fail(BadRequest(f"malformed request body ({why})"))

    def _refuse_early(self, status: int, message: str) -> None:
        body = error_body(message)
        self.transport.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\nConnection: close\r\n\r\n"
                             % (status, _REASONS[status], len(body)) + body)
        self._close()

    def _close(self) -> None:
        self._state = CLOSED
        self._buf.clear()
        self._set_timeout(False)
        self.transport.loseConnection()

    def _linger(self) -> None:
        """Close after an answer given before the body was read, without losing the answer.

        Closing a socket whose peer is still sending makes the peer's next
        write fail, and a client that writes its body while it waits for the
        answer (Go's, so the docker CLI) may report that instead of the
        answer.  As Go's server does, dsfw closes its sending side first
        (the client reads the answer and the end), drops what still arrives
        -- at most ``LINGER_BYTES``, for at most ``LINGER_SECONDS`` -- then
        closes.  Nothing is stored.
        """
        if isinstance(self.transport, ProtocolWrapper) or not hasattr(
                self.transport, "loseWriteConnection"):
            self._close()  # TLS (a half-close would skip close_notify), or an in-memory transport
            return
        self._state = LINGER
        self._buf.clear()
        self._set_timeout(False)
        self._linger_left = LINGER_BYTES
        if self._pauses:
            self._pauses.clear()
            self.transport.resumeProducing()
        self.transport.loseWriteConnection()
        self._linger_call = self.site.reactor.callLater(LINGER_SECONDS, self._end_linger)

    def _end_linger(self) -> None:
        call, self._linger_call = self._linger_call, None
        if call is not None and call.active():
            call.cancel()
        if self._state == LINGER:
            self._state = CLOSED
            self.transport.loseConnection()

    # -- body flow -----------------------------------------------------------

    def _body_started(self, body: RequestBody) -> None:
        request = self._current
        if request is not None and request.expect_continue and not request.startedWriting:
            request.expect_continue = False
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self._set_timeout(True)
        if "buffer" in self._pauses:  # read ahead while undecided: now it is wanted
            self._resume("buffer")
        else:
            self._advance()

    def _body_complete(self, body: RequestBody) -> None:
        if self._current is not None and self._current.body is body:
            self._state = WAIT
            self._set_timeout(False)
            self._resume("body")
        elif self._body is body:  # a discarded remainder is through
            self._next_request()

    def _body_failed(self, body: RequestBody) -> None:
        # Whatever follows a broken or refused body cannot be parsed as a request.
        self._buf.clear()
        if self._current is not None and self._current.body is body:
            self._current.persistent = False
            self._pause("failed")
        else:
            self._close()

    def _may_discard(self, request: ServerRequest) -> bool:
        """Can an unread body be skipped to keep the connection, as Go's server does?

        Not when the client waits for a ``100 Continue`` it never got (it may
        or may not send the body), nor for chunked bodies of unknown size.
        """
        body = request.body
        if body.failed or request.expect_continue or not request.persistent:
            return False
        return body.framing == "length" and body.length - body.received <= DISCARD_LIMIT

    # -- end of a request ---------------------------------------------------

    def _request_done(self, request: ServerRequest) -> None:
        if self._current is not request or self._state == CLOSED:
            return
        self._current = None
        if not request.persistent:
            if request.body.complete or request.body.framing == "none":
                self._close()
            else:
                self._linger()
            return
        body = request.body
        if body.complete:
            self._next_request()
            return
        # An unread remainder of at most DISCARD_LIMIT bytes: read past it.
        body._limit = None
        body._consumer = _Discarded()
        body._done = None
        body.paused = False
        self._state = BODY
        self._set_timeout(True)
        self._pauses.clear()
        self.transport.resumeProducing()
        self._advance()

    def _next_request(self) -> None:
        self._state = HEAD
        self._body = None
        if self._pauses:
            self._pauses.clear()
            self.transport.resumeProducing()
        self._set_timeout(True)
        self._advance()

    # -- reading control -----------------------------------------------------

    def _pause(self, reason: str) -> None:
        if self._state == CLOSED:
            return
        if not self._pauses:
            self.transport.pauseProducing()
        self._pauses.add(reason)
        if reason == "body":
            self._set_timeout(False)  # dockerd is slow, not the client

    def _resume(self, reason: str) -> None:
        if reason not in self._pauses:
            if reason == "body":
                self._advance()
            return
        self._pauses.discard(reason)
        if not self._pauses and self._state != CLOSED:
            self.transport.resumeProducing()
            if self._state == BODY:
                self._set_timeout(True)
        self._advance()

    def _set_timeout(self, on: bool) -> None:
        """Idle timeout on or off; one timer per connection, re-armed when it fires.

        Switched at least twice per request: a cancelled and re-created
        ``callLater`` each time was a visible share of a small request's cost.
        """
        self._timing = on
        if on:
            clock = self.site.reactor
            self._last = clock.seconds()
            if self._timeout_call is None and self.site.timeOut and self._state != CLOSED:
                self._timeout_call = clock.callLater(self.site.timeOut, self._check_timeout)

    def _check_timeout(self) -> None:
        self._timeout_call = None
        if self._state in (CLOSED, HIJACKED, LINGER):
            return
        clock, timeout = self.site.reactor, self.site.timeOut
        idle = clock.seconds() - self._last
        if self._timing and idle >= timeout:
            log.info("connection.idle_timeout", seconds=timeout)
            transport = self.transport
            self._close()
            clock.callLater(ABORT_TIMEOUT, _abort_if_open, transport)
            return
        wait = timeout - idle if self._timing else timeout
        self._timeout_call = clock.callLater(wait, self._check_timeout)

    # -- hijack --------------------------------------------------------------

    def _hijack(self, request: ServerRequest, protocol: Protocol):
        """From now on the connection's bytes go to ``protocol`` (a splice)."""
        leftover = bytes(self._buf)
        self._buf.clear()
        self._state = HIJACKED
        self._current = None
        self._splice = protocol
        self._set_timeout(False)
        if self._pauses:
            self._pauses.clear()
            self.transport.resumeProducing()
        protocol.transport = self.transport
        return self.transport, leftover


# Parsed request heads, by their bytes: (method, target, version, headers, framing,
# length, persistent, expect); RequestHeaders is read only.
_parsed_heads = BytesMemo(entries=256, max_key=2048)


def _parse_request_head(raw: bytes) -> tuple:
    """The parsed head; ``expect`` is ``"continue"``, ``"refuse"`` (another expectation) or ``"none"``."""
    method, target, version, pairs = parse_head(raw)
    headers = RequestHeaders(pairs)
    framing, length = _framing(headers, version)
    connection = _tokens(headers.getRawHeaders(b"connection"))
    if version == b"HTTP/1.1":
        persistent = b"close" not in connection
    else:
        persistent = b"keep-alive" in connection
    expect = headers.getRawHeaders(b"expect")
    if expect is None:
        expecting = "none"
    elif [v.lower() for v in expect] != [b"100-continue"]:
        expecting = "refuse"
    else:
        expecting = "continue" if framing != "none" and version == b"HTTP/1.1" else "none"
    return method, target, version, headers, framing, length, persistent, expecting


class _Discarded:
    def write(self, data: bytes) -> None:
        pass


def _abort_if_open(transport) -> None:
    if transport.connected:
        transport.abortConnection()


class FirewallSite(Site):
    """The ``Site`` serving the firewall resource over :class:`HTTPServerChannel`.

    A ``Site`` subclass so the design card (twistd plugin, ``Site``, a
    twisted.web resource) holds; only the protocol is dsfw's own.
    """

    def __init__(self, resource, reactor, timeout: float = IDLE_TIMEOUT, connections=None):
        super().__init__(resource, reactor=reactor)
        self.reactor = reactor
        self.timeOut = timeout
        self.noisy = False
        self.connections = connections  # a ConnectionLimit, or None

    def buildProtocol(self, addr):
        if self.connections is not None and self.connections.full():
            return self.connections.refusal(self.reactor)
        return HTTPServerChannel(self)

    def startFactory(self) -> None:
        pass  # no access log: dsfw logs each decision itself

    def stopFactory(self) -> None:
        pass
