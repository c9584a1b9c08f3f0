"""What kind of body and connection each Docker API endpoint has.

dsfw must know, before it reads a body, whether dockerd will decode it as JSON
(then the policy sees it, and dsfw forwards its own serialization) or treat it
as an opaque stream such as a tar archive (then it is relayed from the spool
file as it is).  Matching is on the canonical, version-less path.
"""
from __future__ import annotations

import re

# Endpoints whose request body dockerd reads as an archive or raw stream.
_STREAM_BODY_ENDPOINTS = [
    ("POST", re.compile(r"^/build$")),
    ("PUT", re.compile(r"^/containers/[^/]+/archive$")),
    ("POST", re.compile(r"^/images/create$")),
    ("POST", re.compile(r"^/images/load$")),
    ("POST", re.compile(r"^/plugins/create$")),
]

# Endpoints where dockerd may take over the connection (attach, exec, BuildKit).
_HIJACK_ENDPOINTS = [
    ("POST", re.compile(r"^/containers/[^/]+/attach$")),
    ("POST", re.compile(r"^/exec/[^/]+/start$")),
    ("POST", re.compile(r"^/session$")),
    ("POST", re.compile(r"^/grpc$")),
]

# Upgrade protocols dockerd speaks on the endpoints above.
HIJACK_UPGRADES = frozenset({"tcp", "h2c"})


def _matches(table: list[tuple[str, re.Pattern[str]]], method: str, plain_path: str) -> bool:
    return any(m == method and rx.match(plain_path) for m, rx in table)


def has_stream_body(method: str, plain_path: str) -> bool:
    """True when dockerd reads this request's body as a stream, not JSON."""
    return _matches(_STREAM_BODY_ENDPOINTS, method, plain_path)


def may_hijack(method: str, plain_path: str) -> bool:
    """True when dockerd may hijack this request's connection."""
    return _matches(_HIJACK_ENDPOINTS, method, plain_path)


def is_build(method: str, plain_path: str) -> bool:
    return method == "POST" and plain_path == "/build"
