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
import resource
import socket
import stat

import structlog
from twisted.application.service import Service
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from dsfw.errors import error_body

log = structlog.get_logger("dsfw")

DEFAULT_MAX_CONNECTIONS = 512
# Descriptors one client connection may hold: its socket, dockerd's side of
# it, and a spooled request body (twisted.web keeps bodies over 100 kB in a
# temporary file; a build adds its rewritten context).
FDS_PER_CONNECTION = 4
# Descriptors beside the connections: the listening socket, the log file, the
# policy files being re-read, dockerd's event stream, the thread pool's work.
FD_RESERVE = 128
# Connections over the limit being told so at once; beyond this they are closed.
_MAX_REFUSALS = 64
_REFUSAL_TIMEOUT = 5.0


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
    if isinstance(group, int) or (str(group).isascii() and str(group).isdigit()):
        return int(group)
    return grp.getgrnam(group).gr_gid


def listen_now(endpoint, factory):
    """Listen and return the port, or raise: dsfw must not start without a listener.

    UNIX and TCP endpoints listen synchronously, so the Deferred has fired on return.
    """
    outcome: list = []
    endpoint.listen(factory).addBoth(outcome.append)
    if not outcome:
        raise RuntimeError(f"{endpoint!r} did not start listening at once")
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    return outcome[0]


class ListeningService(Service):
    """Holds one listening port while running; closes it on stop."""

    _port = None

    def stopService(self):
        super().stopService()
        if self._port is not None:
            port, self._port = self._port, None
            return port.stopListening()
        return None


class ProtectedSocketService(ListeningService):
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

    def startService(self) -> None:
        claim_socket_path(self.path)
        old = os.umask(0o177)
        try:
            # Imported here, as in dsfw.edge.upstream: it loads pyOpenSSL when it can.
            from twisted.internet.endpoints import UNIXServerEndpoint
            endpoint = UNIXServerEndpoint(self._reactor, self.path, mode=0o600, wantPID=False)
            self._port = listen_now(endpoint, self._factory)
        finally:
            os.umask(old)
        if self._gid != -1:
            os.chown(self.path, -1, self._gid)
        os.chmod(self.path, self._mode)
        super().startService()


def fit_fd_limit(max_connections: int, getrlimit=resource.getrlimit,
                 setrlimit=resource.setrlimit) -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to what ``max_connections`` needs; return the limit it allows.

    Running out of descriptors is worse than refusing a client: accepts fail,
    temporary files cannot be created, and the policy directory cannot be
    read.  So dsfw keeps ``FDS_PER_CONNECTION`` per connection plus a reserve,
    raising the soft limit up to the hard one, and serves fewer connections if
    even that is short.
    """
    needed = max_connections * FDS_PER_CONNECTION + FD_RESERVE
    soft, hard = getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return max_connections
    allowed = max(1, (soft - FD_RESERVE) // FDS_PER_CONNECTION)
    log.warning("connections.fd_limit", requested=max_connections, allowed=allowed,
                nofile=soft, hint="raise LimitNOFILE (systemd) or ulimit -n")
    return allowed


class ConnectionLimit:
    """How many client connections are open, against a limit.

    Channels report their transport when they start and end; a hijacked
    connection (attach, exec) ends under another protocol, so when the count
    reaches the limit, transports that are no longer connected are dropped
    first.
    """

    def __init__(self, limit: int):
        if limit < 1:
            raise ValueError("the connection limit must be at least 1")
        self.limit = limit
        self._open: set = set()
        self.refusing = 0
        self._saturated = False

    def __len__(self) -> int:
        return len(self._open)

    def full(self) -> bool:
        if len(self._open) >= self.limit:
            self._open = {t for t in self._open if getattr(t, "connected", False)}
        full = len(self._open) >= self.limit
        if full and not self._saturated:
            log.warning("connections.limit_reached", limit=self.limit)
        self._saturated = full
        return full

    def opened(self, transport) -> None:
        self._open.add(transport)

    def closed(self, transport) -> None:
        self._open.discard(transport)

    def refusal(self, clock) -> Protocol:
        """The protocol for a connection over the limit."""
        return _Refusal(self, clock)


class _Refusal(Protocol):
    """Reads the request head, answers 503 with a Docker-style message, closes.

    Reading the head first lets the client see the answer instead of a reset;
    a client that sends nothing is closed after a few seconds, and past
    ``_MAX_REFUSALS`` at once new ones are closed without a word.
    """

    def __init__(self, limit: ConnectionLimit, clock):
        self._limit = limit
        self._clock = clock
        self._seen = b""
        self._answered = False
        self._timer = None

    def connectionMade(self) -> None:
        self._limit.refusing += 1
        if self._limit.refusing > _MAX_REFUSALS:
            self.transport.abortConnection()
            return
        self._timer = self._clock.callLater(_REFUSAL_TIMEOUT, self.transport.abortConnection)

    def dataReceived(self, data: bytes) -> None:
        if self._answered:
            return
        seen = self._seen + data
        self._seen = seen[-3:]
        if b"\r\n\r\n" in seen or b"\n\n" in seen:
            self._answered = True
            body = error_body(f"dsfw: too many open connections (limit {self._limit.limit}); "
                              "retry later")
            self.transport.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: "
                                 b"application/json\r\nContent-Length: %d\r\n"
                                 b"Connection: close\r\n\r\n" % len(body) + body)
            self.transport.loseConnection()

    def connectionLost(self, reason=None) -> None:
        self._limit.refusing -= 1
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
