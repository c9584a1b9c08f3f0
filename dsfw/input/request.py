"""The canonical request and the policy input document built from it.

Pure logic, no Twisted: the HTTP resource hands over what it parsed, this
module decides what the policy sees, and the same :class:`CanonicalRequest`
is what the relay serializes for dockerd.  The input keeps the original Go
firewall's fields (``Method``, ``Path``, ``Headers``, ``Body``) so its users'
policies keep working, and adds parsed fields they would otherwise rebuild.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from dsfw import routes
from dsfw.input.body import DEFAULT_MAX_BODY_BYTES, canonical_json_body, check_content_type
from dsfw.input.path import CanonicalTarget, canonical_target
from dsfw.input.queryvalues import canonical_query_values, query_facts
from dsfw.errors import BadRequest

# Headers that describe one hop or the framing dsfw sets itself; never forwarded.
HOP_BY_HOP = frozenset(
    {
        "Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
        "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
        "Content-Length", "Host", "Expect",
    }
)



# Names longer than this are computed each time: the memo holds at most
# 1024 x 64 characters, however long the names clients send (up to 1 MB).
_MEMO_NAME_CHARS = 64


def _header_key(name: str) -> str:
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


_memo_header_key = functools.lru_cache(maxsize=1024)(_header_key)


def canonical_header_name(name: str) -> str:
    """Go's ``textproto.CanonicalMIMEHeaderKey``: ``x-registry-auth`` → ``X-Registry-Auth``."""
    if len(name) > _MEMO_NAME_CHARS:
        return _header_key(name)
    return _memo_header_key(name)


def canonical_headers(raw: Iterable[tuple[bytes, list[bytes]]]) -> tuple[tuple[str, str], ...]:
    """End-to-end headers as dsfw forwards them: canonical names, one joined value each."""
    out: dict[str, list[str]] = {}
    for name, values in raw:
        try:
            key = canonical_header_name(name.decode("ascii"))
            decoded = [v.decode("latin-1") for v in values]
        except UnicodeDecodeError:
            raise BadRequest("header names must be ASCII") from None
        if key in HOP_BY_HOP:
            continue
        out.setdefault(key, []).extend(decoded)
    return tuple(sorted((k, ", ".join(v)) for k, v in out.items()))


@dataclass(frozen=True)
class CanonicalRequest:
    """One request exactly as the policy sees it and dockerd will receive it.

    ``body`` is the parsed JSON body or None; ``json_body`` its serialization
    by dsfw (what is forwarded), or None when the body is an opaque stream
    (``stream_body``) or absent.  ``upgrade`` names the protocol of a hijack the
    client asked for (``tcp``, ``h2c`` or ``websocket``).  ``route`` is the endpoint dockerd
    will run, matched once (from method and target when not given).
    """

    method: str
    target: CanonicalTarget
    headers: tuple[tuple[str, str], ...]
    body: Any = None
    json_body: bytes | None = None
    upgrade: str | None = None
    route: routes.Route = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.route is None:
            object.__setattr__(self, "route", routes.match(
                self.method, self.target.plain_path, self.target.version is not None))

    @property
    def stream_body(self) -> bool:
        """True when dockerd reads the body as a stream (archive, image, build context)."""
        return self.route.body in (routes.STREAM, routes.BUILD)

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


def canonical_head(method: str, raw_target: bytes,
                   raw_headers: Iterable[tuple[bytes, list[bytes]]],
                   upgrade: str | None = None) -> CanonicalRequest:
    """The request as far as its line and headers tell, before any body byte is read.

    For an endpoint whose body is an opaque stream (build context, archive,
    image tarball) or never read, this is the whole request; a JSON body is
    added by :func:`with_body`.
    """
    if not method.isalpha() or not method.isupper():
        raise BadRequest(f"unsupported request method {method!r}")
    target = canonical_target(raw_target)
    headers = canonical_headers(raw_headers)
    for name, value in headers:
        if name == "Content-Type":
            for part in value.split(","):
                check_content_type(part)  # form bodies would smuggle query parameters
    route = routes.match(method, target.plain_path, target.version is not None)
    target = canonical_query_values(method, route.template, target)
    if upgrade and upgrade not in routes.upgrades_of(route):
        raise BadRequest(f"{target.plain_path} does not accept a connection upgrade"
                         f" to {upgrade!r}")
    return CanonicalRequest(method, target, headers, upgrade=upgrade, route=route)


# Canonical serializations of recent small JSON bodies, by (method, route, API version,
# the client's bytes): a client repeating a body (a CI job's create, the CLI's fixed
# fields) is parsed, checked and rewritten once.  At most 64 x 16 kB of keys plus
# their serializations; a refused body is not remembered, so it is refused every time.
_BODY_MEMO_BYTES = 16 << 10
_BODY_MEMO_ENTRIES = 64
_BODIES: OrderedDict[tuple[str, str, str | None, bytes], bytes] = OrderedDict()


def _fresh_copy(json_body: bytes) -> Any:
    """The canonical body again, as a new value no other request shares: dsfw's own
    serialization of it reads back as the same value (with the standard library:
    orjson reads an integer beyond 64 bits as a float)."""
    return json.loads(json_body)


def with_body(req: CanonicalRequest, raw: bytes,
              max_json_body: int = DEFAULT_MAX_BODY_BYTES) -> CanonicalRequest:
    """``req`` with its JSON body as dockerd decodes it: parsed, checked, re-serialized by dsfw.

    A body sent to an endpoint that never reads one is neither shown nor forwarded.
    """
    if req.route.body != routes.JSON:
        return req
    method, target = req.method, req.target
    key = (method, req.route.template, target.version, raw)
    json_body = _BODIES.get(key) if len(raw) <= _BODY_MEMO_BYTES <= max_json_body else None
    if json_body is not None:
        _BODIES.move_to_end(key)
        body = _fresh_copy(json_body)
    else:
        body, json_body = canonical_json_body(req.route.json_schema(target.version),
                                              target.version, raw, max_bytes=max_json_body,
                                              what=f"{method} {target.plain_path}")
        if json_body is not None and len(raw) <= _BODY_MEMO_BYTES:
            _BODIES[key] = json_body
            if len(_BODIES) > _BODY_MEMO_ENTRIES:
                _BODIES.popitem(last=False)
    headers = req.headers
    if json_body is not None:
        headers = tuple(sorted([(k, v) for k, v in headers if k != "Content-Type"]
                               + [("Content-Type", "application/json")]))
    return dataclasses.replace(req, headers=headers, body=body, json_body=json_body)


def canonical_request(method: str, raw_target: bytes,
                      raw_headers: Iterable[tuple[bytes, list[bytes]]],
                      read_body: Callable[[], bytes], upgrade: str | None = None,
                      max_json_body: int = DEFAULT_MAX_BODY_BYTES) -> CanonicalRequest:
    """One client request in the form dsfw decides and forwards (``dsfw eval`` uses it).

    ``read_body`` is only called for endpoints whose body dockerd may decode as
    JSON: the parsed body becomes what the policy sees and dsfw's own
    serialization what dockerd receives (so its Content-Type is JSON).
    Opaque stream bodies (build contexts, archives) are left to the caller.
    """
    req = canonical_head(method, raw_target, raw_headers, upgrade)
    if req.route.body != routes.JSON:
        return req
    return with_body(req, read_body(), max_json_body)


# The input fields a JSON request's head alone settles: the same with or without its body
# (``Headers`` is not: a body sets its Content-Type; derived facts and ``Body`` come from
# it).  ``Dockerfile`` only builds have, never a JSON request.
HEAD_FIELDS = frozenset({"Method", "Path", "PathPlain", "Route", "Version", "Query", "Upgrade",
                         "Peer", "ImageRef", "Dockerfile"})


def input_document(req: CanonicalRequest, peer: dict[str, Any] | None = None,
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The document the policy evaluates, with the original firewall's fields first.

    Derived facts (``BindMounts``, ``CapAdd``, ``CapDrop``, ``Privileged``) are
    computed from the canonical body, the same document dockerd receives;
    see docs/input.md.
    """
    from dsfw.input.derived import derived_facts  # local: the facts are this function's addition

    doc: dict[str, Any] = {
        "Method": req.method,
        "Path": req.target.policy_path(),
        "Headers": dict(req.headers),
        "Body": req.body,
        "PathPlain": req.target.plain_path,
        "Route": req.route.template,
        "Version": req.target.version,
        "Query": req.target.query_dict(),
    }
    doc.update(derived_facts(req))
    doc.update(query_facts(req.method, req.route.template, req.target))
    if req.upgrade:
        doc["Upgrade"] = req.upgrade
    if peer is not None:
        doc["Peer"] = peer
    if extra:
        doc.update(extra)
    return doc
