"""Metrics through the real resource: one outcome per request, bounded series."""
from __future__ import annotations

import random
import zlib

from twisted.internet.defer import fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from dsfw.errors import UpstreamUnavailable
from dsfw.ops.metrics import Metrics
from dsfw.policy import PolicyDecision

from tests.test_relay import FakeDockerd, FakeEngine, client, firewall  # noqa: E402


class DenyAll(FakeEngine):
    def decide(self, package, doc):
        return succeed(PolicyDecision(False, package, ("no",), "fake", "r1"))


class Coin(FakeEngine):
    """Allows half the paths, by their bytes."""

    def decide(self, package, doc):
        allowed = zlib.crc32(doc["Path"].encode()) % 2 == 0
        return succeed(PolicyDecision(allowed, package, () if allowed else ("no",), "fake", "r1"))


class DownDockerd(FakeDockerd):
    def acquire(self, fresh=False):
        self.acquired += 1
        return fail(UpstreamUnavailable("dockerd is not there"))


def series(metrics: Metrics) -> list[str]:
    return [line for line in metrics.render().decode().splitlines()
            if line.startswith("dsfw_endpoint_requests_total{")]


def value(metrics: Metrics, method: str, endpoint: str, outcome: str) -> int:
    prefix = f'dsfw_endpoint_requests_total{{method="{method}",endpoint="{endpoint}",outcome="{outcome}"}} '
    return sum(int(line[len(prefix):]) for line in series(metrics) if line.startswith(prefix))


_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789_.-:%"
_METHODS = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"]


def random_request(rng: random.Random) -> bytes:
    if rng.random() < 0.5:
        method = rng.choice(_METHODS)
    else:
        method = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(rng.randint(1, 9)))
    segments = ["".join(rng.choice(_ALPHABET) for _ in range(rng.randint(1, 14)))
                for _ in range(rng.randint(1, 5))]
    version = f"/v1.{rng.randint(0, 99)}" if rng.random() < 0.3 else ""
    path = version + "/" + "/".join(segments)
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode()


class MetricsTests(SynchronousTestCase):
    def test_random_paths_and_methods_leave_the_series_count_unchanged(self):
        """Denied, malformed, allowed and relayed (dockerd's 404), allowed and failed upstream:
        every outcome of 20,000 random requests lands in a series that already existed."""
        resource, dockerd, clock = firewall(Coin(), verbose=False)
        channel, transport = client(resource, clock)
        rng = random.Random(11)

        def send(n):
            for _ in range(n):
                before = dockerd.acquired
                channel.dataReceived(random_request(rng))
                if dockerd.acquired > before:  # allowed: dockerd answers, or fails
                    if rng.random() < 0.8:
                        dockerd.answer(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}")
                    else:
                        dockerd.connections[-1].transport.loseConnection()
                        dockerd.connections[-1].connectionLost(Failure(ConnectionDone()))
                self.assertIn(transport.value()[:12], (b"HTTP/1.1 403", b"HTTP/1.1 400",
                                                       b"HTTP/1.1 404", b"HTTP/1.1 502"))
                transport.clear()
        send(2_000)  # every label the generator can reach
        before = resource.metrics.render().decode().splitlines()
        send(20_000)
        after = resource.metrics.render().decode().splitlines()
        self.assertEqual(len(after), len(before))
        self.assertEqual([line.rsplit(" ", 1)[0] for line in after],
                         [line.rsplit(" ", 1)[0] for line in before])  # the same series
        self.assertLessEqual(len(series(resource.metrics)), 4 * (len(_METHODS) + 1) + 8)
        outcomes = {o: sum(int(line.rsplit(" ", 1)[1]) for line in series(resource.metrics)
                           if f'outcome="{o}"' in line) for o in Metrics.OUTCOMES}
        self.assertTrue(all(outcomes[o] > 100 for o in ("allowed", "denied", "error")), outcomes)
        self.assertEqual(outcomes["denied"] + outcomes["allowed"] + outcomes["error"], 22_000
                         - resource.metrics.outcomes["bad_request"])

    def test_allowed_then_failing_upstream_is_one_error(self):
        resource, dockerd, clock = firewall(FakeEngine(), DownDockerd())
        channel, transport = client(resource, clock)
        channel.dataReceived(b"GET /v1.41/containers/abc/json HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b" 502 ", transport.value())
        m = resource.metrics
        self.assertEqual((m.outcomes["allowed"], m.outcomes["error"]), (0, 1))
        self.assertEqual(value(m, "GET", "/containers/{id}/json", "error"), 1)
        self.assertEqual(value(m, "GET", "/containers/{id}/json", "allowed"), 0)

    def test_relayed_request_is_allowed_once(self):
        resource, dockerd, clock = firewall(FakeEngine())
        channel, transport = client(resource, clock)
        channel.dataReceived(b"GET /containers/abc/json HTTP/1.1\r\nHost: x\r\n\r\n")
        dockerd.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        self.assertIn(b" 200 ", transport.value())
        self.assertEqual(dict(resource.metrics.outcomes), {"allowed": 1})
        self.assertEqual(value(resource.metrics, "GET", "/containers/{id}/json", "allowed"), 1)
