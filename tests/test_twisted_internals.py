"""Pins what dsfw relies on in Twisted beyond its documented interfaces (dsfw.edge._twisted).

Run against the installed Twisted on a real UNIX socket: if an upgrade
renames or ignores the read-size knob, this fails here, not as a slow relay.
Also pinned, because the edge's lingering close depends on it: a UNIX
server transport can close its sending side and keep reading.
"""
from __future__ import annotations

import os
import shutil
import socket
import tempfile

from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from dsfw.edge._twisted import LARGE_READ, use_large_reads


class Recorder(Protocol):
    def __init__(self, large: bool, half_close: bool = False):
        self.large = large
        self.half_close = half_close
        self.reads: list[int] = []
        self.lost = Deferred()

    def connectionMade(self):
        if self.large:
            use_large_reads(self.transport)
        if self.half_close:
            self.transport.write(b"answer")
            self.transport.loseWriteConnection()

    def dataReceived(self, data):
        self.reads.append(len(data))

    def connectionLost(self, reason=None):
        self.lost.callback(None)


class LargeReadsTests(TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="dsfw-internals-")
        self.addCleanup(shutil.rmtree, self.dir)
        self.path = os.path.join(self.dir, "s.sock")

    @inlineCallbacks
    def serve_and_send(self, protocol: Recorder, payload: bytes):
        port = reactor.listenUNIX(self.path, Factory.forProtocol(lambda: protocol))
        self.addCleanup(port.stopListening)

        def client() -> bytes:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(self.path)
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
                got = b""
                s.settimeout(10)
                while True:
                    data = s.recv(65536)
                    if not data:
                        return got
                    got += data

        got = yield threads.deferToThread(client)
        yield protocol.lost
        return got

    @inlineCallbacks
    def test_reads_are_up_to_128_kB(self):
        # Large enough that the kernel holds more than 64 kB when the reactor reads.
        protocol = Recorder(large=True)
        yield self.serve_and_send(protocol, bytes(8 << 20))
        self.assertEqual(sum(protocol.reads), 8 << 20)
        self.assertLessEqual(max(protocol.reads), LARGE_READ)
        self.assertGreater(max(protocol.reads), 1 << 16,
                           "Twisted no longer reads bufferSize bytes per recv")

    @inlineCallbacks
    def test_default_reads_are_64_kB(self):
        protocol = Recorder(large=False)
        yield self.serve_and_send(protocol, bytes(8 << 20))
        self.assertLessEqual(max(protocol.reads), 1 << 16)

    @inlineCallbacks
    def test_half_closed_server_keeps_reading(self):
        protocol = Recorder(large=False, half_close=True)
        got = yield self.serve_and_send(protocol, bytes(1 << 20))
        self.assertEqual(got, b"answer")
        self.assertEqual(sum(protocol.reads), 1 << 20)
