"""dsfw on TCP: mutual TLS with Docker's file layout, and who the client certificate names.

Docker's remote API is guarded by client certificates (``dockerd --tlsverify``):
the CA in ``ca.pem`` signs the certificates of everyone allowed in.  dsfw
keeps that model and hands the verified certificate's identity to the policy
(``input.Peer.Tls``), so a policy can let ``ci-runner-7`` build but not run
privileged containers.

The TLS itself is Twisted's (``CertificateOptions`` with a ``trustRoot``, which
makes OpenSSL demand and verify a client certificate during the handshake,
over ``TLSMemoryBIOFactory``).  The one addition is half-close: Docker
clients end stdin of ``docker exec -i`` with a TLS ``close_notify`` (or a TCP
FIN) and keep reading the output; Twisted answers a ``close_notify`` by
closing the whole connection.  ``HalfCloseTLSProtocol`` (in
:mod:`dsfw.edge._twisted`, with dsfw's other reliance on Twisted internals)
holds that answer back while the protocol on top (a hijacked session) is
half-closeable, the same contract Go's ``tls.Conn`` gives dockerd.
"""
from __future__ import annotations

import hashlib
import os

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtensionOID, NameOID
from OpenSSL import SSL
from OpenSSL.crypto import X509, PKey
from twisted.internet import interfaces, ssl
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint

from dsfw.edge._twisted import HalfCloseTLSFactory
from dsfw.edge.hosts import ListenAddress, TlsFiles
from dsfw.edge.listening import ListeningService, listen_now


class TlsSetupError(Exception):
    """The TLS files cannot be used (missing, unreadable, mismatched)."""


def _read(path: str, what: str) -> bytes:
    path = os.path.expanduser(path)
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise TlsSetupError(f"cannot read the {what} {path}: {e.strerror}") from e


def _certificates(path: str, what: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(_read(path, what))
    except ValueError as e:
        raise TlsSetupError(f"{path}: not a PEM {what}: {e}") from e
    return certs


def server_options(files: TlsFiles, verify_clients: bool) -> ssl.CertificateOptions:
    """Twisted TLS options: our certificate, and, when verifying, the CAs clients must chain to."""
    chain = _certificates(files.cert, "certificate (--tlscert)")
    try:
        key = serialization.load_pem_private_key(_read(files.key, "key (--tlskey)"), None)
    except (ValueError, TypeError) as e:
        raise TlsSetupError(f"{files.key}: not an unencrypted PEM private key: {e}") from e
    trust = None
    if verify_clients:
        cas = _certificates(files.ca, "CA certificate (--tlscacert)")
        trust = ssl.trustRootFromCertificates(
            [ssl.Certificate(X509.from_cryptography(c)) for c in cas])
    try:
        options = ssl.CertificateOptions(
            privateKey=PKey.from_cryptography_key(key),
            certificate=X509.from_cryptography(chain[0]),
            extraCertChain=[X509.from_cryptography(c) for c in chain[1:]],
            trustRoot=trust, raiseMinimumTo=ssl.TLSVersion.TLSv1_2)
        options.getContext()  # checks that key and certificate belong together
    except (SSL.Error, ValueError) as e:
        raise TlsSetupError(f"{files.cert} and {files.key} do not make a usable pair: {e}") from e
    return options


class TcpListenerService(ListeningService):
    """Listens on one TCP address while running: TLS with ``options``, or plain if None."""

    def __init__(self, reactor, address: ListenAddress, factory,
                 options: ssl.CertificateOptions | None):
        self._reactor = reactor
        self.address = address
        self._factory = factory
        self._options = options

    def startService(self) -> None:
        endpoint_type = TCP6ServerEndpoint if self.address.is_ipv6 else TCP4ServerEndpoint
        endpoint = endpoint_type(self._reactor, self.address.port, interface=self.address.ip)
        factory = self._factory
        if self._options is not None:
            factory = HalfCloseTLSFactory(self._options, False, factory)
        self._port = listen_now(endpoint, factory)
        super().startService()


def _names(name: x509.Name, oid) -> str | None:
    values = name.get_attributes_for_oid(oid)
    return str(values[0].value) if values else None


def certificate_identity(cert: x509.Certificate) -> dict:
    """What a policy sees of a verified client certificate (``input.Peer.Tls``)."""
    sans: list[str] = []
    try:
        ext = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    except x509.ExtensionNotFound:
        ext = None
    if ext is not None:
        sans += [f"DNS:{v}" for v in ext.get_values_for_type(x509.DNSName)]
        sans += [f"IP:{v}" for v in ext.get_values_for_type(x509.IPAddress)]
        sans += [f"email:{v}" for v in ext.get_values_for_type(x509.RFC822Name)]
        sans += [f"URI:{v}" for v in ext.get_values_for_type(x509.UniformResourceIdentifier)]
    der = cert.public_bytes(serialization.Encoding.DER)
    return {
        "SubjectCN": _names(cert.subject, NameOID.COMMON_NAME),
        "Subject": cert.subject.rfc4514_string(),
        "SANs": sans,
        "Issuer": cert.issuer.rfc4514_string(),
        "IssuerCN": _names(cert.issuer, NameOID.COMMON_NAME),
        "Serial": format(cert.serial_number, "x"),
        "Fingerprint": "sha256:" + hashlib.sha256(der).hexdigest(),
    }


def tls_peer(transport) -> dict | None:
    """``{"Tls": {...}}`` for a TLS transport whose client presented a certificate, else None."""
    if not interfaces.ISSLTransport.providedBy(transport):
        return None
    try:
        peer = transport.getPeerCertificate()
    except Exception:
        return None
    if peer is None:
        return None
    return {"Tls": certificate_identity(peer.to_cryptography())}
