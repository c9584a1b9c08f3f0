"""Fast JSON for the per-item paths (filtered answers, visibility decisions).

A filtered ``GET /containers/json`` of 100 containers is parsed, decided
item by item and written again on every request; with the standard library
that work alone cost several times what relaying the answer does.  orjson
(a declared dependency) does it in a fraction of the time; the standard
library stays the fallback so a missing wheel degrades speed, not behaviour.
Both refuse what is not JSON; orjson also refuses integers beyond 64 bits,
which dockerd's Go types never produce -- either way the caller fails closed.
"""
from __future__ import annotations

import json
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - the fallback is exercised where orjson is absent
    orjson = None


def loads(data: bytes) -> Any:
    """Parse one JSON document; ValueError when it is not one."""
    if orjson is not None:
        return orjson.loads(data)  # orjson.JSONDecodeError is a ValueError
    return json.loads(data)


def dumps_compact(value: Any) -> bytes:
    """Compact UTF-8 JSON, keys in their order (as Go's encoder writes dockerd's answers)."""
    if orjson is not None:
        return orjson.dumps(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def dumps_sorted(value: Any) -> bytes:
    """Compact JSON with sorted keys: one spelling per value, for cache keys and policy input."""
    if orjson is not None:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def dumps_input(value: Any) -> str:
    """A policy input document as JSON text, keys sorted (what the engine parses and caches by).

    orjson when it can (a decision's input is serialized on every request);
    what it refuses -- lone surrogates, integers beyond 64 bits, non-string
    keys -- is written by ``json.dumps`` as before, which raises TypeError or
    ValueError for what is not JSON at all.
    """
    if orjson is not None:
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode("utf-8")
        except TypeError:  # orjson.JSONEncodeError
            pass
    return json.dumps(value, sort_keys=True)
