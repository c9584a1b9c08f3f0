"""The route table against the real dockerd: dsfw's "unknown" is exactly dockerd's "page not found".

Only reads (GET, HEAD, OPTIONS) of objects that do not exist are sent, straight
to dockerd: it answers "page not found" for a path no route takes, and
something else (no such container, swarm not active, experimental...) for one
it routes.  Endpoints that would stream, reach a registry or run a profile are
left out.
"""
from __future__ import annotations

import json
import random

import pytest

from dsfw.testing.e2e import DOCKER_SOCKET, raw_request

from dsfw import routes

from tests.test_routes import MOBY_DEBUG, MOBY_ROUTES  # noqa: E402

pytestmark = pytest.mark.requires_docker

# streams, registries, long profiles, whole-daemon scans
_SKIP = {"/events", "/images/search", "/distribution/{name:.*}/json", "/images/get",
         "/images/{name:.*}/get", "/plugins/privileges", "/system/df",
         "/containers/{name:.*}/attach/ws", "/containers/{name:.*}/stats",
         "/pprof/profile", "/pprof/trace"}


def _fill(pattern: str) -> str:
    out = pattern
    for token in ("{name:.*}", "{id:.*}", "{id:.+}", "{name}", "{id}", "{checkpoint}"):
        out = out.replace(token, "dsfw-nowhere-x1")
    return out


def _dockerd_message(method: str, target: str) -> str:
    reply = raw_request(DOCKER_SOCKET, f"{method} {target} HTTP/1.1\r\nHost: d\r\n"
                        f"Connection: close\r\n\r\n".encode(), timeout=20)
    head, _, body = reply.partition(b"\r\n\r\n")
    if method == "HEAD" or not body.startswith(b"{"):
        return head.split(b"\r\n", 1)[0].decode()
    try:
        return json.loads(body).get("message", "")
    except ValueError:
        return head.split(b"\r\n", 1)[0].decode()


def _reads():
    cases = [(m, "/v1.41" + _fill(p), _fill(p), True) for m, p in MOBY_ROUTES
             if m in ("GET", "HEAD") and p not in _SKIP]
    cases += [("GET", "/debug" + _fill(p), "/debug" + _fill(p), False) for p in MOBY_DEBUG
              if p not in _SKIP]
    rng = random.Random(20)
    words = ["containers", "images", "json", "x", "exec", "networks", "services", "tasks",
             "logs", "nodes", "volumes", "plugins", "swarm", "secrets", "debug", "vars", "top"]
    for _ in range(60):
        path = "/" + "/".join(rng.choice(words) for _ in range(rng.randint(1, 4)))
        cases.append(("GET", "/v1.41" + path, path, True))
    cases += [("HEAD", "/v1.41/containers/json", "/containers/json", True),
              ("GET", "/v1.41/debug/vars", "/debug/vars", True),
              ("OPTIONS", "/v1.41/anything/at/all", "/anything/at/all", True)]
    return cases


@pytest.mark.parametrize("method,target,plain,versioned", _reads())
def test_unknown_to_dsfw_is_page_not_found_at_dockerd(method, target, plain, versioned):
    if any(s in plain for s in ("/events", "/stats", "/attach/ws", "/get", "/search",
                                "/distribution", "/pprof/profile", "/pprof/trace", "/system/df")):
        pytest.skip("streams or reaches out")
    route = routes.match(method, plain, versioned)
    message = _dockerd_message(method, target)
    if method == "HEAD":  # no body: dockerd's 404 for no route vs another status
        assert route.known or message.startswith("HTTP/1.1 404"), (route.template, message)
        return
    assert (message == "page not found") == (not route.known), (route.template, message)
