"""A lean HTTP/1.1 client for dockerd, with a keep-alive connection pool.

Why not ``twisted.web.client.Agent``: it cannot hand over a connection that
dockerd hijacks (a ``101`` for attach/exec, or attach's ``200`` raw stream),
it drops the framing headers a relay needs, and its per-request cost is most
of a relay's latency.  This client speaks just what dsfw sends -- requests it
serialized itself -- and parses responses incrementally, delivering body
bytes to a :class:`ResponseSink` as they arrive so the caller can stream them
with backpressure.
"""
from __future__ import annotations

import re
from typing import Callable, Protocol as TypingProtocol

from twisted.internet import interfaces
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from dsfw.edge._twisted import tune_socket, use_bulk_writes, write_now
from dsfw.edge.memo import BytesMemo
from dsfw.edge.outbox import Outbox
from dsfw.errors import UpstreamUnavailable

MAX_RESPONSE_HEAD = 1 << 20
_HEX_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_NO_BODY_STATUSES = frozenset({204, 304})
_FRAMING_HEADERS = frozenset({b"connection", b"transfer-encoding", b"content-length",
                              b"content-type"})
HIJACK_CONTENT_TYPES = (b"application/vnd.docker.raw-stream", b"application/vnd.docker.multiplexed-stream")


# Response headers that describe dockerd's hop, not the answer: never relayed as they came.
HOP_BY_HOP_RESPONSE = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade",
     b"proxy-connection"}
)


class ResponseHead:
    """Status line and headers of a dockerd response, as received; never changed once made."""

    __slots__ = ("status", "reason", "headers", "_relayed")

    def __init__(self, status: int, reason: bytes, headers: tuple[tuple[bytes, bytes], ...],
                 relayed: tuple[list[bytes], int | None] | None = None):
        self.status = status
        self.reason = reason
        self.headers = headers
        self._relayed = relayed

    def __eq__(self, other):
        if not isinstance(other, ResponseHead):
            return NotImplemented
        return (self.status, self.reason, self.headers) == (other.status, other.reason,
                                                            other.headers)

    def __repr__(self) -> str:
        return f"ResponseHead({self.status!r}, {self.reason!r}, {self.headers!r})"

    def get(self, name: bytes) -> bytes | None:
        lname = name.lower()
        for k, v in self.headers:
            if k.lower() == lname:
                return v
        return None

    def relayed(self) -> tuple[list[bytes], int | None]:
        """The end-to-end header lines (``Name: value``) a relay forwards, and Content-Length.

        Made while the parser walks the headers anyway; computed here for a
        head built by hand (a filtered answer's).
        """
        if self._relayed is None:
            lines, length = [], None
            for name, value in self.headers:
                lname = name.lower()
                if lname == b"content-length":
                    length = int(value)
                elif lname not in HOP_BY_HOP_RESPONSE:
                    lines.append(name + b": " + value)
            self._relayed = (lines, length)
        return self._relayed

    def serialize(self) -> bytes:
        """The head re-written by dsfw, for a hijacked client connection."""
        lines = [b"HTTP/1.1 %d %s" % (self.status, self.reason)]
        lines.extend(k + b": " + v for k, v in self.headers)
        return b"\r\n".join(lines) + b"\r\n\r\n"


class ResponseSink(TypingProtocol):
    """Receives one response; all calls happen on the reactor thread."""

    def head_received(self, head: ResponseHead) -> None: ...

    def body_received(self, data: bytes) -> None: ...

    def body_finished(self) -> None: ...

    def hijacked(self, head: ResponseHead, connection: "DockerConnection", leftover: bytes) -> None: ...

    def failed(self, reason: Failure) -> None: ...


class UpstreamProtocolError(UpstreamUnavailable):
    """dockerd answered something this client cannot frame."""


@implementer(interfaces.IHalfCloseableProtocol)
class DockerConnection(Protocol):
    """One HTTP/1.1 connection to dockerd, reused for sequential requests.

    States: ``idle`` (in the pool), ``head`` (waiting for the status line and
    headers), ``body`` (delivering a framed body), ``spliced`` (hijacked: a
    raw byte stream owned by :mod:`dsfw.edge.hijack`), ``closed``.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._sink: ResponseSink | None = None
        self._state = "idle"
        self._framing = ""
        self._remaining = 0
        self._chunk_state = "size"
        self._may_hijack = False
        self._head_only = False
        self._keep_alive = True
        self._body_producer = None
        self.received_any = False
        self.body_follows = False  # True only while head_received runs with body bytes at hand
        self.reused = False
        self.on_release: Callable[["DockerConnection"], None] | None = None
        self.on_lost: Callable[["DockerConnection"], None] | None = None
        self.outbox: Outbox | None = None  # a pool's: requests leave at the end of the turn
        self.splice_peer: Protocol | None = None

    def connectionMade(self) -> None:
        tune_socket(self.transport)

    # -- sending -----------------------------------------------------------

    def send(self, head: bytes, body: bytes | None, sink: ResponseSink, *,
             head_only: bool = False, may_hijack: bool = False, body_producer=None,
             chunked: bool = False) -> None:
        """Send one request; the response goes to ``sink``.

        ``body`` is written with the head in one write (small JSON bodies),
        held in the pool's :class:`~dsfw.edge.outbox.Outbox` until the
        reactor's turn ends;
        ``body_producer`` (an ``IBodyProducer``) streams a spooled body or the
        client's own as it arrives, chunk-framed when ``chunked`` (its length
        is not known in advance).  A producer's failure (a limit passed, the
        client gone) is the request's failure, reported to ``sink``.
        """
        self._sink = sink
        self._state = "head"
        self._head_only = head_only
        self._may_hijack = may_hijack
        self.received_any = False
        data = head + body if body else head
        if body_producer is None and self.outbox is not None:
            self.outbox.write(self.transport, data)
        else:
            write_now(self.transport, data)
        if body_producer is not None:
            self._body_producer = body_producer
            use_bulk_writes(self.transport)
            self.transport.registerProducer(body_producer, True)
            consumer = _ChunkEncoder(self.transport) if chunked else self.transport
            d = body_producer.startProducing(consumer)
            d.addCallbacks(self._body_sent, self._body_failed, callbackArgs=(chunked,))

    def _body_sent(self, _, chunked: bool):
        if self._body_producer is not None:
            self._body_producer = None
            self.transport.unregisterProducer()
            if chunked:
                self.transport.write(b"0\r\n\r\n")

    def _body_failed(self, reason: Failure):
        if self._body_producer is not None:
            self._body_producer = None
            if self.transport is not None:
                self.transport.unregisterProducer()
            self._fail(reason)
        return None

    def _stop_body(self) -> None:
        """dockerd answered before it read the whole body: stop sending it."""
        producer, self._body_producer = self._body_producer, None
        if producer is not None:
            self._keep_alive = False
            self.transport.unregisterProducer()
            try:
                producer.stopProducing()
            except Exception:
                pass

    # -- receiving ---------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._state == "spliced":
            if self.splice_peer is not None:  # None: the client left before the splice
                self.splice_peer.transport.write(data)
            return
        if self._state in ("idle", "closed"):
            # Bytes nobody asked for: the connection is not reusable.
            self._keep_alive = False
            self._state = "closed"
            self.transport.loseConnection()
            return
        self.received_any = True
        self._buf += data
        try:
            self._process()
        except UpstreamUnavailable as e:
            self._fail(Failure(e))

    def _process(self) -> None:
        while self._buf or self._framing == "none":
            if self._state == "head":
                if not self._parse_head():
                    return
            elif self._state == "body":
                if not self._parse_body():
                    return
            else:
                return

    def _parse_head(self) -> bool:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > MAX_RESPONSE_HEAD:
                raise UpstreamProtocolError("dockerd sent an oversized response head")
            return False
        raw = bytes(self._buf[:end])
        del self._buf[: end + 4]
        version, head, framing = _head_memo.get(raw, _parse_response_head, raw)
        status = head.status
        if 100 <= status < 200 and status != 101:
            return True  # interim response: wait for the real one
        connection = framing.get(b"connection", b"").lower()
        if version == b"HTTP/1.0" or b"close" in connection:
            self._keep_alive = False
        te = framing.get(b"transfer-encoding")
        if status == 101:
            return self._splice(head)
        if self._head_only or status in _NO_BODY_STATUSES:
            self._framing = "none"
        elif te is not None:
            if te.lower() != b"chunked":
                raise UpstreamProtocolError("dockerd used an unsupported transfer coding")
            self._framing = "chunked"
            self._chunk_state = "size"
        elif head.relayed()[1] is not None:
            self._remaining = head.relayed()[1]
            self._framing = "length" if self._remaining else "none"
        else:
            content_type = framing.get(b"content-type", b"")
            if self._may_hijack and content_type.startswith(HIJACK_CONTENT_TYPES):
                return self._splice(head)
            self._framing = "eof"
            self._keep_alive = False
        self._state = "body"
        # The sink may hold the head for the body parsed next from this same read.
        self.body_follows = self._framing == "none" or (
            self._framing in ("length", "eof") and bool(self._buf))
        try:
            self._sink.head_received(head)
        finally:
            self.body_follows = False
        return True

    def _parse_body(self) -> bool:
        framing = self._framing
        if framing == "none":
            self._finish()
            return False
        if framing == "eof":
            data = bytes(self._buf)
            self._buf.clear()
            self._sink.body_received(data)
            return False
        if framing == "length":
            self._deliver_remaining()
            if self._remaining == 0:
                self._finish()
                return False
            return bool(self._buf)
        return self._parse_chunk()

    def _deliver_remaining(self) -> None:
        """Hand the sink what is buffered of the ``_remaining`` bytes still due."""
        take = min(self._remaining, len(self._buf))
        data = bytes(self._buf[:take])
        del self._buf[:take]
        self._remaining -= take
        if data:
            self._sink.body_received(data)

    def _parse_chunk(self) -> bool:
        if self._chunk_state == "size":
            end = self._buf.find(b"\r\n")
            if end < 0:
                if len(self._buf) > 4096:
                    raise UpstreamProtocolError("dockerd sent a malformed chunk size")
                return False
            size_text = bytes(self._buf[:end]).split(b";", 1)[0].rstrip(b" \t")
            del self._buf[: end + 2]
            # HEXDIG only: int(x, 16) would also take signs, "0x", "_" and spaces.
            if not _HEX_SIZE.fullmatch(size_text):
                raise UpstreamProtocolError("dockerd sent a malformed chunk size")
            size = int(size_text, 16)
            if size == 0:
                self._chunk_state = "trailer"
            else:
                self._remaining = size
                self._chunk_state = "data"
            return True
        if self._chunk_state == "data":
            self._deliver_remaining()
            if self._remaining == 0:
                self._chunk_state = "crlf"
            return bool(self._buf)
        if self._chunk_state == "crlf":
            if len(self._buf) < 2:
                return False
            if self._buf[:2] != b"\r\n":
                raise UpstreamProtocolError("dockerd sent a malformed chunk")
            del self._buf[:2]
            self._chunk_state = "size"
            return True
        # trailer section: lines until an empty one
        end = self._buf.find(b"\r\n")
        if end < 0:
            return False
        line = bytes(self._buf[:end])
        del self._buf[: end + 2]
        if line == b"":
            self._finish()
            return False
        return True

    def _finish(self) -> None:
        sink, self._sink = self._sink, None
        self._state = "idle"
        self._framing = ""
        if self._body_producer is not None:
            self._stop_body()
        if self._buf:
            self._keep_alive = False  # bytes beyond the response: never reuse
        sink.body_finished()
        if self._keep_alive and self.on_release is not None and self.transport is not None:
            # A slow client may have paused reading; an idle pooled connection
            # must read again, or its next response (and dockerd's close) is never seen.
            self.transport.resumeProducing()
            self.on_release(self)
        elif self.transport is not None:
            self._state = "closed"
            self.transport.loseConnection()

    def _splice(self, head: ResponseHead) -> bool:
        """dockerd took over the connection: from now on bytes flow raw."""
        self._state = "spliced"
        self._keep_alive = False
        leftover = bytes(self._buf)
        self._buf.clear()
        sink, self._sink = self._sink, None
        sink.hijacked(head, self, leftover)
        return False

    # -- losing the connection ---------------------------------------------

    def readConnectionLost(self) -> None:
        if self._state == "spliced" and self.splice_peer is not None:
            self.splice_peer.upstream_read_closed()
            return
        if self._state == "idle":
            self._state = "closed"  # dockerd closed it: not for the pool any more
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        state, self._state = self._state, "closed"
        if self.on_lost is not None:
            self.on_lost(self)
        if state == "spliced":
            if self.splice_peer is not None:
                self.splice_peer.upstream_lost()
            return
        if state == "body" and self._framing == "eof":
            self._sink, sink = None, self._sink
            sink.body_finished()
            return
        if state in ("head", "body"):
            self._fail(Failure(UpstreamUnavailable(
                "dockerd closed the connection before the response was complete")))

    def _fail(self, reason: Failure) -> None:
        sink, self._sink = self._sink, None
        self._state = "closed"
        self._stop_body()
        if self.transport is not None:
            self.transport.abortConnection()
        if sink is not None:
            sink.failed(reason)


# Parsed response heads, by their bytes: (HTTP version, head, framing headers lower-cased).
_head_memo = BytesMemo(entries=64, max_key=2048)


def _parse_response_head(raw: bytes) -> tuple[bytes, ResponseHead, dict[bytes, bytes]]:
    """(HTTP version, the head, its framing headers lower-cased); raises when malformed."""
    lines = raw.split(b"\r\n")
    try:
        version, status_text, *rest = lines[0].split(b" ", 2)
        status = int(status_text)
    except ValueError:
        raise UpstreamProtocolError("dockerd sent a malformed status line") from None
    if not version.startswith(b"HTTP/1."):
        raise UpstreamProtocolError("dockerd answered with an unknown HTTP version")
    headers = []
    relayed = []  # end-to-end lines for the client, made in the same walk
    framing: dict[bytes, bytes] = {}  # the headers this parser acts on, lower-cased
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise UpstreamProtocolError("dockerd sent a malformed header line")
        name = name.strip()
        value = value.strip()
        headers.append((name, value))
        lname = name.lower()
        if lname in _FRAMING_HEADERS:
            if framing.get(lname, value) != value:
                raise UpstreamProtocolError(f"dockerd sent conflicting {name.decode()} headers")
            framing[lname] = value
        if lname not in HOP_BY_HOP_RESPONSE and lname != b"content-length":
            relayed.append(name + b": " + value)
    length = framing.get(b"content-length")
    if length is not None and not length.isdigit():
        raise UpstreamProtocolError("dockerd sent an invalid Content-Length")
    head = ResponseHead(status, rest[0] if rest else b"", tuple(headers),
                        (relayed, int(length) if length is not None else None))
    return version, head, framing


class _ChunkEncoder:
    """Writes each piece of a body of unknown length as one HTTP chunk.

    Sent at once when nothing waits before it (``write_now``): a build
    context's pieces then reach dockerd without a copy into Twisted's buffer.
    """

    def __init__(self, transport):
        self._transport = transport

    def write(self, data: bytes) -> None:
        if data:
            write_now(self._transport, b"%x\r\n" % len(data), data, b"\r\n")


class DockerPool:
    """Keep-alive connections to dockerd's socket, reused one request at a time.

    Connections are opened on demand; an idle one that dockerd closes leaves
    the pool by itself.  ``max_idle`` bounds how many stay open when idle.
    """

    def __init__(self, reactor, socket_path: str, max_idle: int = 32, connect_timeout: float = 10):
        # Imported here: twisted.internet.endpoints loads pyOpenSSL when it can, and
        # tap.makeService keeps that out of a daemon without TLS (dsfw.edge._twisted).
        from twisted.internet.endpoints import UNIXClientEndpoint
        self._reactor = reactor
        self.socket_path = socket_path
        self._endpoint = UNIXClientEndpoint(reactor, socket_path, timeout=connect_timeout)
        self._idle: list[DockerConnection] = []
        self._all: set[DockerConnection] = set()
        self._max_idle = max_idle
        self._outbox = Outbox(reactor)

    def acquire(self, fresh: bool = False) -> "Deferred[DockerConnection]":
        while self._idle and not fresh:
            conn = self._idle.pop()
            if conn.transport is not None and conn._state == "idle":
                conn.reused = True
                return succeed(conn)
        d = self._endpoint.connect(Factory.forProtocol(DockerConnection))

        def connected(conn: DockerConnection) -> DockerConnection:
            conn.on_release = self._release
            conn.on_lost = self._lost
            conn.outbox = self._outbox
            self._all.add(conn)
            return conn

        def unreachable(reason: Failure):
            return fail(UpstreamUnavailable(
                f"cannot reach dockerd at {self.socket_path}: {reason.getErrorMessage()}"))

        return d.addCallbacks(connected, unreachable)

    def _release(self, conn: DockerConnection) -> None:
        if len(self._idle) < self._max_idle:
            self._idle.append(conn)
        else:
            conn.transport.loseConnection()

    def _lost(self, conn: DockerConnection) -> None:
        self._all.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)

    def close(self) -> None:
        """Close every connection (idle and in use)."""
        for conn in list(self._all):
            if conn.transport is not None:
                conn.transport.loseConnection()
        self._idle.clear()
