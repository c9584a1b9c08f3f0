"""Counters for ``GET /_dsfw/metrics``, in Prometheus' text format.

Endpoint labels are route templates (``/containers/{id}/json``, see
:mod:`dsfw.routes`), never raw paths, and methods outside the standard few
are one label: whatever clients send, the number of series stays bounded.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable

from dsfw.routes import Route


class Metrics:
    """Request counters by outcome and endpoint; cheap enough for every request.

    Each request has one outcome: ``allowed`` (the policy allowed it and
    dockerd's answer was relayed, or dsfw answered it), ``denied``,
    ``bad_request``, or ``error`` (the engine failed, or dockerd failed after
    an allow).
    """

    OUTCOMES = ("allowed", "denied", "bad_request", "error")

    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()
        self.by_endpoint: Counter[tuple[str, str, str]] = Counter()
        self._sources: list[Callable[[], list[str]]] = []

    def add_source(self, lines: Callable[[], list[str]]) -> None:
        """More metrics, rendered by their owner (the decision log's counters)."""
        self._sources.append(lines)

    def count(self, outcome: str, method: str = "", route: Route | None = None) -> None:
        self.outcomes[outcome] += 1
        if route is not None:
            self.by_endpoint[(*route.metrics_label(method), outcome)] += 1

    def render(self) -> bytes:
        lines = ["# HELP dsfw_requests_total Requests decided by dsfw, by outcome.",
                 "# TYPE dsfw_requests_total counter"]
        for outcome in self.OUTCOMES:
            lines.append(f'dsfw_requests_total{{outcome="{outcome}"}} {self.outcomes[outcome]}')
        lines += ["# HELP dsfw_endpoint_requests_total Requests by method, endpoint and outcome.",
                  "# TYPE dsfw_endpoint_requests_total counter"]
        for (method, endpoint, outcome), n in sorted(self.by_endpoint.items()):
            lines.append(f'dsfw_endpoint_requests_total{{method="{method}",endpoint="{endpoint}",'
                         f'outcome="{outcome}"}} {n}')
        for source in self._sources:
            lines += source()
        return ("\n".join(lines) + "\n").encode("utf-8")
