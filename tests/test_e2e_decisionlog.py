"""End to end: every decision reaches a collector in OPA's decision-log format; a dead or
stuck collector costs requests nothing and its losses are counted."""
from __future__ import annotations

import re
import time
import uuid

import pytest

from dsfw.testing.e2e import policy_dir, raw_request, requires_docker, split_responses
from dsfw.testing.fleet import Collector, free_port, make_bundle

pytestmark = requires_docker

POLICY = {"authz.rego": """package docker.authz
import rego.v1

default allow := true
deny contains "no volumes here" if input.PathPlain == "/volumes/create"
"""}


def request(proc, method: str, target: str, headers: str = "", body: bytes = b"") -> bytes:
    data = (f"{method} {target} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n{headers}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    return raw_request(proc.socket, data, responses=1, timeout=20)


def metrics(proc) -> dict[str, float]:
    reply = request(proc, "GET", "/_dsfw/metrics")
    text = split_responses(reply)[0].split(b"\r\n\r\n", 1)[1].decode()
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r"^(dsfw_decision_logs_\w+) (\S+)$", text, re.M)}


def wait_for(predicate, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def collector():
    c = Collector()
    yield c
    c.close()


def test_collector_receives_every_decision_in_order(dsfw_factory, collector, tmp_path):
    bundle = tmp_path / "b.tar.gz"
    bundle.write_bytes(make_bundle(POLICY, revision="rev-7"))
    proc = dsfw_factory(tmp_path, "--bundle-file", str(bundle),
                        "--decision-log-url", collector.url)
    n = 40
    for i in range(n):
        assert request(proc, "GET", f"/v1.41/containers/json?limit={i}").startswith(
            b"HTTP/1.1 200")
    secret = uuid.uuid4().hex
    denied = request(proc, "POST", "/v1.41/volumes/create",
                     f"X-Registry-Auth: {secret}\r\nContent-Type: application/json\r\n",
                     b'{"Name": "x"}')
    assert denied.startswith(b"HTTP/1.1 403")
    def ours():  # the readiness check's /_ping is decided (and logged) too
        return [e for e in collector.events if e["input"]["PathPlain"] != "/_ping"]
    wait_for(lambda: len(ours()) >= n + 1, f"{n + 1} events")
    time.sleep(1)  # nothing more than the decisions made may arrive
    events = ours()
    assert len(events) == n + 1
    assert [e["input"]["Query"]["limit"] for e in events[:n]] == [[str(i)] for i in range(n)]
    assert len({e["decision_id"] for e in events}) == n + 1
    for event in events:
        assert event["path"] == "docker/authz/allow"
        assert event["bundles"] == {"dsfw": {"revision": "rev-7"}}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", event["timestamp"])
        assert set(event["labels"]) >= {"id", "version", "hostname"}
        assert isinstance(event["result"], bool)
    last = events[-1]
    assert last["result"] is False and last["custom"]["reasons"] == ["no volumes here"]
    assert last["input"]["Method"] == "POST"
    assert secret not in str(last) and last["input"]["Headers"]["X-Registry-Auth"] != secret
    assert all(u.get("Content-Encoding") == "gzip" for u in collector.uploads)
    assert len(collector.uploads) < n  # batched
    assert metrics(proc)["dsfw_decision_logs_sent_total"] == len(collector.events)


def timed_requests(proc, n: int) -> float:
    started = time.monotonic()
    for i in range(n):
        assert request(proc, "GET", f"/v1.41/containers/json?limit={i}").startswith(
            b"HTTP/1.1 200")
    return time.monotonic() - started


@pytest.mark.parametrize("collector_state", ["down", "hanging"])
def test_dead_collector_costs_requests_nothing(dsfw_factory, tmp_path, collector_state):
    stuck = Collector(hang=True) if collector_state == "hanging" else None
    url = stuck.url if stuck else f"http://127.0.0.1:{free_port()}/logs"
    try:
        policies = policy_dir(tmp_path, POLICY)
        baseline = dsfw_factory(policies)
        logging = dsfw_factory(policies, "--decision-log-url", url,
                               "--decision-log-buffer-size", "20000")
        n = 150
        timed_requests(baseline, 10)  # warm both up
        timed_requests(logging, 10)
        base = timed_requests(baseline, n)
        with_log = timed_requests(logging, n)
        # generous: the machine is shared; a blocked request path would take seconds each
        assert with_log < 3 * base + 2, (with_log, base)
        counters = metrics(logging)
        assert counters["dsfw_decision_logs_sent_total"] == 0
        assert counters["dsfw_decision_logs_dropped_total"] >= n - 40
        assert counters["dsfw_decision_logs_buffered_bytes"] <= 20000
        assert logging.alive()
    finally:
        if stuck:
            stuck.close()
