"""Request bodies as dockerd's JSON decoder will read them.

Python's ``json`` and Go's ``encoding/json`` disagree on duplicate keys, on
text after the first value, on invalid UTF-8 and on non-finite numbers.  dsfw
parses strictly, refuses every such case, and forwards its own serialization,
so the bytes dockerd decodes are the document the policy saw.  For the
endpoints whose bodies policies inspect, the parsed value is further rewritten
into the shape Go's decoder gives it (:mod:`dsfw.input.schema`).
"""
from __future__ import annotations

import json
import math
from typing import Any

from dsfw import routes
from dsfw.input.schema import canonical_document
from dsfw.errors import BadRequest, PayloadTooLarge

# Docker's deepest request shape (create: Mounts → VolumeOptions → DriverConfig →
# Options) is 6 levels; 64 leaves room for any real client, well below recursion.
DEFAULT_MAX_DEPTH = 64
# A create body from the CLI is a few kB; 16 MiB fits any real client
# (huge Env or Labels included) while bounding what one request can pin.
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
# No list or object dockerd reads needs more entries (Env is bounded by the
# kernel's ARG_MAX, mounts by fs.mount-max); 300,000 Binds or 400,000
# SecurityOpt only cost every later step (facts, policy evaluation) time.
MAX_COLLECTION_ITEMS = 65536

# Content types for which Go's ``Request.ParseForm`` reads query parameters
# out of the body: a body like that would add parameters the policy never saw.
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise BadRequest(f"JSON body repeats the key {key!r}; refusing an ambiguous request")
        seen[key] = value
    return seen


def _reject_constant(name: str) -> Any:
    raise BadRequest(f"JSON body contains {name}, which is not JSON")


def _finite_float(text: str) -> float:
    # Python reads 1e400 as infinity, which dsfw could not serialize back;
    # Go refuses it as out of range.
    value = float(text)
    if math.isinf(value):
        raise BadRequest(f"JSON body contains the out-of-range number {text[:40]}")
    return value


def _check_string(s: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate escape (\ud800): Go decodes it to U+FFFD, so the
        # policy would see one string and dockerd another.
        raise BadRequest("JSON body contains a lone UTF-16 surrogate escape") from None


def _too_many(item: Any) -> BadRequest:
    kind = "an object" if isinstance(item, dict) else "a list"
    return BadRequest(f"JSON body holds {kind} of {len(item)} entries; more than "
                      f"{MAX_COLLECTION_ITEMS} is refused")


def _depth(value: Any, limit: int) -> None:
    """Refuse documents nested deeper than ``limit``, with huge collections, or lone surrogates."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise BadRequest(f"JSON body is nested deeper than {limit} levels")
        if isinstance(item, (dict, list)) and len(item) > MAX_COLLECTION_ITEMS:
            raise _too_many(item)
        if isinstance(item, dict):
            for k, v in item.items():
                _check_string(k)
                stack.append((v, depth + 1))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, str):
            _check_string(item)


def check_content_type(content_type: str | None) -> None:
    """Refuse form content types: Go's ``ParseForm`` would read parameters from the body.

    dockerd's handlers read ``r.Form``, which for a POST with one of these
    types merges parameters parsed from the body in front of the query's, so
    ``POST /build`` with a form body ``remote=...&networkmode=host`` would act
    on parameters the policy never saw in ``Query``.
    """
    if content_type is None:
        return
    media = content_type.split(";", 1)[0].strip().lower()
    if media in _FORM_TYPES:
        raise BadRequest(f"Content-Type {media} is refused: dockerd would read query "
                         "parameters from the body")


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
                           parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise BadRequest(f"JSON body is nested deeper than {max_depth} levels") from None
    except json.JSONDecodeError as e:
        raise BadRequest(f"request body is not valid JSON: {e.msg} at offset {e.pos}") from None
    except ValueError as e:  # e.g. an integer longer than int_max_str_digits
        raise BadRequest(f"request body is not acceptable JSON: {e}") from None
    _depth(value, max_depth)
    return value


def serialize_json_body(value: Any) -> bytes:
    """dsfw's own serialization of a body the policy saw."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def canonicalize_body(method: str, plain_path: str, version: str | None, raw: bytes,
                      max_depth: int = DEFAULT_MAX_DEPTH,
                      max_bytes: int = DEFAULT_MAX_BODY_BYTES,
                      content_type: str | None = None) -> tuple[Any, bytes | None]:
    """:func:`canonical_json_body` for a request given by its parts (the route is matched here)."""
    check_content_type(content_type)
    route = routes.match(method, plain_path, version is not None)
    return canonical_json_body(route.json_schema(version), version, raw, max_depth, max_bytes,
                               what=f"{method} {plain_path}")


def canonical_json_body(schema: Any, version: str | None, raw: bytes,
                        max_depth: int = DEFAULT_MAX_DEPTH,
                        max_bytes: int = DEFAULT_MAX_BODY_BYTES,
                        what: str = "this request") -> tuple[Any, bytes | None]:
    """The body the policy sees and the bytes dsfw forwards for it.

    An empty body stays empty (``(None, None)``).  Anything else must be one
    unambiguous JSON value; with a Docker ``schema`` (the route's) it is
    rewritten into the shape dockerd decodes (see :mod:`dsfw.input.schema`).
    """
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"JSON body is larger than {max_bytes} bytes")
    if not raw.strip():
        if raw:
            raise BadRequest("request body is only whitespace")
        return None, None
    value = parse_json_body(raw, max_depth)
    if schema is not None:
        if value is None:
            raise BadRequest(f"{what} expects a JSON document, not null")
        value = canonical_document(schema, version, value)
    return value, serialize_json_body(value)
