"""TLS pieces without a network: host syntax, certificate identity, and half-close over TLS.

:class:`HalfCloseTLSProtocol` overrides three private methods of Twisted's
``TLSMemoryBIOProtocol``; these tests drive it with a pyOpenSSL client over
memory BIOs, so a Twisted change that breaks the override fails here.
"""
from __future__ import annotations

import pytest
from OpenSSL import SSL
from cryptography import x509
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.python import usage
from zope.interface import implementer

from dsfw import tap
from dsfw.edge.hosts import HostSyntaxError, parse_host
from dsfw.edge.tls import (HalfCloseTLSFactory, TlsFiles, TlsSetupError, certificate_identity,
                           server_options)
from fleet_support import make_pki


@pytest.mark.parametrize("text, expected", [
    ("/run/d.sock", "unix:///run/d.sock"),
    ("unix:///run/d.sock", "unix:///run/d.sock"),
    ("tcp://127.0.0.1:2376", "tcp://127.0.0.1:2376"),
    ("tcp://localhost:12", "tcp://127.0.0.1:12"),
    ("tcp://:2376", "tcp://0.0.0.0:2376"),
    ("tcp://10.1.2.3", "tcp://10.1.2.3:2376"),
    ("tcp://[::1]:2376", "tcp://[::1]:2376"),
])
def test_host_spellings(text, expected):
    assert str(parse_host(text)) == expected


@pytest.mark.parametrize("text", ["", "relative.sock", "unix://rel", "http://1.2.3.4:1",
                                  "tcp://docker.example:2376", "tcp://1.2.3.4:0",
                                  "tcp://1.2.3.4:99999", "tcp://1.2.3.4:x", "tcp://::1:2376",
                                  "tcp://[::1", "tcp://1.2.3.4:5/path", "tcp://u@1.2.3.4:5"])
def test_bad_hosts(text):
    with pytest.raises(HostSyntaxError):
        parse_host(text)


def test_loopback():
    assert parse_host("tcp://127.0.0.2:1").is_loopback
    assert parse_host("tcp://[::1]:1").is_loopback
    assert not parse_host("tcp://0.0.0.0:1").is_loopback
    assert not parse_host("tcp://192.168.1.1:1").is_loopback


def parse(argv):
    options = tap.Options()
    options.parseOptions(argv)
    return options


def test_host_repeats_like_dockerd_H():
    o = parse(["--host", "/tmp/a.sock", "-H", "tcp://127.0.0.1:2376", "--tlsverify"])
    assert o["host"] == ["/tmp/a.sock", "tcp://127.0.0.1:2376"]
    assert [a.kind for a in o.listen_addresses()] == ["unix", "tcp"]
    assert parse([])["host"] == ["/var/run/protected-docker.sock"]


def test_host_list_in_config(tmp_path):
    path = tmp_path / "dsfw.yaml"
    path.write_text("host: [/tmp/b.sock, 'tcp://127.0.0.1:1']\ntlsverify: true\n")
    assert parse(["-c", str(path)])["host"] == ["/tmp/b.sock", "tcp://127.0.0.1:1"]
    assert parse(["-c", str(path), "-H", "/tmp/c.sock"])["host"] == ["/tmp/c.sock"]


@pytest.mark.parametrize("argv", [
    ["-H", "tcp://0.0.0.0:2375"],
    ["-H", "tcp://0.0.0.0:2375", "--tls-insecure-loopback"],
    ["-H", "tcp://10.0.0.1:2376", "--tls", "--tls-insecure-loopback"],
    ["-H", "tcp://127.0.0.1:2375"],  # loopback, but the operator did not say so
    ["-H", "tcp://127.0.0.1:2375", "--tls"],
    ["-H", "tcp://nothost:2375", "--tlsverify"],
])
def test_tcp_without_client_verification_refused(argv):
    with pytest.raises(usage.UsageError):
        parse(argv)


def test_insecure_loopback_only_when_asked():
    o = parse(["-H", "tcp://127.0.0.1:2375", "--tls-insecure-loopback"])
    assert o["host"] == ["tcp://127.0.0.1:2375"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_certificate_identity(pki):
    cert = x509.load_pem_x509_certificate((pki.clients["alice"].dir / "cert.pem").read_bytes())
    ident = certificate_identity(cert)
    assert ident["SubjectCN"] == "alice"
    assert ident["Subject"] == "CN=alice"
    assert ident["SANs"] == ["DNS:alice.example"]
    assert ident["Issuer"] == "CN=dsfw test CA" and ident["IssuerCN"] == "dsfw test CA"
    assert ident["Fingerprint"].startswith("sha256:") and len(ident["Fingerprint"]) == 71


def test_missing_and_mismatched_files(pki, tmp_path):
    s = pki.server
    with pytest.raises(TlsSetupError, match="cannot read"):
        server_options(TlsFiles(str(s / "ca.pem"), str(tmp_path / "none.pem"),
                                str(s / "key.pem")), True)
    with pytest.raises(TlsSetupError, match="usable pair"):
        server_options(TlsFiles(str(s / "ca.pem"), str(s / "cert.pem"),
                                str(pki.clients["alice"].dir / "key.pem")), True)


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
