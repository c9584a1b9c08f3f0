"""Asking a running OPA over its REST Data API.

One request per decision: ``POST /v1/data/<package path>`` with
``{"input": ...}``, which returns the whole package document, so ``allow``
and ``deny`` are read from the same evaluation -- and from the same policy
revision, even while OPA swaps bundles. (Two requests, one per rule, could
straddle a bundle update.) The answer is judged by :mod:`dsfw.policy.verdict`
like the embedded engine's: ``{"result": {"allow": true}}`` allows.

Every failure fails closed with :class:`PolicyEngineError` naming the cause:
no answer within ``timeout`` seconds, connection refused, a redirect (never
followed: the input would go to an address nobody configured), an HTTP error
(OPA's ``{"code": ..., "message": ...}`` is quoted), an answer that is not JSON or
not an object, and an undefined document (no ``"result"`` key: no policy at
that path).

``url`` is ``http://host:port`` (an optional path prefix is kept) or
``unix:///path/to/opa.sock``. The client owns its connection pool -- never
treq's global one -- and :meth:`OpaEngine.close` closes it.
"""
from __future__ import annotations

import base64
import json
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import structlog
import treq
from treq.client import HTTPClient
from twisted.internet import error as ierror
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.web.client import Agent, HTTPConnectionPool, ResponseFailed
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from dsfw.errors import PolicyEngineError
from dsfw.policy import PolicyDecision
from dsfw.policy.explain import FAILED, BodyTrace, Explanation, Step
from dsfw.policy.verdict import (UNDEFINED, bounded_reasons, check_package, make_decision,
                                 scope_fields, visible_flags, visible_query)

log = structlog.get_logger("dsfw.policy")

DEFAULT_TIMEOUT = 2.0
_MAX_ERROR_TEXT = 200
# OPA's answer for allow/deny is a few kB; a larger one is a broken or hostile
# server, and is an engine failure (deny), not memory dsfw hands out.
MAX_ANSWER_BYTES = 1 << 20


class _AnswerTooLarge(Exception):
    pass


def _bounded_content(response: Any, limit: int) -> Deferred:
    """The response body, or a failure as soon as it grows past ``limit`` bytes."""
    if response.length is not None and isinstance(response.length, int) and response.length > limit:
        response.deliverBody(_Discard())
        return fail(PolicyEngineError(f"OPA's answer of {response.length} bytes exceeds "
                                      f"the limit of {limit} bytes"))
    parts: list[bytes] = []
    size = [0]

    def collect(data: bytes) -> None:
        size[0] += len(data)
        if size[0] > limit:
            raise _AnswerTooLarge()
        parts.append(data)

    def too_large(failure: Any) -> Any:
        if failure.check(_AnswerTooLarge):
            raise PolicyEngineError(f"OPA's answer exceeds the limit of {limit} bytes")
        return failure
    d = treq.collect(response, collect)
    d.addCallbacks(lambda _: b"".join(parts), too_large)
    return d


class _Discard:
    """A body protocol that closes the connection at once (the answer is refused)."""

    def makeConnection(self, transport: Any) -> None:
        transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Any) -> None:
        pass


@implementer(IAgentEndpointFactory)
class _UNIXEndpointFactory:
    """Every request, whatever its host, goes to one UNIX socket."""

    def __init__(self, reactor: Any, path: str):
        self._reactor = reactor
        self._path = path

    def endpointForURI(self, uri: Any) -> UNIXClientEndpoint:
        return UNIXClientEndpoint(self._reactor, self._path)


def _read_token(token_file: str) -> str:
    try:
        with open(token_file, encoding="utf-8") as f:
            token = f.read().strip()
    except OSError as e:
        raise ValueError(f"OPA token file {token_file!r} cannot be read: {e.strerror}") from e
    if not token:
        raise ValueError(f"OPA token file {token_file!r} is empty")
    return token


def _opa_error_text(body: bytes) -> str:
    """OPA's ``{"code", "message"}`` error, or the start of whatever came back."""
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and ("code" in doc or "message" in doc):
        return f"{doc.get('code', '?')}: {doc.get('message', '')}"[:_MAX_ERROR_TEXT]
    return body[:_MAX_ERROR_TEXT].decode("utf-8", "replace") or "empty body"


class OpaEngine:
    """A :class:`dsfw.policy.PolicyEngine` backed by OPA's REST API.

    ``reactor`` must provide TCP/UNIX connections and time; ``clock`` (default:
    the reactor) runs the timeout, so tests can use a controlled clock while
    the connection is real.
    """

    name = "opa"

    def __init__(
        self,
        reactor: Any,
        url: str,
        timeout: float = DEFAULT_TIMEOUT,
        token_file: str | None = None,
        clock: Any = None,
        max_answer: int = MAX_ANSWER_BYTES,
    ):
        if timeout <= 0:
            raise ValueError("OPA timeout must be positive")
        self._reactor = reactor
        self._clock = clock if clock is not None else reactor
        self._timeout = timeout
        self._max_answer = max_answer
        self._token_file = token_file
        self._token = _read_token(token_file) if token_file else None
        self._url = url
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        parts = urlsplit(url)
        if parts.scheme == "unix":
            if not parts.path:
                raise ValueError(f"OPA url {url!r} names no socket path")
            agent = Agent.usingEndpointFactory(
                reactor, _UNIXEndpointFactory(reactor, parts.path), pool=self._pool
            )
            self._base = "http://opa"
        elif parts.scheme in ("http", "https") and parts.netloc:
            agent = Agent(reactor, pool=self._pool)
            self._base = url.rstrip("/")
        else:
            raise ValueError(f"OPA url {url!r} must be http://host:port or unix:///path")
        self._client = HTTPClient(agent)

    def revision(self) -> str:
        """OPA holds the policy; this names where it is asked."""
        return f"opa {self._url}"

    def policy_sources(self) -> None:
        """OPA holds the policy: no body worker can compile it."""
        return None

    def input_fields(self) -> None:
        """OPA holds the policy: dsfw cannot see what it reads, so it may read anything."""
        return None

    def reload(self) -> bool:
        """Re-read the token file (wire to SIGHUP with the embedded engine's reload)."""
        if not self._token_file:
            return True
        try:
            self._token = _read_token(self._token_file)
        except ValueError as e:
            log.error("policy.opa_token_reload_failed", error=str(e))
            return False
        return True

    def reload_if_changed(self) -> bool:
        """OPA watches its own policies; there is nothing here to poll."""
        return False

    def cache_stats(self) -> dict[str, int]:
        """Every decision is OPA's: dsfw caches none."""
        return {}

    def close(self) -> Deferred:
        """Close the pooled connections; fires when they are closed."""
        return self._pool.closeCachedConnections()

    def decide(self, package: str, input_doc: dict[str, Any]) -> "Deferred[PolicyDecision]":
        try:
            check_package(package)
        except PolicyEngineError as e:
            return fail(e)
        path = "/v1/data/" + package.replace(".", "/")
        d = self._post(path, input_doc)
        d.addCallback(lambda answer: self._judge(package, path, *answer))
        d.addCallback(self._with_cause, input_doc)
        return d

    def _post(self, path: str, input_doc: dict[str, Any], query: str | None = None) -> Deferred:
        """POST ``{"input": ...}`` (and ``"query"`` for the Query API) to OPA; fires with
        (status, body, headers), or fails with PolicyEngineError."""
        payload = {"input": input_doc} if query is None else {"query": query, "input": input_doc}
        try:
            body = json.dumps(payload).encode("utf-8")
        except (TypeError, ValueError) as e:
            return fail(PolicyEngineError(f"policy input cannot be encoded: {e}"))
        headers = {b"Content-Type": [b"application/json"]}
        if self._token:
            headers[b"Authorization"] = [b"Bearer " + self._token.encode("utf-8")]
        try:
            # Never follow a redirect: it would send the input (credentials included)
            # to an address the operator did not configure; say so instead.
            d = self._client.post(self._base + path, data=body, headers=headers,
                                  allow_redirects=False)
        except Exception as e:  # a Deferred-returning function never raises
            return fail(PolicyEngineError(f"OPA at {self._url}: request not sent: {e!r}"))
        d.addCallback(lambda response: _bounded_content(response, self._max_answer).addCallback(
            lambda content: (response.code, content, response.headers)))
        d.addTimeout(self._timeout, self._clock, onTimeoutCancel=self._timed_out)
        d.addErrback(lambda f: self._failure(path, f))
        return d

    def explain(self, package: str, input_doc: dict[str, Any]) -> "Deferred[Explanation]":
        """Ask OPA for ``data.<package>.allow`` with ``explain=fails``: its failed expressions.

        OPA's Data API traces on request; a server (or proxy) that drops the
        ``explanation`` field gives an :class:`Explanation` saying so.
        """
        try:
            check_package(package)
        except PolicyEngineError as e:
            return fail(e)
        path = "/v1/data/" + package.replace(".", "/") + "/allow"
        d = self._post(path + "?explain=fails", input_doc)
        d.addCallback(lambda answer: opa_explanation(package, answer[0], answer[1]))
        return d

    def _with_cause(self, decision: PolicyDecision, input_doc: dict[str, Any]) -> Any:
        """A denial without deny messages gets OPA's explanation appended, best effort."""
        if decision.allowed or not decision.reasons[0].startswith(f"request denied by policy data.{decision.package}.allow"):
            return decision
        d = self.explain(decision.package, input_doc)

        def named(explanation: Explanation) -> PolicyDecision:
            return replace(decision, reasons=bounded_reasons(
                (f"{decision.reasons[0]}: {explanation.summary()}",)))
        d.addCallbacks(named, lambda _: decision)
        return d

    def _judge(self, package: str, path: str, status: int, content: bytes,
               headers: Any = None) -> PolicyDecision:
        if 300 <= status < 400:
            location = (headers.getRawHeaders(b"location") or [b""])[0] if headers else b""
            where = location[:_MAX_ERROR_TEXT].decode("utf-8", "replace") or "no Location"
            raise PolicyEngineError(
                f"OPA answered {status} (a redirect to {where}) for {path}; dsfw does not "
                "follow redirects with policy input: set --opa-url to the address that answers")
        if status >= 300:
            raise PolicyEngineError(f"OPA answered {status} for {path}: {_opa_error_text(content)}")
        try:
            doc = json.loads(content)
        except ValueError:
            raise PolicyEngineError(f"OPA answered malformed JSON for {path}") from None
        if not isinstance(doc, dict):
            raise PolicyEngineError(f"OPA answered malformed JSON for {path}: not an object")
        if "result" not in doc:
            raise PolicyEngineError(f"OPA has no policy at data.{package} (undefined result)")
        result = doc["result"]
        if not isinstance(result, dict):
            raise PolicyEngineError(
                f"OPA answered an unexpected result for data.{package}: expected the package object"
            )
        decision = make_decision(
            package, result.get("allow", UNDEFINED), result.get("deny", UNDEFINED), self.name, self.revision()
        )
        # The package document carries the scoping rules of the same evaluation;
        # "visible" shows in it only when defined for this input (give it a default).
        labels = result.get("labels", UNDEFINED) if decision.allowed else UNDEFINED
        remove = result.get("remove", UNDEFINED) if decision.allowed else UNDEFINED
        fields = scope_fields(package, labels, remove)
        if fields or "visible" in result:
            decision = replace(decision, filters="visible" in result, **fields)
        return decision

    def visible(self, package: str, input_doc: dict[str, Any],
                items: list[dict[str, Any]]) -> "Deferred[list[bool]]":
        """One ``POST /v1/query`` (OPA's Query API) deciding every item."""
        try:
            query = visible_query(package)
        except PolicyEngineError as e:
            return fail(e)
        if not items:
            return succeed([])
        d = self._post("/v1/query", {**input_doc, "Items": items}, query=query)
        d.addCallback(lambda answer: self._visible_answer(package, len(items), *answer))
        return d

    def _visible_answer(self, package: str, count: int, status: int, content: bytes,
                        headers: Any = None) -> list[bool]:
        if status >= 300:
            raise PolicyEngineError(f"OPA answered {status} for the visibility query of "
                                    f"data.{package}: {_opa_error_text(content)}")
        try:
            results = json.loads(content).get("result")
            indices = results[0]["x"] if results else []
        except (ValueError, AttributeError, LookupError, TypeError):
            raise PolicyEngineError(f"OPA answered an unexpected result to the visibility "
                                    f"query of data.{package}") from None
        return visible_flags(indices, count)

    def _timed_out(self, result: Any, timeout: float) -> Any:
        # The agent reports a cancelled request in its own wrappers; say what happened.
        raise PolicyEngineError(f"OPA at {self._url} failed: no answer within {timeout:g} s")

    def _failure(self, path: str, failure: Any) -> Any:
        if failure.check(PolicyEngineError):
            return failure
        if failure.check(ierror.ConnectionRefusedError):
            cause = "connection refused"
        elif failure.check(ierror.ConnectError, ierror.DNSLookupError):
            cause = f"cannot connect: {failure.getErrorMessage()}"
        elif failure.check(ResponseFailed):
            cause = "connection lost before the answer was complete"
        else:
            cause = f"{failure.type.__name__}: {failure.getErrorMessage()}"
        raise PolicyEngineError(f"OPA at {self._url} failed for {path}: {cause}")


def opa_explanation(package: str, status: int, content: bytes) -> Explanation:
    """OPA's ``explain=fails`` answer as an :class:`Explanation`: the failed expressions, by location."""
    if status >= 300:
        return Explanation(package, "allow", note=f"OPA answered {status} to the explain request")
    try:
        doc = json.loads(content)
    except ValueError:
        doc = None
    events = doc.get("explanation") if isinstance(doc, dict) else None
    if not isinstance(events, list) or not events:
        return Explanation(package, "allow",
                           note="the OPA server gave no explanation (its API dropped explain=fails)")
    steps = []
    for event in events:
        if not isinstance(event, dict) or event.get("op") != "Fail":
            continue
        location = event.get("location") or {}
        file = location.get("file") or "?"
        row = location.get("row") or 0
        text = location.get("text")
        if isinstance(text, str):  # OPA sends the expression's source, base64-encoded
            try:
                text = base64.b64decode(text).decode("utf-8", "replace")
            except ValueError:
                pass
        text = text if isinstance(text, str) else ""
        steps.append(BodyTrace(f"data.{package}.allow", file, row, (Step(text, row, FAILED),)))
        if len(steps) >= 20:
            break
    if not steps:
        return Explanation(package, "allow", note="OPA traced no failed expression")
    return Explanation(package, "allow", tuple(steps), "as traced by OPA (explain=fails)")
