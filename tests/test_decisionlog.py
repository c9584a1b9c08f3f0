"""The decision-log queue on a fake clock: batching, retry with backoff, bounded and ordered."""
from __future__ import annotations

import gzip
import json

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from dsfw.ops.decisionlog import DecisionLog
from dsfw.policy import PolicyDecision


class FakeResponse:
    def __init__(self, code):
        self.code = code

    def content(self):
        return succeed(b"")


class FakeClient:
    """Records each upload; the test decides when and how it is answered."""

    def __init__(self):
        self.posts: list[tuple[list, Deferred]] = []

    def post(self, url, data, timeout, headers):
        d = Deferred()
        self.posts.append((json.loads(gzip.decompress(data)), d))
        return d


def make(max_bytes=1 << 20):
    clock = Clock()
    client = FakeClient()
    log = DecisionLog(clock, "http://collector/logs", labels={"id": "t"}, bundle_name="b",
                      max_buffer_bytes=max_bytes, http_client=client, rng=lambda: 0.5)
    log.startService()
    return clock, client, log


def decide(log, n, allowed=True):
    log.record({"Method": "GET", "Path": f"/x/{n}", "Query": {},
                "Headers": {"X-Registry-Auth": "secret"}},
               PolicyDecision(allowed, "docker.authz", (), "embedded", "r1"))


def numbers(events):
    return [int(e["input"]["Path"].rsplit("/", 1)[1]) for e in events]


def test_batches_in_order_and_redacted():
    clock, client, log = make()
    for i in range(5):
        decide(log, i)
    assert client.posts == []  # waits a little for company
    clock.advance(1)
    (events, d), = client.posts
    assert numbers(events) == [0, 1, 2, 3, 4]
    assert events[0]["input"]["Headers"]["X-Registry-Auth"] != "secret"
    assert events[0]["bundles"] == {"b": {"revision": "r1"}}
    d.callback(FakeResponse(200))
    assert log.counts["sent"] == 5


def test_failed_upload_is_retried_with_backoff_and_order_kept():
    clock, client, log = make()
    decide(log, 0)
    clock.advance(1)
    client.posts[0][1].errback(ConnectionRefusedError())
    decide(log, 1)
    clock.advance(0.4)
    assert len(client.posts) == 1  # backing off (0.5 s first)
    clock.advance(0.2)
    assert numbers(client.posts[1][0]) == [0]  # the same batch first
    client.posts[1][1].callback(FakeResponse(500))
    clock.advance(0.9)
    assert len(client.posts) == 2  # second retry waits 1 s
    clock.advance(0.2)
    client.posts[2][1].callback(FakeResponse(204))
    clock.advance(0)
    assert numbers(client.posts[3][0]) == [1]
    client.posts[3][1].callback(FakeResponse(200))
    assert (log.counts["sent"], log.counts["failed_uploads"], log.counts["dropped"]) == (2, 2, 0)


def test_buffer_bounded_in_bytes_drops_oldest():
    clock, client, log = make(max_bytes=3000)
    decide(log, 0)
    clock.advance(1)
    client.posts[0][1].errback(ConnectionRefusedError())  # collector down
    for i in range(1, 50):
        decide(log, i)
    kept_bytes = int(log.metrics_lines()[-1].split()[-1])
    assert kept_bytes <= 3000
    assert log.counts["dropped"] > 30
    clock.advance(60)
    sent = numbers(client.posts[-1][0])
    assert sent == sorted(sent) and sent[-1] == 49 and 0 not in sent  # the newest kept
