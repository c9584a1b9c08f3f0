"""Who is on the other end of dsfw's UNIX socket, as the kernel reports it.

Access to the Docker socket is root-equivalent, so a policy may want to let
``ci`` build but only ``ops`` run privileged containers.  ``SO_PEERCRED``
gives the uid, gid and pid of the process that connected, vouched for by the
kernel rather than claimed by the client; names are looked up for policies
that prefer them.
"""
from __future__ import annotations

import grp
import pwd
import socket
import struct
from typing import Any

from dsfw.edge.tls import tls_peer

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
    tls = tls_peer(transport)
    if tls is not None:
        return tls
    get_handle = getattr(transport, "getHandle", None)
    if get_handle is None:
        return None
    try:
        sock = get_handle()
    except Exception:
        return None
    if not isinstance(sock, socket.socket):
        return None
    return credentials_of(sock)


def peer_log_fields(peer: dict[str, Any]) -> dict[str, Any]:
    """The few fields of a peer worth a place on every log line."""
    tls = peer.get("Tls")
    if tls is not None:
        return {"peer_cn": tls.get("SubjectCN"), "peer_cert": tls.get("Fingerprint", "")[:19]}
    return {"peer_uid": peer.get("Uid"), "peer_user": peer.get("User")}
