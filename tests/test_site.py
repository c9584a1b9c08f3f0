"""The twisted.web site dsfw serves: idle clients are dropped, long answers are not."""
from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

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
