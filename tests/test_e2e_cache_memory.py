"""dsfw's memory stays bounded by bytes when every request is large and distinct."""
from __future__ import annotations

import json

import pytest

from dsfw.testing.e2e import policy_dir, raw_request

pytestmark = pytest.mark.requires_docker

BODY_BYTES = 3 << 20
COUNT = 48


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _create(sock: str, i: int) -> bytes:
    body = json.dumps({"Image": "localbusybox", "Labels": {
        "pad": f"{i:08d}" + "x" * BODY_BYTES}}).encode()
    head = (f"POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    return raw_request(sock, head + body, responses=1, timeout=60)


def test_distinct_3mb_create_bodies_do_not_grow_dsfw(tmp_path, dsfw_factory):
    # A deterministic policy (so decisions are cached) that refuses creates:
    # dockerd keeps nothing, dsfw evaluates and remembers every decision.
    policies = policy_dir(tmp_path, {"authz.rego": (
        "package docker.authz\nimport rego.v1\n"
        "allow if input.Method == \"GET\"\n"
        "allow if count(input.Body.Labels.pad) < 100\n")})
    proc = dsfw_factory(policies)
    for i in range(4):  # warm up: allocator arenas, first-use imports
        assert _create(proc.socket, i).startswith(b"HTTP/1.1 403"), i
    before = _rss_mb(proc.pid)
    for i in range(4, COUNT):
        reply = _create(proc.socket, i)
        assert reply.startswith(b"HTTP/1.1 403"), reply[:300]
    grown = _rss_mb(proc.pid) - before
    # Keyed on the whole input, the cache held 44 x 3 MB (about 170 MB grown).
    assert grown < 32, f"dsfw grew by {grown:.0f} MB over {COUNT - 4} distinct 3 MB bodies"
