"""The one place dsfw relies on Twisted beyond its documented interfaces.

dsfw owns its HTTP server protocol (:mod:`dsfw.edge.server`) and its dockerd
client (:mod:`dsfw.edge.upstream`), so twisted.web's private state is never
touched.  What is left: a tuning knob of Twisted's socket transports, and half-close
over TLS, which overrides three private methods of ``TLSMemoryBIOProtocol``.
tests/test_twisted_internals.py pins both against the installed Twisted (a
real socket; a pyOpenSSL client over memory BIOs), so an upgrade that
changes them fails there first.
"""
from __future__ import annotations

from OpenSSL import SSL
from twisted.internet import interfaces
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol

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


class _PeerClosedWrite(Exception):
    """Internal: the client sent ``close_notify`` while a half-closeable protocol is on top."""


class HalfCloseTLSFactory(TLSMemoryBIOFactory):
    protocol = HalfCloseTLSProtocol
    noisy = False
