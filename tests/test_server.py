"""dsfw's HTTP/1.1 server protocol: decided at the headers, bodies read only when wanted.

Raw bytes go into the channel on a ``StringTransport``; dockerd is the fake of
test_relay.  What is asserted is what a client and dockerd see: the answer,
whether ``100 Continue`` went out, what dockerd received, whether reading from
the client was paused, whether the connection stays open.
"""
from __future__ import annotations

import json

from hypothesis import given, settings, strategies as st
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.test_relay import FakeEngine, client, firewall  # noqa: E402

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK"


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


class Case(SynchronousTestCase):
    deny = {"/images/load", "/containers/create"}

    def setUp(self):
        self.make()

    def make(self, **kwargs):
        self.engine = FakeEngine(deny=self.deny)
        self.resource, self.dockerd, self.clock = firewall(self.engine, **kwargs)
        self.channel, self.client = client(self.resource, self.clock)

    def head(self, method: bytes, path: bytes, extra: bytes = b"") -> bytes:
        return method + b" " + path + b" HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n"


class DecideAtTheHeadersTests(Case):
    def test_denied_stream_with_expect_gets_refusal_and_no_100(self):
        self.channel.dataReceived(self.head(b"POST", b"/images/load",
                                            b"Content-Length: 1000000000\r\nExpect: 100-continue\r\n"))
        out = self.client.value()
        self.assertNotIn(b"100 Continue", out)
        self.assertEqual(status_of(out), 403)
        self.assertIn(b"Connection: close\r\n", out)
        self.assertEqual(self.dockerd.acquired, 0)
        self.assertTrue(self.client.disconnecting)

    def test_allowed_stream_gets_100_after_the_decision_then_relays(self):
        self.channel.dataReceived(self.head(b"PUT", b"/containers/x/archive?path=%2F",
                                            b"Content-Length: 10\r\nExpect: 100-continue\r\n"))
        self.assertEqual(self.engine.inputs[0][1]["PathPlain"], "/containers/x/archive")
        self.assertEqual(self.client.value(), b"HTTP/1.1 100 Continue\r\n\r\n")
        self.channel.dataReceived(b"0123456789")
        sent = self.dockerd.received()
        self.assertIn(b"Content-Length: 10\r\n", sent)
        self.assertNotIn(b"Expect", sent)
        self.assertTrue(sent.endswith(b"\r\n\r\n0123456789"))

    def test_denied_stream_body_is_not_read(self):
        self.channel.dataReceived(self.head(b"POST", b"/images/load", b"Content-Length: 100000000\r\n")
                                  + b"x" * 65536)
        self.assertEqual(status_of(self.client.value()), 403)
        self.assertTrue(self.client.disconnecting)
        # more body: dropped, not buffered; the connection is closing
        self.channel.dataReceived(b"x" * 1_000_000)
        self.assertEqual(len(self.channel._buf), 0)

    def test_small_denied_body_is_skipped_and_the_connection_kept(self):
        body = b'{"Image":"x"}'
        self.channel.dataReceived(self.head(b"POST", b"/containers/create",
                                            b"Content-Type: application/json\r\n"
                                            b"Content-Length: %d\r\n" % len(body)) + body
                                  + self.head(b"GET", b"/_ping"))
        self.dockerd.answer(OK)
        out = self.client.value()
        self.assertEqual(status_of(out), 403)
        self.assertTrue(out.endswith(b"\r\n\r\nOK"), out)
        self.assertFalse(self.client.disconnecting)

    def test_denied_stream_body_below_the_discard_bound_keeps_the_connection(self):
        self.channel.dataReceived(self.head(b"POST", b"/images/load", b"Content-Length: 5\r\n"))
        self.assertEqual(status_of(self.client.value()), 403)
        self.channel.dataReceived(b"abcde" + self.head(b"GET", b"/_ping"))
        self.dockerd.answer(OK)
        self.assertTrue(self.client.value().endswith(b"\r\n\r\nOK"))
        self.assertFalse(self.client.disconnecting)


class LimitTests(Case):
    deny = set()

    def test_chunked_json_refused_with_413_while_it_arrives(self):
        self.make(max_json_body=100)
        self.channel.dataReceived(self.head(b"POST", b"/containers/create",
                                            b"Content-Type: application/json\r\n"
                                            b"Transfer-Encoding: chunked\r\n"))
        self.channel.dataReceived(b"40\r\n" + b" " * 64 + b"\r\n")
        self.assertEqual(self.client.value(), b"")
        self.channel.dataReceived(b"40\r\n" + b" " * 64 + b"\r\n")
        out = self.client.value()
        self.assertEqual(status_of(out), 413)
        self.assertIn("--max-json-body", json.loads(out.partition(b"\r\n\r\n")[2])["message"])
        self.assertEqual(self.dockerd.acquired, 0)
        self.assertEqual(self.engine.inputs, [])

    def test_declared_stream_length_over_the_limit_is_413_at_once(self):
        self.make(max_stream_body=1000)
        self.channel.dataReceived(self.head(b"POST", b"/images/load", b"Content-Length: 1001\r\n"
                                            b"Expect: 100-continue\r\n"))
        out = self.client.value()
        self.assertNotIn(b"100 Continue", out)
        self.assertEqual(status_of(out), 413)
        self.assertEqual(self.dockerd.acquired, 0)

    def test_chunked_stream_over_the_limit_is_413_while_relayed(self):
        self.make(max_stream_body=1000)
        self.channel.dataReceived(self.head(b"POST", b"/images/load",
                                            b"Transfer-Encoding: chunked\r\n"))
        self.channel.dataReceived(b"258\r\n" + b"a" * 600 + b"\r\n")
        upstream = self.dockerd.connections[0].transport
        self.assertIn(b"Transfer-Encoding: chunked\r\n", upstream.value())
        self.assertTrue(upstream.value().endswith(b"258\r\n" + b"a" * 600 + b"\r\n"))
        self.channel.dataReceived(b"258\r\n" + b"a" * 600 + b"\r\n")
        self.assertEqual(status_of(self.client.value()), 413)
        self.assertFalse(upstream.connected, "dockerd's half-sent request must be aborted")
        self.assertTrue(self.client.disconnecting)

    def test_chunked_stream_relayed_rechunked_to_the_end(self):
        self.channel.dataReceived(self.head(b"POST", b"/images/load",
                                            b"Transfer-Encoding: chunked\r\n")
                                  + b"3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: t\r\n\r\n")
        sent = self.dockerd.received()
        self.assertTrue(sent.endswith(b"\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), sent)
        self.assertNotIn(b"Trailer", sent)


def _dechunk(raw: bytes) -> bytes:
    out, at = [], 0
    while True:
        line = raw.index(b"\r\n", at)
        size = int(raw[at:line].split(b";")[0], 16)
        if not size:
            return b"".join(out)
        out.append(raw[line + 2:line + 2 + size])
        at = line + 2 + size + 2


class ChunkedReadsTests(SynchronousTestCase):
    """However the client's reads cut a chunked body, dockerd gets the same bytes."""

    @settings(max_examples=80, deadline=None)
    @given(st.lists(st.tuples(st.binary(min_size=1, max_size=300), st.booleans()), max_size=12),
           st.lists(st.integers(1, 400), min_size=1, max_size=30))
    def test_any_cut_of_the_reads_relays_the_same_body(self, chunks, cuts):
        engine = FakeEngine(deny=set())
        resource, dockerd, clock = firewall(engine)
        channel, _client = client(resource, clock)
        body = b"".join(b"%x%s\r\n%s\r\n" % (len(c), b";ext=1" if ext else b"", c)
                        for c, ext in chunks) + b"0\r\nTrailer: t\r\n\r\n"
        channel.dataReceived(b"POST /images/load HTTP/1.1\r\nHost: x\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n")
        at, i = 0, 0
        while at < len(body):
            cut = cuts[i % len(cuts)]
            channel.dataReceived(body[at:at + cut])
            at, i = at + cut, i + 1
        sent = dockerd.received()
        self.assertEqual(_dechunk(sent[sent.index(b"\r\n\r\n") + 4:]),
                         b"".join(c for c, _ in chunks))
        self.assertTrue(sent.endswith(b"0\r\n\r\n"))

    def test_a_bad_chunk_inside_a_read_is_still_refused(self):
        engine = FakeEngine(deny=set())
        resource, dockerd, clock = firewall(engine)
        channel, client_transport = client(resource, clock)
        channel.dataReceived(b"POST /images/load HTTP/1.1\r\nHost: x\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n")
        channel.dataReceived(b"3\r\nabc\r\nzz\r\nnever\r\n")
        sent = dockerd.received()
        self.assertTrue(sent.endswith(b"3\r\nabc\r\n"), sent)
        self.assertNotIn(b"never", sent)
        self.assertFalse(dockerd.connections[0].transport.connected)


class BackpressureTests(Case):
    deny = set()

    def test_slow_dockerd_pauses_reading_the_client(self):
        self.channel.dataReceived(self.head(b"PUT", b"/containers/x/archive?path=%2F",
                                            b"Content-Length: 100000\r\n") + b"a" * 1000)
        upstream = self.dockerd.connections[0].transport
        self.assertEqual(self.client.producerState, "producing")
        upstream.producer.pauseProducing()  # dockerd's socket buffer is full
        self.assertEqual(self.client.producerState, "paused")
        upstream.producer.resumeProducing()
        self.assertEqual(self.client.producerState, "producing")
        self.channel.dataReceived(b"b" * 99000)
        self.assertTrue(self.dockerd.received().endswith(b"a" * 1000 + b"b" * 99000))

    def test_chunked_body_paused_by_dockerd_resumes_with_a_full_buffer(self):
        self.channel.dataReceived(self.head(b"POST", b"/images/load",
                                            b"Transfer-Encoding: chunked\r\n"))
        upstream = self.dockerd.connections[0].transport
        upstream.producer.pauseProducing()
        piece = b"a" * 50_000
        self.channel.dataReceived((b"%x\r\n" % len(piece) + piece + b"\r\n") * 4)
        self.assertEqual(self.client.producerState, "paused")
        upstream.producer.resumeProducing()
        self.assertEqual(self.client.producerState, "producing")
        self.channel.dataReceived(b"0\r\n\r\n")
        self.assertTrue(self.dockerd.received().endswith(b"0\r\n\r\n"))
        self.assertEqual(self.dockerd.received().count(piece), 4)

    def test_undecided_body_is_not_buffered_without_bound(self):
        self.engine.decide = lambda package, doc: __import__(
            "twisted.internet.defer", fromlist=["Deferred"]).Deferred()  # never decides
        self.channel.dataReceived(self.head(b"POST", b"/images/load", b"Content-Length: 10000000\r\n"))
        self.channel.dataReceived(b"x" * 200_000)
        self.assertEqual(self.client.producerState, "paused")
        self.assertEqual(self.dockerd.acquired, 0)


    def test_body_read_ahead_while_undecided_flows_once_allowed(self):
        from twisted.internet.defer import Deferred
        from dsfw.policy import PolicyDecision
        pending = Deferred()
        self.engine.decide = lambda package, doc: pending
        self.channel.dataReceived(self.head(b"POST", b"/images/load", b"Content-Length: 300000\r\n"))
        self.channel.dataReceived(b"x" * 200_000)
        self.assertEqual(self.client.producerState, "paused")
        pending.callback(PolicyDecision(True, "docker.authz", (), "fake", "r1"))
        self.assertEqual(self.client.producerState, "producing")
        self.channel.dataReceived(b"y" * 100_000)
        self.assertTrue(self.dockerd.received().endswith(b"x" * 200_000 + b"y" * 100_000))


    def test_a_stalled_upload_times_out_but_a_paused_one_does_not(self):
        from dsfw.edge.server import IDLE_TIMEOUT
        self.channel.dataReceived(self.head(b"POST", b"/images/load", b"Content-Length: 1000\r\n")
                                  + b"x" * 10)
        self.clock.advance(IDLE_TIMEOUT - 1)
        self.channel.dataReceived(b"x" * 10)  # activity keeps it open
        self.clock.advance(IDLE_TIMEOUT - 1)
        self.assertFalse(self.client.disconnecting)
        upstream = self.dockerd.connections[0].transport
        upstream.producer.pauseProducing()  # dockerd is slow: not the client's fault
        self.clock.advance(IDLE_TIMEOUT * 3)
        self.assertFalse(self.client.disconnecting)
        upstream.producer.resumeProducing()
        self.clock.advance(IDLE_TIMEOUT + 1)
        self.assertTrue(self.client.disconnecting)


class KeepAliveTests(Case):
    deny = set()

    def test_http10_keep_alive_as_go_does_it(self):
        self.channel.dataReceived(b"GET /_ping HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        self.dockerd.answer(OK)
        out = self.client.value()
        self.assertIn(b"Connection: keep-alive\r\n", out)
        self.assertFalse(self.client.disconnecting)
        self.client.clear()
        self.channel.dataReceived(b"GET /_ping HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        self.dockerd.answer(OK)
        self.assertTrue(self.client.value().endswith(b"OK"))
        self.assertFalse(self.client.disconnecting)

    def test_http10_without_keep_alive_closes(self):
        self.channel.dataReceived(b"GET /_ping HTTP/1.0\r\n\r\n")
        self.dockerd.answer(OK)
        self.assertNotIn(b"keep-alive", self.client.value())
        self.assertTrue(self.client.disconnecting)

    def test_http10_keep_alive_without_length_closes(self):
        self.channel.dataReceived(b"GET /containers/x/logs HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        self.dockerd.answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n")
        out = self.client.value()
        self.assertNotIn(b"chunked", out)
        self.assertTrue(out.endswith(b"\r\n\r\nhi"))
        self.assertTrue(self.client.disconnecting)

    def test_http11_close(self):
        self.channel.dataReceived(b"GET /_ping HTTP/1.1\r\nConnection: close\r\n\r\n")
        self.dockerd.answer(OK)
        self.assertIn(b"Connection: close\r\n", self.client.value())
        self.assertTrue(self.client.disconnecting)


class MalformedTests(Case):
    def assert_malformed(self, raw: bytes):
        self.make()
        self.channel.dataReceived(raw)
        out = self.client.value()
        self.assertEqual(status_of(out), 400, raw)
        self.assertIn(b"malformed HTTP request", out)
        self.assertTrue(self.client.disconnecting)
        self.assertEqual(self.dockerd.acquired, 0)

    def test_refused_framings(self):
        for raw in [
            b"POST /images/load HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST /images/load HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"POST /images/load HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST /images/load HTTP/1.1\r\nContent-Length: +3\r\n\r\n",
            b"POST /images/load HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            b"GET /_ping HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
            b"GET /_ping HTTP/1.1\r\nX : a\r\n\r\n",
            b"GET /_ping HTTP/1.1\r\nX: a\nY: b\r\n\r\n",
            b"GET  /_ping HTTP/1.1\r\n\r\n",
            b"GET /_ping HTTP/2.0\r\n\r\n",
            b"GET /_p\x01ng HTTP/1.1\r\n\r\n",
        ]:
            self.assert_malformed(raw)

    def test_bad_chunk_after_the_decision(self):
        self.make()
        self.channel.dataReceived(b"PUT /containers/x/archive?path=%2F HTTP/1.1\r\n"
                                  b"Transfer-Encoding: chunked\r\n\r\n-1\r\n")
        self.assertTrue(self.client.disconnecting)
        self.assertFalse(self.dockerd.connections[0].transport.connected)

    def test_a_head_over_the_limit_is_431_while_it_arrives(self):
        from dsfw.edge.http1 import MAX_HEAD
        self.channel.dataReceived(b"GET /_ping HTTP/1.1\r\n")
        line = b"X-Pad: " + b"a" * 8000 + b"\r\n"
        fed = 0
        while not self.client.value() and fed < 2 * MAX_HEAD:  # the head never ends
            self.channel.dataReceived(line)
            fed += len(line)
        out = self.client.value()
        self.assertEqual(status_of(out), 431)
        self.assertLessEqual(fed, MAX_HEAD + len(line))
        self.assertIn(b"larger than %d bytes" % MAX_HEAD, out)
        self.assertTrue(self.client.disconnecting)
        self.assertEqual((self.engine.inputs, self.dockerd.acquired), ([], 0))

    def test_too_many_header_fields_is_431(self):
        from dsfw.edge.http1 import MAX_HEADERS
        fields = b"".join(b"X-F%d: v\r\n" % i for i in range(MAX_HEADERS + 1))
        self.channel.dataReceived(self.head(b"GET", b"/_ping", fields))
        self.assertEqual(status_of(self.client.value()), 431)
        self.make()
        self.channel.dataReceived(self.head(b"GET", b"/_ping", fields[:fields.index(b"X-F499:")]))
        self.dockerd.answer(OK)
        self.assertEqual(status_of(self.client.value()), 200)

    def test_unknown_expectation_is_417(self):
        self.channel.dataReceived(b"GET /_ping HTTP/1.1\r\nExpect: something\r\n\r\n")
        self.assertEqual(status_of(self.client.value()), 417)


class ReadsOnly(FakeEngine):
    """A policy that reads only the given top-level input fields."""

    def __init__(self, deny, fields):
        super().__init__(deny)
        self.fields = frozenset(fields)

    def input_fields(self):
        return self.fields


class JsonDecidedAtTheHeadTests(Case):
    """A JSON request whose policy reads nothing its body can change is refused unread."""

    def make_reading(self, *fields):
        self.engine = ReadsOnly(self.deny, fields)
        self.resource, self.dockerd, self.clock = firewall(self.engine)
        self.channel, self.client = client(self.resource, self.clock)

    def create(self, length: int, extra: bytes = b"") -> bytes:
        return self.head(b"POST", b"/containers/create", b"Content-Type: application/json\r\n"
                         b"Content-Length: %d\r\n" % length + extra)

    def test_refused_with_no_100_and_no_body_read(self):
        self.make_reading("PathPlain", "Peer", "Dockerfile")
        self.channel.dataReceived(self.create(1 << 30, b"Expect: 100-continue\r\n"))
        out = self.client.value()
        self.assertEqual(status_of(out), 403)
        self.assertNotIn(b"100 Continue", out)
        self.assertEqual([doc["Body"] for _, doc in self.engine.inputs], [None])
        self.assertEqual(self.dockerd.acquired, 0)

    def test_a_policy_reading_the_body_or_headers_gets_it_first(self):
        for field in ("Body", "Headers", "BindMounts"):
            self.make_reading("PathPlain", field)
            self.channel.dataReceived(self.create(100_000, b"Expect: 100-continue\r\n"))
            self.assertEqual(self.client.value(), b"HTTP/1.1 100 Continue\r\n\r\n", field)
            self.assertEqual(self.engine.inputs, [])

    def test_allowed_at_the_head_is_decided_again_on_the_whole_request(self):
        self.deny = set()
        self.make_reading("PathPlain")
        body = b'{"Image": "busybox"}'
        self.channel.dataReceived(self.create(len(body), b"Expect: 100-continue\r\n"))
        self.assertEqual(self.client.value(), b"HTTP/1.1 100 Continue\r\n\r\n")
        self.channel.dataReceived(body)
        self.assertEqual([doc["Body"] for _, doc in self.engine.inputs],
                         [None, {"Image": "busybox"}])
        self.assertEqual(self.dockerd.acquired, 1)

    def test_a_small_body_without_expect_is_decided_once(self):
        self.make_reading("PathPlain")
        self.channel.dataReceived(self.create(20) + b'{"Image": "busybox"}')
        self.assertEqual(status_of(self.client.value()), 403)
        self.assertEqual([doc["Body"] for _, doc in self.engine.inputs], [{"Image": "busybox"}])


class HeadMemoTests(Case):
    """Parsed request heads are remembered by their bytes: never mixed, refusals every time."""

    def test_the_same_head_bytes_with_close_or_keep_alive(self):
        keep = self.head(b"GET", b"/_ping")
        close = self.head(b"GET", b"/_ping", b"Connection: close\r\n")
        for raw, open_after in ((keep, True), (close, False), (keep, True)):
            self.make()
            self.channel.dataReceived(raw)
            self.dockerd.answer(OK)
            self.assertTrue(self.client.value().endswith(b"OK"))
            self.assertEqual(not self.client.disconnecting, open_after)

    def test_refused_heads_are_refused_every_time(self):
        for _ in range(2):
            self.make()
            self.channel.dataReceived(self.head(b"POST", b"/containers/x/archive",
                                                b"Content-Length: 1\r\nExpect: 42-unknown\r\n"))
            self.assertEqual(status_of(self.client.value()), 417)
            self.make()
            self.channel.dataReceived(b"GET /_ping HTTP/1.1\r\nBad Name: x\r\n\r\n")
            self.assertEqual(status_of(self.client.value()), 400)
            self.make()
            self.channel.dataReceived(self.head(b"POST", b"/containers/x/archive",
                                                b"Content-Length: 1\r\nContent-Length: 2\r\n"))
            self.assertEqual(status_of(self.client.value()), 400)
        self.assertEqual(self.dockerd.acquired, 0)

    def test_bounded(self):
        from dsfw.edge import server
        memo = server._parsed_heads
        for i in range(memo.max_entries + 30):
            self.channel.dataReceived(self.head(b"GET", b"/containers/c%d/json" % i))
            self.dockerd.answer(OK)
        self.assertLessEqual(len(memo), memo.max_entries)


class LostCallbackTests(Case):
    """``notify_lost``: told when the client goes away mid-answer, never after the answer."""

    def test_called_when_the_client_goes_away_before_the_answer(self):
        self.channel.dataReceived(self.head(b"POST", b"/containers/x/wait"))
        seen = []
        self.channel._current.notify_lost(seen.append)
        self.channel.connectionLost(Failure(ConnectionLost("gone")))
        self.assertEqual([f.type for f in seen], [ConnectionLost])

    def test_not_called_once_the_answer_is_finished(self):
        self.channel.dataReceived(self.head(b"GET", b"/_ping"))
        seen = []
        self.channel._current.notify_lost(seen.append)
        self.dockerd.answer(OK)
        self.assertTrue(self.client.value().endswith(b"\r\n\r\nOK"))
        self.channel.connectionLost(Failure(ConnectionLost("gone")))
        self.assertEqual(seen, [])
