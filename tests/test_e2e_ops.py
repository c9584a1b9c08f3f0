"""Operating dsfw for real: health and metrics, graceful stop, caller identity.

Each test starts a real ``twistd -n dsfw`` in front of the real dockerd.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from dsfw.testing.e2e import (DOCKER_SOCKET, SHIPPED_POLICIES, TEST_IMAGE, docker_cli, policy_dir, raw_request,
                         require_root, unique_name)

pytestmark = pytest.mark.requires_docker


def _get(sock: str, path: str) -> tuple[int, bytes]:
    reply = raw_request(sock, f"GET {path} HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n"
                        .encode(), timeout=10)
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_health_names_the_policy_revision_and_dockerd_state(dsfw_factory, tmp_path):
    up = dsfw_factory()
    status, body = _get(up.socket, "/_dsfw/health")
    health = json.loads(body)
    assert status == 200 and health["status"] == "ok" and health["dockerd"]["reachable"]
    assert len(health["policy"]["revision"]) >= 8
    blind = dsfw_factory(target=tmp_path / "no-dockerd.sock")
    status, body = _get(blind.socket, "/_dsfw/health")
    assert status == 503 and json.loads(body)["status"] == "degraded"


def test_dsfw_endpoints_are_never_forwarded_and_metrics_count_outcomes(dsfw):
    assert _get(dsfw.socket, "/v1.41/containers/json")[0] == 200
    net = unique_name()
    result = docker_cli(dsfw.socket, "network", "create", net)
    assert result.returncode != 0 and "dsfw:" in result.stderr
    status, body = _get(dsfw.socket, "/_dsfw/metrics")
    text = body.decode()
    assert status == 200
    assert 'endpoint="/networks/create",outcome="denied"} 1' in text
    assert 'method="GET",endpoint="/containers/json",outcome="allowed"} 1' in text
    # dockerd has no such route: a 404 from dsfw's own handler, not dockerd's
    status, body = _get(dsfw.socket, "/v1.41/_dsfw/secrets")
    assert status == 404 and b"no such dsfw endpoint" in body


def test_sigterm_drains_then_closes_an_open_attach_session(dsfw_factory):
    name = unique_name()
    assert docker_cli(DOCKER_SOCKET, "run", "-d", "-i", "--name", name, TEST_IMAGE, "cat"
                      ).returncode == 0
    try:
        proxy = dsfw_factory(SHIPPED_POLICIES, "--drain-timeout", "2")
        env = dict(os.environ, DOCKER_HOST=f"unix://{proxy.socket}")
        attach = subprocess.Popen(["docker", "attach", name], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        attach.stdin.write(b"echoed-through-dsfw\n")
        attach.stdin.flush()
        line = _read_line(attach.stdout, timeout=10)
        assert line == b"echoed-through-dsfw\n"
        started = time.monotonic()
        proxy._proc.send_signal(15)
        proxy._proc.wait(15)
        elapsed = time.monotonic() - started
        assert 1.5 <= elapsed < 10, f"stopped after {elapsed:.1f}s, drain bound is 2s"
        attach.wait(10)  # the session was closed by dsfw, not left hanging
        stopping = [line for line in proxy.log_text().splitlines() if "dsfw.stopping" in line]
        assert stopping and "in_flight=0" not in stopping[0], stopping
        state = json.loads(docker_cli(DOCKER_SOCKET, "inspect", name).stdout)[0]["State"]
        assert state["Running"], "stopping dsfw must not stop the container"
    finally:
        docker_cli(DOCKER_SOCKET, "rm", "-f", name)


def test_sigterm_with_nothing_in_flight_stops_at_once(dsfw_factory):
    proxy = dsfw_factory()
    assert _get(proxy.socket, "/_ping")[0] == 200
    started = time.monotonic()
    # twistd re-raises the SIGTERM that stopped it once it has shut down cleanly
    assert proxy.stop() in (0, -15)
    assert time.monotonic() - started < 5
    assert "dsfw.stopped" in proxy._log_path.read_text()
    assert not os.path.exists(proxy.socket)


def _read_line(stream, timeout: float) -> bytes:
    import select
    deadline = time.monotonic() + timeout
    buf = b""
    while not buf.endswith(b"\n") and time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], 0.2)
        if ready:
            chunk = os.read(stream.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
    return buf


PEER_POLICY = """package docker.authz
import rego.v1

default allow := false
allow if input.Peer.Uid == 0
deny contains sprintf("uid %d may not list containers", [input.Peer.Uid]) if {
    input.PathPlain == "/containers/json"
    input.Peer.Uid != 0
}
"""

_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
path = sys.argv[2] if len(sys.argv) > 2 else "/v1.41/containers/json"
s.sendall(b"GET " + path.encode() + b" HTTP/1.1\\r\\nHost: d\\r\\nConnection: close\\r\\n\\r\\n")
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
sys.stdout.write(data.decode("utf-8", "replace"))
"""


def test_the_same_request_is_allowed_for_root_and_denied_for_another_uid(dsfw_factory, tmp_path):
    """input.Peer comes from SO_PEERCRED: the kernel's word, not the client's."""
    require_root("a client as another uid")
    nogroup = 65534
    shared = tempfile.mkdtemp(prefix="dsfw-peer-")  # a directory the other uid can reach
    os.chmod(shared, 0o755)
    proxy = dsfw_factory(policy_dir(tmp_path, {"peer.rego": PEER_POLICY}),
                         "--socket-group", str(nogroup), host=os.path.join(shared, "dsfw.sock"))
    as_root = subprocess.run([sys.executable, "-c", _CLIENT, proxy.socket],
                             capture_output=True, text=True, timeout=20)
    assert as_root.stdout.startswith("HTTP/1.1 200"), as_root.stdout[:200]
    as_nobody = subprocess.run(["/usr/bin/python3", "-c", _CLIENT, proxy.socket],
                               capture_output=True, text=True, timeout=20,
                               user=65534, group=nogroup, extra_groups=[nogroup])
    assert as_nobody.stdout.startswith("HTTP/1.1 403"), as_nobody.stdout[:300] + as_nobody.stderr
    assert "uid 65534 may not list containers" in as_nobody.stdout
    assert "peer_uid=65534" in proxy.log_text()


def test_shipped_policies_give_health_to_everyone_and_metrics_to_root(dsfw_factory):
    """dsfw's endpoints are decided by the policy like any request, then answered by dsfw."""
    require_root("a client as another uid")
    nogroup = 65534
    shared = tempfile.mkdtemp(prefix="dsfw-peer-")
    os.chmod(shared, 0o755)
    proxy = dsfw_factory(SHIPPED_POLICIES, "--socket-group", str(nogroup),
                         host=os.path.join(shared, "dsfw.sock"))

    def get(path, **user):
        return subprocess.run(["/usr/bin/python3", "-c", _CLIENT, proxy.socket, path],
                              capture_output=True, text=True, timeout=20, **user).stdout
    nobody = dict(user=65534, group=nogroup, extra_groups=[nogroup])
    assert get("/_dsfw/health", **nobody).startswith("HTTP/1.1 200")
    refused = get("/_dsfw/metrics", **nobody)
    assert refused.startswith("HTTP/1.1 403") and "reserved to root" in refused, refused[:300]
    assert "dsfw_requests_total" not in refused
    allowed = get("/v1.41/_dsfw/metrics")
    assert allowed.startswith("HTTP/1.1 200") and 'outcome="denied"} 1' in allowed, allowed[:500]
    assert 'endpoint="/_dsfw/metrics",outcome="denied"} 1' in allowed


def test_the_socket_is_never_world_writable(dsfw_factory):
    proxy = dsfw_factory()
    mode = os.stat(proxy.socket).st_mode & 0o777
    assert mode == 0o660
    with socket.socket(socket.AF_UNIX) as s:  # and it does serve
        s.connect(proxy.socket)


def test_recorded_live_inputs_replay_with_dsfw_eval(dsfw_factory, tmp_path):
    """`--record-dir` writes what the policy saw; `dsfw eval --input` decides it again."""
    records = tmp_path / "records"
    proxy = dsfw_factory(SHIPPED_POLICIES, "--record-dir", str(records))
    assert docker_cli(proxy.socket, "ps").returncode == 0
    net = unique_name()
    refused = docker_cli(proxy.socket, "network", "create", net)
    assert refused.returncode != 0
    files = sorted(records.glob("*.json"))
    creates = [f for f in files if json.loads(f.read_text())["input"]["PathPlain"] == "/networks/create"]
    assert creates, [f.name for f in files]
    assert oct(creates[0].stat().st_mode & 0o777) == "0o600"
    for recorded, expect in ((creates[0], 1), (files[0], 0)):
        replay = subprocess.run([sys.executable, "-m", "dsfw.cli", "eval", "--policyDir",
                                 str(SHIPPED_POLICIES), "--input", str(recorded), "-q"],
                                capture_output=True, text=True, timeout=60,
                                env=dict(os.environ, PYTHONPATH=str(SHIPPED_POLICIES.parent)))
        assert replay.returncode == expect, replay.stdout + replay.stderr
