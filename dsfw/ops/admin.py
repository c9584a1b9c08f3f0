"""dsfw's own endpoints on the protected socket: ``/_dsfw/health`` and ``/_dsfw/metrics``.

They are answered by dsfw and never forwarded to dockerd.  Health says
whether dockerd answers ``/_ping`` (within a short bound) and which policy
revision is in force, so a supervisor can tell "dsfw up but blind" from "ok".
"""
from __future__ import annotations

import json
from typing import Callable

from dsfw.errors import NotFound
from dsfw.routes import Route
from dsfw.ops.metrics import Metrics
from dsfw.edge.upstream import DockerPool
from dsfw.scope import dockerapi

HEALTH_TIMEOUT = 2.0


async def ping_dockerd(pool: DockerPool, clock, timeout: float = HEALTH_TIMEOUT) -> int:
    """The status dockerd gives ``GET /_ping``; raises if it is unreachable."""
    status, _ = await dockerapi.get(pool, clock, b"/_ping", timeout=timeout, max_bytes=4096)
    return status


class AdminEndpoints:
    """Answers ``/_dsfw/...`` requests with ``(status, content type, body)``."""

    def __init__(self, pool: DockerPool, engine, metrics: Metrics, clock,
                 bundle_status: Callable[[], dict] | None = None):
        self._bundle_status = bundle_status
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
        cache_stats = self._engine.cache_stats()
        if cache_stats:
            policy["decision_cache"] = cache_stats
        if self._bundle_status is not None:
            policy["bundle"] = self._bundle_status()
        # Before a first bundle is active every request is denied: not healthy either.
        healthy = dockerd["reachable"] and bool(policy["revision"] or self._bundle_status is None)
        body = {"status": "ok" if healthy else "degraded",
                "dockerd": dockerd, "target": self._pool.socket_path, "policy": policy}
        code = 200 if healthy else 503
        return code, b"application/json", json.dumps(body).encode("utf-8") + b"\n"
