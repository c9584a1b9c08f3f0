"""The request target as Docker's router will read it, and as dsfw forwards it.

dockerd 20.10 (built with Go 1.19) routes with gorilla/mux on the
percent-decoded path (no ``UseEncodedPath``), answers a path that is not
already clean with a 301 instead of acting on it, and compares the
``/v1.xx`` prefix numerically (``/v01.41`` and ``/v1.41.0`` are 1.41).  Its
handlers read parameters with ``url.ParseQuery``, which since Go 1.17 refuses
``;`` separators and stops at bad ``%`` escapes (``ParseForm`` then answers
400, while ``r.URL.Query()`` silently drops the pair).  A policy that matched
the raw target would see ``/v1.41/%6eetworks/create`` where Docker routes
``/networks/create``.  So dsfw decodes the target once, refuses what dockerd
would not route or could read two ways, shows the policy the result, and
forwards a re-encoding of that same result.  All of it checked against the
real dockerd (tests/test_canonical_dockerd.py).
"""
from __future__ import annotations

import functools
import re
from urllib.parse import unquote_to_bytes
from dataclasses import dataclass
from urllib.parse import quote

from dsfw.errors import BadRequest

# mux's route prefix is "/v{version:[0-9.]+}": a segment of digits and dots.
_VERSION_RE = re.compile(r"^/v([0-9.]+)(/.*)?$", re.DOTALL)
# Control bytes never appear in a target Go's url parser accepts.
_CTL_BYTES = re.compile(rb"[\x00-\x20\x7f]")
# Decoded control characters in a path never route and only confuse logs.
_FORBIDDEN_PATH_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_PERCENT = re.compile(rb"%(?![0-9A-Fa-f]{2})")
# Longer version components are not versions any client sends.
_MAX_VERSION_DIGITS = 6


@dataclass(frozen=True)
class CanonicalTarget:
    """A request target after decoding, cleaning and version parsing.

    ``path`` is the decoded path including the canonical version prefix (what
    the original firewall's ``Path`` field started with); ``plain_path`` is
    the same without the version; ``version`` is ``major.minor`` or None when
    the client sent no prefix (dockerd then uses its own newest version);
    ``query`` keeps parameter order and repeats, decoded as Go decodes them.
    """

    path: str
    version: str | None
    plain_path: str
    query: tuple[tuple[str, str], ...]

    # The encodings below are computed once per target: a canonical request is
    # remembered by its head's bytes (dsfw.edge.resource), so a client polling
    # the same request reuses them (cached_property writes the instance's
    # __dict__, which a frozen dataclass allows).

    @functools.cached_property
    def raw_query(self) -> str:
        """The query re-encoded so Go's ``ParseQuery`` gives back exactly ``query``."""
        return "&".join(quote(k, safe="") + "=" + quote(v, safe="") for k, v in self.query)

    @functools.cached_property
    def _policy_path(self) -> str:
        return self.path + "?" + self.raw_query

    @functools.cached_property
    def _forward_target(self) -> bytes:
        target = quote(self.path, safe="/:@!$&'()*+,;=-._~")
        if self.query:
            target += "?" + self.raw_query
        return target.encode("ascii")

    def policy_path(self) -> str:
        """The original's ``Path`` field: path + ``?`` + query, always with ``?``."""
        return self._policy_path

    def forward_target(self) -> bytes:
        """The request target dsfw sends to dockerd (re-encoded canonical form)."""
        return self._forward_target

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
    """The ``major.minor`` that dockerd's numeric comparison makes of ``version``.

    moby's ``versions.compare`` splits on dots, reads each part with
    ``strconv.Atoi`` (an empty part is 0) and pads with zeros, so ``01.41``
    and ``1.41.0`` are 1.41.  Versions dockerd compares differently from any
    ``major.minor`` (``1.40.5``), or whose empty parts it reads as zeros
    (``1..41``, ``.41``: "too old"), are refused rather than guessed at.
    """
    parts = version.split(".")
    if len(parts) < 2 or not all(p.isdigit() and p.isascii() for p in parts):
        raise BadRequest(f"malformed API version {version!r}")
    if any(len(p.lstrip("0")) > _MAX_VERSION_DIGITS for p in parts):
        raise BadRequest(f"API version {version!r} is out of range")
    numbers = [int(p) for p in parts]
    if any(numbers[2:]):
        raise BadRequest(f"API version {version!r} has more than major.minor")
    return f"{numbers[0]}.{numbers[1]}"


def go_clean_path(path: str) -> str:
    """gorilla/mux's ``cleanPath``: Go's ``path.Clean`` keeping a trailing slash."""
    if path == "":
        return "/"
    if path[0] != "/":
        path = "/" + path
    parts: list[str] = []
    for seg in path.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if parts:
                parts.pop()
            continue
        parts.append(seg)
    cleaned = "/" + "/".join(parts)
    if path.endswith("/") and cleaned != "/":
        cleaned += "/"
    return cleaned


def _unescape(raw: bytes, what: str, plus_is_space: bool) -> str:
    """Go's ``url.PathUnescape``/``QueryUnescape``, refusing what Go refuses.

    Go keeps any byte sequence; dsfw also requires UTF-8 so that the policy
    engine (which holds text) and dockerd see the same characters.
    """
    if _PERCENT.search(raw):
        raise BadRequest(f"request {what} has an invalid percent escape")
    if plus_is_space:
        raw = raw.replace(b"+", b" ")
    # every escape is valid here, so unquote_to_bytes decodes exactly what Go does
    out = unquote_to_bytes(raw) if b"%" in raw else raw
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"request {what} is not valid UTF-8") from None


def parse_go_query(raw: bytes) -> tuple[tuple[str, str], ...]:
    """Go 1.19's ``url.ParseQuery``, with each of its error cases refused.

    Empty pieces (``a=1&&b=2``) are skipped as Go skips them; a piece without
    ``=`` is a key with an empty value.  A ``;`` would make Go drop the piece
    (and ``ParseForm`` fail), so it is refused, as are bad escapes.
    """
    if b";" in raw:
        raise BadRequest("request query contains ';', which dockerd's Go version "
                         "refuses as a separator")
    pairs = []
    for piece in raw.split(b"&"):
        if not piece:
            continue
        key, _, value = piece.partition(b"=")
        pairs.append((_unescape(key, "query", True), _unescape(value, "query", True)))
    return tuple(pairs)


def canonical_target(raw: bytes) -> CanonicalTarget:
    """Parse an origin-form request target; refuse anything ambiguous.

    Refused: anything but origin form, fragments, control bytes, bad escapes,
    non-UTF-8, decoded control characters, paths that are not clean (dockerd
    would redirect instead of acting), malformed versions and queries.
    """
    if not raw.startswith(b"/"):
        raise BadRequest("only origin-form request targets (starting with '/') are accepted")
    if b"#" in raw:
        raise BadRequest("request target must not contain a fragment")
    if _CTL_BYTES.search(raw):
        raise BadRequest("request target contains control characters or spaces")
    raw_path, _, raw_query = raw.partition(b"?")
    path = _unescape(raw_path, "path", False)
    if _FORBIDDEN_PATH_CHARS.search(path):
        raise BadRequest("request path contains control characters")
    if go_clean_path(path) != path:
        raise BadRequest(f"request path {path!r} is not clean; dockerd would redirect "
                         f"to {go_clean_path(path)!r} instead of acting on it")
    query = parse_go_query(raw_query)
    version = None
    plain = path
    m = _VERSION_RE.match(path)
    if m:
        version = canonical_version(m.group(1))
        plain = m.group(2) or "/"
        path = f"/v{version}{m.group(2) or ''}"
    return CanonicalTarget(path, version, plain, query)
