"""The firewall's twisted.web resource: parse, decide, relay -- or refuse.

Every request, including each one pipelined on a keep-alive connection, runs
through :meth:`FirewallResource._handle` as soon as its head is in
(:mod:`dsfw.edge.server`): it is parsed once into a
:class:`~dsfw.input.request.CanonicalRequest`, shown to the policy, and only then
serialized by dsfw for dockerd.  The body is read only as far as the decision
needs it: a JSON body the policy sees is read first (up to ``--max-json-body``),
a build context is rewritten while it arrives, and a stream body (archive,
image tarball) is decided on the head and read only once allowed, relayed as it
arrives.  Any exception on that path is a refusal with a Docker-style
``{"message": ...}`` body: the firewall fails closed.
"""
from __future__ import annotations

import dataclasses
import itertools
import time
from typing import Any, Callable

import structlog
from twisted.internet.defer import CancelledError, ensureDeferred
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from dsfw import routes
from dsfw.errors import (BadRequest, DsfwError, Forbidden, NotFound, PolicyEngineError,
                         ShuttingDown, error_body, error_response)
from dsfw.input.request import (HEAD_FIELDS, CanonicalRequest, canonical_head,
                                input_document, with_body)
from dsfw.edge.feed import BodyFeed
from dsfw.edge.inflight import InFlight
from dsfw.edge.memo import BytesMemo
from dsfw.edge.peer import connection_identified, peer_log_fields
from dsfw.ops.metrics import Metrics
from dsfw.input.redact import (redacted_input, redacted_query, scrub, scrubbed_decision,
                               secret_values)
from dsfw.build.gate import BuildGate
from dsfw.policy import AUTHZ, BUILD, PolicyEngine
from dsfw.edge.relay import Relay
from dsfw.scope.scoping import HiddenObject

log = structlog.get_logger("dsfw")

DEFAULT_MAX_JSON_BODY = 16 << 20
DEFAULT_MAX_STREAM_BODY = 16 << 30
_HEAD_DECISION_BYTES = 64 << 10  # smaller JSON bodies are read at once (the read-ahead)
_UNKNOWN = object()


def _upgrade_of(request) -> str | None:
    """The protocol a client asks to upgrade to, if it asks properly."""
    upgrade = request.requestHeaders.getRawHeaders(b"upgrade")
    if not upgrade:
        return None
    connection = b",".join(request.requestHeaders.getRawHeaders(b"connection") or [])
    tokens = {t.strip().lower() for t in connection.split(b",")}
    if b"upgrade" not in tokens or len(upgrade) != 1:
        raise BadRequest("an Upgrade header needs exactly one value and 'Connection: Upgrade'")
    value = upgrade[0].strip().lower().decode("latin-1")
    if value not in routes.HIJACK_UPGRADES:
        raise BadRequest(f"upgrade to {value!r} is not supported")
    return value


def _failure_outcome(exc: BaseException) -> str:
    """The metrics outcome of a request that ended in ``exc`` (one outcome per request)."""
    status = getattr(exc, "status", 500)
    return "denied" if status == 403 else "bad_request" if 400 <= status < 500 else "error"


def _exposed(req: CanonicalRequest | None) -> dict[str, Any] | None:
    """The parts of a request that a log line or an error message could quote."""
    if req is None:
        return None
    return {"Method": req.method, "PathPlain": req.target.plain_path,
            "Path": req.target.policy_path(), "Query": req.target.query_dict(),
            "Headers": dict(req.headers), "Body": req.body}


def _write_answer(request, status: int, content_type: bytes, body: bytes) -> None:
    """A complete answer from dsfw itself (errors, its own endpoints)."""
    request.write_head(status, None, [b"Content-Type: " + content_type], len(body), hold=True)
    request.write(body)
    request.finish()


class FirewallResource(Resource):
    """Decides and relays every request; nothing reaches dockerd undecided."""

    isLeaf = True

    def __init__(self, engine: PolicyEngine, relay: Relay, build_gate: BuildGate, *,
                 max_json_body: int = DEFAULT_MAX_JSON_BODY,
                 max_stream_body: int = DEFAULT_MAX_STREAM_BODY,
                 peer_identity: Callable[[Any], dict | None] | None = None,
                 dry_run: bool = False, clock=None, admin_endpoints=None,
                 metrics: Metrics | None = None, verbose: bool = True, recorder=None,
                 scope=None, decision_log=None, body_worker=None):
        super().__init__()
        self._engine = engine
        self._relay = relay
        self._max_json_body = max_json_body
        self._max_stream_body = max_stream_body
        self._peer_identity = peer_identity
        self._build_gate = build_gate
        self._dry_run = dry_run
        self._verbose = verbose  # skip building debug-only log fields when they are dropped
        self._recorder = recorder
        self._scope = scope  # dsfw.scope.Scope: input.Target and filtered answers
        self._decision_log = decision_log  # dsfw.ops.decisionlog.DecisionLog: ships decisions
        self._body_worker = body_worker  # dsfw.offload.client.BodyWorker: large JSON bodies
        self._ids = itertools.count(1)
        self._admin = admin_endpoints
        self.metrics = metrics if metrics is not None else Metrics()
        if clock is None:
            from twisted.internet import reactor as clock
        self._clock = clock
        self.inflight = InFlight(clock)
        self._heads = BytesMemo(entries=256, max_key=2048)  # canonical heads by their bytes

    def render(self, request):
        d = ensureDeferred(self._handle(request))
        request.notify_lost(lambda _: d.cancel())
        return NOT_DONE_YET

    def _abort_request(self, request) -> Callable[[], None]:
        """Closes this request's client connection, even after a hijack took it from twisted.web."""
        transport = request.channel.transport  # the same object a splice keeps using

        def abort() -> None:
            if transport.connected:
                transport.abortConnection()
        return abort

    async def _handle(self, request) -> None:
        request_id = next(self._ids)
        started = time.perf_counter()
        bound = log.bind(request_id=request_id)
        token = self.inflight.begin(self._abort_request(request))
        hijack_token = None
        context = feed = None
        req = None
        outcome = None  # counted once, when the request is over
        doc = None
        job = answer = volumes = None  # a large body's way through the body worker
        try:
            if self.inflight.draining:
                raise ShuttingDown("dsfw is shutting down; retry on the restarted firewall")
            req = self.canonical_head(request)
            peer = self._peer_of(request.channel)
            if peer is not None:  # one bind: each copies the logger's context
                bound = bound.bind(method=req.method, path=req.target.path,
                                   **peer_log_fields(peer),
                                   conn=getattr(request.channel, "dsfw_conn", None))
            else:
                bound = bound.bind(method=req.method, path=req.target.path)
            if self._verbose:
                # the original firewall's first line; the target as canonicalized and redacted
                bound.debug("request.received", target=redacted_input(_exposed(req))["Path"])
            stream = length = build_fields = None
            self._build_gate.check_buildkit_endpoint(req, bound)
            body_kind = req.route.body
            if body_kind == routes.BUILD:
                async def open_context():
                    # The request alone may already be refused: then no context byte is
                    # read.  The decision that allows is taken on what dockerd receives.
                    await self._decide(bound, AUTHZ, await self._document(req, peer), started,
                                       precheck=True)
                    nonlocal feed
                    feed = BodyFeed(self._clock, request.body_producer(None, "")).start()
                    return feed
                prepared = await self._build_gate.prepare(
                    req, open_context if request.has_body else None, bound)
                req, build_fields = prepared.request, prepared.fields
                stream = context = prepared.context
                length = prepared.context_length
                if prepared.relay_body:
                    stream = self._stream_of(request)
            elif body_kind == routes.STREAM:
                stream = self._stream_of(request)  # read only after the decision
            elif body_kind == routes.JSON:
                if self._refusable_at_the_head(request):
                    await self._decide(bound, AUTHZ, input_document(req, peer=peer), started,
                                       precheck=True)
                parts = await request.read_body_parts(self._max_json_body, "--max-json-body")
                if self._offloads(req, parts):  # parsed and decided in the body worker
                    job = self._body_worker.job(req, parts, self._max_json_body)
                    volumes = await job.parse()
                else:
                    req = with_body(req, b"".join(parts), self._max_json_body)
            scoped = None
            if self._scope is not None:
                # the policy sees the path as written and the object's identity;
                # dockerd gets the same object by its ID
                scoped = await self._scope.target_of(req, volumes)
            if job is None:
                doc = input_document(req, peer=peer, extra=scoped and scoped.fields)
                decision = await self._decide(bound, AUTHZ, doc, started, scoped)
            else:
                answer = await job.decide(peer, scoped, self._scope is not None)
                decision = await self._decide(bound, AUTHZ, None, started, scoped, answer=answer)
                req, stream = answer.forward(req), answer.body_producer()
                if scoped is not None:
                    scoped = dataclasses.replace(scoped, forward=answer.forward(scoped.forward))
            if build_fields is not None:
                await self._decide(bound, BUILD, {**doc, **build_fields}, started)
            outcome = "allowed"
            if req.route.admin:  # decided like any request, answered by dsfw itself
                await self._answer_admin(request, req)
                return
            forward, answer_filter = req, None
            if scoped is not None:
                forward = await self._scope.forwardable(scoped)
                if decision is not None and answer is None:  # the worker stamped its body
                    forward = self._scope.stamp(decision, forward)
                    answer_filter = self._scope.answer_filter(decision, doc, forward)
            may_hijack = req.route.hijack
            if may_hijack:
                hijack_token = self.inflight.begin(self._abort_request(request))
            result = await self._relay.forward(
                request, forward, forward.json_body, stream, length, may_hijack,
                on_hijack_close=lambda: self.inflight.end(hijack_token),
                answer_filter=answer_filter)
            if result != "hijacked" and hijack_token is not None:
                self.inflight.end(hijack_token)
            bound.debug("request.relayed", hijacked=result == "hijacked",
                        ms=round((time.perf_counter() - started) * 1000, 2))
        except CancelledError:
            bound.info("request.cancelled", reason="client went away")
            if hijack_token is not None:
                self.inflight.end(hijack_token)
        except Exception as e:  # every failure is a refusal
            if hijack_token is not None:
                self.inflight.end(hijack_token)
            outcome = _failure_outcome(e)
            self._refuse(request, e, bound, doc if doc is not None else _exposed(req))
        finally:
            self.inflight.end(token)
            if outcome is not None:
                self.metrics.count(outcome, *((req.method, req.route) if req else ()))
            if job is not None:
                job.close()
            if feed is not None:
                feed.close()
            if context is not None:
                context.close()

    def _peer_of(self, channel) -> dict | None:
        """The credentials of the process that connected, read once per connection.

        They never change on a connection, whoever sends on it later (a process
        the descriptor was passed to, a relay's users): see docs/input.md.
        """
        if self._peer_identity is None:
            return None
        peer = getattr(channel, "dsfw_peer", _UNKNOWN)
        if peer is _UNKNOWN:
            peer = self._peer_identity(channel.transport)
            channel.dsfw_peer = peer
            if hasattr(channel, "dsfw_conn"):  # a TLS client, known since the handshake
                connection_identified(channel, peer)
        return peer

    async def _answer_admin(self, request, req: CanonicalRequest) -> None:
        if self._admin is None:
            raise NotFound("dsfw endpoints are not enabled")
        status, content_type, body = await self._admin.answer(req.method, req.route)
        _write_answer(request, status, content_type, body)

    def canonical_head(self, request) -> CanonicalRequest:
        """The request line and headers in the one form dsfw decides and forwards.

        A pure function of the head's bytes, so the result for a short head is
        remembered by them (a client polling ``/_ping`` or ``/containers/json``
        sends the same bytes each time); the value is immutable.  Refusals are
        not remembered.
        """
        raw = getattr(request, "raw_head", None)
        if raw is None:
            return self._canonical_head(request)
        return self._heads.get(raw, self._canonical_head, request)

    def _canonical_head(self, request) -> CanonicalRequest:
        try:
            method = request.method.decode("ascii")
        except UnicodeDecodeError:
            raise BadRequest("request method is not ASCII") from None
        return canonical_head(method, request.uri, request.requestHeaders.getAllRawHeaders(),
                              _upgrade_of(request))

    async def _document(self, req: CanonicalRequest, peer) -> dict[str, Any]:
        scoped = None
        if self._scope is not None:
            scoped = await self._scope.target_of(req)
        return input_document(req, peer=peer, extra=scoped and scoped.fields)

    def _stream_of(self, request):
        """The client's stream body as a producer for the relay, or None when there is none."""
        if not request.has_body:
            return None
        return request.body_producer(self._max_stream_body, "--max-stream-body")

    def _refusable_at_the_head(self, request) -> bool:
        """Whether a JSON request is worth deciding before its body is read: the client
        waits for a ``100``, or the body is large or of unknown size -- and the policy
        reads nothing the body can change, so a refusal now is the refusal it would get.
        The decision that allows is still taken on the whole request."""
        if self._dry_run or not request.has_body:
            return False
        body = request.body
        if not (request.expect_continue or body.framing == "chunked"
                or body.length > _HEAD_DECISION_BYTES):
            return False
        fields = self._engine.input_fields()
        return fields is not None and fields <= HEAD_FIELDS

    def _offloads(self, req: CanonicalRequest, parts: list[bytes]) -> bool:
        """Whether a JSON body goes to the body worker (dsfw.offload): a large one, when
        nothing here needs its parsed input (a recorder, decision log or --verbose)."""
        return (self._body_worker is not None and self._recorder is None
                and self._decision_log is None and not self._verbose
                and self._body_worker.wants(req, sum(map(len, parts))))

    async def _decide(self, bound, package: str, doc: dict[str, Any] | None, started: float,
                      scoped=None, precheck: bool = False, answer=None):
        """The policy's decision on ``doc``: logged, recorded, raised as Forbidden when denied;
        or the body worker's ``answer`` on it, taken the same way.

        A ``precheck`` (a build's request before its context is read, so a refused
        one costs no upload) is only logged and recorded when it denies: the
        decision that allows is the one taken on what dockerd receives.
        """
        query = f"data.{package}.allow"
        if answer is not None:  # the same steps, taken in the worker (dsfw.offload.jobs)
            decision, url_query = answer.decision, answer.url_query
            if decision is None:
                if not self._dry_run:
                    raise PolicyEngineError(answer.engine_error)
                bound.warning("policy.dry_run_would_deny", query=query,
                              error=PolicyEngineError(answer.engine_error).client_message())
                return None
        else:
            if self._verbose:
                bound.debug("policy.query", query=query, input=redacted_input(doc))
            try:
                decision = await self._engine.decide(package, doc)
            except Exception as e:
                if self._decision_log is not None:
                    self._decision_log.record_failure(
                        package, doc, scrub(error_response(e)[1], secret_values(doc)),
                        self._engine.revision())
                if not self._dry_run:
                    raise
                bound.warning("policy.dry_run_would_deny", query=query,
                              error=scrub(error_response(e)[1], secret_values(doc)))
                return None
            if precheck and decision.allowed:
                bound.debug("policy.precheck", query=query, allowed=True,
                            revision=decision.revision)
                return decision
            decision = scrubbed_decision(decision, doc)
            if self._recorder is not None:
                self._recorder.record(doc, decision)
            if self._decision_log is not None:
                self._decision_log.record(doc, decision)
            url_query = redacted_query(doc)
        bound.info("policy.decision", query=query, allowed=decision.allowed,
                   reasons=list(decision.reasons), engine=decision.engine,
                   revision=decision.revision, url_query=url_query,
                   ms=round((time.perf_counter() - started) * 1000, 3))
        if scoped is not None:
            # before a denial: a hidden object is missing, not forbidden
            try:
                if answer is None:
                    await self._scope.check_visible(decision, doc, scoped)
                elif answer.visible_error is not None:
                    raise PolicyEngineError(answer.visible_error)
                elif answer.shown is False:
                    raise self._scope.hidden(scoped)
            except HiddenObject:
                if not self._dry_run:
                    raise
                bound.warning("policy.dry_run_would_hide", query=query)
        if not decision.allowed:
            if self._dry_run:
                bound.warning("policy.dry_run_would_deny", query=query, reasons=decision.message())
                return decision
            raise Forbidden(decision.message())
        return decision

    def _refuse(self, request, exc: BaseException, bound, doc: dict | None) -> None:
        """Answer a refusal; its message and log lines never carry the request's secrets."""
        status, message = error_response(exc)
        secrets = secret_values(doc) if doc else ()
        message = scrub(message, secrets)
        if not isinstance(exc, DsfwError):
            error = scrub(repr(exc), secrets)
            # a traceback quoting a secret is not logged; the scrubbed error still is
            bound.error("request.failed", status=status, error=error,
                        exc_info=exc if error == repr(exc) else None)
        elif status >= 500:
            bound.error("request.failed", status=status, error=message)
        else:
            bound.info("request.refused", status=status, error=message)
        if request.finished or request.disconnected or request.hijacked:
            return
        if request.startedWriting:
            request.channel.transport.abortConnection()
            return
        body = exc.body() if isinstance(exc, HiddenObject) else error_body(message)
        _write_answer(request, status, b"application/json", body)
