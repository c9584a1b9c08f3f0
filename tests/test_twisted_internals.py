"""Pins what dsfw relies on in Twisted beyond its documented interfaces (dsfw.edge._twisted).

Run against the installed Twisted on a real UNIX socket: if an upgrade
renames or ignores the read-size knob, this fails here, not as a slow relay.
Also pinned, because the edge's lingering close depends on it: a UNIX
server transport can close its sending side and keep reading.  And the
per-request shortcuts: plain ``recv`` reads on a UNIX transport (a passed
descriptor is closed by the kernel, never received), and ``write_now``'s
immediate send, which must keep Twisted's order when bytes are queued. And
``HalfCloseTLSProtocol``'s three overrides of ``TLSMemoryBIOProtocol``'s private
methods, driven by a pyOpenSSL client over memory BIOs (docker exec -i over TLS).
And a reactor started without TLS support (``start_without_tls``), in a fresh process.
And that no other dsfw module touches a Twisted private attribute (an AST scan).
"""
from __future__ import annotations

import array
import os
import shutil
import socket
import subprocess
import sys
import tempfile

from twisted.internet import reactor, tcp, threads
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

import pytest
from OpenSSL import SSL
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.testing import StringTransport
from zope.interface import implementer

import dsfw
from dsfw.edge._twisted import (LARGE_READ, HalfCloseTLSFactory, tune_socket, use_large_reads,
                                use_bulk_writes, write_now)
from dsfw.edge.tls import TlsFiles, server_options
from dsfw.testing.fleet import make_pki


class Recorder(Protocol):
    def __init__(self, large: bool, half_close: bool = False, tune: bool = False):
        self.large = large
        self.tune = tune
        self.half_close = half_close
        self.reads: list[int] = []
        self.lost = Deferred()

    def connectionMade(self):
        if self.large:
            use_large_reads(self.transport)
        if self.tune:
            tune_socket(self.transport)
            self.fds_at_start = _open_fds()
        if self.half_close:
            self.transport.write(b"answer")
            self.transport.loseWriteConnection()

    def dataReceived(self, data):
        self.reads.append(len(data))
        if self.tune:
            self.fds_after_read = _open_fds()

    def connectionLost(self, reason=None):
        self.lost.callback(None)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


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
    def test_plain_reads_keep_the_data_and_never_take_a_passed_descriptor(self):
        # tune_socket swaps Twisted's recvmsg read for its socket transport's recv.
        protocol = Recorder(large=False, tune=True)
        port = reactor.listenUNIX(self.path, Factory.forProtocol(lambda: protocol))
        self.addCleanup(port.stopListening)

        def client() -> None:
            spare = [os.open(os.devnull, os.O_RDONLY) for _ in range(8)]
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.connect(self.path)
                    s.sendmsg([b"GET /_ping HTTP/1.1\r\n\r\n"],
                              [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                array.array("i", spare).tobytes())])
                    s.sendall(bytes(1 << 20))
                    s.shutdown(socket.SHUT_WR)
                    s.settimeout(10)
                    s.recv(1)
            finally:
                for fd in spare:
                    os.close(fd)

        yield threads.deferToThread(client)
        yield protocol.lost
        self.assertEqual(sum(protocol.reads), len(b"GET /_ping HTTP/1.1\r\n\r\n") + (1 << 20))
        self.assertIn(protocol.transport.doRead.__func__, (tcp.Connection.doRead,))
        # The 8 descriptors were not kept: the kernel closed them (Twisted would log and close).
        self.assertEqual(protocol.fds_after_read, protocol.fds_at_start)

    @inlineCallbacks
    def connected(self):
        """(Twisted's transport of a served UNIX connection, the client's plain socket)."""
        server = Deferred()
        port = reactor.listenUNIX(self.path, Factory.forProtocol(
            lambda: _Announce(server)))
        self.addCleanup(port.stopListening)
        peer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(peer.close)
        peer.connect(self.path)
        protocol = yield server
        return protocol.transport, peer

    @inlineCallbacks
    def test_write_now_sends_at_once_and_keeps_order_behind_queued_bytes(self):
        transport, peer = yield self.connected()
        write_now(transport, b"one ")
        # sent by the call itself: nothing queued, no reactor turn needed
        self.assertEqual(transport._tempDataLen, 0)
        peer.settimeout(5)
        self.assertEqual(peer.recv(100), b"one ")
        transport.write(b"two ")  # queued by Twisted until the reactor's next turn
        write_now(transport, b"three ", b"four")  # must queue behind it, not overtake
        self.assertEqual(transport._tempDataLen, len(b"two three four"))
        big = bytes(range(256)) * (1 << 16)  # more than the socket takes: the rest is queued
        got = yield threads.deferToThread(_read_exactly, peer, len(b"two three four"))
        self.assertEqual(got, b"two three four")
        write_now(transport, b"x", big, b"end")
        self.assertGreater(transport._tempDataLen, 0)
        got = yield threads.deferToThread(_read_exactly, peer, 1 + len(big) + 3)
        self.assertEqual(got, b"x" + big + b"end")
        # after an abort nothing more leaves: a cut stream must not end as if complete
        transport.abortConnection()
        write_now(transport, b"0\r\n\r\n")
        got = yield threads.deferToThread(_read_exactly, peer, 1)
        self.assertEqual(got, b"")

    @inlineCallbacks
    def test_bulk_writes_send_a_mebibyte_at_once(self):
        transport, peer = yield self.connected()
        piece = bytes(range(256)) * 4096  # 1 MiB
        write_now(transport, piece)
        self.assertGreater(transport._tempDataLen, 0)  # the default buffer holds less
        got = yield threads.deferToThread(_read_exactly, peer, len(piece))
        self.assertEqual(got, piece)
        use_bulk_writes(transport)
        write_now(transport, piece)
        self.assertEqual(transport._tempDataLen, 0)  # taken in one send
        transport.write(piece + piece)  # queued, then sent in 1 MiB turns
        got = yield threads.deferToThread(_read_exactly, peer, 3 * len(piece))
        self.assertEqual(got, piece * 3)

    @inlineCallbacks
    def test_half_closed_server_keeps_reading(self):
        protocol = Recorder(large=False, half_close=True)
        got = yield self.serve_and_send(protocol, bytes(1 << 20))
        self.assertEqual(got, b"answer")
        self.assertEqual(sum(protocol.reads), 1 << 20)


class _Announce(Protocol):
    def __init__(self, made: Deferred):
        self.made = made

    def connectionMade(self):
        self.made.callback(self)


def _read_exactly(sock, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        data = sock.recv(1 << 20)
        if not data:
            break
        out += data
    return bytes(out)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@implementer(IHalfCloseableProtocol)
class Echoer(Protocol):
    """Collects data; answers only after the client half-closed (like ``cat``)."""

    def __init__(self):
        self.received = b""
        self.events = []

    def dataReceived(self, data):
        self.received += data

    def readConnectionLost(self):
        self.events.append("read closed")
        self.transport.write(b"got " + self.received)
        self.transport.loseConnection()

    def writeConnectionLost(self):
        self.events.append("write closed")

    def connectionLost(self, reason=None):
        self.events.append("lost")


class Plain(Protocol):
    """Not half-closeable: Twisted's usual full close applies."""

    def connectionLost(self, reason=None):
        self.lost = True


def tls_pair(pki, protocol):
    server_opts = server_options(TlsFiles(str(pki.server / "ca.pem"),
                                          str(pki.server / "cert.pem"),
                                          str(pki.server / "key.pem")), True)
    factory = HalfCloseTLSFactory(server_opts, False, Factory.forProtocol(lambda: protocol))
    server = factory.buildProtocol(None)
    wire = StringTransport()
    server.makeConnection(wire)
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    client_dir = pki.clients["alice"].dir
    ctx.use_certificate_file(str(client_dir / "cert.pem"))
    ctx.use_privatekey_file(str(client_dir / "key.pem"))
    ctx.load_verify_locations(str(client_dir / "ca.pem"))
    client = SSL.Connection(ctx, None)
    client.set_connect_state()

    def pump():
        for _ in range(10):
            try:
                out = client.bio_read(1 << 20)
            except SSL.WantReadError:
                out = b""
            if out:
                server.dataReceived(out)
            back = wire.value()
            wire.clear()
            if back:
                client.bio_write(back)
            if not out and not back:
                return
    try:
        client.do_handshake()
    except SSL.WantReadError:
        pass
    pump()
    try:
        client.do_handshake()
    except SSL.WantReadError:
        pass
    pump()
    return server, wire, client, pump


def read_all(client) -> bytes:
    out = b""
    while True:
        try:
            data = client.recv(65536)
        except (SSL.WantReadError, SSL.ZeroReturnError):
            return out
        out += data


def test_close_notify_half_closes_a_half_closeable_protocol(pki):
    echo = Echoer()
    server, wire, client, pump = tls_pair(pki, echo)
    client.send(b"stdin")
    pump()
    assert echo.received == b"stdin"
    client.shutdown()  # close_notify: the client's stdin ended
    pump()
    assert echo.events[:1] == ["read closed"]
    assert read_all(client) == b"got stdin"  # the answer still arrived
    assert client.get_shutdown() & SSL.RECEIVED_SHUTDOWN  # and then our close_notify
    assert wire.disconnecting


def test_close_notify_closes_a_plain_protocol(pki):
    plain = Plain()
    server, wire, client, pump = tls_pair(pki, plain)
    client.shutdown()
    pump()
    assert wire.disconnecting  # Twisted's own behaviour for HTTP


def test_tcp_fin_reaches_a_half_closeable_protocol(pki):
    echo = Echoer()
    server, wire, client, pump = tls_pair(pki, echo)
    client.send(b"x")
    pump()
    assert IHalfCloseableProtocol(server, None) is server
    server.readConnectionLost()  # what the TCP transport calls on a FIN
    assert echo.events[:1] == ["read closed"]
    pump()
    assert read_all(client) == b"got x"
    assert IHalfCloseableProtocol(tls_pair(pki, Plain())[0], None) is None


_WITHOUT_TLS = """
import os, socket, sys, tempfile, threading
from dsfw.edge._twisted import start_without_tls
assert start_without_tls()
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol

class Echo(Protocol):
    def dataReceived(self, data):
        self.transport.write(data)

path = os.path.join(tempfile.mkdtemp(), "s.sock")
reactor.listenUNIX(path, Factory.forProtocol(Echo))
got = []

def client():
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(b"ping")
        got.append(s.recv(4))
    reactor.callFromThread(reactor.stop)

reactor.callWhenRunning(threading.Thread(target=client).start)
reactor.run()
print(got[0].decode(), sorted(m for m in ("OpenSSL", "cryptography", "twisted.internet.ssl")
                              if sys.modules.get(m) is not None))
"""


def test_reactor_runs_without_tls_support():
    # start_without_tls relies on Twisted treating a missing pyOpenSSL as "no TLS"
    # (each of its imports in try/except ImportError) when the reactor loads.
    repo = os.path.dirname(os.path.dirname(os.path.abspath(dsfw.__file__)))
    done = subprocess.run([sys.executable, "-c", _WITHOUT_TLS], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=repo), timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ping", "[]"]


# --- nothing else touches them ------------------------------------------------------------

_TWISTED_MODULES = (
    "twisted.internet.abstract", "twisted.internet.base", "twisted.internet.defer",
    "twisted.internet.epollreactor", "twisted.internet.posixbase", "twisted.internet.protocol",
    "twisted.internet.task", "twisted.internet.tcp", "twisted.internet.unix",
    "twisted.application.service", "twisted.application.internet", "twisted.protocols.policies",
    "twisted.protocols.tls", "twisted.web.client", "twisted.web.http", "twisted.web.http_headers",
    "twisted.web.resource", "twisted.web.server",
)


def _dsfw_modules():
    import ast
    import importlib
    import pathlib
    root = pathlib.Path(dsfw.__file__).parent
    for path in sorted(root.rglob("*.py")):
        if path.name in ("_twisted.py", "__main__.py"):
            continue
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield path, importlib.import_module(name), ast.parse(path.read_text())


def test_only_the_internals_module_touches_twisted_private_attributes():
    """The whole class, not a list: any ``x._name`` where ``_name`` is private to a Twisted
    class (and not a name dsfw gives its own objects), and any private name of a Twisted
    base class used or overridden in a dsfw subclass, outside dsfw.edge._twisted."""
    import ast
    import importlib
    import inspect
    def privates_of(module) -> set[str]:  # defined on its classes or set on their instances
        names = set()
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    targets = (item.targets if isinstance(item, ast.Assign) else
                               [item] if isinstance(item, (ast.FunctionDef, ast.AnnAssign)) else [])
                    names.update(getattr(t, "id", getattr(t, "name", getattr(t, "target", None)))
                                 for t in targets)
            elif (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
                  and isinstance(node.value, ast.Name) and node.value.id == "self"):
                names.add(node.attr)
        return {n for n in names if isinstance(n, str) and n.startswith("_")
                and not n.startswith("__")}
    by_module = {m: privates_of(importlib.import_module(m)) for m in _TWISTED_MODULES}
    private = set().union(*by_module.values())
    modules = list(_dsfw_modules())
    ours = set()  # private names dsfw defines on its own objects
    for _, _, tree in modules:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                ours.add(node.name)
            elif (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
                  and isinstance(node.value, ast.Name) and node.value.id == "self"):
                ours.add(node.attr)
    assert {"_tempDataBuffer", "_logDateTime", "_dataReceived"} <= private  # Twisted's own
    found = []
    for path, module, tree in modules:
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr in private - ours
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
                found.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
        for cls_node in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            cls = getattr(module, cls_node.name, None)
            if not inspect.isclass(cls):
                continue
            inherited = set()
            for base in cls.__mro__[1:]:
                if base.__module__.startswith("twisted"):
                    inherited |= by_module.get(base.__module__) or privates_of(
                        importlib.import_module(base.__module__))
            for node in ast.walk(cls_node):
                name = getattr(node, "attr", None) or getattr(node, "name", None)
                if name in inherited:
                    found.append(f"{path.name}:{node.lineno} {cls_node.name}.{name}")
    assert found == []
