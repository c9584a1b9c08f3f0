"""Who connected to dsfw's UNIX socket, as the kernel reports it.

Access to the Docker socket is root-equivalent, so a policy may want to let
``ci`` build but only ``ops`` run privileged containers.  ``SO_PEERCRED``
gives the uid, gid and pid of the process that called ``connect()``, recorded
by the kernel at that moment rather than claimed by the client; names are
looked up for policies that prefer them.

That is all it proves.  Whoever holds the connection later -- a child it
was passed to (``SCM_RIGHTS``, fork), or the users behind a relay such as
socat or a sidecar -- sends requests that are decided as the process that
connected (docs/input.md, *Who is Peer*).  So the peer is logged once per
connection (``connection.opened``), with a connection number that every
request line of that connection carries, and an auditor can tell.
"""
from __future__ import annotations

import grp
import itertools
import pwd
import socket
import struct
from typing import Any

import structlog
from twisted.internet.interfaces import ISSLTransport

log = structlog.get_logger("dsfw")
_connections = itertools.count(1)
_UCRED = struct.Struct("3i")  # struct ucred {pid_t pid; uid_t uid; gid_t gid;}


def _name(lookup: Any, ident: int) -> str | None:
    try:
        return lookup(ident)[0]
    except (KeyError, OverflowError):
        return None


def credentials_of(sock: socket.socket) -> dict[str, Any] | None:
    """``{"Uid", "Gid", "Pid", "User", "Group"}`` for a connected UNIX socket, or None."""
    if getattr(sock, "family", None) != socket.AF_UNIX or not hasattr(socket, "SO_PEERCRED"):
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except OSError:
        return None
    pid, uid, gid = _UCRED.unpack(raw)
    if pid == 0 and uid == -1:
        return None  # not connected (the kernel reports "nobody" then)
    return {"Uid": uid, "Gid": gid, "Pid": pid,
            "User": _name(pwd.getpwuid, uid), "Group": _name(grp.getgrgid, gid)}


def peer_identity(transport: Any) -> dict[str, Any] | None:
    """Who is on the other end of a Twisted transport, or None.

    ``SO_PEERCRED`` fields for a UNIX socket; ``{"Tls": {...}}`` (the verified
    client certificate, see :mod:`dsfw.edge.tls`) for a TLS connection; None
    for anything else (plain loopback TCP, in-memory test transports), so
    policies can tell "unknown" from any real identity.
    """
    if ISSLTransport.providedBy(transport):
        # Only a TLS listener makes such transports; it loaded dsfw.edge.tls (and
        # pyOpenSSL) already, which a UNIX-only daemon never does.
        from dsfw.edge.tls import tls_peer
        tls = tls_peer(transport)
        if tls is not None:
            return tls
    sock = _socket_of(transport)
    return None if sock is None else credentials_of(sock)


def _socket_of(transport: Any) -> socket.socket | None:
    get_handle = getattr(transport, "getHandle", None)
    if get_handle is None:
        return None
    try:
        sock = get_handle()
    except Exception:
        return None
    return sock if isinstance(sock, socket.socket) else None


def peer_log_fields(peer: dict[str, Any]) -> dict[str, Any]:
    """The few fields of a peer worth a place on every log line."""
    tls = peer.get("Tls")
    if tls is not None:
        return {"peer_cn": tls.get("SubjectCN"), "peer_cert": tls.get("Fingerprint", "")[:19]}
    return {"peer_uid": peer.get("Uid"), "peer_user": peer.get("User")}


def connection_opened(channel: Any) -> None:
    """Number a new connection and, on a UNIX socket, read and log its peer at once.

    ``channel.dsfw_peer`` is what every request on the connection is decided
    as; ``channel.dsfw_conn`` numbers the connection in the log lines.  A TLS
    client is known only after the handshake: :func:`connection_identified`
    logs it when the first request reads it.
    """
    channel.dsfw_conn = next(_connections)
    sock = _socket_of(channel.transport)
    if sock is not None and sock.family == socket.AF_UNIX:
        channel.dsfw_peer = credentials_of(sock)
        connection_identified(channel, channel.dsfw_peer)


def connection_identified(channel: Any, peer: dict[str, Any] | None) -> None:
    """The ``connection.opened`` line: who connected, once per connection."""
    fields = {"conn": getattr(channel, "dsfw_conn", None)}
    if peer is None:
        fields["peer"] = "unknown"
    elif "Tls" in peer:
        fields.update(peer_log_fields(peer))
    else:
        fields.update(uid=peer.get("Uid"), gid=peer.get("Gid"), pid=peer.get("Pid"),
                      user=peer.get("User"), group=peer.get("Group"))
    log.info("connection.opened", **fields)
