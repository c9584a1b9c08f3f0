"""peer_identity on real UNIX sockets, and through a real Twisted UNIX server."""
from __future__ import annotations

import os
import pwd
import socket

from twisted.internet import protocol, reactor
from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from dsfw.edge.peer import credentials_of, peer_identity


def test_socketpair_reports_this_process():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        creds = credentials_of(a)
    assert creds["Uid"] == os.getuid() and creds["Gid"] == os.getgid()
    assert creds["Pid"] == os.getpid()
    try:
        expected = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        expected = None
    assert creds["User"] == expected


def test_not_a_unix_socket_is_unknown():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        assert credentials_of(s) is None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        assert credentials_of(s) is None  # not connected
    assert peer_identity(StringTransport()) is None
    assert peer_identity(object()) is None


class PeerIdentityOverTwisted(TestCase):
    def test_server_side_transport_of_a_unix_listener(self):
        seen: Deferred = Deferred()

        class Grab(protocol.Protocol):
            def connectionMade(self):
                seen.callback(peer_identity(self.transport))
                self.transport.loseConnection()

        path = self.mktemp()
        port = reactor.listenUNIX(path, protocol.Factory.forProtocol(Grab))
        self.addCleanup(port.stopListening)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(client.close)
        client.connect(path)

        def check(creds):
            self.assertEqual((creds["Uid"], creds["Gid"], creds["Pid"]),
                             (os.getuid(), os.getgid(), os.getpid()))
        return seen.addCallback(check)


def test_connection_opened_keeps_and_logs_the_peer_once():
    from structlog.testing import capture_logs

    from dsfw.edge.peer import connection_identified, connection_opened

    class Channel:
        def __init__(self, transport):
            self.transport = transport

    class Handle:  # a Twisted UNIX transport's getHandle()
        def __init__(self, sock):
            self.getHandle = lambda: sock

    ours, theirs = socket.socketpair(socket.AF_UNIX)
    with ours, theirs:
        unix, other = Channel(Handle(ours)), Channel(StringTransport())
        with capture_logs() as logs:
            connection_opened(unix)
            connection_opened(other)  # not a UNIX socket: identified later (TLS) or unknown
            connection_identified(other, None)
    assert unix.dsfw_peer["Uid"] == os.getuid() and unix.dsfw_peer["Pid"] == os.getpid()
    assert not hasattr(other, "dsfw_peer") and other.dsfw_conn == unix.dsfw_conn + 1
    assert [(e["event"], e["conn"], e.get("uid"), e.get("pid"), e.get("peer")) for e in logs] == [
        ("connection.opened", unix.dsfw_conn, os.getuid(), os.getpid(), None),
        ("connection.opened", other.dsfw_conn, None, None, "unknown")]
