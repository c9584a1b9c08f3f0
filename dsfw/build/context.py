"""Read a client's build context once and write the canonical one dockerd gets.

Python's ``tarfile`` and Go's ``archive/tar`` disagree at the edges (what a bad
header after the first member means, global PAX headers, sparse files, ...).
So dsfw never forwards the client's bytes: :func:`rewrite_context` reads the
context (plain tar, gzip, bzip2 or xz, detected by magic bytes as dockerd's
``archive.DecompressStream`` does) and writes a *new* uncompressed PAX tar with
normalized names.  The Dockerfile shown to the policy is read back from that
new tar, so what the policy evaluated is what dockerd receives.

What the canonical tar may hold, and why:

* regular files, directories, symlinks and hard links -- what a build context
  is made of;
* no devices, FIFOs, sparse files or unknown entry types: dockerd would
  ``mknod`` devices as root while unpacking, and nothing a build does needs
  them;
* names are cleaned like Go's ``filepath.Clean`` after dropping leading ``/``
  (dockerd joins them to the context root); a name that climbs out with
  ``..`` is refused (dockerd refuses it too);
* a relative symlink whose target leaves the context is refused (dockerd's
  untar refuses it); absolute symlinks are kept, as dockerd keeps them;
* a hard link must name an earlier regular file;
* two entries with the same cleaned name, an entry below a symlink or file,
  or a non-directory replacing a directory that already has contents are
  refused: dockerd would let the later entry win or write through the link,
  and the policy must not have to guess which bytes count;
* global PAX headers that change member fields are refused (Python applies
  them, Go ignores them); ``comment`` (as ``git archive`` writes) is fine;
* owner names, xattrs and other PAX records are dropped; mode bits, numeric
  owner, size and whole-second mtime are kept.

This module does blocking I/O and is meant for a worker thread.
"""
from __future__ import annotations

import collections
import lzma
import posixpath
import tarfile
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Callable

from dsfw.build.tario import TarSource, TarWriter
from dsfw.errors import DsfwError

_CHUNK = 64 * 1024
_BLOCK = tarfile.BLOCKSIZE
_TAIL_KEEP = 1024 * 1024
_MAX_SYMLINK_HOPS = 255  # as moby's FollowSymlinkInScope


class BuildContextError(DsfwError, ValueError):
    """A build context or Dockerfile dsfw will not forward; the client's fault."""

    status = 400


class CorruptContext(BuildContextError):
    """The context is not a readable tar (or compressed tar) stream."""


class ContextTooLarge(BuildContextError):
    """A configured bound on the context was exceeded."""

    status = 413


class DockerfileTooLarge(ContextTooLarge):
    """The Dockerfile is larger than the configured bound."""


class DockerfileNotFound(BuildContextError):
    """No regular file in the context answers to the requested Dockerfile."""


class AmbiguousContext(BuildContextError):
    """Two readings of the context are possible; dsfw will not pick one."""


class ForbiddenPath(BuildContextError):
    """A name, link or Dockerfile path points outside the build context."""


class UnsupportedEntry(BuildContextError):
    """An entry type or encoding dsfw does not carry into the canonical tar."""


@dataclass(frozen=True)
class ContextLimits:
    """Bounds that keep one build request from exhausting the proxy."""

    max_input_bytes: int = 2 * 1024**3
    max_total_bytes: int = 8 * 1024**3
    max_entries: int = 200_000
    max_dockerfile_bytes: int = 1024**2
    max_header_bytes: int = 1024**2

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"ContextLimits.{name} must be a positive int")


@dataclass(frozen=True)
class BuildContext:
    """What the policy and the relay need to know about a rewritten context.

    ``dockerfile_path`` is the Dockerfile's resolved path inside the canonical
    tar (symlinks followed, lowercase fallback applied); forward it as the
    ``dockerfile`` query parameter so dockerd opens exactly that file.
    """

    dockerfile_path: str
    dockerfile: bytes
    members: int
    content_bytes: int
    compression: str
    output_bytes: int
    # Where the Dockerfile's member (header to padded end) lies in the canonical
    # tar, so :mod:`dsfw.build.splice` can forward another rendering of it.
    dockerfile_member: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class _Entry:
    kind: str  # "file", "dir", "symlink", "hardlink"
    linkname: str = ""
    data_offset: int = 0
    size: int = 0
    header_offset: int = 0  # of the member holding the data (a hard link's target)


_MAGIC = (
    ("bzip2", b"BZh"),
    ("gzip", b"\x1f\x8b\x08"),
    ("xz", b"\xfd7zXZ\x00"),
)
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_DECODE_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError)


class _Counted:
    """A reader that counts bytes and stops past ``limit``, with a kept tail.

    ``errors`` are turned into :class:`CorruptContext`: for a decompressor they
    mean bad data, never a local I/O problem.
    """

    def __init__(self, raw, limit: int, too_large: str, errors=()):
        self._raw = raw
        self._limit = limit
        self._too_large = too_large
        self._errors = errors
        self.count = 0
        self.eof = False
        # The last chunks read (at least _TAIL_KEEP bytes), kept by reference:
        # copying every chunk into one buffer cost more than the tar rewrite.
        self._chunks: collections.deque[bytes] = collections.deque()
        self._kept = 0

    @property
    def tail(self) -> bytes:
        """The most recent bytes read (at least ``_TAIL_KEEP`` of them when there were)."""
        return b"".join(self._chunks)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = _CHUNK
        try:
            data = self._raw.read(size)
        except BuildContextError:
            raise
        except self._errors as exc:
            raise CorruptContext(
                f"the build context is not valid compressed data ({exc})") from None
        if not data and size:
            self.eof = True
        self.count += len(data)
        if self.count > self._limit:
            raise ContextTooLarge(self._too_large)
        if data:
            self._chunks.append(data)
            self._kept += len(data)
            while self._kept - len(self._chunks[0]) >= _TAIL_KEEP:
                self._kept -= len(self._chunks.popleft())
        return data

    def room(self, size: int) -> bool:
        return self.count + size <= self._limit

    def went_around(self, size: int) -> None:
        """``size`` bytes were passed on without being read here: count them, forget the tail."""
        self.count += size
        self._chunks.clear()
        self._kept = 0


class _Prefixed:
    """Give back bytes already read for magic detection, then the rest."""

    def __init__(self, head: bytes, raw):
        self._head = head
        self._raw = raw

    @property
    def pending(self) -> bool:
        return bool(self._head)

    def read(self, size: int = -1) -> bytes:
        if self._head:
            if size is None or size < 0:
                size = len(self._head)
            data, self._head = self._head[:size], self._head[size:]
            return data
        return self._raw.read(size)


def _decompressor(src, kind: str):
    import bz2
    import gzip

    opener: dict[str, Callable] = {
        "gzip": lambda f: gzip.GzipFile(fileobj=f, mode="rb"),
        "bzip2": lambda f: bz2.BZ2File(f, mode="rb"),
        "xz": lambda f: lzma.LZMAFile(f, mode="rb"),
    }
    return opener[kind](src) if kind in opener else src


def _detect(head: bytes) -> str:
    if head.startswith(_ZSTD_MAGIC):
        raise CorruptContext("zstd-compressed build contexts are not supported; "
                             "send a plain, gzip, bzip2 or xz tar")
    for kind, magic in _MAGIC:
        if head.startswith(magic):
            return kind
    return "none"


def _make_bounded_tarinfo(limit: int):
    class _BoundedTarInfo(tarfile.TarInfo):
        """Refuse oversized PAX/GNU long-name headers before tarfile buffers them."""

        def _proc_member(self, tar):
            if (self.type in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
                              tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
                    and self.size > limit):
                raise ContextTooLarge(
                    f"a tar extended header of {self.size} bytes exceeds the limit of {limit} bytes")
            return super()._proc_member(tar)

    return _BoundedTarInfo


def _clean_name(name: str, what: str) -> str:
    """Clean a member or link name as Go's filepath.Clean after joining to root."""
    if "\x00" in name:
        raise CorruptContext(f"the {what} {name!r} contains a NUL byte")
    cleaned = posixpath.normpath("/" + name).lstrip("/")
    # normpath("/..") is "/": detect climbing by cleaning relative as well.
    relative = posixpath.normpath(name.lstrip("/") or ".")
    if relative == ".." or relative.startswith("../"):
        raise ForbiddenPath(f"the {what} {name!r} points outside the build context")
    return cleaned or "."


class _Rewriter:
    """One pass over the source tar, writing the canonical tar as it goes."""

    def __init__(self, source: TarSource, dst: BinaryIO, limits: ContextLimits):
        self.source = source
        self.bypass: Callable[[int], int | None] | None = None
        self.limits = limits
        self.entries: dict[str, _Entry] = {}
        self.implicit_dirs: set[str] = set()
        self.content_bytes = 0
        self.out = TarWriter(dst)

    def add(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        if set(tar.pax_headers) - {"comment"}:
            raise AmbiguousContext("the context has a global PAX header that changes member "
                                   "fields; Python and Go read such headers differently")
        name = _clean_name(member.name, "entry")
        if member.issparse() or any(k.startswith("GNU.sparse") for k in member.pax_headers):
            raise UnsupportedEntry(f"the entry {member.name!r} is a sparse file; "
                                   "sparse files are not supported in build contexts")
        kind = self._kind(member)
        if name == ".":
            if kind != "dir":
                raise AmbiguousContext("the context root entry '.' is not a directory")
            return
        self._check_place(name, kind)
        if len(self.entries) >= self.limits.max_entries:
            raise ContextTooLarge(
                f"the build context has more than {self.limits.max_entries} entries")
        info = tarfile.TarInfo(name)
        info.mode = member.mode & 0o7777
        info.uid, info.gid = max(0, member.uid), max(0, member.gid)
        info.mtime = max(0, min(int(member.mtime), 8**11 - 1))
        info.uname = info.gname = ""
        if kind == "symlink":
            self._add_symlink(info, name, member.linkname)
        elif kind == "hardlink":
            self._add_hardlink(info, name, member.linkname)
        elif kind == "dir":
            info.type = tarfile.DIRTYPE
            self.out.header(info)
            self.entries[name] = _Entry("dir")
        else:
            self._add_file(member, info, name)

    @staticmethod
    def _kind(member: tarfile.TarInfo) -> str:
        if member.isdir():
            return "dir"
        if member.issym():
            return "symlink"
        if member.islnk():
            return "hardlink"
        if member.type in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE):
            return "file"
        label = {tarfile.CHRTYPE: "a character device", tarfile.BLKTYPE: "a block device",
                 tarfile.FIFOTYPE: "a FIFO"}.get(member.type, f"of tar type {member.type!r}")
        raise UnsupportedEntry(f"the entry {member.name!r} is {label}; build contexts may "
                               "only hold regular files, directories and links")

    def _check_place(self, name: str, kind: str) -> None:
        if name in self.entries:
            raise AmbiguousContext(f"the context has more than one entry named {name!r}")
        if name in self.implicit_dirs and kind != "dir":
            raise AmbiguousContext(f"the entry {name!r} would replace a directory that already "
                                   "has entries")
        parts = name.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            entry = self.entries.get(parent)
            if entry is not None and entry.kind != "dir":
                raise AmbiguousContext(f"the entry {name!r} lies below {parent!r}, which is a "
                                       f"{entry.kind}, not a directory")
            self.implicit_dirs.add(parent)

    def _add_symlink(self, info: tarfile.TarInfo, name: str, target: str) -> None:
        if not target or "\x00" in target:
            raise CorruptContext(f"the symlink {name!r} has an empty or invalid target")
        joined = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
        if not target.startswith("/") and (joined == ".." or joined.startswith("../")):
            raise ForbiddenPath(f"the symlink {name!r} -> {target!r} points outside the "
                                "build context")
        info.type, info.linkname = tarfile.SYMTYPE, target
        self.out.header(info)
        self.entries[name] = _Entry("symlink", linkname=target)

    def _add_hardlink(self, info: tarfile.TarInfo, name: str, target: str) -> None:
        cleaned = _clean_name(target, f"hard link target of {name!r},")
        entry = self.entries.get(cleaned)
        if entry is not None and entry.kind == "hardlink":
            cleaned, entry = entry.linkname, self.entries[entry.linkname]
        if entry is None or entry.kind != "file":
            raise AmbiguousContext(f"the hard link {name!r} refers to {target!r}, which is not "
                                   "an earlier regular file in the context")
        info.type, info.linkname = tarfile.LNKTYPE, cleaned
        self.out.header(info)
        self.entries[name] = _Entry("hardlink", linkname=cleaned,
                                    data_offset=entry.data_offset, size=entry.size,
                                    header_offset=entry.header_offset)

    def _add_file(self, member, info, name) -> None:
        info.type, info.size = tarfile.REGTYPE, member.size
        header_offset = self.out.offset
        self.out.header(info)
        data_offset = self.out.offset
        # tarfile left the source at the member's data (its headers read, nothing more)
        if (self.source.tell() != member.offset_data
                or self.source.copy(member.size, self.out.data, self._bypass) != member.size):
            raise CorruptContext("the build context is truncated or corrupt "
                                 "(unexpected end of data)")
        self.out.pad()
        self.entries[name] = _Entry("file", data_offset=data_offset,
                                    size=member.size, header_offset=header_offset)
        self.content_bytes += member.size

    def _bypass(self, size: int) -> int | None:
        went = self.bypass(size) if self.bypass is not None else None
        if went is not None:
            self.out.sent_around(went)
        return went


def _check_end(tar: tarfile.TarFile, decoded: _Counted) -> None:
    """Go stops at EOF on a boundary or at two zero blocks; tarfile stops earlier.

    tarfile in stream mode treats a bad or truncated header after the first
    member as the end of the archive.  Go's reader errors there, so anything
    other than a clean end is reported as corrupt.
    """
    tail = decoded.tail
    start = decoded.count - len(tail)
    if tar.offset < start:
        raise CorruptContext("the end of the build context tar could not be verified")
    rest = tail[tar.offset - start:]
    while len(rest) < 2 * _BLOCK:
        more = decoded.read(2 * _BLOCK - len(rest))
        if not more:
            break
        rest += more
    zero = bytes(2 * _BLOCK)
    if rest in (b"", zero[:_BLOCK]) or rest[:2 * _BLOCK] == zero:
        return
    raise CorruptContext("the build context tar is truncated or has a corrupt header "
                         f"at offset {tar.offset}")


def _resolve(entries: dict[str, _Entry], implicit_dirs: set[str], path: str) -> str | None:
    """Follow symlinks inside the context; ``None`` when nothing is there."""
    pending = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    hops = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            if not resolved:
                raise ForbiddenPath(f"the Dockerfile path {path!r} leads outside the build context")
            resolved.pop()
            continue
        candidate = "/".join(resolved + [part])
        entry = entries.get(candidate)
        if entry is not None and entry.kind == "symlink":
            hops += 1
            if hops > _MAX_SYMLINK_HOPS:
                raise ForbiddenPath(f"the Dockerfile path {path!r} has too many levels of symlinks")
            if entry.linkname.startswith("/"):
                raise ForbiddenPath(f"the Dockerfile path {path!r} goes through the absolute "
                                    f"symlink {candidate!r} -> {entry.linkname!r}")
            pending = [p for p in entry.linkname.split("/") if p not in ("", ".")] + pending
            continue
        if entry is None and candidate not in implicit_dirs:
            return None
        resolved.append(part)
    return "/".join(resolved)


def _find_dockerfile(rw: _Rewriter, dockerfile: str) -> tuple[str, _Entry]:
    """Find the Dockerfile as dockerd's remotecontext.withDockerfileFromContext does."""
    requested = dockerfile or "Dockerfile"
    path = _clean_name(requested, "Dockerfile path")
    resolved = _resolve(rw.entries, rw.implicit_dirs, path)
    if resolved is None and requested == "Dockerfile":
        lower = _resolve(rw.entries, rw.implicit_dirs, "dockerfile")
        if lower is not None:
            resolved, requested = lower, "dockerfile"
    if resolved is None:
        raise DockerfileNotFound(f"cannot locate the Dockerfile {requested!r} in the build context")
    entry = rw.entries.get(resolved)
    if entry is None or entry.kind == "dir":
        raise DockerfileNotFound(f"the Dockerfile path {requested!r} is a directory")
    return resolved, entry


class _Output:
    """Where the canonical tar goes: the spool, then (once switched) a stream."""

    def __init__(self, spool: BinaryIO):
        self.target = spool
        self._start = spool.tell()

    def tell(self) -> int:
        return self._start  # the writer asks once, at the start; it counts from there

    def write(self, data) -> int:
        return self.target.write(data)


def _probe(rw: _Rewriter, dockerfile: str, limits: ContextLimits) -> tuple[str, _Entry] | None:
    """The Dockerfile the build will use, if the members so far settle it.

    Entries are never replaced (duplicates and replaced components are refused),
    so a resolution that reaches a regular file stays the same, except that a
    later member could make a path the walk found missing appear (a symlink's
    late target, ``Dockerfile`` after the ``dockerfile`` fallback was taken):
    :func:`_check_settled` refuses that.  Errors are left to the end, as before.
    """
    try:
        path, entry = _find_dockerfile(rw, dockerfile)
    except BuildContextError:
        return None
    if entry.size > limits.max_dockerfile_bytes:
        return None
    return path, entry


def _refuse_large_dockerfile(rw: _Rewriter, dockerfile: str, member: tarfile.TarInfo,
                             limits: ContextLimits) -> None:
    """Refuse, from its header, a member over the size limit that would be the Dockerfile.

    Read whole first, it would be spooled with all the context before it (up to
    ``max_input_bytes``) for a refusal already known.  Entries are never
    replaced, so the Dockerfile it would be stays the one; a later member
    changing that would be refused as ambiguous once the Dockerfile is settled.
    """
    name = _clean_name(member.name, "entry")
    if name in rw.entries:
        return  # a duplicate: rw.add refuses it
    rw.entries[name] = _Entry("file", size=member.size)  # as if added, for the resolution
    try:
        found = _find_dockerfile(rw, dockerfile)[0] == name
    except BuildContextError:
        found = False
    finally:
        del rw.entries[name]
    if found:
        raise DockerfileTooLarge(f"the Dockerfile is {member.size} bytes, more than the limit "
                                 f"of {limits.max_dockerfile_bytes} bytes")


def _check_settled(rw: _Rewriter, dockerfile: str, settled: tuple[str, _Entry], name: str) -> None:
    try:
        now = _find_dockerfile(rw, dockerfile)
    except BuildContextError:
        now = None
    if now is None or now[0] != settled[0] or now[1] is not settled[1]:
        raise AmbiguousContext(
            f"the entry {name!r} changes which Dockerfile the build uses after dsfw judged "
            f"{settled[0]!r} and started sending the context; put the Dockerfile's entries "
            "(and its symlinks' targets) before anything that changes its path")


def _context_of(rw: _Rewriter, dst: BinaryIO, path: str, entry: _Entry, compression: str,
                output_bytes: int) -> BuildContext:
    dst.seek(entry.data_offset)
    content = dst.read(entry.size)
    dst.seek(output_bytes)
    return BuildContext(dockerfile_path=path, dockerfile=content, members=len(rw.entries),
                        content_bytes=rw.content_bytes, compression=compression,
                        output_bytes=output_bytes,
                        dockerfile_member=(entry.header_offset,
                                           entry.data_offset + -(-entry.size // _BLOCK) * _BLOCK))


def rewrite_context(src: BinaryIO, dst: BinaryIO, dockerfile: str = "Dockerfile",
                    limits: ContextLimits = ContextLimits(),
                    on_dockerfile: Callable[[BuildContext], BinaryIO] | None = None,
                    bypass: Callable[[int], int] | None = None) -> BuildContext:
    """Read the context from ``src``, write the canonical tar to ``dst``.

    ``dst`` must be readable and seekable as well (``tempfile.TemporaryFile()``
    is): the Dockerfile is read back from what was written.  On error, ``dst``
    holds garbage and must not be forwarded.

    ``on_dockerfile``, when given, is called as soon as the members read so far
    settle which Dockerfile the build uses (usually early: the docker CLI walks
    the context in lexical order), with a :class:`BuildContext` describing the
    prefix in ``dst`` (``output_bytes`` long).  It returns the writer the rest
    of the canonical tar goes to, so only the prefix is spooled.  From then
    on, a member that would change that Dockerfile raises
    :class:`AmbiguousContext`, before the end of the tar is written.  When it
    is never called (no Dockerfile found), everything is in ``dst`` as without
    it.  When it was called, the returned context only sums up the whole
    stream (``dockerfile`` empty: ``on_dockerfile`` had it).

    ``bypass(n)``, when given, sends the next ``n`` bytes of ``src`` to the
    writer ``on_dockerfile`` returned, around this thread, and returns how
    many there were (fewer only at the end of ``src``).  It is used for the
    contents of large files of a plain tar once that writer is in use: they
    need no rewriting, and bytes counted against the limits.
    """
    raw = _Counted(src, limits.max_input_bytes,
                   f"the build context is larger than {limits.max_input_bytes} bytes")
    head = raw.read(16)
    compression = _detect(head)
    prefixed = _Prefixed(head, raw)
    decoded = _Counted(_decompressor(prefixed, compression),
                       limits.max_total_bytes,
                       f"the build context unpacks to more than {limits.max_total_bytes} bytes",
                       errors=_DECODE_ERRORS)
    output = _Output(dst)
    source = TarSource(decoded)
    rw = _Rewriter(source, output, limits)

    def around(size: int) -> int | None:
        if (settled is None or compression != "none" or prefixed.pending
                or not raw.room(size) or not decoded.room(size)):
            return None
        went = bypass(size)
        raw.went_around(went)
        decoded.went_around(went)
        return went

    settled: tuple[str, _Entry] | None = None
    last_data_end = None
    try:
        # Headers are tarfile's, read as from a stream ("r|"); member data is moved by
        # the rewriter (dsfw.build.tario).
        tar = tarfile.TarFile(fileobj=source, mode="r", encoding="utf-8",
                              errors="surrogateescape",
                              tarinfo=_make_bounded_tarinfo(limits.max_header_bytes))
    except tarfile.TarError as exc:
        raise CorruptContext(f"the build context is not a tar archive ({exc})") from None
    while True:
        try:
            member = tar.next()
        except tarfile.TarError as exc:
            if last_data_end is not None and decoded.eof and decoded.count == last_data_end:
                # The stream stops right after the last member's data, with no
                # padding and no end blocks: the docker CLI sends contexts like
                # that (`-f -`), and Go's reader takes it as a clean end.
                member, last_data_end = None, "clean"
            else:
                raise CorruptContext(f"the build context tar is corrupt ({exc})") from None
        except BuildContextError:
            raise
        except (ValueError, OverflowError, UnicodeError) as exc:
            raise CorruptContext(f"the build context tar has an unreadable header ({exc})") from None
        if member is None:
            break
        if (settled is None and on_dockerfile is not None and member.isreg()
                and member.size > limits.max_dockerfile_bytes):
            _refuse_large_dockerfile(rw, dockerfile, member, limits)
        rw.add(tar, member)
        last_data_end = member.offset_data + member.size if member.isreg() else None
        if settled is not None:
            _check_settled(rw, dockerfile, settled, member.name)
        elif on_dockerfile is not None:
            settled = _probe(rw, dockerfile, limits)
            if settled is not None:
                dst.flush()
                output.target = on_dockerfile(_context_of(rw, dst, *settled, compression,
                                                          rw.out.offset))
                if bypass is not None:
                    rw.bypass = around
    if last_data_end != "clean":
        _check_end(tar, decoded)
    if settled is not None:
        rw.out.close()  # the end of the tar goes out only now that nothing can change
        return BuildContext(dockerfile_path=settled[0], dockerfile=b"", members=len(rw.entries),
                            content_bytes=rw.content_bytes, compression=compression,
                            output_bytes=rw.out.offset)
    rw.out.close()
    dst.flush()
    output_bytes = dst.tell()
    path, entry = _find_dockerfile(rw, dockerfile)
    if entry.size > limits.max_dockerfile_bytes:
        raise DockerfileTooLarge(f"the Dockerfile is {entry.size} bytes, more than the limit "
                                 f"of {limits.max_dockerfile_bytes} bytes")
    return _context_of(rw, dst, path, entry, compression, output_bytes)
