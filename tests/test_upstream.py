"""DockerConnection's response parsing and DockerPool's connection handling.

Every response is fed twice: in one piece and byte by byte, because dockerd's
bytes arrive in whatever pieces the socket gives.
"""
from __future__ import annotations

import os
import shutil
import tempfile

from twisted.internet import reactor
from twisted.internet.defer import succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import (MemoryReactor, MemoryReactorClock,
                                      StringTransportWithDisconnection)
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from dsfw.errors import UpstreamUnavailable
from dsfw.edge.upstream import DockerConnection, DockerPool, UpstreamProtocolError


class RecordingSink:
    """A ResponseSink that writes down what it was told."""

    def __init__(self):
        self.head = None
        self.body = b""
        self.finished = 0
        self.failure = None
        self.hijack = None  # (head, connection, leftover)

    def head_received(self, head):
        assert self.head is None, "head delivered twice"
        self.head = head

    def body_received(self, data):
        assert data, "empty body piece delivered"
        self.body += data

    def body_finished(self):
        self.finished += 1

    def hijacked(self, head, connection, leftover):
        self.hijack = (head, connection, leftover)

    def failed(self, reason):
        self.failure = reason


class ListProducer:
    """An ``IBodyProducer`` that writes its pieces at once."""

    def __init__(self, pieces):
        self.pieces = pieces
        self.length = sum(map(len, pieces))

    def startProducing(self, consumer):
        for piece in self.pieces:
            consumer.write(piece)
        return succeed(None)

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass

    def stopProducing(self):
        pass


def connected() -> tuple[DockerConnection, StringTransportWithDisconnection]:
    conn = DockerConnection()
    transport = StringTransportWithDisconnection()
    transport.protocol = conn
    conn.makeConnection(transport)
    return conn, transport


def feed(conn: DockerConnection, data: bytes, bytewise: bool) -> None:
    if bytewise:
        for i in range(len(data)):
            conn.dataReceived(data[i:i + 1])
    else:
        conn.dataReceived(data)


class ParsingTests(SynchronousTestCase):
    """Each test runs its response in one piece and byte by byte."""

    def exchange(self, response: bytes, *, head_only=False, may_hijack=False, released=None,
                 bytewise=False):
        conn, transport = connected()
        if released is not None:
            conn.on_release = released.append
        sink = RecordingSink()
        conn.send(b"GET /x HTTP/1.1\r\n\r\n", None, sink, head_only=head_only,
                  may_hijack=may_hijack)
        feed(conn, response, bytewise)
        return conn, transport, sink

    def both(self, response: bytes, **kwargs):
        return [self.exchange(response, bytewise=b, **kwargs) for b in (False, True)]

    def test_request_written(self):
        conn, transport = connected()
        conn.send(b"POST /a HTTP/1.1\r\n\r\n", b"{}", RecordingSink())
        self.assertEqual(transport.value(), b"POST /a HTTP/1.1\r\n\r\n{}")

    def test_content_length(self):
        for conn, transport, sink in self.both(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"):
            self.assertEqual(sink.head.status, 200)
            self.assertEqual(sink.head.reason, b"OK")
            self.assertEqual(sink.head.get(b"content-type"), b"text/plain")
            self.assertEqual(sink.body, b"hello")
            self.assertEqual(sink.finished, 1)
            self.assertIsNone(sink.failure)

    def test_status_line_without_reason(self):
        for _, _, sink in self.both(b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n"):
            self.assertEqual((sink.head.status, sink.head.reason), (200, b""))
            self.assertEqual(sink.finished, 1)

    def test_chunked_with_extensions_and_trailers(self):
        response = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"5;name=value\r\nhello\r\n"
                    b"A\r\n, world!!!\r\n"
                    b"0;last\r\nX-Trailer: yes\r\nX-Other: 1\r\n\r\n")
        for conn, _, sink in self.both(response, released=[]):
            self.assertEqual(sink.body, b"hello, world!!!")
            self.assertEqual(sink.finished, 1)
            self.assertEqual(conn._state, "idle")

    def test_until_close(self):
        for conn, transport, sink in self.both(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nsome "):
            conn.dataReceived(b"more")
            self.assertEqual(sink.finished, 0)
            transport.loseConnection()
            self.assertEqual(sink.body, b"some more")
            self.assertEqual(sink.finished, 1)
            self.assertIsNone(sink.failure)

    def test_until_close_never_released(self):
        released = []
        conn, transport, sink = self.exchange(b"HTTP/1.1 200 OK\r\n\r\nabc", released=released)
        transport.loseConnection()
        self.assertEqual(released, [])

    def test_head_has_no_body(self):
        for conn, _, sink in self.both(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n",
                                       head_only=True, released=[]):
            self.assertEqual(sink.head.get(b"Content-Length"), b"99")
            self.assertEqual((sink.body, sink.finished), (b"", 1))
            self.assertEqual(conn._state, "idle")

    def test_204_and_304_have_no_body(self):
        for status in (b"204 No Content", b"304 Not Modified"):
            for conn, _, sink in self.both(b"HTTP/1.1 " + status + b"\r\nContent-Length: 7\r\n\r\n",
                                           released=[]):
                self.assertEqual((sink.body, sink.finished), (b"", 1))
                self.assertEqual(conn._state, "idle")

    def test_interim_1xx_skipped(self):
        response = (b"HTTP/1.1 100 Continue\r\n\r\n"
                    b"HTTP/1.1 102 Processing\r\nX: y\r\n\r\n"
                    b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}")
        for _, _, sink in self.both(response):
            self.assertEqual(sink.head.status, 201)
            self.assertEqual(sink.body, b"{}")

    def test_101_hijacks_with_leftover(self):
        response = (b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\n"
                    b"Connection: Upgrade\r\nUpgrade: tcp\r\n\r\nraw output")
        conn, _, sink = self.exchange(response)
        head, hijacked_conn, leftover = sink.hijack
        self.assertEqual((head.status, hijacked_conn, leftover), (101, conn, b"raw output"))
        self.assertIsNone(sink.head)
        self.assertEqual(conn._state, "spliced")

    def test_101_bytewise_stream_goes_to_peer(self):
        class Peer:
            transport = StringTransportWithDisconnection()

        class SplicingSink(RecordingSink):
            def hijacked(self, head, connection, leftover):
                super().hijacked(head, connection, leftover)
                connection.splice_peer = Peer()

        conn, _ = connected()
        sink = SplicingSink()
        conn.send(b"POST /exec/x/start HTTP/1.1\r\n\r\n", None, sink)
        feed(conn, b"HTTP/1.1 101 UPGRADED\r\n\r\nabcd", bytewise=True)
        self.assertEqual(sink.hijack[2], b"")  # the head ended before any stream byte
        self.assertEqual(Peer.transport.value(), b"abcd")

    def test_stream_bytes_without_peer_dropped(self):
        """After a hijack whose client already left, late bytes must not crash the reactor."""
        conn, _, sink = self.exchange(b"HTTP/1.1 101 UPGRADED\r\n\r\n")
        conn.dataReceived(b"late")
        conn.readConnectionLost()
        conn.connectionLost(Failure(ConnectionRefusedError()))

    def test_attach_raw_stream_hijacks_when_allowed(self):
        response = (b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\n"
                    b"\x01\x00\x00\x00\x00\x00\x00\x02hi")
        for conn, _, sink in self.both(response, may_hijack=True):
            self.assertEqual(sink.hijack[0].status, 200)
            self.assertIsNone(sink.head)
        conn, _, sink = self.exchange(response, may_hijack=True)
        self.assertEqual(sink.hijack[2], b"\x01\x00\x00\x00\x00\x00\x00\x02hi")

    def test_raw_stream_not_hijacked_without_may_hijack(self):
        response = b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\nxy"
        for conn, transport, sink in self.both(response, may_hijack=False):
            self.assertIsNone(sink.hijack)
            self.assertEqual(sink.body, b"xy")
            transport.loseConnection()
            self.assertEqual(sink.finished, 1)

    def test_raw_stream_with_length_is_a_body(self):
        response = (b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n"
                    b"Content-Length: 2\r\n\r\nxy")
        _, _, sink = self.exchange(response, may_hijack=True)
        self.assertIsNone(sink.hijack)
        self.assertEqual((sink.body, sink.finished), (b"xy", 1))

    def assert_protocol_error(self, response: bytes):
        for conn, transport, sink in self.both(response):
            self.assertIsNotNone(sink.failure, response)
            self.assertIsInstance(sink.failure.value, UpstreamUnavailable)
            self.assertIsInstance(sink.failure.value, UpstreamProtocolError)
            self.assertTrue(transport.disconnected, "a broken connection must be aborted")
            self.assertEqual(sink.finished, 0)

    def test_malformed_status_lines(self):
        for line in (b"HTTP/1.1 OK\r\n", b"garbage\r\n", b"HTTP/1.1 2x0 OK\r\n",
                     b"SPDY/3 200 OK\r\n", b"\r\n"):
            self.assert_protocol_error(line + b"Content-Length: 0\r\n\r\n")

    def test_malformed_header_line(self):
        self.assert_protocol_error(b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n")

    def test_bad_content_length(self):
        for value in (b"abc", b"-1", b"1 2", b"0x10"):
            self.assert_protocol_error(b"HTTP/1.1 200 OK\r\nContent-Length: " + value + b"\r\n\r\n")

    def test_conflicting_framing_headers(self):
        self.assert_protocol_error(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                                   b"content-length: 3\r\n\r\nxyz")
        # the same value twice is not ambiguous
        _, _, sink = self.exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                                   b"Content-Length: 2\r\n\r\nxy")
        self.assertEqual((sink.body, sink.finished), (b"xy", 1))

    def test_unsupported_transfer_coding(self):
        self.assert_protocol_error(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n")

    def test_malformed_chunk_sizes(self):
        # Python's int(x, 16) takes signs, "0x" and "_"; HTTP's chunk-size is HEXDIG only.
        for size, data in ((b"zz", b"hello"), (b"", b"hello"), (b"-5", b"hello"), (b"+5", b"hello"),
                           (b"0x5", b"hello"), (b"1_0", b"0123456789abcdef"), (b" 5", b"hello")):
            response = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + size
                        + b"\r\n" + data + b"\r\n0\r\n\r\n")
            self.assert_protocol_error(response)
            for _, _, sink in self.both(response):
                self.assertEqual(sink.body, b"", size)

    def test_chunk_without_crlf(self):
        self.assert_protocol_error(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXX0\r\n\r\n")

    def test_lost_mid_body(self):
        for partial in (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
                        b"HTTP/1.1 200 OK\r\nContent-Le"):
            for conn, transport, sink in self.both(partial):
                transport.loseConnection()
                self.assertIsInstance(sink.failure.value, UpstreamUnavailable)
                self.assertEqual(sink.finished, 0)

    def test_half_close_mid_body_fails(self):
        conn, transport, sink = self.exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        conn.readConnectionLost()
        self.assertIsInstance(sink.failure.value, UpstreamUnavailable)


class KeepAliveTests(SynchronousTestCase):
    def run_one(self, response: bytes):
        conn, transport = connected()
        released = []
        conn.on_release = released.append
        sink = RecordingSink()
        conn.send(b"GET / HTTP/1.1\r\n\r\n", None, sink)
        conn.dataReceived(response)
        return conn, transport, sink, released

    def test_released_after_complete_response(self):
        conn, transport, sink, released = self.run_one(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertEqual(released, [conn])
        self.assertTrue(transport.connected)
        # and it serves a second request
        sink2 = RecordingSink()
        conn.send(b"GET /2 HTTP/1.1\r\n\r\n", None, sink2)
        conn.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2")
        self.assertEqual((sink2.body, released), (b"2", [conn, conn]))

    def test_closed_on_connection_close(self):
        conn, transport, sink, released = self.run_one(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
        self.assertEqual((sink.body, sink.finished, released), (b"ok", 1, []))
        self.assertFalse(transport.connected)

    def test_closed_on_http10(self):
        conn, transport, sink, released = self.run_one(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertEqual((sink.finished, released), (1, []))
        self.assertFalse(transport.connected)

    def test_closed_on_extra_bytes(self):
        conn, transport, sink, released = self.run_one(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA")
        self.assertEqual((sink.body, sink.finished, released), (b"ok", 1, []))
        self.assertFalse(transport.connected)

    def test_unsolicited_bytes_on_idle_connection_close_it(self):
        conn, transport, sink, released = self.run_one(b"HTTP/1.1 204 No Content\r\n\r\n")
        self.assertEqual(released, [conn])
        conn.dataReceived(b"HTTP/1.1 200 OK\r\n")
        self.assertFalse(transport.connected)
        self.assertEqual(conn._state, "closed")

    def test_paused_connection_resumed_before_release(self):
        """A client that paused dockerd must not leave a pooled connection unread."""
        conn, transport = connected()
        released = []
        conn.on_release = released.append
        sink = RecordingSink()
        conn.send(b"GET / HTTP/1.1\r\n\r\n", None, sink)
        conn.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
        transport.pauseProducing()  # the slow client's backpressure
        conn.dataReceived(b"cd")
        self.assertEqual(released, [conn])
        self.assertEqual(transport.producerState, "producing")


def pending_connect(memory: MemoryReactor, index: int = -1):
    """The factory of a connectUNIX the MemoryReactor recorded."""
    return memory.unixClients[index][1]


def complete_connect(memory: MemoryReactor, index: int = -1):
    factory = pending_connect(memory, index)
    protocol = factory.buildProtocol(None)
    transport = StringTransportWithDisconnection()
    transport.protocol = protocol
    protocol.makeConnection(transport)
    return protocol, transport


class PoolTests(SynchronousTestCase):
    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.pool = DockerPool(self.reactor, "/run/test-docker.sock")

    def acquire(self, fresh=False):
        d = self.pool.acquire(fresh=fresh)
        if not d.called:
            complete_connect(self.reactor)
        return self.successResultOf(d)

    def answer(self, conn, response=b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"):
        sink = RecordingSink()
        conn.send(b"GET / HTTP/1.1\r\n\r\n", None, sink)
        conn.dataReceived(response)
        return sink

    def test_connects_to_socket_path(self):
        self.pool.acquire()
        self.assertEqual(self.reactor.unixClients[0][0], "/run/test-docker.sock")

    def test_reuses_released_connection(self):
        conn = self.acquire()
        self.assertFalse(conn.reused)
        self.answer(conn)
        again = self.acquire()
        self.assertIs(again, conn)
        self.assertTrue(again.reused)
        self.assertEqual(len(self.reactor.unixClients), 1)

    def test_fresh_skips_idle(self):
        conn = self.acquire()
        self.answer(conn)
        other = self.acquire(fresh=True)
        self.assertIsNot(other, conn)
        self.assertEqual(len(self.reactor.unixClients), 2)

    def test_connection_closed_by_dockerd_leaves_pool(self):
        conn = self.acquire()
        self.answer(conn)
        conn.transport.loseConnection()  # dockerd's idle timeout
        self.assertEqual(self.pool._idle, [])
        self.assertNotIn(conn, self.pool._all)
        self.assertIsNot(self.acquire(), conn)

    def test_half_closed_idle_connection_not_reused(self):
        conn = self.acquire()
        self.answer(conn)
        conn.transport.loseConnection = lambda: None  # a real close completes a reactor turn later
        conn.readConnectionLost()  # dockerd closed the idle connection
        self.assertIsNot(self.acquire(), conn)

    def test_connection_close_response_not_pooled(self):
        conn = self.acquire()
        self.answer(conn, b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(self.pool._idle, [])
        self.assertIsNot(self.acquire(), conn)

    def test_max_idle(self):
        pool = self.pool = DockerPool(self.reactor, "/run/x.sock", max_idle=1)
        a, b = self.acquire(), self.acquire()
        self.answer(a)
        self.answer(b)
        self.assertEqual(pool._idle, [a])
        self.assertFalse(b.transport.connected)

    def test_close_closes_all(self):
        a, b = self.acquire(), self.acquire()
        self.answer(a)
        self.pool.close()
        self.assertFalse(a.transport.connected or b.transport.connected)
        self.assertEqual(self.pool._idle, [])

    def test_requests_of_a_busy_turn_leave_together_at_its_end(self):
        a, b = self.acquire(), self.acquire()
        a.send(b"GET /a HTTP/1.1\r\n\r\n", None, RecordingSink())
        self.assertEqual(a.transport.value(), b"GET /a HTTP/1.1\r\n\r\n")  # alone: at once
        b.send(b"POST /b HTTP/1.1\r\nContent-Length: 2\r\n\r\n", b"{}", RecordingSink())
        self.assertEqual(b.transport.value(), b"")  # a second in the same turn waits for its end
        self.reactor.advance(0)
        self.assertEqual(b.transport.value(), b"POST /b HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}")
        for conn in (a, b):
            conn.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            conn.transport.clear()
        sink = self.answer(a)  # the turn after a busy one: held from the first request
        self.assertEqual(a.transport.value(), b"")
        self.assertEqual(sink.finished, 1)
        self.reactor.advance(0)
        self.assertEqual(a.transport.value(), b"GET / HTTP/1.1\r\n\r\n")
        a.transport.clear()
        self.answer(a)  # that turn had one request: the next one leaves at once again
        self.assertEqual(a.transport.value(), b"GET / HTTP/1.1\r\n\r\n")

    def test_streamed_body_head_written_at_once(self):
        conn = self.acquire()
        producer = ListProducer([b"ab", b"cd"])
        conn.send(b"PUT /x HTTP/1.1\r\nContent-Length: 4\r\n\r\n", None, RecordingSink(),
                  body_producer=producer)
        self.assertEqual(conn.transport.value(), b"PUT /x HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd")

    def test_connection_lost_before_the_turn_ends_gets_nothing(self):
        other, conn = self.acquire(), self.acquire()
        other.send(b"GET /a HTTP/1.1\r\n\r\n", None, RecordingSink())
        sink = RecordingSink()
        conn.send(b"GET /a HTTP/1.1\r\n\r\n", None, sink)
        conn.transport.loseConnection()
        self.reactor.advance(0)
        self.assertEqual(conn.transport.value(), b"")
        self.assertIsNotNone(sink.failure)

    def test_refused_names_socket(self):
        d = self.pool.acquire()
        factory = pending_connect(self.reactor)
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError("nobody home")))
        failure = self.failureResultOf(d, UpstreamUnavailable)
        self.assertIn("/run/test-docker.sock", failure.value.message)
        self.assertIn("dsfw: cannot reach dockerd", failure.value.client_message())


class RealSocketTests(TestCase):
    timeout = 10

    def test_nonexistent_socket(self):
        directory = tempfile.mkdtemp(prefix="dsfw-up-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "docker.sock")
        d = DockerPool(reactor, path).acquire()
        d = self.assertFailure(d, UpstreamUnavailable)
        d.addCallback(lambda e: self.assertIn(path, e.message))
        return d


class HeadMemoTests(SynchronousTestCase):
    """Parsed response heads are remembered by their bytes: bounded, never mixed, errors kept."""

    def exchange(self, response: bytes, **kwargs) -> RecordingSink:
        conn, _ = connected()
        sink = RecordingSink()
        conn.send(b"GET /x HTTP/1.1\r\n\r\n", None, sink, **kwargs)
        conn.dataReceived(response)
        return sink

    def test_same_head_twice_then_a_different_one(self):
        head = b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Length: 2\r\n\r\n"
        first, again = self.exchange(head + b"OK"), self.exchange(head + b"OK")
        self.assertEqual((first.body, again.body), (b"OK", b"OK"))
        self.assertEqual(first.head, again.head)
        other = self.exchange(b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Length: 3\r\n\r\nabc")
        self.assertEqual(other.body, b"abc")
        self.assertEqual(other.head.relayed(), ([b"Api-Version: 1.41"], 3))
        # the same bytes mean a different framing for a HEAD request: decided per exchange
        headed = self.exchange(head, head_only=True)
        self.assertEqual((headed.body, headed.finished), (b"", 1))

    def test_a_malformed_head_fails_every_time(self):
        for _ in range(2):
            sink = self.exchange(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n")
            self.assertIsInstance(sink.failure.value, UpstreamProtocolError)

    def test_bounded(self):
        from dsfw.edge import upstream
        memo = upstream._head_memo
        for i in range(memo.max_entries + 20):
            sink = self.exchange(b"HTTP/1.1 200 OK\r\nX-N: %d\r\nContent-Length: 0\r\n\r\n" % i)
            self.assertEqual(sink.head.get(b"x-n"), b"%d" % i)
        self.assertLessEqual(len(memo), memo.max_entries)
