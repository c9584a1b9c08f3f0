"""The body worker's side: the edge's own pure functions, applied to one large body.

Two steps per request, because scoping needs dockerd between them: ``parse``
(canonical body, and the named volumes a create mounts, which the daemon
resolves) and ``decide`` (input document with the daemon's ``input.Target``
and facts, the embedded engine's decision on the revision the daemon names,
deny messages without the input's secrets, the target's visibility, labels
stamped).  Nothing here is a second implementation: every step is the function
the daemon calls for a small body.
"""
from __future__ import annotations

import traceback
from typing import Any

import structlog

from dsfw.errors import DsfwError, PolicyEngineError, error_response
from dsfw.input.path import CanonicalTarget
from dsfw.input.redact import redacted_query, scrub, scrubbed_decision, secret_values
from dsfw.input.request import CanonicalRequest, input_document, with_body
from dsfw.policy import AUTHZ, PolicyDecision
from dsfw.policy.embedded import EmbeddedEngine
from dsfw.policy.loader import PolicySources
from dsfw.scope.labels import creates_labelled, stamp
from dsfw.scope.mounts import with_request_facts
from dsfw.scope.scoping import named_volumes

log = structlog.get_logger("dsfw.offload")

DECISION_FIELDS = ("allowed", "package", "reasons", "engine", "revision", "labels", "remove",
                   "filters", "deterministic")


def head_of(req: CanonicalRequest) -> dict[str, Any]:
    """A request's line and headers as a frame header carries them."""
    t = req.target
    return {"method": req.method, "target": [t.path, t.version, t.plain_path, t.query],
            "headers": req.headers, "upgrade": req.upgrade}


def request_of(head: dict[str, Any]) -> CanonicalRequest:
    """The :class:`CanonicalRequest` :func:`head_of` described (its route matched again)."""
    path, version, plain_path, query = head["target"]
    target = CanonicalTarget(path, version, plain_path, tuple((k, v) for k, v in query))
    return CanonicalRequest(head["method"], target, tuple((k, v) for k, v in head["headers"]),
                            upgrade=head["upgrade"])


def decision_of(fields: dict[str, Any]) -> PolicyDecision:
    """A decision from its frame form (lists back to tuples)."""
    values = {k: fields[k] for k in DECISION_FIELDS}
    values["reasons"] = tuple(values["reasons"])
    values["remove"] = tuple(values["remove"])
    return PolicyDecision(**values)


def error_of(exc: BaseException) -> dict[str, Any]:
    """An error as a frame carries it: its class (when it is dsfw's) and message."""
    if isinstance(exc, DsfwError):
        return {"kind": type(exc).__name__, "message": exc.message}
    return {"kind": "internal", "message": error_response(exc)[1]}


class BodyJobs:
    """The worker's state: its compiled policy and the bodies parsed but not yet decided."""

    def __init__(self) -> None:
        self._engine = EmbeddedEngine(None, cache_size=0)  # a 16 MB input is no cache entry
        self._parsed: dict[int, CanonicalRequest] = {}

    def handle(self, header: dict[str, Any], blob: bytes) -> tuple[dict[str, Any], bytes] | None:
        """One frame in, the answer out (None for a frame that gets none)."""
        op = header.get("op")
        job = header.get("id")
        if op == "drop":
            self._parsed.pop(job, None)
            return None
        try:
            if op == "parse":
                return self._parse(job, header, blob)
            if op == "decide":
                return self._decide(job, header, blob)
            raise ValueError(f"unknown operation {op!r}")
        except Exception as e:  # every failure is an answer; the daemon denies on it
            self._parsed.pop(job, None)
            if not isinstance(e, DsfwError):  # where, not what: a message may quote the body
                where = traceback.extract_tb(e.__traceback__)[-1]
                log.warning("body_worker.failed", error=type(e).__name__, op=op,
                            where=f"{where.filename}:{where.lineno}")
            return {"id": job, "error": error_of(e)}, b""

    def _parse(self, job: int, header: dict[str, Any], raw: bytes):
        req = with_body(request_of(header["head"]), raw, header["max"])
        self._parsed[job] = req
        return {"id": job, "volumes": named_volumes(req)}, b""

    def _install(self, policy: dict[str, Any], blob: bytes) -> None:
        contents, at = [], 0
        for path, size in policy["files"]:
            contents.append((path, blob[at:at + size]))
            at += size
        roots = policy["roots"]
        sources = PolicySources(policy["root"], tuple(contents), policy["revision"],
                                None if roots is None else tuple(roots))
        self._engine.install(sources.compile(), "dsfw body worker")

    def _decide(self, job: int, header: dict[str, Any], blob: bytes):
        try:
            return self._decided(job, header, blob)
        finally:
            self._engine.release_input()

    def _decided(self, job: int, header: dict[str, Any], blob: bytes):
        req = self._parsed.pop(job)
        if header.get("policy") is not None:
            self._install(header["policy"], blob)
        extra = header["extra"]
        if header["mounting"] and extra:
            # the daemon merged the container's mount facts with a body-less request's
            extra = {**extra, **with_request_facts(req, extra)}
        doc = input_document(req, peer=header["peer"], extra=extra)
        answer: dict[str, Any] = {"id": job, "headers": req.headers,
                                  "empty": req.json_body is None}
        revision = header["revision"]
        try:
            if self._engine.revision() != revision:
                raise PolicyEngineError(f"the body worker holds policy revision "
                                        f"{self._engine.revision() or 'none'}, not {revision}")
            decision = self._engine.evaluate(AUTHZ, doc)
        except Exception as e:
            if not isinstance(e, PolicyEngineError):
                e = PolicyEngineError(f"policy evaluation failed: {e!r}")
            answer["engine_error"] = scrub(e.message, secret_values(doc))
            return answer, req.json_body or b""
        decision = scrubbed_decision(decision, doc)
        answer["decision"] = {k: getattr(decision, k) for k in DECISION_FIELDS}
        answer["query"] = redacted_query(doc)
        target = header["target"]
        if decision.filters and target is not None:
            try:
                (answer["shown"],) = self._engine.visible_items(AUTHZ, doc, [target])
            except PolicyEngineError as e:
                answer["visible_error"] = e.message
        forward = req
        if header["stamp"] and decision.labels and creates_labelled(req.method, req.route.template):
            try:
                forward = stamp(req, decision.labels)
                answer["headers"] = forward.headers
            except DsfwError as e:
                answer["forward_error"] = error_of(e)
        return answer, forward.json_body or b""
