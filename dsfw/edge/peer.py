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
    """The peer credentials of a Twisted UNIX-socket transport, or None.

    None for anything that is not a UNIX socket (TCP, in-memory test
    transports), so policies can tell "unknown" from any real identity.
    """
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
