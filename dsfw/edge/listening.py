"""The protected socket: claimed safely, with owner-only access plus a group.

The original firewall made its socket world-writable, which hands root to
every local user.  dsfw creates it under a restrictive umask, then applies
``--socket-mode`` (default 0660) and ``--socket-group``.  A stale socket file
(nobody listening) is replaced; a live one is an error, never stolen.
"""
from __future__ import annotations

import errno
import grp
import os
import socket
import stat

from twisted.application.service import Service
from twisted.internet.endpoints import UNIXServerEndpoint
from twisted.python.failure import Failure


class SocketInUse(Exception):
    """Another process is listening on the socket path, or it is not a socket."""


def claim_socket_path(path: str) -> None:
    """Remove a stale socket at ``path``; refuse a live one or a non-socket."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketInUse(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2)
    try:
        probe.connect(path)
    except OSError as e:
        if e.errno in (errno.ECONNREFUSED, errno.ENOENT):
            os.unlink(path)
            return
        raise SocketInUse(f"cannot tell whether {path} is in use: {e}") from e
    finally:
        probe.close()
    raise SocketInUse(f"another process is listening on {path}; refusing to take it over")


def group_id(group: str | int | None) -> int:
    if group is None or group == "":
        return -1
    if isinstance(group, int) or str(group).isdigit():
        return int(group)
    return grp.getgrnam(group).gr_gid


class ProtectedSocketService(Service):
    """Listens on the protected socket while running; removes it on stop."""

    def __init__(self, reactor, path: str, factory, mode: int = 0o660, group=None):
        # Options refuses this too; the service keeps the promise for every caller.
        if mode & 0o002:
            raise ValueError(f"socket mode {mode:#o} would make the socket world-writable")
        self._reactor = reactor
        self.path = path
        self._factory = factory
        self._mode = mode
        self._gid = group_id(group)
        self._port = None

    def startService(self) -> None:
        claim_socket_path(self.path)
        old = os.umask(0o177)
        try:
            endpoint = UNIXServerEndpoint(self._reactor, self.path, mode=0o600, wantPID=False)
            d = endpoint.listen(self._factory)
        finally:
            os.umask(old)
        outcome: list = []
        d.addBoth(outcome.append)  # listenUNIX is synchronous: this fires now
        if isinstance(outcome[0], Failure):
            outcome[0].raiseException()
        self._port = outcome[0]
        if self._gid != -1:
            os.chown(self.path, -1, self._gid)
        os.chmod(self.path, self._mode)
        super().startService()

    def stopService(self):
        super().stopService()
        if self._port is not None:
            port, self._port = self._port, None
            return port.stopListening()
        return None
