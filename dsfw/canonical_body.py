"""Request bodies as dockerd's JSON decoder will read them.

Python's ``json`` and Go's ``encoding/json`` disagree on duplicate keys, on
text after the first value, on invalid UTF-8 and on non-finite numbers.  dsfw
parses strictly, refuses every such case, and forwards its own serialization,
so the bytes dockerd decodes are the document the policy saw.
"""
from __future__ import annotations

import json
from typing import Any

from dsfw.errors import BadRequest

DEFAULT_MAX_DEPTH = 64


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise BadRequest(f"JSON body repeats the key {key!r}; refusing an ambiguous request")
        seen[key] = value
    return seen


def _reject_constant(name: str) -> Any:
    raise BadRequest(f"JSON body contains {name}, which is not JSON")


def _depth(value: Any, limit: int) -> None:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise BadRequest(f"JSON body is nested deeper than {limit} levels")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def parse_json_body(raw: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Parse exactly one JSON value from ``raw``; refuse anything ambiguous."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("JSON body is not valid UTF-8") from None
    if text.startswith("\ufeff"):
        raise BadRequest("JSON body starts with a byte order mark")
    try:
        value = json.loads(text, object_pairs_hook=_reject_duplicates,
                           parse_constant=_reject_constant)
    except RecursionError:
        raise BadRequest(f"JSON body is nested deeper than {max_depth} levels") from None
    except json.JSONDecodeError as e:
        raise BadRequest(f"request body is not valid JSON: {e.msg} at offset {e.pos}") from None
    _depth(value, max_depth)
    return value


def serialize_json_body(value: Any) -> bytes:
    """dsfw's own serialization of a body the policy saw."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def canonicalize_body(method: str, plain_path: str, version: str | None, raw: bytes,
                      max_depth: int = DEFAULT_MAX_DEPTH) -> tuple[Any, bytes | None]:
    """The body the policy sees and the bytes dsfw forwards for it.

    An empty body stays empty (``(None, None)``).  Anything else must be one
    unambiguous JSON value.
    """
    if not raw.strip():
        if raw:
            raise BadRequest("request body is only whitespace")
        return None, None
    value = parse_json_body(raw, max_depth)
    return value, serialize_json_body(value)
