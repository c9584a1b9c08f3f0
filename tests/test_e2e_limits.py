"""At the connection limit, and out of file descriptors: refuse the new, finish the open, keep the policy.

A real ``twistd -n dsfw`` in front of the real dockerd.  Bounded: a few dozen
connections, waits of seconds.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import pytest

from dsfw.testing.e2e import _response_end, policy_dir

pytestmark = pytest.mark.requires_docker

POLICY = """package docker.authz
import rego.v1

allow := true
deny contains "networks are managed by ops" if input.PathPlain == "/networks/create"
"""
DENY_ALL = 'package docker.authz\nimport rego.v1\ndeny contains "closed" if true\n'


def connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    return s


def exchange(s: socket.socket, method: str, target: str, timeout: float = 10) -> bytes:
    """One request on an open connection; its whole response (Content-Length or chunked)."""
    s.sendall(f"{method} {target} HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\n\r\n".encode())
    return read_response(s, timeout)


def read_response(s: socket.socket, timeout: float = 10) -> bytes:
    deadline = time.monotonic() + timeout
    buf = b""
    while True:
        end = _response_end(buf, 0)
        if end is not None:
            return buf[:end]
        s.settimeout(max(0.05, deadline - time.monotonic()))
        chunk = s.recv(65536)
        if not chunk:
            return buf
        buf += chunk


def status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.") else 0


def revision(s: socket.socket) -> str:
    answer = exchange(s, "GET", "/_dsfw/health")
    assert status(answer) == 200, answer[:300]
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])["policy"]["revision"]


def test_at_the_connection_limit_new_clients_get_503_and_open_ones_continue(dsfw_factory,
                                                                             tmp_path):
    proxy = dsfw_factory(policy_dir(tmp_path, {"authz.rego": POLICY}), "--max-connections", "6")
    open_ones: list[socket.socket] = []
    deadline = time.monotonic() + 20
    while len(open_ones) < 6:  # each one served (the readiness probe's may linger a moment)
        s = connect(proxy.socket)
        if status(exchange(s, "GET", "/_ping")) == 200:
            open_ones.append(s)
            continue
        s.close()
        assert time.monotonic() < deadline, "the first six connections were not served"
        time.sleep(0.1)
    try:
        before = revision(open_ones[0])
        for _ in range(3):
            with connect(proxy.socket) as extra:
                answer = exchange(extra, "GET", "/_ping")
            assert status(answer) == 503, answer
            assert b"dsfw: too many open connections (limit 6); retry later" in answer
        for s in open_ones:  # every open connection is still served, by the same policy
            assert status(exchange(s, "GET", "/v1.41/_ping")) == 200
        denied = exchange(open_ones[1], "POST", "/v1.41/networks/create")
        assert status(denied) == 403 and b"networks are managed by ops" in denied
        assert revision(open_ones[2]) == before
        assert "connections.limit_reached" in proxy.log_text()
        open_ones.pop().close()
        deadline = time.monotonic() + 10
        while True:  # the freed place goes to the next client
            with connect(proxy.socket) as again:
                answer = exchange(again, "GET", "/_ping")
            if status(answer) == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert status(answer) == 200, answer
    finally:
        for s in open_ones:
            s.close()


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _nofile(pid: int) -> tuple[str, str]:
    """(soft, hard) RLIMIT_NOFILE of a process, as prlimit writes them."""
    out = subprocess.run(["prlimit", f"--pid={pid}", "--nofile", "--raw", "--noheadings",
                          "--output=SOFT,HARD"], capture_output=True, text=True, check=True)
    soft, hard = out.stdout.split()
    return soft, hard


def test_out_of_descriptors_the_policy_stays_and_open_requests_finish(dsfw_factory, tmp_path):
    policies = policy_dir(tmp_path, {"authz.rego": POLICY})
    proxy = dsfw_factory(policies, "--policy-reload-interval", "0.2")
    streams = [connect(proxy.socket) for _ in range(3)]
    extra: list[socket.socket] = []
    try:
        before = revision(streams[0])
        until = int(time.time()) + 4
        for s in streams:  # requests in flight while descriptors run out: events until +4 s
            s.sendall(f"GET /v1.41/events?since={until - 5}&until={until} HTTP/1.1\r\n"
                      f"Host: d\r\n\r\n".encode())
        time.sleep(0.5)
        limit = _fds(proxy.pid) + 4
        soft, hard = _nofile(proxy.pid)
        subprocess.run(["prlimit", f"--pid={proxy.pid}", f"--nofile={limit}:{hard}"], check=True)
        for _ in range(40):  # more clients than descriptors: the last are closed at once
            try:
                s = connect(proxy.socket)
                s.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n")
                extra.append(s)
            except OSError:
                break
        time.sleep(0.5)
        assert _fds(proxy.pid) >= limit - 2  # Twisted keeps one in reserve to refuse with
        (policies / "closed.rego").write_text(DENY_ALL)  # an edit dsfw cannot read now
        time.sleep(1.5)  # several polls of the policy directory
        for s in streams:  # the requests in flight finish, completely
            answer = read_response(s, timeout=15)
            assert status(answer) == 200 and answer.endswith(b"0\r\n\r\n"), answer[-200:]
        # the policy in force is the one before: not emptied, not half-read
        assert revision(streams[0]) == before
        assert status(exchange(streams[1], "GET", "/v1.41/containers/json?limit=1")) == 200
        denied = exchange(streams[2], "POST", "/v1.41/networks/create")
        assert b"networks are managed by ops" in denied
        assert proxy.alive()
        for s in extra:
            s.close()
        extra.clear()
        subprocess.run(["prlimit", f"--pid={proxy.pid}", f"--nofile={soft}:{hard}"], check=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # descriptors back: the edit is loaded
            with connect(proxy.socket) as s:
                if status(exchange(s, "GET", "/_ping")) == 403:
                    break
            time.sleep(0.2)
        with connect(proxy.socket) as s:
            answer = exchange(s, "GET", "/_ping")
        assert status(answer) == 403 and b"closed" in answer, answer
    finally:
        for s in streams + extra:
            s.close()


ENV_POLICY = """package docker.authz
import rego.v1

allow := true
deny contains sprintf("environment entry %s is refused", [e]) if {
    input.PathPlain == "/containers/create"
    some e in input.Body.Env
}
"""


def test_a_denied_large_request_writes_a_bounded_log_and_answer(dsfw_factory, tmp_path):
    proxy = dsfw_factory(policy_dir(tmp_path, {"authz.rego": ENV_POLICY}))
    before = len(proxy.log_text())
    env = [f"V{i}={'x' * 1200}" for i in range(5000)]
    body = json.dumps({"Image": "localbusybox:latest", "Env": env}).encode()
    assert len(body) > 5_900_000
    with connect(proxy.socket) as s:
        s.sendall(b"POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: "
                  b"application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        answer = read_response(s, timeout=60)
    assert status(answer) == 403
    message = json.loads(answer.split(b"\r\n\r\n", 1)[1])["message"]
    assert message.startswith("dsfw: environment entry V") and len(message) < 10_000
    assert "more deny messages" in message
    time.sleep(0.2)
    written = len(proxy.log_text()) - before
    assert 0 < written < 100_000, written
