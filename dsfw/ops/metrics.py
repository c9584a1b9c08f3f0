"""Counters for ``GET /_dsfw/metrics``, in Prometheus' text format.

Endpoint labels are route templates (``/containers/{id}/json``), never raw
paths, so a busy host cannot blow up the number of series with container ids.
"""
from __future__ import annotations

import re
from collections import Counter

# Collections whose second segment is an object id or name.
_COLLECTIONS = frozenset({"containers", "networks", "volumes", "exec", "plugins", "services",
                          "nodes", "tasks", "secrets", "configs", "swarm", "distribution"})
_COLLECTION_VERBS = frozenset({"json", "create", "prune", "search", "load", "get", "import",
                               "privileges", "pull", "init", "join", "leave", "update",
                               "unlock", "unlockkey"})
_IMAGE_ACTIONS = frozenset({"json", "history", "push", "tag", "get"})
_SAFE = re.compile(r"^[A-Za-z0-9_./{}-]*$")


def endpoint_template(plain_path: str) -> str:
    """``/containers/abc/logs`` → ``/containers/{id}/logs``."""
    parts = plain_path.strip("/").split("/")
    if not parts or parts == [""]:
        return "/"
    head = parts[0]
    if head == "images" and len(parts) > 2:
        action = parts[-1] if parts[-1] in _IMAGE_ACTIONS else None
        parts = ["images", "{name}"] + ([action] if action else [])
    elif head == "images" and len(parts) == 2 and parts[1] not in _COLLECTION_VERBS:
        parts = ["images", "{name}"]
    elif head in _COLLECTIONS and len(parts) > 1 and parts[1] not in _COLLECTION_VERBS:
        parts = [head, "{id}"] + parts[2:3]
    template = "/" + "/".join(parts[:3])
    return template if _SAFE.match(template) else "/other"


class Metrics:
    """Request counters by outcome and endpoint; cheap enough for every request."""

    OUTCOMES = ("allowed", "denied", "bad_request", "error")

    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()
        self.by_endpoint: Counter[tuple[str, str, str]] = Counter()

    def count(self, outcome: str, method: str = "", plain_path: str | None = None) -> None:
        self.outcomes[outcome] += 1
        if plain_path is not None:
            self.by_endpoint[(method, endpoint_template(plain_path), outcome)] += 1

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
        return ("\n".join(lines) + "\n").encode("utf-8")
