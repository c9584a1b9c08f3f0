"""Forward the canonical tar with one member's content replaced, without copying it.

dsfw forwards the Dockerfile it rendered from the steps the policy saw, at the
path dockerd will open.  The rest of the (possibly large) canonical tar stays
where it is: the forwarded stream is the bytes before that member, a new
member, and the bytes after it.
"""
from __future__ import annotations

import io
import os
import tarfile
from typing import BinaryIO


class SplicedFile(io.RawIOBase):
    """A read-only, seekable view of parts of ``base`` and byte strings, in order.

    Closing it closes ``base``.
    """

    def __init__(self, base: BinaryIO, parts: list[bytes | tuple[int, int]]):
        super().__init__()
        self._base = base
        self._parts = [(p, len(p)) if isinstance(p, bytes) else (p, p[1] - p[0]) for p in parts]
        self._size = sum(n for _, n in self._parts)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self._size
        out, start = [], 0
        for part, length in self._parts:
            end = start + length
            if self._pos < end and size > 0:
                skip = self._pos - start
                take = min(size, length - skip)
                if isinstance(part, bytes):
                    out.append(part[skip:skip + take])
                else:
                    self._base.seek(part[0] + skip)
                    out.append(self._base.read(take))
                self._pos += take
                size -= take
            start = end
        return b"".join(out)

    def close(self) -> None:
        if not self.closed:
            self._base.close()
        super().close()


def replace_member(tar: BinaryIO, member: tuple[int, int], total: int,
                   data: bytes) -> SplicedFile:
    """``tar`` (a PAX tar of ``total`` bytes) with the member at ``member`` holding ``data``.

    ``member`` is (offset of its first header, end of its padded data). The
    new member keeps the name, mode, owner and mtime; only size and data change.
    """
    start, end = member
    tar.seek(start)
    with tarfile.open(fileobj=io.BytesIO(tar.read(end - start)), mode="r|") as old:
        info = old.next()
    if info is None or not info.isreg():
        raise ValueError("the member to replace is not a regular file")
    info.size, info.pax_headers = len(data), {}
    padding = -len(data) % tarfile.BLOCKSIZE
    new = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape") + data + bytes(padding)
    return SplicedFile(tar, [(0, start), new, (end, total)])
