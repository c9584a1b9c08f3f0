"""The request target as Docker's router will read it, and as dsfw forwards it.

dockerd's router (gorilla/mux) matches the percent-decoded, cleaned path, and
compares the ``/v1.xx`` prefix numerically.  A policy that does string matching
on the raw target would see ``/v1.41/%6eetworks/create`` while Docker routes
``/networks/create``.  So dsfw decodes and cleans the path once, shows the
policy that, and forwards that same canonical form.
"""
from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote_to_bytes, urlencode

from dsfw.errors import BadRequest

_VERSION_RE = re.compile(r"^/v([0-9][0-9.]*)(/.*)?$")
# Bytes a path may carry once decoded; control characters and NUL never route.
_FORBIDDEN_PATH_CHARS = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class CanonicalTarget:
    """A request target after decoding, cleaning and version parsing.

    ``path`` is the decoded, cleaned path including the version prefix (what
    the original firewall's ``Path`` field started with); ``plain_path`` is the
    same without the version; ``query`` keeps parameter order and repeats.
    """

    path: str
    version: str | None
    plain_path: str
    query: tuple[tuple[str, str], ...]

    @property
    def raw_query(self) -> str:
        return urlencode(self.query, quote_via=quote)

    def policy_path(self) -> str:
        """The original's ``Path`` field: path + ``?`` + query, always with ``?``."""
        return self.path + "?" + self.raw_query

    def forward_target(self) -> bytes:
        """The request target dsfw sends to dockerd (re-encoded canonical form)."""
        target = quote(self.path, safe="/:@!$&'()*+,;=-._~")
        if self.query:
            target += "?" + self.raw_query
        return target.encode("ascii")

    def query_dict(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for k, v in self.query:
            out.setdefault(k, []).append(v)
        return out

    def param(self, name: str, default: str | None = None) -> str | None:
        """First value of a query parameter, as Go's ``r.FormValue`` reads it."""
        for k, v in self.query:
            if k == name:
                return v
        return default


def canonical_version(version: str) -> str:
    """Numeric form of an API version, as dockerd compares it (``01.041`` → ``1.41``)."""
    parts = version.split(".")
    if not all(p.isdigit() for p in parts):
        raise BadRequest(f"malformed API version {version!r}")
    return ".".join(str(int(p)) for p in parts)


def canonical_target(raw: bytes) -> CanonicalTarget:
    """Parse an origin-form request target; refuse anything ambiguous."""
    if not raw.startswith(b"/"):
        raise BadRequest("only origin-form request targets (starting with '/') are accepted")
    if b"#" in raw:
        raise BadRequest("request target must not contain a fragment")
    raw_path, _, raw_query = raw.partition(b"?")
    try:
        path = unquote_to_bytes(raw_path).decode("utf-8")
        query_text = raw_query.decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest("request target is not valid UTF-8") from None
    if _FORBIDDEN_PATH_CHARS.search(path):
        raise BadRequest("request path contains control characters")
    cleaned = posixpath.normpath(path)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    if path.endswith("/") and cleaned != "/":
        cleaned += "/"
    try:
        query = tuple(parse_qsl(query_text, keep_blank_values=True, strict_parsing=False,
                                errors="strict", separator="&"))
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("request query string is not valid") from None
    version = None
    plain = cleaned
    m = _VERSION_RE.match(cleaned)
    if m:
        version = canonical_version(m.group(1))
        plain = m.group(2) or "/"
        cleaned = f"/v{version}{m.group(2) or ''}"
    return CanonicalTarget(cleaned, version, plain, query)
