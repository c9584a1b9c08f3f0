"""End to end with raw bytes on the socket: what no well-behaved client sends, and process life.

Pipelining, malformed requests, an unreachable dockerd, clients that vanish
mid-stream, the socket file's claim and mode, and twistd's daemon mode.
Everything a denied request could have done is checked on dockerd's own socket.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from dsfw.testing import e2e as e2e_support
from dsfw.testing.e2e import (DOCKER_SOCKET, SHIPPED_POLICIES, TWISTD, docker_cli, raw_request,
                         requires_docker, split_responses, subprocess_env, unique_name)

# Tests using the ``dsfw`` fixture need dockerd through it; the others say so when they do.

PING = b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n"
PING_CLOSE = b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n"


def parse(response: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, lower-cased headers, de-chunked body) of one complete response."""
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
    if "chunked" in headers.get("transfer-encoding", ""):
        out, pos = b"", 0
        while True:
            end = body.index(b"\r\n", pos)
            size = int(body[pos:end], 16)
            if size == 0:
                break
            out += body[end + 2:end + 2 + size]
            pos = end + 2 + size + 2
        body = out
    return status, headers, body


def dsfw_message(response: bytes, status: int) -> str:
    """The Docker-style error message of a dsfw refusal with ``status``."""
    got, headers, body = parse(response)
    assert got == status, response
    assert headers.get("content-type", "").startswith("application/json"), response
    message = json.loads(body)["message"]
    assert message.startswith("dsfw: "), message
    return message


def post_json(path: str, doc: dict) -> bytes:
    body = json.dumps(doc).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def network_exists(name: str) -> bool:
    return docker_cli(DOCKER_SOCKET, "network", "inspect", name).returncode == 0


def assert_still_serving(proc) -> None:
    assert proc.alive(), proc.log_text()
    status, _, body = parse(raw_request(proc.socket, PING_CLOSE))
    assert (status, body) == (200, b"OK")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_pipelined_allowed_then_denied_then_allowed(dsfw):
    name = unique_name()
    try:
        reply = raw_request(dsfw.socket, PING + post_json("/v1.41/networks/create", {"Name": name})
                            + PING_CLOSE, responses=3)
        first, second, third = split_responses(reply)
        assert parse(first)[0::2] == (200, b"OK")
        assert "data.docker.authz.allow" in dsfw_message(second, 403)
        assert parse(third)[0::2] == (200, b"OK")
        assert not network_exists(name)
    finally:
        docker_cli(DOCKER_SOCKET, "network", "rm", name)


def test_denied_request_never_reaches_dockerd(dsfw):
    name = unique_name()
    since = str(int(time.time()) - 1)
    try:
        reply = raw_request(dsfw.socket, post_json("/networks/create", {"Name": name, "Driver": "bridge"})
                            .replace(b"Host: docker\r\n", b"Host: docker\r\nConnection: close\r\n"))
        dsfw_message(reply, 403)
        # dockerd would have logged a network event for a create it saw and carried out.
        events = docker_cli(DOCKER_SOCKET, "events", "--since", since, "--until",
                            str(int(time.time()) + 1), "--filter", "type=network",
                            "--format", "{{.Actor.Attributes.name}} {{.Action}}", timeout=30)
        assert events.returncode == 0, events.stderr
        assert name not in events.stdout
        assert not network_exists(name)
    finally:
        docker_cli(DOCKER_SOCKET, "network", "rm", name)


@pytest.mark.parametrize("request_bytes", [
    pytest.param(b"GARBAGE\r\n\r\n", id="garbage-request-line"),
    pytest.param(b"GET /_ping HTTP/1.1 extra\r\nHost: docker\r\n\r\n", id="four-word-request-line"),
    pytest.param(b"POST /v1.41/containers/create HTTP/1.1\r\nHost: docker\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 5\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", id="content-length-and-chunked"),
    pytest.param(b"POST /v1.41/containers/create HTTP/1.1\r\nHost: docker\r\n"
                 b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{} ", id="two-content-lengths"),
    pytest.param(b"GET http://docker/v1.41/containers/json HTTP/1.1\r\nHost: docker\r\n\r\n",
                 id="absolute-form-target"),
])
def test_malformed_request_is_400_and_dsfw_lives(dsfw, request_bytes):
    # twisted.web closes after a request it cannot parse; dsfw's own 400s may keep it open
    reply = raw_request(dsfw.socket, request_bytes, responses=1, timeout=10)
    assert reply.startswith(b"HTTP/1.1 400 "), reply
    assert_still_serving(dsfw)


def test_dockerd_unreachable_is_502(dsfw_factory, tmp_path):
    missing = tmp_path / "no-dockerd.sock"
    proc = dsfw_factory(SHIPPED_POLICIES, target=missing)
    message = dsfw_message(raw_request(proc.socket, PING_CLOSE), 502)
    assert "dockerd" in message and str(missing) in message, message  # says what is unreachable
    # ... and it keeps answering, with the same clear refusal
    dsfw_message(raw_request(proc.socket, PING_CLOSE), 502)
    assert proc.alive(), proc.log_text()


def test_client_vanishing_mid_stream(dsfw):
    # warm up the pool so the count below is of steady state
    for _ in range(3):
        raw_request(dsfw.socket, PING_CLOSE)
    before = open_fds(dsfw.pid)
    for _ in range(20):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(dsfw.socket)
            s.sendall(b"GET /v1.41/events HTTP/1.1\r\nHost: docker\r\n\r\n")
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = s.recv(4096)
                assert chunk, f"dsfw closed /events without answering: {head!r}"
                head += chunk
            assert head.startswith(b"HTTP/1.1 200 "), head
        # closed mid-stream: dsfw must drop its dockerd side too
    deadline = time.monotonic() + 10
    while open_fds(dsfw.pid) > before + 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert open_fds(dsfw.pid) <= before + 4, f"fds {before} -> {open_fds(dsfw.pid)}"
    assert_still_serving(dsfw)
    assert "Traceback" not in dsfw.log_text()


@requires_docker
def test_stale_socket_is_replaced(dsfw_factory, tmp_path):
    path = tmp_path / "stale.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens
    assert path.is_socket()
    proc = dsfw_factory(SHIPPED_POLICIES, host=path)
    assert_still_serving(proc)


def test_live_socket_is_not_taken_over(dsfw_factory, tmp_path):
    path = tmp_path / "live.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as owner:
        owner.bind(str(path))
        owner.listen(5)
        proc = dsfw_factory(SHIPPED_POLICIES, host=path, wait=False)
        deadline = time.monotonic() + 20
        while proc.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not proc.alive(), "dsfw started on a socket another process listens on"
        assert proc.returncode != 0
        assert "another process is listening" in proc.log_text(), proc.log_text()
        # the path still belongs to its owner
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.settimeout(5)
            c.connect(str(path))
            owner.settimeout(5)
            owner.accept()[0].close()


def test_socket_mode_is_0660(dsfw):
    mode = os.stat(dsfw.socket).st_mode & 0o7777
    assert mode == 0o660, oct(mode)


@requires_docker
def test_daemonized_twistd_serves_and_stops_on_sigterm(tmp_path):
    sock, pidfile, logfile = tmp_path / "d.sock", tmp_path / "d.pid", tmp_path / "d.log"
    args = ["--pidfile", str(pidfile), "--logfile", str(logfile), "dsfw", "--host", str(sock),
            "--target", DOCKER_SOCKET, "--policyDir", str(SHIPPED_POLICIES)]
    launcher = subprocess.run(TWISTD + args, env=subprocess_env(), cwd=tmp_path,
                              capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert launcher.returncode == 0, launcher
    pid = None
    try:
        deadline = time.monotonic() + 20
        while not (sock.exists() and pidfile.exists()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pidfile.exists() and sock.exists(), logfile.read_text() if logfile.exists() else ""
        pid = int(pidfile.read_text())
        status, _, body = parse(raw_request(sock, PING_CLOSE))
        assert (status, body) == (200, b"OK")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not Path(f"/proc/{pid}").exists(), "dsfw did not stop on SIGTERM"
        pid = None
        assert not sock.exists(), "socket left behind"
        assert not pidfile.exists(), "pidfile left behind"
        assert "dsfw.started" in logfile.read_text()
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGKILL)


def test_requires_docker_fails_under_ci_and_skips_elsewhere(monkeypatch, tmp_path):
    monkeypatch.setattr(e2e_support, "DOCKER_SOCKET", str(tmp_path / "absent.sock"))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set, so Docker end-to-end tests must run"):
        e2e_support.require_docker()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no dockerd socket at .*absent.sock"):
        e2e_support.require_docker()
