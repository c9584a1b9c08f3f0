"""Remembering decisions of deterministic policies, bounded by bytes.

A Rego policy is a pure function of ``input`` and ``data`` unless it calls a
built-in that looks outside (the clock, the network, randomness).  For a
policy set without such calls, the same input document gives the same
decision, so repeating the evaluation -- for the original firewall's
``regex.match`` policy the largest cost on dsfw's hot path (docs/benchmarks.md)
-- buys nothing.  The cache belongs to one compiled policy set (a reload starts a new
one).

Its memory is bounded by bytes, not only by entries: a key is the SHA-256 of
the serialized input (two requests share an entry only if the policy would
see exactly the same document, and a 3 MB create body costs 32 bytes, not
3 MB), inputs above ``max_input_bytes`` are not cached at all (a repeat is
unlikely and hashing them would be wasted work), and an entry whose decision
carries long deny messages is charged for them, with the least recently used
entries evicted past ``max_bytes``.
"""
from __future__ import annotations

import hashlib
import re
import sys
from collections import OrderedDict
from typing import Iterable

from dsfw.policy import PolicyDecision

DEFAULT_SIZE = 4096
DEFAULT_MAX_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_INPUT_BYTES = 256 * 1024

# What one entry costs beyond its decision's strings: the OrderedDict slot, the
# key tuple with its digest, the PolicyDecision object and its reasons tuple.
_ENTRY_OVERHEAD = 512

# Built-ins whose result does not depend on input and data alone.
_NONDETERMINISTIC = re.compile(
    r"\b(time\.now_ns|http\.send|rand\.intn|uuid\.rfc4122|uuid\.parse|opa\.runtime|"
    r"net\.lookup_ip_addr|crypto\.x509\.parse_and_verify_certificates|io\.jwt\.decode_verify|"
    r"time\.(clock|date|weekday|add_date|diff)\s*\(\s*\[?\s*time\.now_ns)\b")


def is_deterministic(sources: Iterable[str]) -> bool:
    """True when no policy source calls a built-in that looks outside input and data."""
    return not any(_NONDETERMINISTIC.search(src) for src in sources)


def _cost(package: str, decision: PolicyDecision) -> int:
    """Bytes one entry holds (an estimate on the safe side)."""
    strings = (package, decision.engine, decision.revision, *decision.reasons)
    return _ENTRY_OVERHEAD + sum(sys.getsizeof(s) for s in strings)


class DecisionCache:
    """An LRU of ``(package, SHA-256 of the input JSON) → PolicyDecision``.

    Bounded by ``size`` entries and ``max_bytes`` bytes; disabled when either
    is 0.  ``bytes`` is what the entries hold now (for /_dsfw/health).
    """

    def __init__(self, size: int = DEFAULT_SIZE, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES):
        self._size = size if max_bytes > 0 else 0
        self._max_bytes = max_bytes
        self._max_input = max_input_bytes
        self._entries: OrderedDict[tuple[str, bytes], tuple[PolicyDecision, int]] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def _key(self, package: str, input_json: str) -> tuple[str, bytes] | None:
        if not self._size or len(input_json) > self._max_input:
            return None
        return package, hashlib.sha256(input_json.encode("utf-8", "surrogatepass")).digest()

    def get(self, package: str, input_json: str) -> PolicyDecision | None:
        key = self._key(package, input_json)
        if key is None:
            return None
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[0]

    def put(self, package: str, input_json: str, decision: PolicyDecision) -> None:
        key = self._key(package, input_json)
        if key is None:
            return
        cost = _cost(package, decision)
        if cost > self._max_bytes // 16:
            return  # one decision with huge messages must not flush everything else
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        self._entries[key] = (decision, cost)
        self.bytes += cost
        while len(self._entries) > self._size or self.bytes > self._max_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.bytes -= evicted


class VisibilityCache:
    """``(request input, item) → visible`` for deterministic policies, LRU, bounded by bytes.

    A dashboard polling ``/containers/json`` shows the policy the same items
    again and again; remembering each item's answer makes a repeated list
    cost a lookup per item instead of an evaluation.  Keys are the SHA-256 of
    the request's input (without ``Item``) and the item's JSON.
    """

    def __init__(self, max_bytes: int = 1 << 20):
        self._max = max_bytes
        self._entries: OrderedDict[tuple[bytes, bytes], bool] = OrderedDict()
        self.bytes = 0

    @staticmethod
    def request_key(input_json: bytes) -> bytes:
        return hashlib.sha256(input_json).digest()

    def get(self, request_key: bytes, item_json: bytes) -> bool | None:
        key = (request_key, item_json)
        shown = self._entries.get(key)
        if shown is not None:
            self._entries.move_to_end(key)
        return shown

    def put(self, request_key: bytes, item_json: bytes, shown: bool) -> None:
        if not self._max:
            return
        key = (request_key, item_json)
        if key in self._entries:
            return
        self._entries[key] = shown
        self.bytes += len(item_json) + _ENTRY_OVERHEAD // 4
        while self.bytes > self._max and self._entries:
            (_, old), _ = self._entries.popitem(last=False)
            self.bytes -= len(old) + _ENTRY_OVERHEAD // 4
