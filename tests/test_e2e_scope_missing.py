"""End to end: a request naming an object that does not exist never reaches dockerd by that name.

dsfw looks the object up (``input.Target``); when dockerd has none, the policy
decides on ``Target: null`` and dsfw answers with dockerd's own missing-object
answer instead of forwarding the name -- which an object made in the
meantime, by another caller on dsfw or beside it, could take.

- The answers are dockerd's: each request is sent once to dockerd's socket
  and once through dsfw, and status and body must be the same bytes.
- The race is closed: the policy is asked through an OPA stand-in that, while
  deciding, creates the very object on dockerd's socket (the gap between
  dsfw's lookup and its relay, made deterministic).  The request must still
  be answered "no such object", and the object must be untouched.
"""
from __future__ import annotations

import json
import os
import socketserver
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler

import pytest

from dsfw.testing.e2e import (DOCKER_SOCKET, TEST_IMAGE, docker_cli, policy_dir, raw_request,
                              requires_docker, unique_name)

pytestmark = requires_docker

ALLOW = "package docker.authz\n\nallow := true\n"


def _status_and_body(answer: bytes) -> tuple[bytes, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split(b" ", 2)[1]
    if b"transfer-encoding: chunked" in head.lower():
        out, rest = b"", body
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size, 16)
            if n == 0:
                break
            out, rest = out + rest[:n], rest[n + 2:]
        body = out
    return status, body


def _ask(sock, method: str, path: str, body: bytes = b"", headers: str = "") -> tuple[bytes, bytes]:
    data = (f"{method} /v1.41{path} HTTP/1.1\r\nHost: docker\r\n{headers}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    return _status_and_body(raw_request(sock, data, responses=1, timeout=90))


def _cases(n: str) -> list[tuple[str, str, bytes, str]]:
    json_ct = "Content-Type: application/json\r\n"
    sha = "sha256:" + "0" * 64
    return [
        ("GET", f"/containers/{n}/json", b"", ""),
        ("POST", f"/containers/{n}/start", b"", ""),
        ("POST", f"/containers/{n}/stop", b"", ""),
        ("POST", f"/containers/{n}/kill?signal=KILL", b"", ""),
        ("POST", f"/containers/{n}/rename?name={n}x", b"", ""),
        ("GET", f"/containers/{n}/logs?stdout=1", b"", ""),
        ("GET", f"/containers/{n}/archive?path=/", b"", ""),
        ("PUT", f"/containers/{n}/archive?path=/", b"", ""),
        ("POST", f"/containers/{n}/exec", b'{"Cmd":["true"]}', json_ct),
        ("POST", f"/containers/{n}/update", b"{}", json_ct),
        ("DELETE", f"/containers/{n}?force=1", b"", ""),
        ("GET", f"/exec/{n}/json", b"", ""),
        ("POST", f"/exec/{n}/start", b"{}", json_ct),
        ("GET", f"/images/{n}/json", b"", ""),
        ("GET", f"/images/{n}/history", b"", ""),
        ("GET", f"/images/docker.io/library/{n}:v1/history", b"", ""),
        ("GET", f"/images/{n.upper()}/json", b"", ""),
        ("DELETE", f"/images/{n.upper()}", b"", ""),
        ("GET", f"/images/{n.upper()}/get", b"", ""),
        ("POST", f"/images/{n}/tag?repo={n}x", b"", ""),
        ("DELETE", f"/images/{n}", b"", ""),
        ("DELETE", f"/images/{sha}", b"", ""),
        ("GET", f"/images/{n}/get", b"", ""),
        ("GET", f"/volumes/{n}", b"", ""),
        ("DELETE", f"/volumes/{n}", b"", ""),
        ("DELETE", f"/volumes/{n}?force=1", b"", ""),
        ("GET", f"/networks/{n}", b"", ""),
        ("DELETE", f"/networks/{n}", b"", ""),
        ("GET", f"/plugins/{n}/json", b"", ""),
        ("DELETE", f"/plugins/{n}?force=1", b"", ""),
        ("POST", f"/plugins/{n}/disable", b"", ""),
        ("POST", f"/plugins/{n}/enable?timeout=0", b"", ""),
        ("POST", f"/plugins/{n}/push", b"", ""),
        ("POST", f"/plugins/{n}/set", b"[]", json_ct),
        ("POST", f"/commit?container={n}&repo={n}x", b"", ""),
        ("POST", "/networks/bridge/connect", b'{"Container":"%s"}' % n.encode(), json_ct),
        ("POST", f"/networks/{n}/connect", b'{"Container":"%s"}' % n.encode(), json_ct),
        ("POST", "/networks/bridge/disconnect", b'{"Container":"%s"}' % n.encode(), json_ct),
        ("POST", "/networks/bridge/disconnect", b'{"Container":"%s","Force":true}' % n.encode(),
         json_ct),
        ("GET", f"/images/get?names={n}", b"", ""),
        ("GET", f"/images/get?names={n}:v1", b"", ""),
        ("GET", f"/images/get?names=localbusybox:latest&names={n}", b"", ""),
        # no swarm on this dockerd: every swarm route answers "not a swarm manager"
        ("GET", f"/services/{n}", b"", ""),
        ("DELETE", f"/services/{n}", b"", ""),
        ("GET", f"/nodes/{n}", b"", ""),
        ("DELETE", f"/nodes/{n}", b"", ""),
        ("GET", f"/tasks/{n}", b"", ""),
        ("GET", f"/secrets/{n}", b"", ""),
        ("DELETE", f"/configs/{n}", b"", ""),
    ]


def test_a_missing_object_is_answered_as_dockerd_answers_it(dsfw_factory, tmp_path):
    proxy = dsfw_factory(policy_dir(tmp_path, {"authz.rego": ALLOW}))
    n = unique_name("dsfw-none")
    for method, path, body, headers in _cases(n):
        direct = _ask(DOCKER_SOCKET, method, path, body, headers)
        through = _ask(proxy.socket, method, path, body, headers)
        assert through == direct, (method, path)
    assert b"scope" not in b"".join(_ask(proxy.socket, "GET", f"/containers/{n}/json"))


class _DecidingOpa(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """OPA's Data API, allowing everything; while deciding a request whose path holds
    ``self.trigger``, it first runs ``self.hook`` (the gap between lookup and relay)."""

    daemon_threads = True

    def __init__(self, path: str):
        self.trigger: str | None = None
        self.hook = None
        self.asked: list[dict] = []
        super().__init__(path, _OpaHandler)


class _OpaHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def address_string(self) -> str:
        return "unix"

    def do_POST(self) -> None:
        doc = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        server = self.server
        query = doc.get("query")
        if query is not None:  # OPA's Query API (visible): nothing asks it here
            result: dict = {"result": []}
        else:
            given = doc.get("input") or {}
            if server.trigger and server.trigger in given.get("Path", ""):
                server.trigger = None  # once: the next request finds the object, as it should
                server.asked.append(given)
                server.hook()
            result = {"result": {"allow": True}}
        body = json.dumps(result).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def racing(dsfw_factory, tmp_path):
    with tempfile.TemporaryDirectory(prefix="dsfw-race-") as short:
        sock = os.path.join(short, "opa.sock")  # short enough for AF_UNIX
        opa = _DecidingOpa(sock)
        thread = threading.Thread(target=opa.serve_forever, daemon=True)
        thread.start()
        proxy = dsfw_factory(policy_dir(tmp_path, {"authz.rego": ALLOW}), "--opa-url",
                             f"unix://{sock}")
        yield proxy, opa
        opa.shutdown()
        opa.server_close()


def _direct(*args: str) -> subprocess.CompletedProcess:
    out = docker_cli(DOCKER_SOCKET, *args)
    assert out.returncode == 0, (args, out.stderr)
    return out


def test_an_object_made_after_a_null_lookup_is_not_acted_on(racing):
    proxy, opa = racing
    made: list[tuple[str, str]] = []

    def race(trigger: str, create: list[str], kind: str, name: str) -> None:
        opa.trigger, opa.asked = trigger, []
        opa.hook = lambda: (_direct(*create), made.append((kind, name)))

    try:
        # a container: start, exec, remove of a name made while the policy decides
        name = unique_name("dsfw-race")
        race(name, ["create", "--name", name, TEST_IMAGE, "sleep", "300"], "container", name)
        started = docker_cli(proxy.socket, "start", name)
        assert started.returncode != 0 and f"No such container: {name}" in started.stderr
        assert opa.asked and opa.asked[0]["Target"] is None
        assert _direct("inspect", "-f", "{{.State.Status}}", name).stdout.strip() == "created"
        opa.trigger = None
        _direct("start", name)

        # a volume removed by name
        volume = unique_name("dsfw-race-vol")
        race(volume, ["volume", "create", volume], "volume", volume)
        removed = docker_cli(proxy.socket, "volume", "rm", volume)
        assert removed.returncode != 0 and f"get {volume}: no such volume" in removed.stderr
        _direct("volume", "inspect", volume)

        # a network removed by name
        network = unique_name("dsfw-race-net")
        race(network, ["network", "create", network], "network", network)
        # (raw: the CLI's own inspect before the DELETE would take the hook)
        assert _ask(proxy.socket, "DELETE", f"/networks/{network}") == (
            b"404", f'{{"message":"network {network} not found"}}\n'.encode())
        _direct("network", "inspect", network)

        # an image tag made while the policy decides: neither removed nor tagged again
        image = unique_name("dsfw-race-img")
        race(image, ["tag", TEST_IMAGE, image], "image", image)
        removed = docker_cli(proxy.socket, "rmi", image)
        assert removed.returncode != 0 and f"No such image: {image}:latest" in removed.stderr
        _direct("image", "inspect", image)
    finally:
        opa.trigger = None
        for kind, name in made:
            if kind == "container":
                docker_cli(DOCKER_SOCKET, "rm", "-f", name)
            elif kind == "image":
                docker_cli(DOCKER_SOCKET, "rmi", name)
            else:
                docker_cli(DOCKER_SOCKET, kind, "rm", name)


def test_a_connect_body_too_large_to_read_here_is_refused(dsfw_factory, tmp_path):
    """A body past the body worker's threshold is parsed in the worker, where the container
    it names cannot be looked up: refused rather than forwarded by that name."""
    proxy = dsfw_factory(policy_dir(tmp_path, {"authz.rego": ALLOW}))
    body = json.dumps({"Container": unique_name("dsfw-none"),
                       "EndpointConfig": {"Aliases": ["a" * 1000] * 300}}).encode()
    status, answer = _ask(proxy.socket, "POST", "/networks/bridge/connect", body,
                          "Content-Type: application/json\r\n")
    assert status == b"403" and b"cannot be judged; send a smaller body" in answer, answer
