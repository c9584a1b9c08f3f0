"""Policy engines behind one small interface.

A request is decided by asking an engine about a Rego package
(``docker.authz`` for every request, ``docker.build`` for build contexts).
An engine answers with a :class:`PolicyDecision`; it never raises into the
request path -- every failure comes back as a Deferred failing with
:class:`dsfw.errors.PolicyEngineError`, which the resource turns into a denial.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol

from twisted.internet.defer import Deferred

AUTHZ = "docker.authz"
BUILD = "docker.build"


@dataclass(frozen=True)
class PolicyDecision:
    """What a policy said about one input.

    ``allowed`` is True only when ``data.<package>.allow`` is exactly ``true``
    and no deny message was produced. ``reasons`` are the policy's own deny
    messages, or a sentence naming the rule that said no.
    """

    allowed: bool
    package: str
    reasons: tuple[str, ...] = field(default_factory=tuple)
    engine: str = "embedded"
    # Which policy set decided (see PolicyEngine.revision), for logs.
    revision: str = ""
    # Scoping (docs/policies.md): labels to stamp on what the request creates
    # (data.<package>.labels), fields to remove from answers (.remove), and
    # whether the policy defines .visible, so answers are filtered item by item.
    labels: Mapping[str, str] | None = None
    remove: tuple[str, ...] = ()
    filters: bool = False
    # True when the policy set answers the same input the same way every time
    # (no clock, network or randomness), so a filtered answer may be remembered.
    deterministic: bool = False

    def message(self) -> str:
        if self.reasons:
            return "; ".join(self.reasons)
        return f"request denied by policy data.{self.package}.allow"


class PolicyEngine(Protocol):
    """Anything that can decide an input document against a Rego package."""

    name: str

    def decide(self, package: str, input_doc: dict[str, Any]) -> "Deferred[PolicyDecision]":
        """Evaluate ``data.<package>.allow`` (and ``.deny``) for ``input_doc``."""
        ...

    def revision(self) -> str:
        """An identifier of the policy set in force (for logs and health)."""
        ...

    def policy_sources(self) -> Any:
        """The policy set in force as :class:`dsfw.policy.loader.PolicySources`, for a body
        worker process to compile and decide with (dsfw.offload); None when it cannot."""
        ...

    def input_fields(self) -> "frozenset[str] | None":
        """The top-level input fields the policy in force can read (``Target``, ``Body``...),
        or None when it cannot tell or any may be read.  dsfw fetches the objects a
        request names (``input.Target``...) only for a policy that can read them."""
        ...

    def reload(self) -> bool:
        """Re-read what the engine depends on (SIGHUP); False keeps what is in force."""
        ...

    def reload_if_changed(self) -> bool:
        """Reload when the policy's source changed (polled); True when a new set was installed."""
        ...

    def cache_stats(self) -> dict[str, int]:
        """Decision-cache counters for /_dsfw/health (empty when the engine keeps none)."""
        ...

    def close(self) -> "Deferred[None]":
        """Release connections and threads at stop; fires when done."""
        ...

    def visible(self, package: str, input_doc: dict[str, Any],
                items: list[dict[str, Any]]) -> "Deferred[list[bool]]":
        """For each item, whether ``data.<package>.visible`` is exactly true with
        ``input_doc`` plus ``input.Item`` set to it (one evaluation for all items)."""
        ...

    def explain(self, package: str, input_doc: dict[str, Any]) -> "Deferred[Any]":
        """Why ``data.<package>.allow`` is not true for ``input_doc``: a
        :class:`dsfw.policy.explain.Explanation` (the engine says so when it cannot tell)."""
        ...
