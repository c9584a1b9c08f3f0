"""dsfw's own endpoints on the protected socket: ``/_dsfw/health`` and ``/_dsfw/metrics``.

They are answered by dsfw and never forwarded to dockerd.  Health says
whether dockerd answers ``/_ping`` (within a short bound) and which policy
revision is in force, so a supervisor can tell "dsfw up but blind" from "ok".
"""
from __future__ import annotations

import json

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from dsfw.errors import NotFound, UpstreamUnavailable
from dsfw.routes import Route
from dsfw.ops.metrics import Metrics
from dsfw.edge.upstream import DockerPool, ResponseHead

HEALTH_TIMEOUT = 2.0


class _StatusSink:
    """Collects only the status of a response (the ping body is ``OK``)."""

    def __init__(self, done: Deferred):
        self._done = done
        self._status = None

    def head_received(self, head: ResponseHead) -> None:
        self._status = head.status

    def body_received(self, data: bytes) -> None:
        pass

    def body_finished(self) -> None:
        if not self._done.called:
            self._done.callback(self._status)

    def hijacked(self, head, connection, leftover) -> None:
        connection.transport.abortConnection()
        self.failed(Failure(UpstreamUnavailable("dockerd hijacked a ping")))

    def failed(self, reason: Failure) -> None:
        if not self._done.called:
            self._done.errback(reason)


async def ping_dockerd(pool: DockerPool, clock, timeout: float = HEALTH_TIMEOUT) -> int:
    """The status dockerd gives ``GET /_ping``; raises if it is unreachable."""
    conn = await pool.acquire()
    done: Deferred = Deferred()
    conn.send(b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n", None, _StatusSink(done))

    def timed_out(result, _timeout):
        if conn.transport is not None:
            conn.transport.abortConnection()
        raise UpstreamUnavailable(f"dockerd did not answer /_ping within {timeout} s")

    done.addTimeout(timeout, clock, onTimeoutCancel=timed_out)
    return await done


class AdminEndpoints:
    """Answers ``/_dsfw/...`` requests with ``(status, content type, body)``."""

    def __init__(self, pool: DockerPool, engine, metrics: Metrics, clock):
        self._pool = pool
        self._engine = engine
        self._metrics = metrics
        self._clock = clock

    async def answer(self, method: str, route: Route) -> tuple[int, bytes, bytes]:
        if route.template == "/_dsfw/metrics":
            return 200, b"text/plain; version=0.0.4", self._metrics.render()
        if route.template != "/_dsfw/health":
            raise NotFound(f"no such dsfw endpoint: {method} /_dsfw/{route.param('name')}")
        try:
            status = await ping_dockerd(self._pool, self._clock)
            dockerd = {"reachable": status == 200, "status": status}
        except Exception as e:
            dockerd = {"reachable": False, "error": getattr(e, "message", None) or repr(e)}
        policy = {"engine": self._engine.name, "revision": self._engine.revision()}
        cache_stats = getattr(self._engine, "cache_stats", None)
        if cache_stats is not None:
            policy["decision_cache"] = cache_stats()
        body = {"status": "ok" if dockerd["reachable"] else "degraded",
                "dockerd": dockerd, "target": self._pool.socket_path, "policy": policy}
        code = 200 if dockerd["reachable"] else 503
        return code, b"application/json", json.dumps(body).encode("utf-8") + b"\n"
