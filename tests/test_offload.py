"""The body worker (dsfw.offload): same answers as in process, and failing closed.

The pure side (:class:`BodyJobs`) is compared with the edge's own functions on
the same bodies; the daemon's side (:class:`BodyWorker`) drives a real worker
process on the real reactor: killed mid-request, too slow, answering garbage,
over its waiting limits, handed a new policy revision, retired when idle.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sys
import tempfile

import pytest
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase

from dsfw.errors import BadRequest, PolicyEngineError
from dsfw.input.request import canonical_head, input_document, with_body
from dsfw.input.redact import scrubbed_decision
from dsfw.offload.client import BodyWorker, BodyWorkerBusy, PiecesProducer
from dsfw.offload.frames import PIECE, FrameError, FrameReader, encode
from dsfw.offload.jobs import BodyJobs, head_of
from dsfw.policy import AUTHZ
from dsfw.policy.embedded import EmbeddedEngine
from dsfw.scope.labels import stamp

ALLOW = "package docker.authz\n\nallow := true\n"
SECRETIVE = """package docker.authz
import rego.v1

allow if count(deny) == 0
deny contains msg if {
    some e in input.Body.Env
    startswith(e, "TOKEN=")
    msg := sprintf("no tokens: %s", [e])
}
labels := {"owner": "alice"}
"""
CREATE = b"/v1.41/containers/create"


def create_head(target: bytes = CREATE):
    return canonical_head("POST", target, [(b"Content-Type", [b"application/json"])])


def big_create(env_count: int = 2000, extra_env: tuple[str, ...] = ()) -> bytes:
    env = [f"V{i}=" + "x" * 100 for i in range(env_count)] + list(extra_env)
    return json.dumps({"Image": "busybox", "Env": env, "Labels": {"a": "b"},
                       "HostConfig": {"Binds": ["/srv:/srv", "data:/data"]}}).encode()


def engine_on(tmp_path, policy: str) -> EmbeddedEngine:
    (tmp_path / "p.rego").write_text(policy)
    return EmbeddedEngine(str(tmp_path))


def roundtrip(header):
    """A header as the frame carries it (JSON both ways)."""
    return json.loads(json.dumps(header))


def decide_in_worker(jobs: BodyJobs, engine: EmbeddedEngine, req, raw: bytes, job: int = 1,
                     peer=None, send_policy: bool = True, stamp_labels: bool = True):
    parsed, _ = jobs.handle(roundtrip({"op": "parse", "id": job, "head": head_of(req),
                                       "max": 16 << 20}), raw)
    sources = engine.policy_sources()
    header = {"op": "decide", "id": job, "revision": sources.revision, "peer": peer,
              "extra": None, "mounting": False, "target": None, "stamp": stamp_labels}
    blob = b""
    if send_policy:
        header["policy"] = {"root": sources.root, "roots": sources.roots,
                            "revision": sources.revision,
                            "files": [[p, len(r)] for p, r in sources.contents]}
        blob = b"".join(r for _, r in sources.contents)
    answer, body = jobs.handle(roundtrip(header), blob)
    return parsed, answer, body


# -- frames ------------------------------------------------------------------

def test_frames_split_anywhere_come_back_whole():
    frames = [({"n": i}, bytes([i]) * random.Random(i).randint(0, 300_000)) for i in range(40)]
    stream = b"".join(b"".join(encode(h, b)) for h, b in frames)
    for seed in range(10):
        rnd = random.Random(seed)
        reader, got, at = FrameReader(1 << 20), [], 0
        while at < len(stream):
            step = rnd.randint(1, 25_000)
            got += reader.feed(stream[at:at + step])
            at += step
        assert [(header, b"".join(pieces)) for header, pieces in got] == frames
        assert max(len(p) for _, pieces in got for p in pieces) < 2 * PIECE


@pytest.mark.parametrize("garbage", [
    b"\x00\x00\x00\x05\x00\x00\x00\x00hello",        # a header that is not JSON
    b"\x00\x00\x00\x02\x00\x00\x00\x00[]",           # JSON, not an object
    b"\x7f\xff\xff\xff\x00\x00\x00\x00",             # a header over the limit
    b"\x00\x00\x00\x02\x7f\xff\xff\xff{}",           # a blob over the limit
])
def test_garbage_is_a_frame_error(garbage):
    with pytest.raises(FrameError):
        FrameReader(1 << 20).feed(garbage)


# -- the worker's side: the edge's own functions ----------------------------

def test_worker_gives_the_in_process_body_and_decision(tmp_path):
    engine = engine_on(tmp_path, ALLOW)
    req, raw = create_head(), big_create()
    parsed, answer, body = decide_in_worker(BodyJobs(), engine, req, raw, peer={"uid": 0})
    here = with_body(req, raw)
    assert parsed["volumes"] == ["data"]
    assert body == here.json_body
    assert [tuple(h) for h in answer["headers"]] == list(here.headers)
    decision = engine.evaluate(AUTHZ, input_document(here, peer={"uid": 0}))
    assert answer["decision"]["allowed"] is decision.allowed is True
    assert answer["decision"]["revision"] == decision.revision == engine.revision()


def test_worker_denies_with_scrubbed_reasons_and_stamps_labels(tmp_path):
    engine = engine_on(tmp_path, SECRETIVE)
    req = create_head()
    secret = "TOKEN=s3cr3t-value-123456"
    _, answer, _ = decide_in_worker(BodyJobs(), engine, req, big_create(extra_env=(secret,)))
    here = with_body(req, big_create(extra_env=(secret,)))
    expected = scrubbed_decision(engine.evaluate(AUTHZ, input_document(here)), input_document(here))
    assert answer["decision"]["allowed"] is False
    assert list(answer["decision"]["reasons"]) == list(expected.reasons)
    assert "s3cr3t" not in json.dumps(answer)

    raw = big_create()
    _, answer, body = decide_in_worker(BodyJobs(), engine, req, raw)
    assert answer["decision"]["allowed"] is True
    assert body == stamp(with_body(req, raw), {"owner": "alice"}).json_body
    assert json.loads(body)["Labels"] == {"a": "b", "owner": "alice"}


def test_worker_refuses_another_revision_and_bad_bodies(tmp_path):
    engine = engine_on(tmp_path, ALLOW)
    jobs = BodyJobs()
    _, answer, body = decide_in_worker(jobs, engine, create_head(), big_create(), send_policy=False)
    assert "engine_error" in answer and "revision" in answer["engine_error"]
    assert body  # the canonical body still comes back (a dry run forwards it)

    answer, _ = jobs.handle({"op": "parse", "id": 2, "head": roundtrip(head_of(create_head())),
                             "max": 16 << 20}, b'{"Image": "a", "Image": "b"}')
    assert answer["error"]["kind"] == "BadRequest" and "repeats the key" in answer["error"]["message"]
    answer, _ = jobs.handle({"op": "decide", "id": 2}, b"")  # nothing parsed under that id
    assert answer["error"]["kind"] == "internal"


# -- the daemon's side: a real worker process --------------------------------

class BodyWorkerTests(TestCase):
    timeout = 60

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="dsfw-offload-")
        self.addCleanup(shutil.rmtree, self.dir)
        self.engine = self.engine_with(ALLOW)

    def engine_with(self, policy: str) -> EmbeddedEngine:
        with open(os.path.join(self.dir, "p.rego"), "w") as f:
            f.write(policy)
        return EmbeddedEngine(self.dir)

    def worker(self, **kw) -> BodyWorker:
        worker = BodyWorker(reactor, self.engine, threshold=1, **kw)
        worker.startService()
        self.addCleanup(self.stop, worker)
        return worker

    def stop(self, worker):
        return worker.stopService()

    @inlineCallbacks
    def run_job(self, worker, raw=None, scoped=None):
        job = worker.job(create_head(), [raw or big_create()], 16 << 20)
        try:
            volumes = yield job.parse()
            answer = yield job.decide(None, scoped, True)
        finally:
            job.close()
        return volumes, answer

    @inlineCallbacks
    def test_decides_like_the_daemon(self):
        worker = self.worker()
        raw = big_create()
        volumes, answer = yield self.run_job(worker, raw)
        self.assertEqual(volumes, ["data"])
        self.assertTrue(answer.decision.allowed)
        self.assertEqual(answer.decision.revision, self.engine.revision())
        self.assertEqual(b"".join(answer.body), with_body(create_head(), raw).json_body)
        self.assertEqual(worker.started, 1)

    @inlineCallbacks
    def test_a_reload_reaches_the_worker(self):
        worker = self.worker()
        _, answer = yield self.run_job(worker)
        self.assertTrue(answer.decision.allowed)
        with open(os.path.join(self.dir, "p.rego"), "w") as f:
            f.write(SECRETIVE)
        self.assertTrue(self.engine.reload())
        _, answer = yield self.run_job(worker, big_create(extra_env=("TOKEN=abcdefgh12345",)))
        self.assertFalse(answer.decision.allowed)
        self.assertEqual(answer.decision.revision, self.engine.revision())
        self.assertNotIn("abcdefgh12345", " ".join(answer.decision.reasons))
        _, answer = yield self.run_job(worker)
        self.assertEqual(json.loads(b"".join(answer.body))["Labels"]["owner"], "alice")
        self.assertEqual(worker.started, 1)

    @inlineCallbacks
    def test_killed_mid_request_denies_and_a_new_worker_takes_over(self):
        worker = self.worker()
        job = worker.job(create_head(), [big_create(60000)], 16 << 20)
        parsing = job.parse()
        os.kill(worker.pid, signal.SIGKILL)
        with self.assertRaises(PolicyEngineError) as caught:
            yield parsing
        self.assertIn("stopped", caught.exception.message)
        job.close()
        _, answer = yield self.run_job(worker)
        self.assertTrue(answer.decision.allowed)
        self.assertEqual(worker.started, 2)

    @inlineCallbacks
    def test_killed_between_parse_and_decide_denies(self):
        worker = self.worker()
        job = worker.job(create_head(), [big_create()], 16 << 20)
        yield job.parse()
        pid = worker.pid
        os.kill(pid, signal.SIGKILL)
        ended = Deferred()
        reactor.callLater(0.5, ended.callback, None)
        yield ended
        with self.assertRaises(PolicyEngineError):
            yield job.decide(None, None, True)
        job.close()

    @inlineCallbacks
    def test_too_slow_is_denied_and_the_worker_replaced(self):
        worker = self.worker(timeout=0.001)
        with self.assertRaises(PolicyEngineError) as caught:
            yield self.run_job(worker, big_create(60000))
        self.assertIn("did not answer within", caught.exception.message)
        self.assertIsNone(worker.pid)

    @inlineCallbacks
    def test_garbage_answers_are_denied(self):
        for script in ("import sys; sys.stdin.read(8); sys.stdout.write('x' * 64); sys.stdout.flush(); sys.stdin.read()",
                       "import sys,json,struct; sys.stdin.read(8); h=json.dumps({'id': 999}).encode(); "
                       "sys.stdout.buffer.write(struct.pack('>II', len(h), 0) + h); sys.stdout.flush(); sys.stdin.read()"):
            worker = self.worker(argv=[sys.executable, "-c", script])
            with self.assertRaises(PolicyEngineError) as caught:
                yield self.run_job(worker)
            self.assertIn("garbage", caught.exception.message)

    @inlineCallbacks
    def test_a_worker_that_exits_at_once_is_denied(self):
        worker = self.worker(argv=[sys.executable, "-c", "pass"])
        with self.assertRaises(PolicyEngineError):
            yield self.run_job(worker)

    def test_waiting_limits_refuse_at_once(self):
        worker = self.worker(max_waiting_jobs=2, max_waiting_bytes=10 << 20)
        first = worker.job(create_head(), [b"x" * 100], 16 << 20)
        worker.job(create_head(), [b"x" * 100], 16 << 20)
        with self.assertRaises(BodyWorkerBusy):
            worker.job(create_head(), [b"x" * 100], 16 << 20)
        first.close()
        second = worker.job(create_head(), [b"x" * ((10 << 20) - 200)], 16 << 20)
        with self.assertRaises(BodyWorkerBusy) as caught:
            worker.job(create_head(), [b"x" * 300], 16 << 20)
        self.assertEqual(caught.exception.status, 503)
        second.close()

    @inlineCallbacks
    def test_stopping_lets_open_bodies_finish_first(self):
        worker = BodyWorker(reactor, self.engine, threshold=1, drain_timeout=20)
        worker.startService()
        job = worker.job(create_head(), [big_create()], 16 << 20)
        yield job.parse()
        stopped = worker.stopService()
        self.assertFalse(stopped.called)
        answer = yield job.decide(None, None, True)  # still answered while the edge drains
        self.assertTrue(answer.decision.allowed)
        self.assertFalse(stopped.called)
        job.close()
        yield stopped
        self.assertIsNone(worker.pid)

    @inlineCallbacks
    def test_parse_errors_are_the_edges_errors(self):
        worker = self.worker()
        job = worker.job(create_head(), [b'{"Image": 1, "Image": 2}', b" " * 100], 16 << 20)
        with self.assertRaises(BadRequest):
            yield job.parse()
        job.close()

    @inlineCallbacks
    def test_an_idle_worker_exits_and_comes_back(self):
        worker = self.worker(idle_exit=0.1)
        yield self.run_job(worker)
        pid = worker.pid
        waited = Deferred()
        reactor.callLater(1.0, waited.callback, None)
        yield waited
        self.assertIsNone(worker.pid)
        self.assertFalse(os.path.exists(f"/proc/{pid}") and
                         open(f"/proc/{pid}/stat").read().split()[2] != "Z")
        _, answer = yield self.run_job(worker)
        self.assertTrue(answer.decision.allowed)
        self.assertEqual(worker.started, 2)


def test_pieces_are_written_as_the_consumer_takes_them():
    class Consumer:
        def __init__(self):
            self.written: list[bytes] = []

        def write(self, data):
            assert isinstance(data, bytes)
            self.written.append(data)
            producer.pauseProducing()  # a full transport pauses its producer at once

    body = bytes(range(256)) * 20_000  # 5 MB in one piece, as a caller may hand it
    producer = PiecesProducer([b"{", body, b"", b"}"])
    consumer = Consumer()
    done = []
    producer.startProducing(consumer).addCallback(done.append)
    assert consumer.written == [b"{"] and not done
    while not done:
        producer.resumeProducing()
    assert b"".join(consumer.written) == b"{" + body + b"}"
    assert producer.length == len(body) + 2
    assert max(map(len, consumer.written)) <= 1 << 20
