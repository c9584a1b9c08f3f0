"""Helpers for the fleet tests: certificates made on the spot, free loopback ports, TLS clients.

:func:`make_pki` writes a CA, a server certificate for ``IP:127.0.0.1`` and
client certificates into a directory laid out as Docker expects
(``DOCKER_CERT_PATH``: ``ca.pem``, ``cert.pem``, ``key.pem``), plus a second
CA with a client of its own, which dsfw must refuse.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(subject_cn: str, key, issuer_name, issuer_key, *, ca: bool = False,
          usage=None, sans=()) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
               .issuer_name(issuer_name or x509.Name(
                   [x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass
class Client:
    """A client's certificate directory (``DOCKER_CERT_PATH``) and its subject CN."""

    cn: str
    dir: Path

    def env(self, port: int) -> dict[str, str]:
        env = dict(os.environ, DOCKER_HOST=f"tcp://127.0.0.1:{port}", DOCKER_TLS_VERIFY="1",
                   DOCKER_CERT_PATH=str(self.dir), DOCKER_BUILDKIT="0")
        env.pop("DOCKER_CONTEXT", None)
        return env


@dataclass
class Pki:
    """``server`` holds ``ca.pem``/``cert.pem``/``key.pem`` for dsfw; clients by CN."""

    server: Path
    clients: dict[str, Client]


def make_pki(root: Path, client_cns=("alice", "bob"), foreign_cn: str = "mallory") -> Pki:
    """A CA, a server certificate (SAN IP:127.0.0.1), clients; ``foreign_cn`` from another CA."""
    ca_key, other_key = _key(), _key()
    ca = _cert("dsfw test CA", ca_key, None, ca_key, ca=True)
    other_ca = _cert("someone else's CA", other_key, None, other_key, ca=True)

    def write(directory: Path, cert, key, ca_cert) -> Path:
        directory.mkdir(parents=True)
        (directory / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (directory / "key.pem").write_bytes(_pem_key(key))
        return directory

    server_key = _key()
    server = write(root / "server", _cert(
        "dsfw", server_key, ca.subject, ca_key, usage=ExtendedKeyUsageOID.SERVER_AUTH,
        sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
        server_key, ca)
    clients = {}
    for cn in client_cns:
        key = _key()
        clients[cn] = Client(cn, write(root / cn, _cert(
            cn, key, ca.subject, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH,
            sans=[x509.DNSName(f"{cn}.example")]), key, ca))
    key = _key()
    # The foreign client trusts dsfw's CA (so its side of the handshake succeeds)
    # but presents a certificate dsfw's CA never signed.
    clients[foreign_cn] = Client(foreign_cn, write(root / foreign_cn, _cert(
        foreign_cn, key, other_ca.subject, other_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH),
        key, ca))
    return Pki(server, clients)


def tls_args(pki: Pki, port: int) -> list[str]:
    """dsfw's arguments for a mutual-TLS listener on 127.0.0.1:``port``."""
    return ["--host", f"tcp://127.0.0.1:{port}", "--tlsverify",
            "--tlscacert", str(pki.server / "ca.pem"), "--tlscert", str(pki.server / "cert.pem"),
            "--tlskey", str(pki.server / "key.pem")]


def docker_tls(client: Client, port: int, *args: str, input: bytes | str | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess:
    """The real docker CLI over mutual TLS as ``client``; text output, never raises on rc."""
    if isinstance(input, str):
        input = input.encode()
    try:
        proc = subprocess.run(["docker", *args], input=input, capture_output=True,
                              env=client.env(port), timeout=timeout,
                              stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"docker {' '.join(args)} over TLS hung for {timeout} s; "
                             f"output so far: {e.stdout!r} {e.stderr!r}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode,
                                       proc.stdout.decode("utf-8", "replace"),
                                       proc.stderr.decode("utf-8", "replace"))
