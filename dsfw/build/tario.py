"""The bytes of a context rewrite: read for ``tarfile``, member data handed on whole.

``tarfile`` parses every header of the client's context and dsfw judges every
member (:mod:`dsfw.build.context`); only the moving of member data is dsfw's
own.  Read through tarfile's stream buffer and file objects, each byte of a
file was copied four times in Python, in pieces of at most a MiB, and that was
most of the rewrite thread's time (docs/benchmarks.md, "Build uploads").
:class:`TarSource` gives tarfile the ``read``/``tell``/forward ``seek`` it
uses on a stream, and :meth:`TarSource.copy` passes a member's data on in the
pieces it arrived in (a client read, a decompressor's output), without
joining or slicing them.  :class:`TarWriter` writes the canonical tar around
them: headers from ``TarInfo.tobuf`` in PAX format, padding and end blocks as
``tarfile``'s writer does.  The tar dockerd receives is dsfw's: its headers,
its padding, its end; only file contents travel as they came.

Blocking I/O, for the rewrite's worker thread.
"""
from __future__ import annotations

import tarfile
from typing import Callable

_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE
# Bytes asked for at once: a header read takes a whole client read (up to a
# few hundred kB) rather than cutting one in two; member data goes in pieces
# of up to _PIECE.  Both bound what is held here.
READ_AHEAD = 256 * 1024
_PIECE = 1024 * 1024
# Member data left to copy from which a bypass (data sent around the thread) pays.
BYPASS_FROM = 256 * 1024


class TarSource:
    """A reader over the decoded context as ``tarfile.TarFile`` uses one, plus :meth:`copy`.

    ``raw.read(n)`` returns at most ``n`` bytes, ``b""`` at the end.
    """

    def __init__(self, raw, read_ahead: int = READ_AHEAD):
        self._raw = raw
        self._read_ahead = read_ahead
        self._buf = b""  # the piece being consumed, from _at on
        self._at = 0
        self._pos = 0

    def tell(self) -> int:
        return self._pos

    def read(self, size: int) -> bytes:
        """Exactly ``size`` bytes, fewer only at the end (as tarfile's stream reads)."""
        if size < 0:
            raise ValueError("TarSource.read needs a size")
        end = self._at + size
        if end <= len(self._buf):
            data = self._buf[self._at:end]
            self._at = end
            self._pos += size
            return data
        parts = [self._buf[self._at:]]
        got = len(parts[0])
        self._buf, self._at = b"", 0
        while got < size:
            piece = self._raw.read(max(size - got, self._read_ahead))
            if not piece:
                break
            need = size - got
            if len(piece) > need:
                parts.append(piece[:need])
                self._buf, self._at = piece, need
                got = size
            else:
                parts.append(piece)
                got += len(piece)
        data = b"".join(parts)
        self._pos += len(data)
        return data

    def seek(self, pos: int, whence: int = 0) -> int:
        """Forward only, by reading (tarfile skips to the next header so)."""
        if whence != 0 or pos < self._pos:
            raise tarfile.StreamError("seeking backwards is not allowed")
        while self._pos < pos:
            if not self.read(min(pos - self._pos, _PIECE)):
                break
        return self._pos

    def copy(self, size: int, write: Callable[[bytes], object],
             bypass: Callable[[int], int | None] | None = None) -> int:
        """Hand the next ``size`` bytes to ``write`` as they come; how many there were.

        ``bypass(n)``, when given, may take what is left of a large copy once
        nothing is buffered here: it returns how many bytes went around
        (fewer at the end of the input), or None to decline.
        """
        left = size
        if self._at < len(self._buf) and left:
            take = min(len(self._buf) - self._at, left)
            piece = self._buf if take == len(self._buf) else self._buf[self._at:self._at + take]
            self._at += take
            if self._at == len(self._buf):
                self._buf, self._at = b"", 0
            self._pos += take
            left -= take
            write(piece)
        if bypass is not None and left >= BYPASS_FROM:
            went = bypass(left)
            if went is not None:
                self._pos += went
                return size - left + went
        while left:
            piece = self._raw.read(min(left, _PIECE))
            if not piece:
                break
            if len(piece) > left:  # a reader that returned more than asked
                self._buf, self._at = piece, left
                piece = piece[:left]
            self._pos += len(piece)
            left -= len(piece)
            write(piece)
        return size - left


class TarWriter:
    """The canonical tar, byte for byte as ``tarfile``'s PAX writer would write it.

    ``offset`` is where the next byte goes in ``dst`` (``dst.tell()`` at the
    start, as ``TarFile.offset``), the final record fill not counted.
    """

    def __init__(self, dst):
        self._dst = dst
        self.offset = dst.tell()

    def header(self, info: tarfile.TarInfo) -> None:
        buf = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        self._dst.write(buf)
        self.offset += len(buf)

    def data(self, piece: bytes) -> None:
        self._dst.write(piece)
        self.offset += len(piece)

    def sent_around(self, size: int) -> None:
        """``size`` bytes of data reached ``dst``'s reader without passing here."""
        self.offset += size

    def pad(self) -> None:
        """Fill the last data block with zeros."""
        short = -self.offset % _BLOCK
        if short:
            self._dst.write(bytes(short))
            self.offset += short

    def close(self) -> None:
        self._dst.write(bytes(2 * _BLOCK))
        self.offset += 2 * _BLOCK
        fill = -self.offset % _RECORD
        if fill:
            self._dst.write(bytes(fill))
