"""Connection hijack: after dockerd takes over a connection, splice raw bytes.

``attach``, ``exec start`` and BuildKit's ``/session`` end their HTTP exchange
with ``101 UPGRADED`` (or, for attach without ``Upgrade``, a ``200`` raw
stream) and then carry a bidirectional byte stream.  Only a request that dsfw
parsed, decided and forwarded can get here, and only dockerd's answer opens
the stream, so after the hijack exactly the stream dockerd accepted flows.

dsfw's own server protocol hands the connection over
(:meth:`~dsfw.edge.server.ServerRequest.hijack`) with the bytes the client
already sent after the request (stdin that raced the ``101``); websocket
attach (``GET /containers/{id}/attach/ws``) is spliced the same way.
"""
from __future__ import annotations

from twisted.internet import interfaces
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from dsfw.edge.upstream import DockerConnection, ResponseHead


@implementer(interfaces.IHalfCloseableProtocol)
class ClientSplice(Protocol):
    """The client's side of a hijacked connection, relaying to dockerd.

    Half-close is carried across: when the client closes its write side
    (stdin ended, ``docker exec -i``), dockerd's write side is closed too and
    output keeps flowing back until dockerd closes.
    """

    def __init__(self, upstream: DockerConnection, on_close=None):
        self._upstream = upstream
        self._on_close = on_close
        self._closed = False

    def dataReceived(self, data: bytes) -> None:
        if self._upstream.transport is not None:
            self._upstream.transport.write(data)

    def readConnectionLost(self) -> None:
        up = self._upstream.transport
        if up is not None:
            # With a paused producer registered, Twisted resumes it instead of half-closing
            # once the buffer drains, and dockerd would never see stdin end: nothing more
            # comes from the client, so it stops being the producer first.
            up.unregisterProducer()
            up.loseWriteConnection()

    def writeConnectionLost(self) -> None:
        self._close_upstream()

    def connectionLost(self, reason: Failure = None) -> None:
        self._close_upstream()
        self._finished()

    # Called by DockerConnection once it is spliced.
    def upstream_read_closed(self) -> None:
        """dockerd finished sending: flush to the client, then close it."""
        self._close_client()

    def upstream_lost(self) -> None:
        self._close_client()

    def _close_client(self) -> None:
        # A TLS transport sends its close_notify only once no producer is registered.
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    def _close_upstream(self) -> None:
        up = self._upstream.transport
        if up is not None and not self._closed:
            self._closed = True
            up.loseConnection()

    def _finished(self) -> None:
        cb, self._on_close = self._on_close, None
        if cb is not None:
            cb()


def splice(request, head: ResponseHead, upstream: DockerConnection, upstream_leftover: bytes,
           on_close=None) -> ClientSplice:
    """Join the client connection of ``request`` to the hijacked ``upstream``."""
    client = ClientSplice(upstream, on_close)
    transport, client_leftover = request.hijack(client)
    upstream.splice_peer = client
    transport.write(head.serialize())
    if upstream_leftover:
        transport.write(upstream_leftover)
    # Each side pauses the other when its write buffer fills.
    transport.registerProducer(upstream.transport, True)
    upstream.transport.registerProducer(transport, True)
    if client_leftover:
        upstream.transport.write(client_leftover)
    return client
