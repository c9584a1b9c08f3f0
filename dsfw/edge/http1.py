"""HTTP/1.1 request heads and bodies, parsed strictly for dsfw's server protocol.

The head is taken apart once (request line, header fields with token names,
CRLF only, no folding); framing that could be read two ways (``Content-Length``
with ``Transfer-Encoding``, differing lengths, a coding other than chunked) is
refused, never guessed.  :class:`RequestBody` decodes a body only when the
firewall asks for it and produces it into a consumer with backpressure.
"""
from __future__ import annotations

import re

from twisted.internet import interfaces
from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure
from twisted.web.iweb import UNKNOWN_LENGTH
from zope.interface import implementer

from dsfw.errors import PayloadTooLarge

MAX_HEAD = 1 << 20  # Go's DefaultMaxHeaderBytes: registry credentials can be large
MAX_HEADERS = 500
_MAX_CHUNK_LINE = 4096
_MAX_TRAILER = 64 << 10
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_BAD_TARGET = re.compile(rb"[\x00-\x20\x7f]")
_BAD_VALUE = re.compile(rb"[\x00\r\n]")
_VERSIONS = (b"HTTP/1.1", b"HTTP/1.0")


class MalformedRequest(Exception):
    """The bytes are not one unambiguous HTTP/1.x request; nothing is forwarded."""


class HeadTooLarge(MalformedRequest):
    """The request head passed MAX_HEAD bytes or MAX_HEADERS fields (Go answers 431)."""


class RequestHeaders:
    """The request's headers as received, looked up case-insensitively.

    Offers the two ``twisted.web.http_headers.Headers`` reads dsfw uses,
    without its per-header encoding work.
    """

    __slots__ = ("_index",)

    def __init__(self, pairs: list[tuple[bytes, bytes]]):
        index: dict[bytes, list[bytes]] = {}
        for name, value in pairs:
            index.setdefault(name.lower(), []).append(value)
        self._index = index

    def getRawHeaders(self, name: bytes, default=None):
        return self._index.get(name.lower(), default)

    def hasHeader(self, name: bytes) -> bool:
        return name.lower() in self._index

    def getAllRawHeaders(self):
        return self._index.items()


def _tokens(values: list[bytes] | None) -> set[bytes]:
    return {t.strip().lower() for v in values or () for t in v.split(b",")}


def parse_head(raw: bytes) -> tuple[bytes, bytes, bytes, list[tuple[bytes, bytes]]]:
    """Request line and header fields, strictly (CRLF only, no folding, token names)."""
    # Lines split at CRLF: a bare CR or LF left in the request line or a field
    # fails the token and value checks below.
    lines = raw.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise MalformedRequest("malformed request line")
    method, target, version = parts
    if not _TOKEN.fullmatch(method) or not target or _BAD_TARGET.search(target):
        raise MalformedRequest("malformed request line")
    if version not in _VERSIONS:
        raise MalformedRequest("unsupported HTTP version")
    if len(lines) - 1 > MAX_HEADERS:
        raise HeadTooLarge(f"more than {MAX_HEADERS} header fields")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name):
            raise MalformedRequest("malformed header field")
        value = value.strip(b" \t")
        if _BAD_VALUE.search(value):
            raise MalformedRequest("malformed header value")
        headers.append((name, value))
    return method, target, version, headers


def _framing(headers: RequestHeaders, version: bytes) -> tuple[str, int]:
    """``("none"|"length"|"chunked", length)``; ambiguity is refused, never guessed."""
    te = headers.getRawHeaders(b"transfer-encoding")
    cl = headers.getRawHeaders(b"content-length")
    if te is not None:
        if cl is not None or len(te) != 1 or te[0].lower() != b"chunked" or version != b"HTTP/1.1":
            raise MalformedRequest("unsupported or conflicting Transfer-Encoding")
        return "chunked", 0
    if cl is not None:
        if len(set(cl)) != 1 or not cl[0].isdigit() or len(cl[0]) > 18:
            raise MalformedRequest("invalid or conflicting Content-Length")
        length = int(cl[0])
        return ("length", length) if length else ("none", 0)
    return "none", 0


class _Collector:
    """A consumer keeping a body in memory (the producer enforces the limit)."""

    def __init__(self):
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.parts.append(data)


@implementer(interfaces.IPushProducer)
class RequestBody:
    """One request's body, produced into a consumer as it arrives.

    Provides ``IBodyProducer`` (``length``, ``startProducing``) so dsfw's
    upstream client can relay it to dockerd; dockerd's transport pausing this
    producer pauses reading from the client.  The body is counted as decoded
    and refused with 413 the moment it passes ``limit``.  ``channel`` is the
    :class:`~dsfw.edge.server.HTTPServerChannel` reading it.
    """

    def __init__(self, channel, framing: str, length: int,
                 limit: int | None, option: str):
        self._channel = channel
        self.framing = framing
        self.length = length if framing == "length" else (0 if framing == "none" else UNKNOWN_LENGTH)
        self._limit = limit
        self._option = option
        self._remaining = length
        self._chunk_state = "size"
        self._trailer = 0
        self.received = 0
        self.started = False
        self.complete = framing == "none"
        self.failed = False
        self.paused = False
        self._consumer = None
        self._done: Deferred | None = None

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"request body exceeds the limit of {self._limit} bytes "
                               f"({self._option})")

    # -- IBodyProducer -----------------------------------------------------

    def startProducing(self, consumer) -> Deferred:
        if self.started:
            return fail(RuntimeError("a request body is read once"))
        self.started = True
        if self.complete:
            return succeed(None)
        if self._limit is not None and self.framing == "length" and self.length > self._limit:
            self.failed = True
            return fail(self._too_large())
        self._consumer = consumer
        self._done = Deferred()
        done = self._done
        self._channel._body_started(self)
        return done

    def pauseProducing(self) -> None:
        if not self.paused:
            self.paused = True
            self._channel._pause("body")

    def resumeProducing(self) -> None:
        if self.paused:
            self.paused = False
            self._channel._resume("body")

    def stopProducing(self) -> None:
        """The consumer no longer wants the body: what is left stays unread."""
        self._consumer = None
        self._done = None
        self.resumeProducing()

    @property
    def active(self) -> bool:
        return self._consumer is not None and not self.paused and not self.complete

    # -- fed by the channel ------------------------------------------------

    def feed(self, buf: bytearray) -> bool:
        """Decode from ``buf`` what is there; True if progress was made."""
        if self.framing == "length":
            take = min(self._remaining, len(buf))
            if not take:
                return False
            data = bytes(buf[:take])
            del buf[:take]
            self._deliver(data)
            return True
        return self._feed_chunked(buf)

    def feed_bytes(self, data: bytes) -> bytes:
        """Fast path for a length-framed body: deliver from ``data``, return the rest."""
        take = min(self._remaining, len(data))
        self._deliver(data[:take] if take < len(data) else data)
        return data[take:]

    def feed_chunked_bytes(self, data: bytes) -> bytes:
        """Fast path for a chunked body: deliver what ``data`` holds, at once; return the rest.

        The chunks' data in one read (the docker CLI sends 32 kB chunks) goes
        on as one piece, joined once, instead of each being cut from the
        channel's buffer and the buffer shifted after it.  Whatever is not
        plain (a size line or CRLF cut by the read, trailers, a framing
        error) is left for :meth:`feed`, which decides as before.
        """
        view = memoryview(data)
        pieces = []
        at, end = 0, len(data)
        state = self._chunk_state
        while at < end:
            if state == "data":
                take = min(self._remaining, end - at)
                pieces.append(view[at:at + take])
                at += take
                self._remaining -= take
                if self._remaining:
                    break
                state = "crlf"
            elif state == "crlf":
                if data[at:at + 2] != b"\r\n":
                    break
                at += 2
                state = "size"
            elif state == "size":
                line = data.find(b"\r\n", at, at + _MAX_CHUNK_LINE)
                if line < 0:
                    break
                size = data[at:line].split(b";", 1)[0].rstrip(b" \t")
                if not _HEX.fullmatch(size) or not int(size, 16):
                    break  # malformed, or the last chunk (trailers follow)
                self._remaining = int(size, 16)
                at = line + 2
                state = "data"
            else:
                break
        self._chunk_state = state
        if pieces:
            self._deliver(data if len(pieces[0]) == end else b"".join(pieces))
        return data[at:] if at else data

    def _deliver(self, data: bytes) -> None:
        self.received += len(data)
        if self.framing == "length":
            self._remaining -= len(data)
        if self._limit is not None and self.received > self._limit:
            self.fail(self._too_large())
            return
        if self._consumer is not None:
            self._consumer.write(data)
        if self.framing == "length" and self._remaining == 0:
            self._end()

    def _feed_chunked(self, buf: bytearray) -> bool:
        state = self._chunk_state
        if state == "size":
            end = buf.find(b"\r\n")
            if end < 0:
                if len(buf) > _MAX_CHUNK_LINE:
                    raise MalformedRequest("malformed chunk size")
                return False
            size = bytes(buf[:end]).split(b";", 1)[0].rstrip(b" \t")
            del buf[:end + 2]
            if not _HEX.fullmatch(size):
                raise MalformedRequest("malformed chunk size")
            self._remaining = int(size, 16)
            self._chunk_state = "data" if self._remaining else "trailer"
            return True
        if state == "data":
            take = min(self._remaining, len(buf))
            if not take:
                return False
            data = bytes(buf[:take])
            del buf[:take]
            self._remaining -= take
            if self._remaining == 0:
                self._chunk_state = "crlf"
            self._deliver(data)
            return True
        if state == "crlf":
            if len(buf) < 2:
                return False
            if buf[:2] != b"\r\n":
                raise MalformedRequest("malformed chunk")
            del buf[:2]
            self._chunk_state = "size"
            return True
        end = buf.find(b"\r\n")  # trailer fields, dropped: dsfw forwards its own framing
        if end < 0:
            if len(buf) > _MAX_CHUNK_LINE:
                raise MalformedRequest("malformed chunk trailer")
            return False
        self._trailer += end + 2
        if self._trailer > _MAX_TRAILER:
            raise MalformedRequest("chunk trailer too large")
        del buf[:end + 2]
        if end == 0:
            self._end()
        return True

    def _end(self) -> None:
        self.complete = True
        self._consumer = None
        d, self._done = self._done, None
        self._channel._body_complete(self)
        if d is not None:
            d.callback(None)

    def fail(self, exc: BaseException) -> None:
        """The body cannot be completed (limit, malformed, client gone)."""
        if self.failed or self.complete:
            return
        self.failed = True
        self._consumer = None
        d, self._done = self._done, None
        self._channel._body_failed(self)
        if d is not None:
            d.errback(Failure(exc))
