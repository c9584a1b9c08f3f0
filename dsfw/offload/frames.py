"""Frames between the daemon and its body worker: a JSON header and a byte blob.

``>II`` (header length, blob length), the header (a JSON object, small), the
blob (a request body, policy files, a canonical body).  The daemon reads
incrementally and refuses what does not fit (:class:`FrameError`): a worker
answering garbage is treated as a dead one.
"""
from __future__ import annotations

import json
import struct
from typing import Any, BinaryIO

PREFIX = struct.Struct(">II")
MAX_HEADER = 4 << 20
PIECE = 64 << 10


class FrameError(Exception):
    """The peer sent something that is not a frame within the limits."""


def encode(header: dict[str, Any], blob: bytes | list[bytes] = b"") -> list[bytes]:
    """The pieces of one frame, to write one after the other (the blob is not joined)."""
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    pieces = [blob] if isinstance(blob, bytes) else list(blob)
    return [PREFIX.pack(len(head), sum(map(len, pieces))), head, *pieces]


def _header(raw: bytes) -> dict[str, Any]:
    try:
        header = json.loads(raw)
    except ValueError as e:
        raise FrameError(f"a frame header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise FrameError("a frame header is not a JSON object")
    return header


class FrameReader:
    """Splits a byte stream into frames; blobs larger than ``max_blob`` are an error.

    A blob comes out as its pieces, small reads joined into pieces of about
    :data:`PIECE` bytes: one join of a 16 MB blob (a fresh allocation, page
    faults included) held the reactor for up to 150 ms on these machines.
    """

    def __init__(self, max_blob: int):
        self._max_blob = max_blob
        self._buf = b""  # the prefix and header being read
        self._header: dict[str, Any] | None = None
        self._blob: list[bytes] = []  # pieces of about PIECE bytes
        self._small: list[bytes] = []  # reads not yet joined into a piece
        self._small_bytes = 0
        self._missing = 0  # blob bytes still to come

    def feed(self, data: bytes) -> list[tuple[dict[str, Any], bytes]]:
        frames = []
        while data or (self._header is not None and self._missing == 0):
            if self._header is None:
                self._buf += data
                if len(self._buf) < PREFIX.size:
                    return frames
                head, blob = PREFIX.unpack_from(self._buf)
                if head > MAX_HEADER or blob > self._max_blob:
                    raise FrameError(f"a frame of {head} + {blob} bytes is over the limits")
                if len(self._buf) < PREFIX.size + head:
                    return frames
                self._header = _header(self._buf[PREFIX.size:PREFIX.size + head])
                data, self._buf = self._buf[PREFIX.size + head:], b""
                self._missing = blob
            piece = data[:self._missing] if len(data) > self._missing else data
            data = data[len(piece):]
            if piece:
                self._small.append(piece)
                self._small_bytes += len(piece)
                self._missing -= len(piece)
            if self._small_bytes >= PIECE or (self._missing == 0 and self._small):
                self._blob.append(b"".join(self._small))
                self._small, self._small_bytes = [], 0
            if self._missing == 0:
                frames.append((self._header, self._blob))
                self._header, self._blob = None, []
        return frames


def read_frame(stream: BinaryIO) -> tuple[dict[str, Any], bytes] | None:
    """One frame from a blocking stream (the worker's side); None at end of input."""
    prefix = stream.read(PREFIX.size)
    if len(prefix) < PREFIX.size:
        return None
    head, blob = PREFIX.unpack(prefix)
    if head > MAX_HEADER:
        raise FrameError(f"a frame header of {head} bytes is over the limit")
    header = stream.read(head)
    data = stream.read(blob)
    if len(header) < head or len(data) < blob:
        return None
    return _header(header), data


def write_frame(stream: BinaryIO, header: dict[str, Any], blob: bytes = b"") -> None:
    for piece in encode(header, blob):
        stream.write(piece)
    stream.flush()
