"""TLS pieces without a network: host syntax, certificate identity, TLS files.

Half-close over TLS relies on Twisted internals: tests/test_twisted_internals.py pins it.
"""
from __future__ import annotations

import pytest
from cryptography import x509
from twisted.python import usage

from dsfw import tap
from dsfw.edge.hosts import HostSyntaxError, parse_host
from dsfw.edge.tls import (TlsFiles, TlsSetupError, certificate_identity,
                           server_options)
from dsfw.testing.fleet import make_pki


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
                                  "tcp://[::1", "tcp://1.2.3.4:5/path", "tcp://u@1.2.3.4:5",
                                  "tcp://1.2.3.4:\u00b2", "tcp://1.2.3.4:\u0663"])
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
