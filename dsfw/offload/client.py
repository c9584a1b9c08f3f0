"""The daemon's side of the body worker: one child process, started when first needed.

:class:`BodyWorker` spawns ``python -m dsfw.offload.worker`` with Twisted's
process support and keeps one frame in flight: the worker is sequential, and a
frame's timeout then measures the worker, not the queue.  Work waiting for it
is bounded (jobs and bytes); beyond, a request is refused at once.  Everything
fails closed: a worker that dies, stalls past the timeout or answers what is
not a frame fails the requests it held with a ``dsfw:`` 503, and the next job
starts a new worker.  Each decision carries the revision of the policy the
daemon's engine has in force; a worker holding another one is sent that
revision's sources first, so SIGHUP, the directory watcher and bundles reach
it without being told.  An idle worker is ended, so it costs memory only while
large bodies arrive.
"""
from __future__ import annotations

import itertools
import os
import sys
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

import structlog
from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import ProcessProtocol
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from dsfw import errors
from dsfw.errors import DsfwError, PolicyEngineError
from dsfw.input.request import CanonicalRequest
from dsfw.offload.frames import FrameError, FrameReader, encode
from dsfw.offload.jobs import decision_of, head_of
from dsfw.policy import PolicyDecision

log = structlog.get_logger("dsfw.offload")

DEFAULT_THRESHOLD = 256 << 10
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_WAITING_BYTES = 256 << 20
DEFAULT_MAX_WAITING_JOBS = 32
IDLE_EXIT = 30.0
MAX_PIECE = 1 << 20  # larger pieces are cut as they are written
_KNOWN_ERRORS = {c.__name__: c for c in (errors.BadRequest, errors.Forbidden, errors.NotFound,
                                         errors.PayloadTooLarge, errors.PolicyEngineError)}


class BodyWorkerBusy(DsfwError):
    """More large bodies wait for the worker than its limits allow."""

    status = 503


def _error(fields: Any) -> DsfwError:
    """The error a worker reported, as the daemon raises it."""
    if not isinstance(fields, dict) or not isinstance(fields.get("message"), str):
        raise FrameError("an error without a message")
    kind = _KNOWN_ERRORS.get(fields.get("kind"), DsfwError)
    return kind(fields["message"])


@implementer(IBodyProducer, IPushProducer)
class PiecesProducer:
    """Bytes already in memory, written piece by piece as the consumer takes them.

    Used for the frames going to the worker and for the canonical body going to
    dockerd: handing a transport 16 MB at once makes it join them into one fresh
    buffer, which held the reactor for up to 150 ms (docs/benchmarks.md).
    """

    def __init__(self, pieces: list[bytes]):
        self._pieces = deque(p for p in pieces if p)
        self.length = sum(map(len, self._pieces))
        self._consumer = None
        self._done: Deferred | None = None
        self._paused = False

    def startProducing(self, consumer) -> Deferred:
        self._consumer, self._done = consumer, Deferred()
        done = self._done
        self._write()
        return done

    def _write(self) -> None:
        while self._pieces and not self._paused and self._done is not None:
            piece = self._pieces.popleft()
            if len(piece) > MAX_PIECE:  # a caller's whole body: cut as it is written
                view = memoryview(piece)
                self._pieces.appendleft(view[MAX_PIECE:])
                piece = view[:MAX_PIECE]
            self._consumer.write(bytes(piece) if isinstance(piece, memoryview) else piece)
        if not self._pieces and self._done is not None:
            done, self._done = self._done, None
            done.callback(None)

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._write()

    def stopProducing(self) -> None:
        self._pieces.clear()
        self._done = None  # never fires, as IBodyProducer requires


@dataclass(frozen=True)
class WorkerAnswer:
    """What the worker decided for one body, and the canonical bytes to forward."""

    decision: PolicyDecision | None
    engine_error: str | None
    url_query: Any
    shown: bool | None
    visible_error: str | None
    forward_error: DsfwError | None
    headers: tuple[tuple[str, str], ...]
    body: list[bytes] | None  # the canonical body's pieces; None when there is none

    def forward(self, req: CanonicalRequest) -> CanonicalRequest:
        """``req`` (a head) with the worker's headers for its canonical body (which
        :meth:`body_producer` gives); raises what stamping raised."""
        if self.forward_error is not None:
            raise self.forward_error
        return replace(req, headers=self.headers, json_body=None)

    def body_producer(self) -> PiecesProducer | None:
        """The canonical body for the relay, as a producer of known length."""
        return None if self.body is None else PiecesProducer(self.body)


def _answer_of(header: dict[str, Any], blob: list[bytes]) -> WorkerAnswer:
    headers = tuple((str(k), str(v)) for k, v in header["headers"])
    json_body = None if header["empty"] else blob
    forward_error = _error(header["forward_error"]) if "forward_error" in header else None
    if "engine_error" in header:
        return WorkerAnswer(None, str(header["engine_error"]), None, None, None, forward_error,
                            headers, json_body)
    visible_error = header.get("visible_error")
    shown = header.get("shown")
    if shown is not None and not isinstance(shown, bool):
        raise FrameError("a visibility that is not a boolean")
    return WorkerAnswer(decision_of(header["decision"]), None, header["query"], shown,
                        None if visible_error is None else str(visible_error), forward_error,
                        headers, json_body)


class _Outbox:
    """What is written to one worker, in order, through a :class:`PiecesProducer` each."""

    def __init__(self, transport):
        self._transport = transport
        self._waiting: deque[list[bytes]] = deque()
        self._busy = False

    def send(self, pieces: list[bytes]) -> None:
        self._waiting.append(pieces)
        if not self._busy:
            self._next()

    def _next(self, _=None) -> None:
        self._busy = False
        if self._transport is not None:
            self._transport.unregisterProducer()
        if not self._waiting or self._transport is None:
            return
        producer = PiecesProducer(self._waiting.popleft())
        self._busy = True
        self._transport.registerProducer(producer, True)
        producer.startProducing(self._transport).addCallback(self._next)

    def close(self) -> None:
        """Nothing more will be written (the process is gone or given up on)."""
        self._waiting.clear()
        self._transport = None


class _Process(ProcessProtocol):
    """One worker process; what it says goes to its :class:`BodyWorker`."""

    def __init__(self, owner: "BodyWorker", max_blob: int):
        self._owner = owner
        self._frames = FrameReader(max_blob)
        self.revision: str | None = None  # the policy revision it was last sent
        self.exited = False
        self.given_up = False  # replaced: what it still says is not read
        self.gone = Deferred()  # fires when the process has ended
        self.outbox: _Outbox | None = None

    def connectionMade(self) -> None:
        self.outbox = _Outbox(self.transport)

    def childDataReceived(self, fd: int, data: bytes) -> None:
        if fd != 1 or self.given_up:
            return
        try:
            frames = self._frames.feed(data)
        except FrameError as e:
            self._owner._broken(self, str(e))
            return
        for header, blob in frames:
            self._owner._answered(self, header, blob)

    def processEnded(self, reason) -> None:
        self.exited = True
        self.outbox.close()
        self._owner._ended(self, reason.value)
        self.gone.callback(None)

    def kill(self) -> None:
        if not self.exited:
            try:
                self.transport.signalProcess("KILL")
            except Exception:  # already gone
                pass


@dataclass(eq=False)
class _Frame:
    job: "BodyJob"
    op: str
    extra: dict[str, Any]
    result: Deferred
    cancelled: bool = False


class BodyJob:
    """One large body's way through the worker: :meth:`parse`, :meth:`decide`, :meth:`close`."""

    def __init__(self, owner: "BodyWorker", job_id: int, req: CanonicalRequest,
                 body: list[bytes], max_json_body: int):
        self._owner = owner
        self.id = job_id
        self.req = req
        self.body: list[bytes] | None = body
        self.size = sum(map(len, body))
        self.max_json_body = max_json_body
        self.process: _Process | None = None  # the worker holding the parsed body
        self.closed = False

    def parse(self) -> "Deferred[list[str]]":
        """Canonicalize the body in the worker; fires with the named volumes it mounts."""
        return self._owner._enqueue(self, "parse", {}).addCallback(self._parsed)

    def _parsed(self, answer: tuple[dict[str, Any], list[bytes]]) -> list[str]:
        volumes = answer[0]["volumes"]
        if not isinstance(volumes, list) or not all(isinstance(v, str) for v in volumes):
            raise FrameError("volumes that are not a list of names")
        return volumes

    def decide(self, peer: Any, scoped: Any, stamp: bool) -> "Deferred[WorkerAnswer]":
        """The worker's decision on the daemon's policy revision, with scoping's fields.

        ``scoped`` is what :meth:`dsfw.scope.Scope.target_of` gave for the body-less
        request (None without scoping); ``stamp`` whether labels are stamped.
        """
        fields = {"peer": peer, "extra": None, "mounting": False, "target": None, "stamp": stamp}
        if scoped is not None:
            fields.update(extra=scoped.fields, target=scoped.target,
                          mounting=scoped.named is not None and bool(scoped.facts))
        return self._owner._enqueue(self, "decide", fields).addCallback(
            lambda answer: _answer_of(*answer))

    def close(self) -> None:
        """The request is done with its body: free what it holds here and in the worker."""
        if not self.closed:
            self.closed = True
            self.body = None
            self._owner._closed(self)


class BodyWorker(Service):
    """Hands large JSON bodies to a worker process; see the module docstring."""

    def __init__(self, reactor, engine, *, threshold: int = DEFAULT_THRESHOLD,
                 timeout: float = DEFAULT_TIMEOUT,
                 max_waiting_bytes: int = DEFAULT_MAX_WAITING_BYTES,
                 max_waiting_jobs: int = DEFAULT_MAX_WAITING_JOBS, idle_exit: float = IDLE_EXIT,
                 max_blob: int = 1 << 30, argv: list[str] | None = None,
                 drain_timeout: float = 10.0):
        self._reactor = reactor
        self._engine = engine
        self._threshold = threshold
        self._timeout = timeout
        self._max_bytes = max_waiting_bytes
        self._max_jobs = max_waiting_jobs
        self._idle_exit = idle_exit
        self._max_blob = max_blob
        self._drain_timeout = drain_timeout
        self._drained: Deferred | None = None  # fires when the last open job closes
        self._argv = argv or [sys.executable, "-m", "dsfw.offload.worker"]
        self._ids = itertools.count(1)
        self._open: dict[int, BodyJob] = {}
        self._bytes = 0
        self._queue: deque[_Frame] = deque()
        self._current: _Process | None = None
        self._alive: set[_Process] = set()
        self._inflight: _Frame | None = None
        self._timer = None
        self._idle = None
        self.started = 0  # worker processes started (health and tests)

    @property
    def pid(self) -> int | None:
        """The worker process's id while one runs (for logs and tests)."""
        return None if self._current is None else self._current.transport.pid

    def wants(self, req: CanonicalRequest, size: int) -> bool:
        """True when a body of ``size`` bytes is worth a worker (large, and an engine it
        can stand in for)."""
        return (size >= self._threshold and req.method != "GET"
                and self._engine.policy_sources() is not None)

    def job(self, req: CanonicalRequest, body: list[bytes], max_json_body: int) -> BodyJob:
        """Admit one body (the pieces it arrived in); raises :class:`BodyWorkerBusy`
        beyond the waiting limits."""
        size = sum(map(len, body))
        if len(self._open) >= self._max_jobs or self._bytes + size > self._max_bytes:
            raise BodyWorkerBusy(
                f"too many large bodies are waiting for the body worker ({len(self._open)} "
                f"holding {self._bytes} bytes); retry")
        job = BodyJob(self, next(self._ids), req, body, max_json_body)
        self._open[job.id] = job
        self._bytes += job.size
        return job

    # -- the queue, one frame in flight -------------------------------------

    def _enqueue(self, job: BodyJob, op: str, extra: dict[str, Any]) -> Deferred:
        def cancel(_: Deferred) -> None:
            frame.cancelled = True
        frame = _Frame(job, op, extra, Deferred(cancel))
        self._queue.append(frame)
        self._pump()
        return frame.result

    def _pump(self) -> None:
        while self._inflight is None and self._queue:
            frame = self._queue.popleft()
            if frame.cancelled or frame.job.closed:
                continue
            try:
                pieces = self._frame_bytes(frame)
            except DsfwError as e:
                frame.result.errback(e)
                continue
            self._inflight = frame
            self._timer = self._reactor.callLater(self._timeout, self._timed_out, self._current)
            self._current.outbox.send(pieces)
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None
        if self._inflight is None and not self._open and self._current is not None:
            self._idle = self._reactor.callLater(self._idle_exit, self._retire)

    def _frame_bytes(self, frame: _Frame) -> list[bytes]:
        job = frame.job
        if frame.op == "parse":
            try:
                process = self._process()
            except OSError as e:
                raise PolicyEngineError(f"cannot start the body worker: {e}") from e
            job.process = process
            body, job.body = job.body, None
            return encode({"op": "parse", "id": job.id, "head": head_of(job.req),
                           "max": job.max_json_body}, body)
        if job.process is None or job.process is not self._current:
            raise PolicyEngineError("the body worker stopped before the request was decided")
        sources = self._engine.policy_sources()
        if sources is None:
            raise PolicyEngineError("no policy is in force")
        header = {"op": "decide", "id": job.id, "revision": sources.revision, **frame.extra}
        blob: list[bytes] = []
        if self._current.revision != sources.revision:
            header["policy"] = {"root": sources.root, "roots": sources.roots,
                                "revision": sources.revision,
                                "files": [[path, len(raw)] for path, raw in sources.contents]}
            blob = [raw for _, raw in sources.contents]
        frame.extra = {"revision": sources.revision}
        job.process = None  # the worker lets go of the parsed body when it decides
        return encode(header, blob)

    def _process(self) -> _Process:
        if self._current is None:
            process = _Process(self, self._max_blob)
            here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
            self._reactor.spawnProcess(process, self._argv[0], self._argv, env=env,
                                       childFDs={0: "w", 1: "r", 2: 2})
            self._current = process
            self._alive.add(process)
            process.gone.addCallback(lambda _: self._alive.discard(process))
            self.started += 1
            log.info("body_worker.started", pid=process.transport.pid)
        return self._current

    def _answered(self, process: _Process, header: dict[str, Any], blob: list[bytes]) -> None:
        frame = self._inflight
        if process is not self._current or frame is None or header.get("id") != frame.job.id:
            self._broken(process, "an answer to no question")
            return
        self._inflight = None
        self._timer.cancel()
        if frame.op == "decide":
            # the revision it decided on is now compiled there, unless that failed
            process.revision = None if "error" in header else frame.extra["revision"]
        elif "error" in header:
            frame.job.process = None  # nothing parsed is held there
        if not frame.cancelled:
            try:
                if "error" in header:
                    raise _error(header["error"])
                frame.result.callback((header, blob))
            except FrameError as e:
                frame.result.errback(PolicyEngineError(f"the body worker's answer is unreadable: {e}"))
            except DsfwError as e:
                frame.result.errback(e)
        self._pump()

    def _drop(self, process: _Process, job_id: int) -> None:
        if process is self._current and not process.exited:
            process.outbox.send(encode({"op": "drop", "id": job_id}))

    def _closed(self, job: BodyJob) -> None:
        self._open.pop(job.id, None)
        self._bytes -= job.size
        if job.process is not None:
            self._drop(job.process, job.id)
            job.process = None
        self._pump()
        if not self._open:
            self._drain_over()

    # -- failures: deny what the worker held, start afresh ---------------------

    def _fail_inflight(self, message: str) -> None:
        frame, self._inflight = self._inflight, None
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if frame is not None and not frame.cancelled:
            frame.result.errback(PolicyEngineError(message))

    def _timed_out(self, process: _Process) -> None:
        log.error("body_worker.timeout", seconds=self._timeout, pid=process.transport.pid)
        self._forget(process)
        self._fail_inflight(f"the body worker did not answer within {self._timeout:g} s")
        process.kill()
        self._pump()

    def _broken(self, process: _Process, why: str) -> None:
        log.error("body_worker.garbage", error=why[:200], pid=process.transport.pid)
        was_current = process is self._current
        self._forget(process)
        if was_current:
            self._fail_inflight(f"the body worker answered garbage ({why[:200]})")
        process.kill()
        self._pump()

    def _ended(self, process: _Process, reason: Exception) -> None:
        if process is not self._current:
            return  # retired, or already given up on
        log.error("body_worker.exited", pid=process.transport.pid, reason=str(reason)[:200])
        self._forget(process)
        self._fail_inflight(f"the body worker stopped ({str(reason)[:200]})")
        self._pump()

    def _forget(self, process: _Process) -> None:
        process.given_up = True
        process.outbox.close()
        if process is self._current:
            self._current = None

    def _retire(self) -> None:
        """End an idle worker (its memory goes back); the next large body starts one."""
        self._idle = None
        process = self._current
        if process is None or self._inflight is not None or self._open:
            return
        self._current = None
        log.info("body_worker.idle_exit", pid=process.transport.pid)
        process.transport.closeStdin()

    def stopService(self) -> Deferred:
        """Let the requests holding bodies finish (at most ``drain_timeout`` s, as the
        edge drains), then end the worker: end of input, SIGKILL after 2 s."""
        super().stopService()
        drained: Deferred = Deferred()
        if self._open:
            self._drained = drained
            timer = self._reactor.callLater(self._drain_timeout, self._drain_over)
            drained.addCallback(lambda _: timer.cancel() if timer.active() else None)
        else:
            drained.callback(None)
        return drained.addCallback(lambda _: self._end_all())

    def _drain_over(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None:
            drained.callback(None)

    def _end_all(self):
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._current = None
        waits = []
        for process in list(self._alive):  # replaced ones may still be on their way out
            process.transport.closeStdin()
            killer = self._reactor.callLater(2.0, process.kill)
            waits.append(process.gone.addCallback(
                lambda _, k=killer: k.cancel() if k.active() else None))
        return gatherResults(waits) if waits else None
