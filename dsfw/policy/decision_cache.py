"""Remembering decisions of deterministic policies, keyed by the exact input.

A Rego policy is a pure function of ``input`` and ``data`` unless it calls a
built-in that looks outside (the clock, the network, randomness).  For a
policy set without such calls, the same input document gives the same
decision, so repeating the evaluation -- about 100 µs for the original
firewall's ``regex.match`` policy, the largest cost on dsfw's hot path -- buys
nothing.  The key is the full serialized input (so two requests share an entry
only if the policy would see exactly the same document), the cache belongs to
one compiled policy set (a reload starts a new one), and it is bounded (LRU).
"""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import Iterable

from dsfw.policy import PolicyDecision

DEFAULT_SIZE = 4096

# Built-ins whose result does not depend on input and data alone.
_NONDETERMINISTIC = re.compile(
    r"\b(time\.now_ns|http\.send|rand\.intn|uuid\.rfc4122|uuid\.parse|opa\.runtime|"
    r"net\.lookup_ip_addr|crypto\.x509\.parse_and_verify_certificates|io\.jwt\.decode_verify|"
    r"time\.(clock|date|weekday|add_date|diff)\s*\(\s*\[?\s*time\.now_ns)\b")


def is_deterministic(sources: Iterable[str]) -> bool:
    """True when no policy source calls a built-in that looks outside input and data."""
    return not any(_NONDETERMINISTIC.search(src) for src in sources)


class DecisionCache:
    """A bounded LRU of ``(package, input JSON) → PolicyDecision``; disabled when size is 0."""

    def __init__(self, size: int = DEFAULT_SIZE):
        self._size = size
        self._entries: OrderedDict[tuple[str, str], PolicyDecision] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, package: str, input_json: str) -> PolicyDecision | None:
        if not self._size:
            return None
        key = (package, input_json)
        decision = self._entries.get(key)
        if decision is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return decision

    def put(self, package: str, input_json: str, decision: PolicyDecision) -> None:
        if not self._size:
            return
        self._entries[(package, input_json)] = decision
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)
