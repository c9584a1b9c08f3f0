"""The one place dsfw relies on Twisted beyond its documented interfaces.

dsfw owns its HTTP server protocol (:mod:`dsfw.edge.server`) and its dockerd
client (:mod:`dsfw.edge.upstream`), so twisted.web's private state is never
touched.  What is left: tuning of Twisted's socket transports (read size,
send size, plain reads on UNIX sockets, writes sent at once when nothing is queued),
half-close over TLS, which overrides three private methods of
``TLSMemoryBIOProtocol``, and starting the reactor without TLS support when
nothing will use it.  tests/test_twisted_internals.py pins them against
the installed Twisted (real sockets; a pyOpenSSL client over memory BIOs; a
reactor in a fresh process), so an upgrade that changes them fails there first.
"""
from __future__ import annotations

import functools
import socket
import sys
from types import MethodType

from twisted.internet import interfaces

LARGE_READ = 1 << 17


def use_large_reads(transport) -> None:
    """Read (and buffer writes) up to 128 kB at a time on this transport.

    Twisted reads 64 kB per wake-up (``FileDescriptor.bufferSize``, an
    undocumented class attribute that ``doRead`` passes to ``recv``); build
    contexts, archives and image tarballs cross dsfw in hundreds of
    megabytes, and the per-read cost was a large share of their relay time.
    Not more: the UNIX transport allocates the whole buffer for every
    ``recvmsg``, and above 128 kB that allocation is an mmap/munmap pair that
    every small request pays for.
    """
    if hasattr(transport, "bufferSize"):
        transport.bufferSize = LARGE_READ


BULK_WRITE = 1 << 20


def use_bulk_writes(transport) -> None:
    """Send up to 1 MiB at a time on this transport, into a kernel buffer that holds it.

    For a streamed request body to dockerd (a build context, an archive, an
    image tarball).  Twisted sends at most 128 kB per writable turn
    (``SEND_LIMIT``, an undocumented class attribute ``writeSomeData`` slices
    by) and a UNIX socket holds about 208 kB by default (``SO_SNDBUF``); with
    both at 1 MiB a body crosses in fewer sends and reactor turns.  The kernel
    memory is used only while bytes wait for dockerd.
    """
    if isinstance(transport, _tcp().Connection):
        try:
            transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BULK_WRITE)
        except OSError:
            return
        transport.SEND_LIMIT = BULK_WRITE


def tune_socket(transport) -> None:
    """Large reads (:func:`use_large_reads`), and ``recv`` rather than ``recvmsg`` on UNIX sockets.

    Twisted's UNIX transports read with ``recvmsg`` and a 4 kB ancillary
    buffer on every wake-up, to receive passed file descriptors.  dsfw never
    takes descriptors from a client or from dockerd (Twisted closed them and
    logged), so its connections read with the plain ``recv`` of Twisted's
    socket transport: the kernel then discards any ``SCM_RIGHTS`` a peer
    sends and closes those descriptors itself (unix(7)).
    """
    use_large_reads(transport)
    connection = _tcp().Connection
    if isinstance(transport, connection) and type(transport).doRead is not connection.doRead:
        transport.doRead = MethodType(connection.doRead, transport)


@functools.cache
def _tcp():
    """``twisted.internet.tcp``, imported when first needed (a connection exists by then).

    Importing it loads pyOpenSSL when it can, so nothing imported before
    ``makeService`` may: :func:`start_without_tls` must come first.
    """
    from twisted.internet import tcp
    return tcp


def write_now(transport, *pieces: bytes) -> None:
    """``transport.write`` of ``pieces`` in order, but sent at once when nothing is queued before them.

    ``transport.write`` only queues: the bytes go out on the reactor's next
    turn, after an ``epoll_ctl`` to watch for writability and before another
    to stop.  An answer sent straight away saves that round and a reactor
    dispatch per write; several pieces (a chunk's size line, its data, its
    end) go in one ``sendmsg`` without being copied together.  What the
    socket does not take now (or an error) goes through ``transport.write``,
    so order, backpressure and connection loss are handled by Twisted as
    before.  Other transports (TLS, in-memory ones in tests) simply queue;
    an aborted connection gets nothing more (a cut answer must stay cut).
    """
    if (isinstance(transport, _tcp().Connection) and transport.connected
            and not transport.disconnecting and not transport._aborting
            and not transport._writeDisconnecting
            and not transport._tempDataLen and len(transport.dataBuffer) == transport.offset
            and not getattr(transport, "_sendmsgQueue", None)):
        one = len(pieces) == 1
        try:
            sent = transport.socket.send(pieces[0]) if one else transport.socket.sendmsg(pieces)
        except OSError:  # would block, or an error the transport meets on its own write
            sent = 0
        if sent == (len(pieces[0]) if one else sum(map(len, pieces))):
            return
        if one:
            transport.write(pieces[0][sent:])
            return
        for i, piece in enumerate(pieces):  # the rest, without joining what was sent
            if sent < len(piece):
                transport.writeSequence([piece[sent:] if sent else piece, *pieces[i + 1:]])
                return
            sent -= len(piece)
    elif len(pieces) == 1:
        transport.write(pieces[0])
    else:
        transport.writeSequence(pieces)


def start_without_tls() -> bool:
    """Have the reactor, imported next, start without TLS support; True if it will.

    Twisted's reactor loads its TLS support (pyOpenSSL, cryptography,
    service_identity: about 12 MB resident) whenever pyOpenSSL is importable,
    and runs without it where it is not installed: every such import is in a
    ``try ... except ImportError``.  A ``None`` in ``sys.modules`` makes the
    import fail the same way (the import system's documented meaning of None).
    For a daemon that will never speak TLS, so only before the reactor (or
    anything else) has loaded pyOpenSSL.
    """
    if "twisted.internet.reactor" in sys.modules or "OpenSSL" in sys.modules:
        return False
    sys.modules["OpenSSL"] = None
    return True


class _PeerClosedWrite(Exception):
    """Internal: the client sent ``close_notify`` while a half-closeable protocol is on top."""


def __getattr__(name: str):
    """``HalfCloseTLSProtocol`` and ``HalfCloseTLSFactory``, defined when first asked for.

    They subclass Twisted's TLS protocol, whose import loads pyOpenSSL and
    cryptography (docs/benchmarks.md, "Memory at rest"); a daemon with no TLS
    listener never asks, and :func:`dsfw.tap.makeService` then starts the
    reactor without them.
    """
    if name in ("HalfCloseTLSProtocol", "HalfCloseTLSFactory"):
        return _tls_classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _tls_classes() -> dict[str, type]:
    from OpenSSL import SSL
    from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol

    class HalfCloseTLSProtocol(TLSMemoryBIOProtocol):
        """``TLSMemoryBIOProtocol`` that carries a client's half-close to a half-closeable protocol.

        A ``close_notify`` (or a bare TCP FIN) from the client becomes
        ``readConnectionLost`` on the protocol above while it provides
        ``IHalfCloseableProtocol``; our own ``close_notify`` is sent when that
        protocol closes the connection.  HTTP (twisted.web) is not half-closeable
        and keeps Twisted's behaviour.
        """

        _read_closed = False

        def __conform__(self, interface):
            # The TCP transport asks "are you half-closeable?" on a FIN; we are while the
            # protocol on top is (a spliced attach/exec), not while twisted.web serves HTTP.
            if (interface is interfaces.IHalfCloseableProtocol and self.wrappedProtocol is not None
                    and interfaces.IHalfCloseableProtocol.providedBy(self.wrappedProtocol)):
                return self
            return None

        def _half_closing(self) -> bool:
            return (not self.disconnecting and not self._read_closed
                    and interfaces.IHalfCloseableProtocol.providedBy(self.wrappedProtocol)
                    and bool(self._tlsConnection.get_shutdown() & SSL.RECEIVED_SHUTDOWN))

        def _flushReceiveBIO(self) -> None:
            if self._read_closed:
                self._flushSendBIO()
                return
            try:
                super()._flushReceiveBIO()
            except _PeerClosedWrite:
                self.readConnectionLost()

        def _shutdownTLS(self) -> None:
            if self._half_closing():
                return  # the client closed its side; ours closes when the session ends
            super()._shutdownTLS()

        def _tlsShutdownFinished(self, reason) -> None:
            if reason is None and self._half_closing():
                raise _PeerClosedWrite()  # leaves the receive loop without tearing down
            super()._tlsShutdownFinished(reason)

        # IHalfCloseableProtocol, on behalf of the protocol on top
        def readConnectionLost(self) -> None:
            if self._read_closed:
                return
            self._read_closed = True
            self._flushSendBIO()
            self.wrappedProtocol.readConnectionLost()

        def writeConnectionLost(self) -> None:
            self.wrappedProtocol.writeConnectionLost()

    class HalfCloseTLSFactory(TLSMemoryBIOFactory):
        protocol = HalfCloseTLSProtocol
        noisy = False

    return {"HalfCloseTLSProtocol": HalfCloseTLSProtocol,
            "HalfCloseTLSFactory": HalfCloseTLSFactory}
