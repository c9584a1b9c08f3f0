"""Shipping every policy decision to a collector, in OPA's decision-log format.

Each decision becomes one event as OPA writes them (``decision_id``,
``path``, ``input`` with credentials redacted, ``result``, ``timestamp``,
``bundles`` with the active revision, ``labels``), encoded when it is made and
queued.  Uploads are gzip JSON arrays POSTed one batch at a time, in decision
order; a failed batch is retried with exponential backoff (with jitter) and
the queue keeps filling meanwhile.

The queue is bounded in bytes: when the collector is slow or down, the oldest
events are dropped and counted (``dsfw_decision_logs_dropped_total``) rather
than holding memory or the request.  Recording an event is a ``json.dumps``
and a ``deque.append`` on the reactor thread; no request ever waits for the
collector.
"""
from __future__ import annotations

import datetime
import gzip
import json
import random
import socket
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

import structlog
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from treq.client import HTTPClient

import dsfw
from dsfw.input.redact import redacted_input

log = structlog.get_logger("dsfw.decisionlog")

DEFAULT_BUFFER_BYTES = 8 << 20
BATCH_BYTES = 512 << 10  # uncompressed JSON per upload
UPLOAD_DELAY = 0.5  # seconds an event may wait for others to share its upload
UPLOAD_TIMEOUT = 10.0
MIN_BACKOFF = 0.5
STOP_TIMEOUT = 2.0
MAX_BACKOFF = 60.0


def _timestamp(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_labels() -> dict[str, str]:
    """OPA's labels (``id`` per process, ``version``) plus the host and the app."""
    return {"id": str(uuid.uuid4()), "version": getattr(dsfw, "__version__", "0.1.0"),
            "app": "dsfw", "hostname": socket.gethostname()}


class DecisionLog(Service):
    """Buffers decision events and uploads them to ``url`` while running."""

    def __init__(self, reactor, url: str, *, labels: dict[str, str] | None = None,
                 bundle_name: str | None = None, dry_run: bool = False, max_buffer_bytes: int = DEFAULT_BUFFER_BYTES,
                 upload_delay: float = UPLOAD_DELAY, timeout: float = UPLOAD_TIMEOUT,
                 http_client: HTTPClient | None = None,
                 rng: Callable[[], float] = random.random):
        self._reactor = reactor
        self.url = url
        self._labels = labels if labels is not None else default_labels()
        self._bundle_name = bundle_name
        self._dry_run = dry_run
        self._max_bytes = max_buffer_bytes
        self._upload_delay = upload_delay
        self._timeout = timeout
        self._client = http_client
        self._rng = rng
        self._pool = None
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        self._batch: list[bytes] = []  # the upload in flight or awaiting retry
        self._batch_bytes = 0
        self._call = None
        self._upload: Deferred | None = None
        self._failures_in_a_row = 0
        self.counts = {"sent": 0, "dropped": 0, "uploads": 0, "failed_uploads": 0}

    # --- the request path ------------------------------------------------------------------

    def record(self, input_doc: dict[str, Any], decision) -> None:
        """Queue one decision (a :class:`~dsfw.policy.PolicyDecision`); never raises or waits."""
        self._enqueue(decision.package, input_doc, decision.revision,
                      result=decision.allowed, reasons=list(decision.reasons))

    def record_failure(self, package: str, input_doc: dict[str, Any], message: str,
                       revision: str = "") -> None:
        """Queue a decision that failed (engine error): the request was refused."""
        self._enqueue(package, input_doc, revision,
                      error={"code": "policy_error", "message": message})

    def _enqueue(self, package: str, input_doc: dict[str, Any], revision: str,
                 **fields: Any) -> None:
        try:
            event = {"labels": self._labels, "decision_id": str(uuid.uuid4()),
                     "path": package.replace(".", "/") + "/allow",
                     "input": redacted_input(input_doc),
                     "timestamp": _timestamp(self._reactor.seconds())}
            if "result" in fields:
                event["result"] = fields["result"]
            else:
                event["error"] = fields["error"]
            if self._bundle_name is not None:
                event["bundles"] = {self._bundle_name: {"revision": revision}}
            event["custom"] = {"reasons": fields.get("reasons", []), "revision": revision,
                               "dry_run": self._dry_run}
            encoded = json.dumps(event, separators=(",", ":"), default=str).encode("utf-8")
        except Exception as e:  # a logging problem must never become a request problem
            self.counts["dropped"] += 1
            log.error("decisionlog.encode_failed", error=repr(e))
            return
        if len(encoded) > self._max_bytes:
            self.counts["dropped"] += 1
            return
        self._queue.append(encoded)
        self._queued_bytes += len(encoded)
        self._trim()
        if self.running and self._call is None and self._upload is None:
            self._call = self._reactor.callLater(self._upload_delay, self._send)

    def _trim(self) -> None:
        """Drop the oldest events until the buffer (queue and unsent batch) fits its bound."""
        while self._queued_bytes + self._batch_bytes > self._max_bytes:
            if self._batch and self._upload is None:  # waiting for a retry: oldest of all
                self._batch_bytes -= len(self._batch.pop(0))
            elif self._queue:
                self._queued_bytes -= len(self._queue.popleft())
            else:
                break
            self.counts["dropped"] += 1

    # --- uploads ---------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        if self._client is None:
            # treq and twisted.web.client load only with a collector (they bring TLS along).
            from treq.client import HTTPClient
            from twisted.web.client import Agent, HTTPConnectionPool
            self._pool = HTTPConnectionPool(self._reactor, persistent=True)
            self._pool.maxPersistentPerHost = 1
            self._client = HTTPClient(Agent(self._reactor, pool=self._pool,
                                            connectTimeout=self._timeout))
        if self._queue and self._call is None:
            self._call = self._reactor.callLater(0, self._send)

    def stopService(self):
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._upload is not None:
            self._upload.cancel()
        return ensureDeferred(self._final_upload())

    async def _final_upload(self) -> None:
        """One last bounded attempt at what is left, then close the connections."""
        while self._queue:
            self._batch += self._next_batch()
        if self._batch and self._client is not None:
            d = ensureDeferred(self._post(self._batch))
            d.addTimeout(STOP_TIMEOUT, self._reactor)
            try:
                await d
                self.counts["sent"] += len(self._batch)
                self._batch, self._batch_bytes = [], 0
            except Exception as e:
                log.warning("decisionlog.unsent_at_stop", events=len(self._batch), error=repr(e))
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.closeCachedConnections()

    def _next_batch(self) -> list[bytes]:
        batch, size = [], 0
        while self._queue and (not batch or size + len(self._queue[0]) <= BATCH_BYTES):
            event = self._queue.popleft()
            self._queued_bytes -= len(event)
            size += len(event)
            batch.append(event)
        self._batch_bytes = size
        return batch

    def _send(self) -> None:
        self._call = None
        if not self.running:
            return
        if not self._batch:
            self._batch = self._next_batch()
        if not self._batch:
            return
        d = ensureDeferred(self._post(self._batch))
        self._upload = d
        d.addTimeout(self._timeout, self._reactor)  # the whole upload, answer included
        d.addBoth(self._sent)

    async def _post(self, batch: list[bytes]) -> None:
        body = gzip.compress(b"[" + b",".join(batch) + b"]", compresslevel=5)
        response = await self._client.post(
            self.url, data=body, timeout=self._timeout,
            headers={b"Content-Type": [b"application/json"], b"Content-Encoding": [b"gzip"]})
        await response.content()  # small; lets the connection be reused
        if not 200 <= response.code < 300:
            raise RuntimeError(f"collector answered HTTP {response.code}")

    def _sent(self, result) -> None:
        self._upload = None
        batch = self._batch
        if isinstance(result, Failure):
            error = result.value
            if isinstance(error, CancelledError) and not self.running:
                return None
            self.counts["failed_uploads"] += 1
            self._failures_in_a_row += 1
            delay = min(MAX_BACKOFF, MIN_BACKOFF * 2 ** (self._failures_in_a_row - 1))
            delay *= 0.5 + self._rng()
            if self._failures_in_a_row in (1, 2, 4) or self._failures_in_a_row % 16 == 0:
                log.warning("decisionlog.upload_failed", url=self.url, events=len(batch),
                            queued=len(self._queue), retry_in=round(delay, 2),
                            error=str(getattr(error, "message", None) or error)[:300])
            # The batch waits for the retry, first in line (decision order is kept);
            # as the oldest events it is what an overflowing buffer drops first.
            self._trim()
            if self.running:
                self._call = self._reactor.callLater(delay, self._send)
            return None
        self._failures_in_a_row = 0
        self.counts["sent"] += len(batch)
        self.counts["uploads"] += 1
        self._batch, self._batch_bytes = [], 0
        if self._queue and self.running:
            self._call = self._reactor.callLater(0, self._send)
        return None

    def metrics_lines(self) -> list[str]:
        """Prometheus lines for ``/_dsfw/metrics``."""
        return [
            "# HELP dsfw_decision_logs_sent_total Decision events accepted by the collector.",
            "# TYPE dsfw_decision_logs_sent_total counter",
            f"dsfw_decision_logs_sent_total {self.counts['sent']}",
            "# HELP dsfw_decision_logs_dropped_total Decision events dropped (buffer full).",
            "# TYPE dsfw_decision_logs_dropped_total counter",
            f"dsfw_decision_logs_dropped_total {self.counts['dropped']}",
            "# HELP dsfw_decision_logs_failed_uploads_total Uploads that failed and were retried.",
            "# TYPE dsfw_decision_logs_failed_uploads_total counter",
            f"dsfw_decision_logs_failed_uploads_total {self.counts['failed_uploads']}",
            "# HELP dsfw_decision_logs_buffered_bytes Encoded events waiting for upload.",
            "# TYPE dsfw_decision_logs_buffered_bytes gauge",
            f"dsfw_decision_logs_buffered_bytes "
            f"{self._queued_bytes + self._batch_bytes}",
        ]
