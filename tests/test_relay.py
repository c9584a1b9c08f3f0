"""The relay: dsfw's request head, and whole exchanges client -> dsfw -> fake dockerd.

The client is dsfw's own server channel from ``make_site(...).buildProtocol``
fed raw bytes; dockerd is a :class:`DockerConnection` on a ``StringTransport``
that the test answers.  Nothing here touches a socket or the real reactor.
"""
from __future__ import annotations

import json

from twisted.internet.defer import succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Cooperator
from twisted.internet.testing import MemoryReactorClock, StringTransport, StringTransportWithDisconnection
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from dsfw.build.gate import BuildGate
from dsfw.input.path import canonical_target
from dsfw.input.request import CanonicalRequest
from dsfw.policy import PolicyDecision
from dsfw.edge.relay import Relay, serialize_request
from dsfw.edge.resource import FirewallResource
from dsfw.edge.upstream import DockerConnection
from dsfw.tap import make_site


class FakeEngine:
    """Allows everything except paths listed in ``deny``; remembers what it saw."""

    name = "fake"

    def __init__(self, deny=()):
        self.deny = set(deny)
        self.inputs = []

    def decide(self, package, doc):
        self.inputs.append((package, doc))
        allowed = doc["PathPlain"] not in self.deny
        return succeed(PolicyDecision(allowed, package, () if allowed else ("fake says no",), "fake", "r1"))

    def revision(self):
        return "r1"

    # the rest of dsfw.policy.PolicyEngine: nothing to reload, cache, close or explain
    def input_fields(self):
        return None  # may read anything: every object a request names is looked up

    def reload(self):
        return True

    def reload_if_changed(self):
        return False

    def cache_stats(self):
        return {}

    def close(self):
        return succeed(None)

    def explain(self, package, doc):
        from dsfw.policy.explain import Explanation
        return succeed(Explanation(package, "allow", note="the fake engine explains nothing"))


class FakeDockerd:
    """A DockerPool stand-in: each new connection is a DockerConnection on a StringTransport."""

    def __init__(self):
        self.connections: list[DockerConnection] = []
        self.idle: list[DockerConnection] = []
        self.acquired = 0

    def acquire(self, fresh=False):
        self.acquired += 1
        while self.idle and not fresh:
            conn = self.idle.pop()
            if conn._state == "idle":
                conn.reused = True
                return succeed(conn)
        conn = DockerConnection()
        transport = StringTransportWithDisconnection()
        transport.protocol = conn
        conn.makeConnection(transport)
        conn.on_release = self.idle.append
        self.connections.append(conn)
        return succeed(conn)

    def received(self, index: int = -1) -> bytes:
        return self.connections[index].transport.value()

    def answer(self, data: bytes, index: int = -1) -> None:
        self.connections[index].dataReceived(data)


def firewall(engine=None, dockerd=None, **kwargs):
    """(resource, dockerd, clock) with the fake engine and dockerd.

    Streamed bodies are produced one piece per ``clock.advance(0)``.
    """
    clock = MemoryReactorClock()
    dockerd = dockerd or FakeDockerd()
    cooperator = Cooperator(scheduler=lambda work: clock.callLater(0, work))
    resource = FirewallResource(engine or FakeEngine(), Relay(clock, dockerd, cooperator),
                                BuildGate(clock, None), **kwargs)
    return resource, dockerd, clock


def client(resource, clock):
    """dsfw's server channel for ``resource`` on a StringTransport."""
    site = make_site(resource, clock)
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, transport


def target(raw: bytes) -> CanonicalRequest:
    return CanonicalRequest("GET", canonical_target(raw), ())


class SerializeTests(SynchronousTestCase):
    def test_get(self):
        req = CanonicalRequest("GET", canonical_target(b"/v01.41/containers/json?all=1&filters=%7B%7D"),
                               (("Accept", "*/*"), ("User-Agent", "Docker-Client/28")))
        self.assertEqual(
            serialize_request(req, None),
            b"GET /v1.41/containers/json?all=1&filters=%7B%7D HTTP/1.1\r\nHost: docker\r\n"
            b"Accept: */*\r\nUser-Agent: Docker-Client/28\r\n\r\n")

    def test_post_length(self):
        req = CanonicalRequest("POST", canonical_target(b"/containers/create?name=a+b"),
                               (("Content-Type", "application/json"),), body={}, json_body=b"{}")
        self.assertEqual(
            serialize_request(req, 2),
            b"POST /containers/create?name=a%20b HTTP/1.1\r\nHost: docker\r\n"
            b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n")

    def test_decoded_path_re_encoded(self):
        req = CanonicalRequest("DELETE", canonical_target(b"/containers/%6e%61me"), ())
        self.assertEqual(serialize_request(req, None),
                         b"DELETE /containers/name HTTP/1.1\r\nHost: docker\r\n\r\n")

    def test_upgrade(self):
        req = CanonicalRequest("POST", canonical_target(b"/v1.41/exec/abc/start"), (),
                               upgrade="tcp")
        self.assertEqual(
            serialize_request(req, 0),
            b"POST /v1.41/exec/abc/start HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\n"
            b"Upgrade: tcp\r\nContent-Length: 0\r\n\r\n")


CREATE = (b'{"image":"busybox","hostconfig":{"privileged":false},"Env":null}')
CANONICAL_CREATE = b'{"Image":"busybox","HostConfig":{"Privileged":false}}'


def create_request(extra_headers: bytes = b"") -> bytes:
    return (b"POST /v1.41/containers/create?name=web HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nTe: trailers\r\n"
            b"X-Custom: kept\r\n" % len(CREATE) + extra_headers + b"\r\n" + CREATE)


class ExchangeTests(SynchronousTestCase):
    def setUp(self):
        self.resource, self.dockerd, self.clock = firewall()
        self.channel, self.client = client(self.resource, self.clock)

    def test_dockerd_receives_canonical_request(self):
        self.channel.dataReceived(create_request())
        sent = self.dockerd.received()
        head, _, body = sent.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        self.assertEqual(lines[0], b"POST /v1.41/containers/create?name=web HTTP/1.1")
        self.assertEqual(body, CANONICAL_CREATE)
        self.assertEqual(sorted(lines[1:]), sorted([
            b"Host: docker", b"Content-Type: application/json", b"X-Custom: kept",
            b"Content-Length: %d" % len(CANONICAL_CREATE)]))

    def test_client_gets_chunked_body_reframed(self):
        self.channel.dataReceived(create_request())
        self.dockerd.answer(b"HTTP/1.1 201 Created\r\nApi-Version: 1.41\r\n"
                            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                            b"Connection: keep-alive\r\n\r\n"
                            b"6;ext=1\r\n{\"Id\":\r\n")
        self.dockerd.answer(b"5\r\n\"abc\"\r\n1\r\n}\r\n0\r\nX-Trailer: t\r\n\r\n")
        out = self.client.value()
        head, _, body = out.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        self.assertEqual(lines[0], b"HTTP/1.1 201 Created")
        headers = {k.lower(): v for k, _, v in (line.partition(b": ") for line in lines[1:])}
        self.assertEqual(headers[b"api-version"], b"1.41")
        self.assertEqual(headers[b"content-type"], b"application/json")
        self.assertEqual(headers[b"transfer-encoding"], b"chunked")
        self.assertNotIn(b"server", headers)
        self.assertNotIn(b"connection", headers)
        self.assertNotIn(b"x-trailer", headers)
        self.assertEqual(body, b"6\r\n{\"Id\":\r\n5\r\n\"abc\"\r\n1\r\n}\r\n0\r\n\r\n")
        self.assertEqual(self.dockerd.idle, self.dockerd.connections)

    def test_head_alone_goes_out_at_once(self):
        # docker run's wait: dockerd flushes the head, the body comes much later
        self.channel.dataReceived(b"POST /containers/abc/wait HTTP/1.1\r\nHost: x\r\n\r\n")
        self.dockerd.answer(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                            b"Transfer-Encoding: chunked\r\n\r\n")
        self.assertTrue(self.client.value().startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertTrue(self.client.value().endswith(b"\r\n\r\n"))
        self.dockerd.answer(b"10\r\n{\"StatusCode\":0}\r\n0\r\n\r\n")
        self.assertTrue(self.client.value().endswith(b"10\r\n{\"StatusCode\":0}\r\n0\r\n\r\n"))

    def test_head_and_body_read_together_leave_in_one_write(self):
        writes = []

        def count_writes(transport):
            real_write = transport.write
            transport.write = lambda data: (writes.append(data), real_write(data))
            transport.writeSequence = lambda seq: transport.write(b"".join(seq))

        count_writes(self.client)
        self.channel.dataReceived(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
        self.dockerd.answer(b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Length: 2\r\n"
                            b"Content-Type: text/plain\r\n\r\nOK")
        self.assertEqual(len(writes), 1)
        self.assertTrue(writes[0].startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertIn(b"\r\nContent-Length: 2\r\n", writes[0])
        self.assertTrue(writes[0].endswith(b"\r\n\r\nOK"))
        # a refusal answered by dsfw itself is one write too
        del writes[:]
        self.resource, self.dockerd, self.clock = firewall(FakeEngine(deny={"/info"}))
        self.channel, self.client = client(self.resource, self.clock)
        count_writes(self.client)
        self.channel.dataReceived(b"GET /info HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(len(writes), 1)
        self.assertTrue(writes[0].startswith(b"HTTP/1.1 403 Forbidden\r\n"))
        self.assertTrue(writes[0].endswith(b'"}\n'))

    def test_content_length_kept(self):
        self.channel.dataReceived(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(self.dockerd.received(), b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n")
        self.dockerd.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nOK")
        self.assertTrue(self.client.value().endswith(b"\r\n\r\nOK"))
        self.assertIn(b"Content-Length: 2\r\n", self.client.value())
        self.assertNotIn(b"chunked", self.client.value())

    def test_error_status_and_reason_relayed(self):
        self.channel.dataReceived(b"GET /containers/nope/json HTTP/1.1\r\nHost: x\r\n\r\n")
        self.dockerd.answer(b'HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n'
                            b'Content-Length: 31\r\n\r\n{"message":"No such container"}')
        out = self.client.value()
        self.assertTrue(out.startswith(b"HTTP/1.1 404 Not Found\r\n"))
        self.assertTrue(out.endswith(b'{"message":"No such container"}'))

    def test_keep_alive_both_sides(self):
        self.channel.dataReceived(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
        self.dockerd.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")
        self.channel.dataReceived(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(len(self.dockerd.connections), 1)
        self.assertTrue(self.dockerd.received().endswith(b"GET /version HTTP/1.1\r\nHost: docker\r\n\r\n"))
        self.dockerd.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        self.assertEqual(self.client.value().count(b"HTTP/1.1 200 OK"), 2)

    def test_head_request(self):
        self.channel.dataReceived(b"HEAD /v1.41/containers/x/archive?path=%2F HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(self.dockerd.received().startswith(b"HEAD /v1.41/containers/x/archive?path=%2F "))
        self.dockerd.answer(b"HTTP/1.1 200 OK\r\nX-Docker-Container-Path-Stat: e30=\r\n"
                            b"Content-Length: 0\r\n\r\n")
        self.channel.dataReceived(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
        self.dockerd.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")
        out = self.client.value()
        first, _, second = out.partition(b"\r\n\r\n")
        self.assertIn(b"X-Docker-Container-Path-Stat: e30=", first)
        self.assertTrue(second.startswith(b"HTTP/1.1 200 OK\r\n"), out)
        self.assertTrue(second.endswith(b"\r\n\r\nOK"), out)

    def test_204_no_body(self):
        self.channel.dataReceived(b"POST /containers/x/start HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        self.assertIn(b"Content-Length: 0\r\n", self.dockerd.received())
        self.dockerd.answer(b"HTTP/1.1 204 No Content\r\nApi-Version: 1.41\r\n\r\n")
        self.channel.dataReceived(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
        self.dockerd.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")
        first, _, second = self.client.value().partition(b"\r\n\r\n")
        self.assertTrue(first.startswith(b"HTTP/1.1 204 No Content\r\n"))
        self.assertNotIn(b"chunked", first)
        self.assertTrue(second.startswith(b"HTTP/1.1 200 OK\r\n"), second)

    def test_backpressure_pauses_dockerd(self):
        self.channel.dataReceived(b"GET /containers/x/logs?follow=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        self.dockerd.answer(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\nline1\n")
        upstream = self.dockerd.connections[0].transport
        self.assertEqual(upstream.producerState, "producing")
        self.client.producer.pauseProducing()  # what the client's transport does when its buffer fills
        self.assertEqual(upstream.producerState, "paused")
        self.client.producer.resumeProducing()
        self.assertEqual(upstream.producerState, "producing")

    def test_client_disconnect_aborts_dockerd(self):
        self.channel.dataReceived(b"GET /containers/x/logs?follow=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        self.dockerd.answer(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\nline1\n")
        upstream = self.dockerd.connections[0].transport
        self.assertTrue(upstream.connected)
        self.channel.connectionLost(Failure(ConnectionLost("client went away")))
        self.assertFalse(upstream.connected)
        self.assertTrue(upstream.disconnected)
        self.assertEqual(self.dockerd.idle, [])

    def test_client_disconnect_before_answer_aborts_dockerd(self):
        self.channel.dataReceived(b"POST /containers/x/wait HTTP/1.1\r\nHost: x\r\n\r\n")
        upstream = self.dockerd.connections[0].transport
        self.channel.connectionLost(Failure(ConnectionLost("client went away")))
        self.assertFalse(upstream.connected)

    def test_dockerd_lost_mid_body_cuts_client(self):
        self.channel.dataReceived(b"GET /images/json HTTP/1.1\r\nHost: x\r\n\r\n")
        self.dockerd.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n[")
        self.dockerd.connections[0].transport.loseConnection()
        self.assertTrue(self.client.disconnecting)
        self.assertNotIn(b"502", self.client.value())

    def test_stream_body_sent_from_spool(self):
        archive = b"tar-bytes-" * 1000
        self.channel.dataReceived(
            b"PUT /v1.41/containers/x/archive?path=%%2Ftmp HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/x-tar\r\nContent-Length: %d\r\n\r\n" % len(archive) + archive)
        for _ in range(10):
            self.clock.advance(0)
        head, _, body = self.dockerd.received().partition(b"\r\n\r\n")
        self.assertEqual(head.split(b"\r\n")[0], b"PUT /v1.41/containers/x/archive?path=%2Ftmp HTTP/1.1")
        self.assertIn(b"Content-Length: %d" % len(archive), head.split(b"\r\n"))
        self.assertEqual(body, archive)
        self.dockerd.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.assertTrue(self.client.value().startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertEqual(self.dockerd.idle, self.dockerd.connections)

    def test_retry_on_stale_reused_connection(self):
        self.channel.dataReceived(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
        self.dockerd.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")
        self.client.clear()
        self.channel.dataReceived(create_request())
        stale = self.dockerd.connections[0]
        self.assertTrue(stale.reused)
        stale.transport.loseConnection()  # dockerd had closed it while idle
        self.assertEqual(len(self.dockerd.connections), 2)
        retried = self.dockerd.received(1)
        self.assertTrue(retried.startswith(b"POST /v1.41/containers/create?name=web HTTP/1.1\r\n"))
        self.assertTrue(retried.endswith(b"\r\n\r\n" + CANONICAL_CREATE))
        self.dockerd.answer(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}")
        self.assertTrue(self.client.value().startswith(b"HTTP/1.1 201 Created\r\n"))

    def test_no_retry_once_dockerd_answered(self):
        self.channel.dataReceived(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
        self.dockerd.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")
        self.client.clear()
        self.channel.dataReceived(create_request())
        self.dockerd.answer(b"HTTP/1.1 20")  # a response byte arrived: the request may have run
        self.dockerd.connections[0].transport.loseConnection()
        self.assertEqual(len(self.dockerd.connections), 1)
        self.assertTrue(self.client.value().startswith(b"HTTP/1.1 502 "))
        self.assertIn(b'"message": "dsfw: ', self.client.value())

    def test_no_retry_on_fresh_connection(self):
        self.channel.dataReceived(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
        self.dockerd.connections[0].transport.loseConnection()
        self.assertEqual(len(self.dockerd.connections), 1)
        out = self.client.value()
        self.assertTrue(out.startswith(b"HTTP/1.1 502 "))
        body = json.loads(out.partition(b"\r\n\r\n")[2])
        self.assertTrue(body["message"].startswith("dsfw: dockerd closed the connection"))


class PooledPausedConnectionTests(SynchronousTestCase):
    def test_connection_paused_by_client_is_resumed_for_the_next_request(self):
        resource, dockerd, clock = firewall()
        channel, transport = client(resource, clock)
        channel.dataReceived(b"GET /images/json HTTP/1.1\r\nHost: x\r\n\r\n")
        dockerd.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n[")
        transport.producer.pauseProducing()
        dockerd.answer(b"{}]")
        self.assertEqual(dockerd.idle, dockerd.connections)
        self.assertEqual(dockerd.connections[0].transport.producerState, "producing")
