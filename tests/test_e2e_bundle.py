"""End to end: dsfw (twistd) takes its policy from OPA bundles served by a plain HTTP server.

The server counts its 200s and 304s, so "ETag avoids re-downloads" is measured,
not assumed.  Revisions are told apart by what the policy answers the real
docker CLI and by ``/_dsfw/health``.
"""
from __future__ import annotations

import json
import os
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from dsfw.testing.e2e import docker_cli, raw_request, requires_docker, split_responses
from dsfw.testing.fleet import BundleServer, make_bundle, public_pem

pytestmark = requires_docker


def policy(revision: str) -> dict[str, str]:
    """Allows everything but listing containers, which it refuses naming its revision."""
    return {"authz.rego": f"""package docker.authz
import rego.v1

default allow := true
deny contains "{revision} forbids listing" if input.PathPlain == "/containers/json"
""", "data.json": json.dumps({"fleet": {"revision": revision}})}


@pytest.fixture(scope="module")
def key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def server():
    s = BundleServer()
    yield s
    s.close()


def health(proc) -> dict:
    reply = raw_request(proc.socket, b"GET /_dsfw/health HTTP/1.1\r\nHost: dsfw\r\n"
                        b"Connection: close\r\n\r\n", responses=1, timeout=10)
    body = json.loads(split_responses(reply)[0].split(b"\r\n\r\n", 1)[1])
    return body if "policy" in body else {"refused": body, "policy": {"revision": None}}


def wait_for(predicate, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def listing_error(proc) -> str:
    result = docker_cli(proc.socket, "ps")
    assert result.returncode != 0
    return result.stderr


def test_bundle_server_lifecycle(dsfw_factory, server, key, tmp_path):
    (tmp_path / "key.pem").write_bytes(public_pem(key))
    server.set(b"not a bundle yet")
    proc = dsfw_factory(tmp_path, "--bundle-url", server.url, "--bundle-poll-interval", "0.3",
                        "--bundle-verification-key", str(tmp_path / "key.pem"))
    # Fail closed until a good bundle is active: even /_dsfw/health is decided by the policy.
    wait_for(lambda: server.counts[200] >= 1, "the first download")
    reply = raw_request(proc.socket, b"GET /_dsfw/health HTTP/1.1\r\nHost: dsfw\r\n"
                        b"Connection: close\r\n\r\n", responses=1, timeout=10)
    assert not reply.startswith(b"HTTP/1.1 200") and b"no policy bundle" in reply
    assert "no policy bundle has been activated yet" in listing_error(proc)

    server.set(make_bundle(policy("v1"), revision="v1", sign_with=key))
    wait_for(lambda: health(proc)["policy"]["revision"] == "v1", "revision v1")
    assert "v1 forbids listing" in listing_error(proc)
    assert docker_cli(proc.socket, "version").returncode == 0
    # Unchanged bundle: only conditional requests, answered 304, no new download.
    downloads = server.counts[200]
    wait_for(lambda: server.counts[304] >= 3, "three 304 answers")
    assert server.counts[200] == downloads
    assert health(proc)["status"] == "ok"

    server.set(make_bundle(policy("v2"), revision="v2", sign_with=key))
    wait_for(lambda: health(proc)["policy"]["revision"] == "v2", "revision v2 without restart")
    assert "v2 forbids listing" in listing_error(proc)

    server.set(make_bundle(policy("v3"), revision="v3", sign_with=key, tamper=True))
    bundle = wait_for(lambda: "does not verify" in str(
        (b := health(proc)["policy"]["bundle"])["last_error"]) and b, "the bad signature")
    assert bundle["revision"] == "v2"
    assert "v2 forbids listing" in listing_error(proc)

    server.set(make_bundle({"authz.rego": "package docker.authz\nallow if {{{\n"},
                           revision="v4", sign_with=key))
    bundle = wait_for(lambda: "authz.rego" in str(
        (b := health(proc)["policy"]["bundle"])["last_error"]) and b, "the broken policy")
    assert bundle["revision"] == "v2"
    assert "v2 forbids listing" in listing_error(proc)

    server.set(make_bundle(policy("v5"), revision="v5", sign_with=key))
    wait_for(lambda: health(proc)["policy"]["revision"] == "v5", "recovery to v5")
    log = proc.log_text()
    assert "bundle.activation_failed" in log and "policy.activated" in log
    assert proc.alive()


def test_local_bundle_file(dsfw_factory, tmp_path):
    path = tmp_path / "bundle.tar.gz"
    path.write_bytes(make_bundle(policy("f1"), revision="f1"))
    proc = dsfw_factory(tmp_path, "--bundle-url", f"file://{path}",
                        "--bundle-poll-interval", "0.3")
    assert health(proc)["policy"]["revision"] == "f1"  # loaded before the socket opened
    assert "f1 forbids listing" in listing_error(proc)
    fresh = tmp_path / "fresh.tar.gz"
    fresh.write_bytes(make_bundle(policy("f2"), revision="f2"))
    os.replace(fresh, path)
    wait_for(lambda: health(proc)["policy"]["revision"] == "f2", "revision f2 from the file")
    assert "f2 forbids listing" in listing_error(proc)


def test_broken_local_bundle_stops_start_up(dsfw_factory, tmp_path):
    path = tmp_path / "bundle.tar.gz"
    path.write_bytes(make_bundle({"authz.rego": "package docker.authz\nallow if {{{\n"}))
    proc = dsfw_factory(tmp_path, "--bundle-file", str(path), wait=False)
    deadline = time.monotonic() + 20
    while proc.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not proc.alive() and proc.returncode != 0
    assert "cannot use the policy bundle" in proc.log_text()
