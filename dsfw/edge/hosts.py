"""What ``--host`` names: a UNIX socket path or a TCP address, in dockerd's ``-H`` spellings.

``unix:///run/x.sock``, a bare ``/run/x.sock``, ``tcp://127.0.0.1:2376``,
``tcp://[::1]:2376`` and ``tcp://:2376`` (every IPv4 interface, as dockerd
reads it).  Only IP literals and ``localhost`` are accepted for TCP: a name
that resolves differently tomorrow is no address to guard a root-equivalent
API with, and deciding "is this loopback?" must not depend on DNS.
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

DEFAULT_TLS_PORT = 2376
DOCKER_CERT_DIR = "~/.docker"


@dataclass(frozen=True)
class TlsFiles:
    """``--tlscacert``, ``--tlscert``, ``--tlskey`` (dockerd's names and defaults).

    Here rather than in :mod:`dsfw.edge.tls` so that reading the options does
    not load pyOpenSSL and cryptography, which only a ``tcp://`` host needs.
    """

    ca: str = os.path.join(DOCKER_CERT_DIR, "ca.pem")
    cert: str = os.path.join(DOCKER_CERT_DIR, "cert.pem")
    key: str = os.path.join(DOCKER_CERT_DIR, "key.pem")


class HostSyntaxError(ValueError):
    """A ``--host`` value dsfw cannot listen on."""


@dataclass(frozen=True)
class ListenAddress:
    """One place dsfw listens: ``kind`` is ``"unix"`` (``path``) or ``"tcp"`` (``ip``, ``port``)."""

    kind: str
    path: str = ""
    ip: str = ""
    port: int = 0

    @property
    def is_loopback(self) -> bool:
        return self.kind == "unix" or ipaddress.ip_address(self.ip).is_loopback

    @property
    def is_ipv6(self) -> bool:
        return self.kind == "tcp" and ipaddress.ip_address(self.ip).version == 6

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix://{self.path}"
        host = f"[{self.ip}]" if self.is_ipv6 else self.ip
        return f"tcp://{host}:{self.port}"


def parse_host(value: str) -> ListenAddress:
    """``--host`` text to a :class:`ListenAddress`; :class:`HostSyntaxError` if it is not one."""
    if not isinstance(value, str) or not value:
        raise HostSyntaxError("--host needs a value")
    scheme, sep, rest = value.partition("://")
    if not sep:
        scheme, rest = "unix", value
    if scheme == "unix":
        if not rest.startswith("/"):
            raise HostSyntaxError(f"--host {value!r}: a UNIX socket needs an absolute path")
        return ListenAddress("unix", path=rest)
    if scheme != "tcp":
        raise HostSyntaxError(f"--host {value!r}: only unix:// and tcp:// are supported")
    if "/" in rest or "@" in rest or "?" in rest or "#" in rest:
        raise HostSyntaxError(f"--host {value!r}: a TCP address is IP:PORT, nothing more")
    if rest.startswith("["):
        host, bracket, port_text = rest[1:].partition("]")
        if not bracket or (port_text and not port_text.startswith(":")):
            raise HostSyntaxError(f"--host {value!r}: unbalanced [ ] around an IPv6 address")
        port_text = port_text[1:]
    else:
        host, _, port_text = rest.rpartition(":") if ":" in rest else (rest, "", "")
        if ":" in host:
            raise HostSyntaxError(f"--host {value!r}: write an IPv6 address in [ ]")
    if host in ("", "0.0.0.0"):
        host = "0.0.0.0"
    elif host == "localhost":
        host = "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise HostSyntaxError(f"--host {value!r}: {host!r} is not an IP address "
                              "(names are not accepted, so what is listened on cannot change)")
    if port_text == "":
        port = DEFAULT_TLS_PORT
    elif port_text.isascii() and port_text.isdigit() and 0 < int(port_text) < 65536:
        port = int(port_text)
    else:
        raise HostSyntaxError(f"--host {value!r}: port must be 1-65535")
    return ListenAddress("tcp", ip=str(ip), port=port)
