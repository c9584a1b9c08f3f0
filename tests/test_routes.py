"""The route table against moby 20.10's router, transcribed here independently.

``MOBY_ROUTES`` is api/server/router/*/ of moby v20.10.24 in the order
cmd/dockerd (initRouter) and api/server (createMux) register them; gorilla/mux
takes the first route whose method and path pattern match.  A reference
matcher below compiles those patterns to regular expressions the way mux does
and scans them in order: dsfw's indexed table must agree with it on every
path, adversarial ones included.
"""
from __future__ import annotations

import re

import pytest
from hypothesis import given, settings, strategies as st

from dsfw import routes
from dsfw.input import types as T
from dsfw.input.request import canonical_request

MOBY_ROUTES = [
    ("GET", "/containers/{name:.*}/checkpoints"),
    ("POST", "/containers/{name:.*}/checkpoints"),
    ("DELETE", "/containers/{name}/checkpoints/{checkpoint}"),
    ("HEAD", "/containers/{name:.*}/archive"),
    ("GET", "/containers/json"),
    ("GET", "/containers/{name:.*}/export"),
    ("GET", "/containers/{name:.*}/changes"),
    ("GET", "/containers/{name:.*}/json"),
    ("GET", "/containers/{name:.*}/top"),
    ("GET", "/containers/{name:.*}/logs"),
    ("GET", "/containers/{name:.*}/stats"),
    ("GET", "/containers/{name:.*}/attach/ws"),
    ("GET", "/exec/{id:.*}/json"),
    ("GET", "/containers/{name:.*}/archive"),
    ("POST", "/containers/create"),
    ("POST", "/containers/{name:.*}/kill"),
    ("POST", "/containers/{name:.*}/pause"),
    ("POST", "/containers/{name:.*}/unpause"),
    ("POST", "/containers/{name:.*}/restart"),
    ("POST", "/containers/{name:.*}/start"),
    ("POST", "/containers/{name:.*}/stop"),
    ("POST", "/containers/{name:.*}/wait"),
    ("POST", "/containers/{name:.*}/resize"),
    ("POST", "/containers/{name:.*}/attach"),
    ("POST", "/containers/{name:.*}/copy"),
    ("POST", "/containers/{name:.*}/exec"),
    ("POST", "/exec/{name:.*}/start"),
    ("POST", "/exec/{name:.*}/resize"),
    ("POST", "/containers/{name:.*}/rename"),
    ("POST", "/containers/{name:.*}/update"),
    ("POST", "/containers/prune"),
    ("POST", "/commit"),
    ("PUT", "/containers/{name:.*}/archive"),
    ("DELETE", "/containers/{name:.*}"),
    ("GET", "/images/json"),
    ("GET", "/images/search"),
    ("GET", "/images/get"),
    ("GET", "/images/{name:.*}/get"),
    ("GET", "/images/{name:.*}/history"),
    ("GET", "/images/{name:.*}/json"),
    ("POST", "/images/load"),
    ("POST", "/images/create"),
    ("POST", "/images/{name:.*}/push"),
    ("POST", "/images/{name:.*}/tag"),
    ("POST", "/images/prune"),
    ("DELETE", "/images/{name:.*}"),
    ("OPTIONS", "/{anyroute:.*}"),
    ("GET", "/_ping"),
    ("HEAD", "/_ping"),
    ("GET", "/events"),
    ("GET", "/info"),
    ("GET", "/version"),
    ("GET", "/system/df"),
    ("POST", "/auth"),
    ("GET", "/volumes"),
    ("GET", "/volumes/{name:.*}"),
    ("POST", "/volumes/create"),
    ("POST", "/volumes/prune"),
    ("DELETE", "/volumes/{name:.*}"),
    ("POST", "/build"),
    ("POST", "/build/prune"),
    ("POST", "/build/cancel"),
    ("POST", "/session"),
    ("POST", "/swarm/init"),
    ("POST", "/swarm/join"),
    ("POST", "/swarm/leave"),
    ("GET", "/swarm"),
    ("GET", "/swarm/unlockkey"),
    ("POST", "/swarm/update"),
    ("POST", "/swarm/unlock"),
    ("GET", "/services"),
    ("GET", "/services/{id}"),
    ("POST", "/services/create"),
    ("POST", "/services/{id}/update"),
    ("DELETE", "/services/{id}"),
    ("GET", "/services/{id}/logs"),
    ("GET", "/nodes"),
    ("GET", "/nodes/{id}"),
    ("DELETE", "/nodes/{id}"),
    ("POST", "/nodes/{id}/update"),
    ("GET", "/tasks"),
    ("GET", "/tasks/{id}"),
    ("GET", "/tasks/{id}/logs"),
    ("GET", "/secrets"),
    ("POST", "/secrets/create"),
    ("DELETE", "/secrets/{id}"),
    ("GET", "/secrets/{id}"),
    ("POST", "/secrets/{id}/update"),
    ("GET", "/configs"),
    ("POST", "/configs/create"),
    ("DELETE", "/configs/{id}"),
    ("GET", "/configs/{id}"),
    ("POST", "/configs/{id}/update"),
    ("GET", "/plugins"),
    ("GET", "/plugins/{name:.*}/json"),
    ("GET", "/plugins/privileges"),
    ("DELETE", "/plugins/{name:.*}"),
    ("POST", "/plugins/{name:.*}/enable"),
    ("POST", "/plugins/{name:.*}/disable"),
    ("POST", "/plugins/pull"),
    ("POST", "/plugins/{name:.*}/push"),
    ("POST", "/plugins/{name:.*}/upgrade"),
    ("POST", "/plugins/{name:.*}/set"),
    ("POST", "/plugins/create"),
    ("GET", "/distribution/{name:.*}/json"),
    ("POST", "/grpc"),
    ("GET", "/networks"),
    ("GET", "/networks/"),
    ("GET", "/networks/{id:.+}"),
    ("POST", "/networks/create"),
    ("POST", "/networks/{id:.*}/connect"),
    ("POST", "/networks/{id:.*}/disconnect"),
    ("POST", "/networks/prune"),
    ("DELETE", "/networks/{id:.*}"),
]
# api/server/server.go: m.Path("/debug" + r.Path()) -- any method, no version prefix
MOBY_DEBUG = ["/vars", "/pprof/", "/pprof/cmdline", "/pprof/profile", "/pprof/symbol",
              "/pprof/trace", "/pprof/{name}"]

# The Docker API documentation's parameter names, which templates use.
_DOC_NAME = {"containers": "id", "exec": "id", "images": "name", "volumes": "name",
             "plugins": "name", "distribution": "name"}
_PARAM = re.compile(r"\{(\w+)(?::([^}]*))?\}")


def _mux_regex(pattern: str) -> re.Pattern[str]:
    out, pos = [], 0
    for m in _PARAM.finditer(pattern):
        out += [re.escape(pattern[pos:m.start()]), f"({m.group(2) or '[^/]+'})"]
        pos = m.end()
    return re.compile("".join(out) + re.escape(pattern[pos:]) + r"\Z", re.DOTALL)


_REFERENCE = ([(m, _mux_regex(p), p, True) for m, p in MOBY_ROUTES]
              + [(None, _mux_regex("/debug" + p), "/debug" + p, False) for p in MOBY_DEBUG])


def reference(method: str, plain: str, versioned: bool):
    """(moby's pattern, parameter values) of the first route mux would take, or None."""
    for m, rx, pattern, may_version in _REFERENCE:
        if (m is None or m == method) and (may_version or not versioned):
            found = rx.match(plain)
            if found:
                return pattern, found.groups()
    return None


def doc_template(pattern: str) -> str:
    first = pattern[1:].split("/", 1)[0]

    def name(m):
        return "{" + (m.group(1) if m.group(1) in ("checkpoint", "anyroute")
                      or first == "debug" else _DOC_NAME.get(first, "id")) + "}"
    return _PARAM.sub(name, pattern)


def sample_path(pattern: str) -> tuple[str, tuple[str, ...]]:
    """A path for ``pattern``; multi-segment parameters get a value with a slash in it."""
    values = []

    def fill(m):
        value = "a/b.c" if (m.group(2) or "").startswith(".") else f"v{len(values)}"
        values.append(value)
        return value
    return _PARAM.sub(fill, pattern), tuple(values)


@pytest.mark.parametrize("method,pattern", MOBY_ROUTES)
def test_every_moby_route_maps_to_its_template_with_its_parameters(method, pattern):
    path, values = sample_path(pattern)
    for versioned in (False, True):
        route = routes.match(method, path, versioned)
        assert route.known, (method, path)
        assert route.template == doc_template(pattern)
        assert tuple(v for _, v in route.params) == values
        assert reference(method, path, versioned)[0] == pattern


@pytest.mark.parametrize("pattern", MOBY_DEBUG)
def test_debug_routes_take_any_method_but_no_version(pattern):
    path, _ = sample_path("/debug" + pattern)
    assert routes.match("GET", path).template == doc_template("/debug" + pattern)
    assert routes.match("PROPFIND", path).known
    assert not routes.match("GET", path, versioned=True).known


def test_the_table_has_every_moby_route_and_only_dsfw_s_own_beyond_them():
    moby = {(m, doc_template(p)) for m, p in MOBY_ROUTES}
    moby |= {(routes.ANY_METHOD, doc_template("/debug" + p)) for p in MOBY_DEBUG}
    table = {(e.method, e.template) for e in routes.ENDPOINTS}
    assert moby <= table
    assert all(t.startswith("/_dsfw/") for _, t in table - moby)


@pytest.mark.parametrize("method,path,template,objects", [
    # mux's order decides: the checkpoint DELETE is registered before the container DELETE
    ("DELETE", "/containers/web/checkpoints/cp1", "/containers/{id}/checkpoints/{checkpoint}",
     (("container", "web"), ("checkpoint", "cp1"))),
    ("DELETE", "/containers/a/b/checkpoints/cp1", "/containers/{id}",
     (("container", "a/b/checkpoints/cp1"),)),
    ("GET", "/containers/json", "/containers/json", ()),
    ("GET", "/containers/json/json", "/containers/{id}/json", (("container", "json"),)),
    ("GET", "/containers/x/json/logs", "/containers/{id}/logs", (("container", "x/json"),)),
    ("GET", "/containers/x/attach/ws", "/containers/{id}/attach/ws", (("container", "x"),)),
    ("GET", "/images/get", "/images/get", ()),
    ("GET", "/images/reg:5000/ns/app:1/json", "/images/{name}/json",
     (("image", "reg:5000/ns/app:1"),)),
    ("DELETE", "/images/reg/app:1", "/images/{name}", (("image", "reg/app:1"),)),
    ("GET", "/networks/", "/networks/", ()),
    ("GET", "/networks/a/b", "/networks/{id}", (("network", "a/b"),)),
    ("DELETE", "/networks/", "/networks/{id}", (("network", ""),)),
    ("POST", "/exec/e1/start", "/exec/{id}/start", (("exec", "e1"),)),
    ("GET", "/tasks/t1/logs", "/tasks/{id}/logs", (("task", "t1"),)),
    ("POST", "/nodes/n1/update", "/nodes/{id}/update", (("node", "n1"),)),
    ("GET", "/secrets/s1", "/secrets/{id}", (("secret", "s1"),)),
    ("POST", "/configs/c1/update", "/configs/{id}/update", (("config", "c1"),)),
    ("POST", "/plugins/vieux/sshfs:latest/enable", "/plugins/{name}/enable",
     (("plugin", "vieux/sshfs:latest"),)),
    ("DELETE", "/volumes/v1", "/volumes/{name}", (("volume", "v1"),)),
    ("GET", "/distribution/busybox:1/json", "/distribution/{name}/json",
     (("image", "busybox:1"),)),
    ("OPTIONS", "/containers/x/json", "/{anyroute}", ()),
])
def test_parameters_and_the_objects_they_name(method, path, template, objects):
    route = routes.match(method, path)
    assert route.template == template
    assert route.objects() == objects


@pytest.mark.parametrize("method,path", [
    ("GET", "/"), ("GET", "/containers"), ("GET", "/services/a/b"), ("GET", "/tasks/a/b/logs"),
    ("POST", "/containers/json"), ("HEAD", "/containers/json"), ("PATCH", "/containers/x"),
    ("GET", "/nope/x/y"), ("GET", "/_pingx"), ("PUT", "/images/load"),
    ("GET", "/networks"[:-1]), ("DELETE", "/services/a/b"),
])
def test_paths_dockerd_does_not_route_are_the_one_unknown_route(method, path):
    route = routes.match(method, path)
    assert not route.known and route.template == "unknown" and route.params == ()
    assert reference(method, path, False) is None


@pytest.mark.parametrize("method", ["PROPFIND", "GETS", "BREW", "X"])
def test_odd_methods_match_only_any_method_routes_and_share_one_label(method):
    assert not routes.match(method, "/containers/json").known
    assert routes.match(method, "/containers/json").metrics_label(method) == ("OTHER", "unknown")
    assert routes.match(method, "/debug/vars").known


def test_route_attributes_say_how_dockerd_reads_the_request():
    create = routes.match("POST", "/containers/create")
    assert (create.body, create.json_schema("1.41"), create.facts) == (
        routes.JSON, "container", routes.CONTAINER_FACTS)
    start = routes.match("POST", "/containers/x/start")
    assert start.json_schema("1.23") == "start" and start.json_schema("1.24") is None
    assert start.json_schema(None) is None  # dockerd's default version is 1.41
    assert routes.match("POST", "/services/s/update").json_schema("1.41") is T.SERVICE_SPEC
    assert routes.match("POST", "/build").body == routes.BUILD
    for method, path in [("PUT", "/containers/x/archive"), ("POST", "/images/load"),
                         ("POST", "/images/create"), ("POST", "/plugins/create")]:
        assert routes.match(method, path).body == routes.STREAM
    hijacks = {(e.method, e.template) for e in routes.ENDPOINTS if e.hijack}
    assert hijacks == {("POST", "/containers/{id}/attach"), ("GET", "/containers/{id}/attach/ws"),
                       ("POST", "/exec/{id}/start"), ("POST", "/session"), ("POST", "/grpc")}
    assert routes.match("POST", "/containers/x/kill").body == routes.NONE
    assert routes.match("GET", "/_dsfw/health").admin
    assert routes.match("DELETE", "/_dsfw/anything").admin
    assert not routes.match("GET", "/_ping").admin


def test_the_request_carries_its_route_and_a_body_dockerd_never_reads_is_dropped():
    req = canonical_request("POST", b"/v1.41/containers/web/kill?signal=HUP", [],
                            lambda: b'{"ignored": true}')
    assert req.route.template == "/containers/{id}/kill"
    assert req.route.objects() == (("container", "web"),)
    assert (req.body, req.json_body) == (None, None)
    # a body dockerd decodes is shown and forwarded as dsfw serialized it
    req = canonical_request("POST", b"/volumes/create", [], lambda: b'{"name": "v"}')
    assert req.route.template == "/volumes/create" and req.json_body == b'{"Name":"v"}'


_segments = st.sampled_from(["containers", "images", "json", "x", "a:b", "exec", "start",
                             "networks", "checkpoints", "debug", "pprof", "_ping", "services",
                             "logs", "attach", "ws", "create", ""])


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "BREW"]),
       st.lists(_segments, min_size=0, max_size=6), st.booleans(), st.booleans())
def test_the_indexed_table_agrees_with_mux_s_ordered_scan(method, segments, slash, versioned):
    present = [s for s in segments if s]  # a clean path: no empty segments
    path = "/" + "/".join(present) + ("/" if slash and present else "")
    route = routes.match(method, path, versioned)
    expected = reference(method, path, versioned)
    if expected is None:
        assert not route.known or route.admin
    else:
        assert route.template == doc_template(expected[0])
        assert tuple(v for _, v in route.params) == expected[1]


def _endpoint_keys(value, depth: int = 0):
    """Every ``(METHOD, "/path")`` pair in a module-level value, at any depth up to 4."""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str) \
            and value[0] in routes.STANDARD_METHODS and isinstance(value[1], str) \
            and value[1].startswith("/"):
        yield value
        return
    if depth > 4:
        return
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _endpoint_keys(k, depth + 1)
            yield from _endpoint_keys(v, depth + 1)
    elif isinstance(value, (set, frozenset, tuple, list)):
        for v in value:
            yield from _endpoint_keys(v, depth + 1)


def test_every_endpoint_another_module_keys_on_is_a_row_of_the_table():
    """Side tables (query rewrites, label stamping, mounts, named objects) say what to do
    per route template: one the table does not have never matches, and what it guards
    (a label stamped, a mount checked) silently stops happening."""
    import importlib
    import pathlib
    root = pathlib.Path(routes.__file__).parent
    rows = {(e.method, e.template) for e in routes.ENDPOINTS}
    seen, strays = set(), []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__main__" or parts[1:2] == ("testing",):
            continue
        module = importlib.import_module(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
        for name, value in vars(module).items():
            for key in _endpoint_keys(value):
                seen.add((module.__name__, name))
                if key not in rows:
                    strays.append((module.__name__, name, key))
    assert strays == []
    assert {("dsfw.scope.labels", "_BUILD"), ("dsfw.scope.mounts", "MOUNTING"),
            ("dsfw.input.queryvalues", "_REWRITES")} <= seen  # the scan finds them
