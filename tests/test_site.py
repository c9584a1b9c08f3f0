"""The twisted.web site dsfw serves: idle clients are dropped, long answers are not."""
from __future__ import annotations

import json

from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from dsfw.edge.listening import FD_RESERVE, FDS_PER_CONNECTION, fit_fd_limit
from dsfw.tap import IDLE_TIMEOUT, make_site


class Streaming(Resource):
    isLeaf = True

    def __init__(self):
        super().__init__()
        self.requests = []

    def render(self, request):
        self.requests.append(request)
        request.write(b"started")
        return NOT_DONE_YET


def connect(resource, clock):
    channel = make_site(resource, clock).buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, transport


def test_a_silent_client_is_dropped_after_the_idle_timeout():
    clock = MemoryReactorClock()
    _, transport = connect(Streaming(), clock)
    clock.advance(IDLE_TIMEOUT - 1)
    assert not transport.disconnecting
    clock.advance(2)
    assert transport.disconnecting


def test_a_slow_header_sender_is_dropped_too():
    clock = MemoryReactorClock()
    channel, transport = connect(Streaming(), clock)
    channel.dataReceived(b"GET /_ping HTTP/1.1\r\nHost: x\r\n")  # never finishes the head
    clock.advance(IDLE_TIMEOUT + 1)
    assert transport.disconnecting


def test_a_long_streamed_answer_is_not_cut_by_the_idle_timeout():
    clock = MemoryReactorClock()
    resource = Streaming()
    channel, transport = connect(resource, clock)
    channel.dataReceived(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    assert resource.requests
    clock.advance(IDLE_TIMEOUT * 10)
    assert not transport.disconnecting


def test_unparsable_http_gets_a_docker_style_message_and_a_log_line():
    from structlog.testing import capture_logs
    import json
    clock = MemoryReactorClock()
    channel, transport = connect(Streaming(), clock)
    with capture_logs() as logs:
        channel.dataReceived(b"POST /x HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc")
    head, _, body = transport.value().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert json.loads(body)["message"].startswith("dsfw: malformed HTTP request")
    assert transport.disconnecting
    assert [e["event"] for e in logs] == ["request.malformed"]


def test_large_registry_credentials_headers_are_accepted():
    """X-Registry-Config can exceed twisted.web's 16 kB default; Go allows 1 MB of headers."""
    clock = MemoryReactorClock()
    resource = Streaming()
    channel, transport = connect(resource, clock)
    config = b"e" * 200_000
    channel.dataReceived(b"POST /build HTTP/1.1\r\nHost: x\r\nX-Registry-Config: " + config +
                         b"\r\nContent-Length: 0\r\n\r\n")
    assert resource.requests and not transport.disconnecting
    assert resource.requests[0].requestHeaders.getRawHeaders(b"x-registry-config") == [config]


class Transport(StringTransport):
    """A StringTransport that knows whether it is connected, as a socket's does."""

    connected = True

    def loseConnection(self):
        super().loseConnection()
        self.connected = False

    def abortConnection(self):
        self.loseConnection()


def open_connection(site):
    protocol = site.buildProtocol(None)
    transport = Transport()
    protocol.makeConnection(transport)
    return protocol, transport


def test_connections_over_the_limit_get_a_503_and_open_ones_continue():
    clock = MemoryReactorClock()
    resource = Streaming()
    site = make_site(resource, clock, max_connections=2)
    open_ones = [open_connection(site) for _ in range(2)]
    refused, transport = open_connection(site)
    refused.dataReceived(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = transport.value()
    assert answer.startswith(b"HTTP/1.1 503 ") and transport.disconnecting
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["message"] == (
        "dsfw: too many open connections (limit 2); retry later")
    refused.connectionLost(None)
    for channel, t in open_ones:  # the open connections are still served
        channel.dataReceived(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        assert t.value().startswith(b"HTTP/1.1 200 ")
    assert len(resource.requests) == 2
    # one closes: the next client is served
    channel, t = open_ones[0]
    t.loseConnection()
    channel.connectionLost(None)
    served, t = open_connection(site)
    served.dataReceived(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
    assert t.value().startswith(b"HTTP/1.1 200 ")


def test_a_hijacked_connection_that_ended_frees_its_place():
    """After a hijack the channel never hears of the close; the transport's state counts."""
    clock = MemoryReactorClock()
    site = make_site(Streaming(), clock, max_connections=1)
    _, first = open_connection(site)
    first.connected = False  # closed under another protocol
    _, t = open_connection(site)
    assert not t.value() and not t.disconnecting
    _, refused = open_connection(site)
    assert refused.value() == b"" and not refused.disconnecting
    clock.advance(10)  # a refused client that sends nothing is closed after a few seconds
    assert refused.disconnecting


def test_the_soft_fd_limit_is_raised_to_fit_or_the_connection_limit_lowered():
    calls = []

    def getrlimit(_):
        return (1024, 4096)

    def setrlimit(_, limits):
        calls.append(limits)
    assert fit_fd_limit(512, getrlimit, setrlimit) == 512
    assert calls == [(512 * FDS_PER_CONNECTION + FD_RESERVE, 4096)]
    calls.clear()
    allowed = fit_fd_limit(5000, getrlimit, setrlimit)
    assert calls == [(4096, 4096)]
    assert allowed == (4096 - FD_RESERVE) // FDS_PER_CONNECTION

    def refused(_, limits):
        raise ValueError("not permitted")
    assert fit_fd_limit(512, getrlimit, refused) == (1024 - FD_RESERVE) // FDS_PER_CONNECTION
