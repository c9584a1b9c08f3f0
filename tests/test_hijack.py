"""The hijack splice over real UNIX sockets and the real reactor.

A fake dockerd answers ``POST /exec/x/start`` with a ``101`` (or attach's
``200`` raw stream), then echoes the stream until the client half-closes,
then says ``bye`` and closes -- what ``docker exec -i`` needs to see its
output after stdin ends.  The client is a blocking socket in a thread, as the
docker CLI is a separate process.
"""
from __future__ import annotations

import os
import shutil
import socket
import tempfile

from twisted.internet import interfaces, reactor, threads, unix
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from dsfw.build.gate import BuildGate
from dsfw.edge.relay import Relay
from dsfw.edge.resource import FirewallResource
from dsfw.edge.upstream import DockerPool
from dsfw.tap import make_site

from tests.test_relay import FakeEngine  # noqa: E402

UPGRADED = (b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\n"
            b"Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
RAW_200 = b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\n"
EXEC_BODY = b'{"Detach":false,"Tty":false}'


@implementer(interfaces.IHalfCloseableProtocol)
class FakeDockerd(Protocol):
    """Reads one request, answers with ``answer`` after ``delay`` s, then echoes."""

    def __init__(self, answer: bytes, delay: float, log: dict):
        self._answer = answer
        self._delay = delay
        self._buf = b""
        self._streaming = False
        self.log = log
        log.setdefault("requests", [])
        log["stream"] = b""
        log["lost"] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        if self._streaming:
            self.log["stream"] += data
            self.transport.write(data)
            return
        self._buf += data
        head, sep, rest = self._buf.partition(b"\r\n\r\n")
        if not sep:
            return
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(rest) < length:
            return
        self.log["requests"].append(head + sep + rest[:length])
        self._buf = rest[length:]
        reactor.callLater(self._delay, self._upgrade)

    def _upgrade(self) -> None:
        self.transport.write(self._answer)
        self._streaming = True
        early, self._buf = self._buf, b""
        if early:
            self.dataReceived(early)

    def readConnectionLost(self) -> None:
        self.log["eof"] = True
        self.transport.write(b"bye")
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason=None) -> None:
        self.log["lost"].callback(None)


def run_client(path: str, request: bytes, early: bytes, later: bytes) -> bytes:
    """Blocking client: request (+ early stream bytes), wait for the head, send more, SHUT_WR."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect(path)
        s.sendall(request + early)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk
        if later:
            s.sendall(later)
        s.shutdown(socket.SHUT_WR)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk
    finally:
        s.close()


def exec_request(upgrade: bool) -> bytes:
    hdrs = b"Connection: Upgrade\r\nUpgrade: tcp\r\n" if upgrade else b""
    return (b"POST /v1.41/exec/x/start HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n"
            + hdrs + b"Content-Length: %d\r\n\r\n" % len(EXEC_BODY) + EXEC_BODY)


class SpliceTests(TestCase):
    timeout = 15

    def setUp(self):
        directory = tempfile.mkdtemp(prefix="dsfw-hijack-")
        self.addCleanup(shutil.rmtree, directory, True)
        self.dockerd_path = os.path.join(directory, "docker.sock")
        self.dsfw_path = os.path.join(directory, "dsfw.sock")
        self.log: dict = {}

    def start(self, answer: bytes, delay: float = 0.0):
        log = self.log
        dockerd = reactor.listenUNIX(self.dockerd_path, Factory.forProtocol(
            lambda: FakeDockerd(answer, delay, log)))
        self.addCleanup(dockerd.stopListening)
        pool = DockerPool(reactor, self.dockerd_path)
        self.addCleanup(pool.close)
        resource = FirewallResource(FakeEngine(), Relay(reactor, pool), BuildGate(reactor, None))
        port = reactor.listenUNIX(self.dsfw_path, make_site(resource, reactor))
        self.addCleanup(port.stopListening)

    @inlineCallbacks
    def settle(self):
        """Wait until every connection (client, dsfw, dockerd sides) is closed."""
        yield self.log["lost"]
        for _ in range(200):
            open_conns = [s for s in reactor.getReaders() + reactor.getWriters()
                          if isinstance(s, (unix.Server, unix.Client))]
            if not open_conns:
                return
            yield deferLater(reactor, 0.01, lambda: None)
        self.fail(f"connections still open: {open_conns}")

    @inlineCallbacks
    def exchange(self, request: bytes, early: bytes, later: bytes):
        out = yield threads.deferToThread(run_client, self.dsfw_path, request, early, later)
        yield self.settle()
        return out

    @inlineCallbacks
    def test_101_half_close_echo_and_bye(self):
        self.start(UPGRADED)
        out = yield self.exchange(exec_request(upgrade=True), b"", b"stdin-bytes")
        self.assertEqual(out, UPGRADED + b"stdin-bytes" + b"bye")
        self.assertTrue(self.log.get("eof"), "dockerd must see the client's half-close")
        self.assertEqual(self.log["stream"], b"stdin-bytes")
        sent = self.log["requests"][0]
        self.assertTrue(sent.startswith(b"POST /v1.41/exec/x/start HTTP/1.1\r\n"))
        self.assertIn(b"\r\nUpgrade: tcp\r\n", sent)

    @inlineCallbacks
    def test_200_raw_stream(self):
        self.start(RAW_200)
        out = yield self.exchange(exec_request(upgrade=False), b"", b"attach-stdin")
        self.assertEqual(out, RAW_200 + b"attach-stdin" + b"bye")
        self.assertNotIn(b"Upgrade", self.log["requests"][0])

    @inlineCallbacks
    def test_early_bytes_delivered_once(self):
        self.start(UPGRADED, delay=0.2)
        out = yield self.exchange(exec_request(upgrade=True), b"early-", b"later")
        self.assertEqual(self.log["stream"], b"early-later")
        self.assertEqual(out, UPGRADED + b"early-later" + b"bye")

    @inlineCallbacks
    def test_large_stream_both_ways(self):
        self.start(UPGRADED)
        payload = os.urandom(1 << 20)
        out = yield self.exchange(exec_request(upgrade=True), b"", payload)
        self.assertEqual(len(out), len(UPGRADED) + len(payload) + 3)
        self.assertEqual(out, UPGRADED + payload + b"bye")

