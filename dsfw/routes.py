"""Every Docker Engine API endpoint dsfw knows, in one table, matched once per request.

dockerd 20.10 routes with gorilla/mux: routes are tried in registration order
(checkpoint, container, image, system, volume, build, session, swarm, plugin,
distribution, grpc, network; then ``/debug/...``, which takes no ``/vX.Y``
prefix and any method) and the first whose method and path pattern both match
wins.  ``{name:.*}`` takes slashes (``/containers/a/b/json`` is container
``a/b``), a bare ``{id}`` one segment.  This table keeps that order and those
patterns, so dsfw names the same endpoint dockerd will run, and says for it
what the rest of dsfw needs before reading a byte of body: how dockerd reads
the body (none / JSON with its schema / opaque stream / build context),
whether the connection may be hijacked, which derived facts apply, which
kinds of objects the path names, and whether dsfw answers it itself.

Matching is a dictionary lookup on the method and first path segment, then a
prefix/suffix check of the few routes sharing them, in moby's order.  The
result, a frozen :class:`Route`, travels with the request.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from dsfw.input import types as T

# How dockerd reads a request body on an endpoint.
NONE = "none"      # never read: dsfw does not read or forward one
JSON = "json"      # decoded as JSON (with a schema when dsfw knows the Go type)
STREAM = "stream"  # an opaque stream (tar archive, image, plugin context)
BUILD = "build"    # a build context, rewritten and shown to data.docker.build

# Which derived facts (dsfw.input.derived) a body gives.
CONTAINER_FACTS = "container"
SERVICE_FACTS = "service"
EXEC_FACTS = "exec"
VOLUME_FACTS = "volume"
PLUGIN_SET_FACTS = "plugin-set"

ANY_METHOD = "*"

# How a secret-bearing field is masked wherever input leaves dsfw (dsfw.input.redact).
SECRET = "secret"        # the whole value (strings and numbers at every depth)
ENV = "env"              # NAME=value strings: names kept
OPTIONS = "options"      # a map of options: keys kept, values masked
MOUNT_OPTIONS = "mount"  # volume driver options: credential-named ones masked, in o= too
URL = "url"              # a URL or git address: user info and query masked
BUILDARGS = "buildargs"  # a JSON object of build args: names kept
CHANGES = "changes"      # Dockerfile instructions (commit/import changes=): ENV values masked

# Upgrade protocols dockerd speaks on the endpoints that may hijack.
HIJACK_UPGRADES = frozenset({"tcp", "h2c", "websocket"})

# Methods that keep their own metrics label; any other is "OTHER".
STANDARD_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})

# The kind of object a path parameter names, by the collection it follows.
_KIND_OF_COLLECTION = {
    "containers": "container", "exec": "exec", "images": "image", "networks": "network",
    "volumes": "volume", "plugins": "plugin", "services": "service", "nodes": "node",
    "tasks": "task", "secrets": "secret", "configs": "config", "distribution": "image",
}
_PARAM = re.compile(r"\{(\w+)(?::([^}]*))?\}")
_SINGLE = "[^/]+"  # gorilla/mux's pattern for a bare {name}


@dataclass(frozen=True)
class Endpoint:
    """One row of the table: what dsfw knows about an endpoint before reading its body.

    ``pattern`` is moby's route path (``/containers/{id:.*}/logs``);
    ``template`` the same without patterns, as metrics and logs show it.
    ``schema`` is the Go type dsfw rewrites a JSON body into, applied only
    below API ``schema_below`` when set.  ``facts`` names the derived facts the
    body gives.  ``admin`` endpoints are answered by dsfw itself; ``buildkit``
    ones serve BuildKit sessions dsfw cannot inspect; ``versioned`` is False
    for routes dockerd serves only without a ``/vX.Y`` prefix.  ``secrets``
    lists the fields that carry credentials, as ``(path, kind)``: body paths in
    Go's field names (``[]`` every list element, ``""`` the whole body),
    ``?name`` a query parameter; see :mod:`dsfw.input.redact`.
    """

    method: str
    pattern: str
    body: str = NONE
    schema: Any = None
    schema_below: str | None = None
    hijack: bool = False
    facts: str | None = None
    admin: bool = False
    buildkit: bool = False
    versioned: bool = True
    secrets: tuple[tuple[str, str], ...] = field(default=(), compare=False)
    matcher: "_Matcher" = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "matcher", _Matcher(self.pattern))

    @property
    def template(self) -> str:
        return self.matcher.template

    @property
    def param_kinds(self) -> tuple[tuple[str, str | None], ...]:
        """Each path parameter with the kind of object it names (None: not an object)."""
        return self.matcher.kinds

    def json_schema(self, version: str | None) -> Any:
        """The schema a JSON body is rewritten with at API ``version``, or None."""
        if self.schema is None or self.schema_below is None:
            return self.schema
        from dsfw.input.schema import version_less  # local: schema.py is the body's module

        return self.schema if version_less(version, self.schema_below) else None


class _Matcher:
    """A route pattern as gorilla/mux matches it, without a regular expression for the common case."""

    def __init__(self, pattern: str):
        params = list(_PARAM.finditer(pattern))
        self.names = tuple(m.group(1) for m in params)
        self.template = _PARAM.sub(lambda m: "{" + m.group(1) + "}", pattern)
        first = pattern[1:].split("/", 1)[0]
        self.first = None if "{" in first else first  # None: any first segment
        self.prefix = pattern[:params[0].start()] if params else pattern
        self.suffix = pattern[params[-1].end():] if params else ""
        self.single = len(params) == 1
        self.rule = (params[0].group(2) or _SINGLE) if self.single else None
        self.regex = None
        if len(params) > 1:
            parts, pos = [], 0
            for m in params:
                parts += [re.escape(pattern[pos:m.start()]), f"({m.group(2) or _SINGLE})"]
                pos = m.end()
            self.regex = re.compile("".join(parts) + re.escape(pattern[pos:]) + r"\Z", re.DOTALL)
        collection = _KIND_OF_COLLECTION.get(first)
        self.kinds = tuple((name, "checkpoint" if name == "checkpoint" else collection)
                           for name in self.names)

    def match(self, path: str) -> tuple[str, ...] | None:
        if not self.names:
            return () if path == self.prefix else None
        if (len(path) < len(self.prefix) + len(self.suffix) or not path.startswith(self.prefix)
                or not path.endswith(self.suffix)):
            return None
        if self.regex is not None:
            m = self.regex.match(path)
            return m.groups() if m else None
        value = path[len(self.prefix):len(path) - len(self.suffix)]
        if self.rule == ".*":
            return (value,)
        if not value or (self.rule == _SINGLE and "/" in value):
            return None
        return (value,)


@dataclass(frozen=True)
class Route:
    """The endpoint one request is for, with the path parameters it names."""

    endpoint: Endpoint
    params: tuple[tuple[str, str], ...] = ()

    @property
    def known(self) -> bool:
        return self.endpoint is not UNKNOWN

    @property
    def template(self) -> str:
        return self.endpoint.template

    @property
    def body(self) -> str:
        return self.endpoint.body

    @property
    def hijack(self) -> bool:
        return self.endpoint.hijack

    @property
    def admin(self) -> bool:
        return self.endpoint.admin

    @property
    def facts(self) -> str | None:
        return self.endpoint.facts

    def json_schema(self, version: str | None) -> Any:
        return self.endpoint.json_schema(version)

    def param(self, name: str) -> str | None:
        for k, v in self.params:
            if k == name:
                return v
        return None

    def objects(self) -> tuple[tuple[str, str], ...]:
        """``(kind, name or id)`` of every object the path names, e.g. ``(("container", "web"),)``."""
        kinds = dict(self.endpoint.param_kinds)
        return tuple((kinds[k], v) for k, v in self.params if kinds.get(k))

    def metrics_label(self, method: str) -> tuple[str, str]:
        """``(method, template)``: a bounded label whatever the client sent."""
        return (method if method in STANDARD_METHODS else "OTHER"), self.template


def _e(method: str, pattern: str, secrets: dict[str, str] | None = None, **kw: Any) -> Endpoint:
    return Endpoint(method, pattern, secrets=tuple((secrets or {}).items()), **kw)


_LOG_OPTIONS = {"HostConfig.LogConfig.Config": OPTIONS,
                "HostConfig.Mounts[].VolumeOptions.DriverConfig.Options": MOUNT_OPTIONS}
_CONTAINER = dict(body=JSON, schema="container", facts=CONTAINER_FACTS,
                  secrets={"Env": ENV, **_LOG_OPTIONS})
_AUTH_CONFIG = {"Password": SECRET, "Auth": SECRET, "IdentityToken": SECRET,
                "RegistryToken": SECRET, "ServerAddress": URL}
_SWARM_SPEC = {"CAConfig.SigningCAKey": SECRET, "CAConfig.ExternalCAs[].Options": OPTIONS,
               "CAConfig.ExternalCAs[].URL": URL, "TaskDefaults.LogDriver.Options": OPTIONS}
_SERVICE = dict(body=JSON, schema=T.SERVICE_SPEC, facts=SERVICE_FACTS, secrets={
    "TaskTemplate.ContainerSpec.Env": ENV, "TaskTemplate.ContainerSpec.Secrets": SECRET,
    "TaskTemplate.ContainerSpec.Mounts[].VolumeOptions.DriverConfig.Options": MOUNT_OPTIONS,
    "TaskTemplate.LogDriver.Options": OPTIONS, "TaskTemplate.PluginSpec.Env": ENV})
_DATA = {"Data": SECRET}

# moby 20.10 api/server/router/*, in the order dockerd registers them.
ENDPOINTS: tuple[Endpoint, ...] = (
    # checkpoint (experimental; registered first so its DELETE is not masked)
    _e("GET", "/containers/{id:.*}/checkpoints"),
    _e("POST", "/containers/{id:.*}/checkpoints", body=JSON),
    _e("DELETE", "/containers/{id}/checkpoints/{checkpoint}"),
    # container
    _e("HEAD", "/containers/{id:.*}/archive"),
    _e("GET", "/containers/json"),
    _e("GET", "/containers/{id:.*}/export"),
    _e("GET", "/containers/{id:.*}/changes"),
    _e("GET", "/containers/{id:.*}/json"),
    _e("GET", "/containers/{id:.*}/top"),
    _e("GET", "/containers/{id:.*}/logs"),
    _e("GET", "/containers/{id:.*}/stats"),
    _e("GET", "/containers/{id:.*}/attach/ws", hijack=True),
    _e("GET", "/exec/{id:.*}/json"),
    _e("GET", "/containers/{id:.*}/archive"),
    _e("POST", "/containers/create", **_CONTAINER),
    _e("POST", "/containers/{id:.*}/kill"),
    _e("POST", "/containers/{id:.*}/pause"),
    _e("POST", "/containers/{id:.*}/unpause"),
    _e("POST", "/containers/{id:.*}/restart"),
    # dockerd reads a start body below 1.24 (a whole HostConfig) and refuses one above
    _e("POST", "/containers/{id:.*}/start", body=JSON, schema="start", schema_below="1.24",
       facts=CONTAINER_FACTS, secrets=_LOG_OPTIONS),
    _e("POST", "/containers/{id:.*}/stop"),
    _e("POST", "/containers/{id:.*}/wait"),
    _e("POST", "/containers/{id:.*}/resize"),
    _e("POST", "/containers/{id:.*}/attach", hijack=True),
    _e("POST", "/containers/{id:.*}/copy"),
    _e("POST", "/containers/{id:.*}/exec", body=JSON, schema=T.EXEC_CONFIG, facts=EXEC_FACTS,
       secrets={"Env": ENV}),
    _e("POST", "/exec/{id:.*}/start", body=JSON, schema=T.EXEC_START_CHECK, hijack=True),
    _e("POST", "/exec/{id:.*}/resize"),
    _e("POST", "/containers/{id:.*}/rename"),
    _e("POST", "/containers/{id:.*}/update", body=JSON, schema=T.UPDATE_CONFIG),
    _e("POST", "/containers/prune"),
    _e("POST", "/commit", **{**_CONTAINER, "secrets": {**_CONTAINER["secrets"],
                                                       "?changes": CHANGES}}),
    _e("PUT", "/containers/{id:.*}/archive", body=STREAM),
    _e("DELETE", "/containers/{id:.*}"),
    # image
    _e("GET", "/images/json"),
    _e("GET", "/images/search"),
    _e("GET", "/images/get"),
    _e("GET", "/images/{name:.*}/get"),
    _e("GET", "/images/{name:.*}/history"),
    _e("GET", "/images/{name:.*}/json"),
    _e("POST", "/images/load", body=STREAM),
    _e("POST", "/images/create", body=STREAM, secrets={"?fromSrc": URL, "?changes": CHANGES}),
    # the auth config travels in the body when X-Registry-Auth is absent
    _e("POST", "/images/{name:.*}/push", body=JSON, secrets=_AUTH_CONFIG),
    _e("POST", "/images/{name:.*}/tag"),
    _e("POST", "/images/prune"),
    _e("DELETE", "/images/{name:.*}"),
    # system
    _e("OPTIONS", "/{anyroute:.*}"),
    _e("GET", "/_ping"),
    _e("HEAD", "/_ping"),
    _e("GET", "/events"),
    _e("GET", "/info"),
    _e("GET", "/version"),
    _e("GET", "/system/df"),
    _e("POST", "/auth", body=JSON, secrets=_AUTH_CONFIG),
    # volume
    _e("GET", "/volumes"),
    _e("GET", "/volumes/{name:.*}"),
    _e("POST", "/volumes/create", body=JSON, schema=T.VOLUME_CREATE_BODY, facts=VOLUME_FACTS,
       secrets={"DriverOpts": MOUNT_OPTIONS}),
    _e("POST", "/volumes/prune"),
    _e("DELETE", "/volumes/{name:.*}"),
    # build, session
    _e("POST", "/build", body=BUILD, secrets={"?buildargs": BUILDARGS, "?remote": URL}),
    _e("POST", "/build/prune"),
    _e("POST", "/build/cancel"),
    _e("POST", "/session", hijack=True, buildkit=True),
    # swarm
    _e("POST", "/swarm/init", body=JSON, secrets={"Spec." + k: v for k, v in _SWARM_SPEC.items()}),
    _e("POST", "/swarm/join", body=JSON, secrets={"JoinToken": SECRET, "RemoteAddrs[]": URL}),
    _e("POST", "/swarm/leave"),
    _e("GET", "/swarm"),
    _e("GET", "/swarm/unlockkey"),
    _e("POST", "/swarm/update", body=JSON, secrets=_SWARM_SPEC),
    _e("POST", "/swarm/unlock", body=JSON, secrets={"UnlockKey": SECRET}),
    _e("GET", "/services"),
    _e("GET", "/services/{id}"),
    _e("POST", "/services/create", **_SERVICE),
    _e("POST", "/services/{id}/update", **_SERVICE),
    _e("DELETE", "/services/{id}"),
    _e("GET", "/services/{id}/logs"),
    _e("GET", "/nodes"),
    _e("GET", "/nodes/{id}"),
    _e("DELETE", "/nodes/{id}"),
    _e("POST", "/nodes/{id}/update", body=JSON),
    _e("GET", "/tasks"),
    _e("GET", "/tasks/{id}"),
    _e("GET", "/tasks/{id}/logs"),
    _e("GET", "/secrets"),
    _e("POST", "/secrets/create", body=JSON, secrets=_DATA),
    _e("DELETE", "/secrets/{id}"),
    _e("GET", "/secrets/{id}"),
    _e("POST", "/secrets/{id}/update", body=JSON, secrets=_DATA),
    _e("GET", "/configs"),
    _e("POST", "/configs/create", body=JSON, secrets=_DATA),
    _e("DELETE", "/configs/{id}"),
    _e("GET", "/configs/{id}"),
    _e("POST", "/configs/{id}/update", body=JSON, secrets=_DATA),
    # plugin
    _e("GET", "/plugins"),
    _e("GET", "/plugins/{name:.*}/json"),
    _e("GET", "/plugins/privileges"),
    _e("DELETE", "/plugins/{name:.*}"),
    _e("POST", "/plugins/{name:.*}/enable"),
    _e("POST", "/plugins/{name:.*}/disable"),
    _e("POST", "/plugins/pull", body=JSON, schema=T.PLUGIN_PRIVILEGES),
    _e("POST", "/plugins/{name:.*}/push"),
    _e("POST", "/plugins/{name:.*}/upgrade", body=JSON, schema=T.PLUGIN_PRIVILEGES),
    _e("POST", "/plugins/{name:.*}/set", body=JSON, schema=T.STRS, facts=PLUGIN_SET_FACTS,
       secrets={"": ENV}),
    _e("POST", "/plugins/create", body=STREAM),
    # distribution, grpc (BuildKit over h2c)
    _e("GET", "/distribution/{name:.*}/json"),
    _e("POST", "/grpc", hijack=True, buildkit=True),
    # network
    _e("GET", "/networks"),
    _e("GET", "/networks/"),
    _e("GET", "/networks/{id:.+}"),
    _e("POST", "/networks/create", body=JSON, schema=T.NETWORK_CREATE_REQUEST),
    _e("POST", "/networks/{id:.*}/connect", body=JSON, schema=T.NETWORK_CONNECT),
    _e("POST", "/networks/{id:.*}/disconnect", body=JSON, schema=T.NETWORK_DISCONNECT),
    _e("POST", "/networks/prune"),
    _e("DELETE", "/networks/{id:.*}"),
    # debug: any method, no version prefix
    _e(ANY_METHOD, "/debug/vars", versioned=False),
    _e(ANY_METHOD, "/debug/pprof/", versioned=False),
    _e(ANY_METHOD, "/debug/pprof/cmdline", versioned=False),
    _e(ANY_METHOD, "/debug/pprof/profile", versioned=False),
    _e(ANY_METHOD, "/debug/pprof/symbol", versioned=False),
    _e(ANY_METHOD, "/debug/pprof/trace", versioned=False),
    _e(ANY_METHOD, "/debug/pprof/{name}", versioned=False),
    # dsfw's own endpoints, decided like any request and answered by dsfw
    _e("GET", "/_dsfw/health", admin=True),
    _e("HEAD", "/_dsfw/health", admin=True),
    _e("GET", "/_dsfw/metrics", admin=True),
    _e("HEAD", "/_dsfw/metrics", admin=True),
    _e(ANY_METHOD, "/_dsfw/{name:.*}", admin=True),
)

# A path dockerd routes nowhere (it answers 404).  Its body is still parsed as
# JSON when present: a newer dockerd may know the endpoint, and refusing what
# is not JSON keeps the policy's view and dockerd's one.
UNKNOWN = Endpoint(ANY_METHOD, "unknown", body=JSON)


class RouteTable:
    """The endpoints indexed by method and first path segment, in moby's order."""

    def __init__(self, endpoints: tuple[Endpoint, ...]):
        self._endpoints = endpoints
        self._methods = frozenset(e.method for e in endpoints) | {ANY_METHOD}
        self._firsts = frozenset(e.matcher.first for e in endpoints) - {None}
        self._index: dict[tuple[str, str | None], tuple[Endpoint, ...]] = {}
        for method in self._methods:
            for first in self._firsts | {None}:
                self._index[(method, first)] = tuple(
                    e for e in endpoints
                    if e.method in (method, ANY_METHOD) and e.matcher.first in (first, None))

    def match(self, method: str, plain_path: str, versioned: bool = False) -> Route:
        """The route dockerd gives ``method plain_path`` (the path without ``/vX.Y``)."""
        first = plain_path[1:].split("/", 1)[0]
        candidates = self._index[(method if method in self._methods else ANY_METHOD,
                                  first if first in self._firsts else None)]
        for endpoint in candidates:
            if versioned and not endpoint.versioned:
                continue
            values = endpoint.matcher.match(plain_path)
            if values is not None:
                return Route(endpoint, tuple(zip(endpoint.matcher.names, values)))
        return Route(UNKNOWN)


TABLE = RouteTable(ENDPOINTS)


def match(method: str, plain_path: str, versioned: bool = False) -> Route:
    """:meth:`RouteTable.match` on dsfw's table."""
    return TABLE.match(method, plain_path, versioned)


def upgrades_of(route: Route) -> frozenset[str]:
    """The ``Upgrade`` values dockerd answers on this route: websocket only for attach/ws.

    dockerd takes any ``Upgrade`` on attach/exec/session as its raw-stream
    hijack; the policy sees one of the spellings clients use (``tcp``, or
    ``h2c`` for BuildKit's session), never a value dockerd would read differently.
    """
    if not route.hijack:
        return frozenset()
    if route.template.endswith("/attach/ws"):
        return frozenset({"websocket"})
    return frozenset({"tcp", "h2c"})
