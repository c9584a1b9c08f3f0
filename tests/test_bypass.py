"""Large file contents of a build context go from the client's reads to dockerd's stream
on the reactor (BodyFeed.bypass into ContextStream.put), in order, with backpressure."""
from __future__ import annotations

import io
import queue
import tarfile
import tempfile
import threading
import time

import pytest
from twisted.internet.defer import Deferred

from dsfw.build.context import ContextLimits, ContextTooLarge, rewrite_context
from dsfw.build.stream import ContextStream, StreamClosed
from dsfw.edge.feed import BodyFeed, FeedClosed


class Reactor:
    """The test's thread is the reactor: it runs what other threads hand it."""

    def __init__(self):
        self.calls: queue.Queue = queue.Queue()

    def callFromThread(self, f, *args):
        self.calls.put((f, args))

    def run_next(self, count=1):
        """Run the next ``count`` calls handed over, waiting for them."""
        for _ in range(count):
            f, args = self.calls.get(timeout=10)
            f(*args)

    def pump_until(self, done, timeout=10.0):
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, "timed out"
            try:
                f, args = self.calls.get(timeout=0.01)
            except queue.Empty:
                continue
            f(*args)


class Client:
    """The body producer: what the client sends, and whether it was paused."""

    def __init__(self):
        self.paused = False
        self.pauses = 0
        self.stopped = False
        self.done = Deferred()

    def startProducing(self, consumer):
        return self.done

    def pauseProducing(self):
        self.paused = True
        self.pauses += 1

    def resumeProducing(self):
        self.paused = False

    def stopProducing(self):
        self.stopped = True


class Consumer:
    def __init__(self):
        self.data = []

    def write(self, data):
        self.data.append(data)


class Worker(threading.Thread):
    def __init__(self, target):
        super().__init__(daemon=True)
        self._target = target
        self.result = self.error = None

    def run(self):
        try:
            self.result = self._target()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            self.error = e


def setup(high=1 << 20):
    reactor, client = Reactor(), Client()
    feed = BodyFeed(reactor, client, high=high, low=high // 4).start()
    stream = ContextStream(reactor, high=high)
    consumer = Consumer()
    return reactor, client, feed, stream, consumer


def test_bypassed_bytes_follow_what_the_thread_wrote_and_the_rest_stays_for_the_thread():
    reactor, client, feed, stream, consumer = setup()
    stream.startProducing(consumer)
    feed.write(b"a" * 10)  # queued before the bypass is asked for

    def work():
        stream.write(b"prefix")
        went = feed.bypass(25, stream)
        return went, feed.read(100)

    worker = Worker(work)
    worker.start()
    reactor.run_next(2)  # the prefix's delivery, then the bypass
    for piece in (b"b" * 10, b"c" * 10):
        feed.write(piece)
    worker.join(5)
    assert worker.error is None and worker.result == (25, b"c" * 5)
    reactor.pump_until(lambda: reactor.calls.empty())
    assert b"".join(consumer.data) == b"prefix" + b"a" * 10 + b"b" * 10 + b"c" * 5


def test_a_full_stream_pauses_the_client_until_dockerd_takes_more():
    reactor, client, feed, stream, consumer = setup(high=100)
    stream.startProducing(consumer)
    stream.pauseProducing()  # dockerd is slow
    worker = Worker(lambda: feed.bypass(300, stream))
    worker.start()
    reactor.run_next()  # the bypass starts
    feed.write(b"x" * 60)
    assert not client.paused
    feed.write(b"x" * 60)
    assert client.paused  # 120 bytes wait in the stream
    stream.resumeProducing()
    assert not client.paused and b"".join(consumer.data) == b"x" * 120
    feed.write(b"y" * 180)
    worker.join(5)
    assert worker.result == 300


def test_a_body_that_ends_early_gives_fewer_bytes():
    reactor, client, feed, stream, consumer = setup()
    stream.startProducing(consumer)
    worker = Worker(lambda: feed.bypass(1000, stream))
    worker.start()
    reactor.run_next()  # the bypass starts
    feed.write(b"z" * 10)
    client.done.callback(None)
    worker.join(5)
    assert worker.result == 10


@pytest.mark.parametrize("end", ["stream", "request"])
def test_an_ended_stream_or_request_wakes_the_thread_with_an_error(end):
    reactor, client, feed, stream, consumer = setup()
    stream.startProducing(consumer)
    worker = Worker(lambda: feed.bypass(1000, stream))
    worker.start()
    reactor.run_next()  # the bypass starts
    feed.write(b"a")
    if end == "stream":
        stream.stopProducing()  # dockerd went away
    else:
        feed.close()
    feed.write(b"z")  # a read already under way when the request ended
    worker.join(5)
    assert isinstance(worker.error, StreamClosed if end == "stream" else FeedClosed)
    assert consumer.data == [b"a"]  # nothing after the end reached dockerd's stream


def _plain_tar(big: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("Dockerfile", b"FROM scratch\n"), ("big", bytes(range(256)) * (big // 256)),
                           ("small", b"s" * 100)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _rewrite(data: bytes, limits=ContextLimits(), gzip_it=False):
    """rewrite_context with a bypass that reads the source itself, as the feed would."""
    import gzip
    src = io.BytesIO(gzip.compress(data) if gzip_it else data)
    streamed = io.BytesIO()
    went = []

    def bypass(size):
        piece = src.read(size)
        streamed.write(piece)
        went.append(len(piece))
        return len(piece)

    with tempfile.TemporaryFile() as spool:
        ctx = rewrite_context(src, spool, "Dockerfile", limits, lambda _ctx: streamed, bypass)
        spool.seek(0)
        return spool.read() + streamed.getvalue(), ctx, went


def test_the_canonical_tar_is_the_same_with_or_without_a_bypass():
    data = _plain_tar(2 << 20)
    with tempfile.TemporaryFile() as spool:
        rewrite_context(io.BytesIO(data), spool)
        spool.seek(0)
        expected = spool.read()
    out, ctx, went = _rewrite(data)
    # what the read-ahead did not bring in already goes around
    assert len(went) == 1 and (2 << 20) - 256 * 1024 < went[0] < 2 << 20 and out == expected
    out, ctx, went = _rewrite(data, gzip_it=True)
    assert went == [] and out == expected  # decompressed data is never bypassed


def test_a_bypass_never_carries_bytes_past_the_limits():
    data = _plain_tar(2 << 20)
    with pytest.raises(ContextTooLarge):
        _rewrite(data, limits=ContextLimits(max_input_bytes=1 << 20))
