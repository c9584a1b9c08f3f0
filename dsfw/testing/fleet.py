"""Helpers for the fleet tests: certificates made on the spot, free loopback ports, TLS clients.

:func:`make_pki` writes a CA, a server certificate for ``IP:127.0.0.1`` and
client certificates into a directory laid out as Docker expects
(``DOCKER_CERT_PATH``: ``ca.pem``, ``cert.pem``, ``key.pem``), plus a second
CA with a client of its own, which dsfw must refuse.
"""
from __future__ import annotations

import base64
import datetime
import io
import ipaddress
import json
import os
import socket
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dsfw.policy.bundle import file_hash


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


# --- OPA bundles ------------------------------------------------------------------------------

def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def sign_files(files: dict[str, bytes], key, keyid: str = "dsfw-test",
               tamper: bool = False) -> bytes:
    """A ``.signatures.json`` for ``files`` as ``opa sign`` writes it (one RS256/ES256 JWT)."""
    alg = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"

    payload = {"files": [{"name": name, "hash": file_hash(name, raw, "SHA-256"),
                          "algorithm": "SHA-256"} for name, raw in sorted(files.items())],
               "keyid": keyid}
    signing_input = (_b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode()) + "." +
                     _b64url(json.dumps(payload).encode())).encode()
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    else:
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    if tamper:
        signature = bytes([signature[0] ^ 1]) + signature[1:]
    token = signing_input.decode() + "." + _b64url(signature)
    return json.dumps({"signatures": [token]}).encode()


def make_bundle(files: dict[str, str | bytes], revision: str | None = None,
                roots: list[str] | None = None, sign_with=None, tamper: bool = False,
                extra: dict[str, bytes] | None = None) -> bytes:
    """A bundle ``.tar.gz``; ``sign_with`` a private key adds ``.signatures.json``.

    ``extra`` files are added after signing (so a signature does not cover them).
    """
    raw = {name: text.encode() if isinstance(text, str) else text for name, text in files.items()}
    if revision is not None or roots is not None:
        manifest = {"revision": revision or ""}
        if roots is not None:
            manifest["roots"] = roots
        raw[".manifest"] = json.dumps(manifest, indent=1).encode()
    if sign_with is not None:
        raw[".signatures.json"] = sign_files(raw, sign_with, tamper=tamper)
    raw.update(extra or {})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in raw.items():
            info = tarfile.TarInfo("/" + name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def public_pem(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


class BundleServer:
    """A plain HTTP server on 127.0.0.1 serving one bundle with an ETag; counts what it answers.

    ``set(data)`` replaces the bundle (new ETag); ``counts`` has ``200``, ``304`` and ``requests``.
    """

    def __init__(self) -> None:
        import hashlib
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        server = self
        self._lock = threading.Lock()
        self._data = b""
        self._etag = '""'
        self.counts = {"requests": 0, 200: 0, 304: 0}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                with server._lock:
                    data, etag = server._data, server._etag
                    server.counts["requests"] += 1
                    not_modified = self.headers.get("If-None-Match") == etag
                    server.counts[304 if not_modified else 200] += 1
                if not_modified:
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("ETag", etag)
                self.send_header("Content-Type", "application/gzip")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self._hash = hashlib.sha256
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/bundles/dsfw.tar.gz"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def set(self, data: bytes) -> None:
        with self._lock:
            self._data = data
            self._etag = '"%s"' % self._hash(data).hexdigest()[:16]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class Collector:
    """A decision-log collector on 127.0.0.1: gunzips each POSTed JSON array, keeps the events.

    ``hang=True`` accepts uploads and never answers (a stuck collector).
    """

    def __init__(self, hang: bool = False) -> None:
        import gzip
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        collector = self
        self.events: list[dict] = []
        self.uploads: list[dict] = []  # the headers of each upload
        self._stop = threading.Event()
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if hang:
                    collector._stop.wait(60)
                    return
                events = json.loads(gzip.decompress(body))
                with collector._lock:
                    collector.uploads.append(dict(self.headers))
                    collector.events.extend(events)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/logs"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
