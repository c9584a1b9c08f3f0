"""Answers with only what the caller may see: lists, the event stream, inspect fields.

A filter wraps the relay's response sink (:class:`~dsfw.edge.upstream.ResponseSink`):

- list answers (``GET /containers/json`` ...) and inspect answers are
  collected (bounded), each item is shown to the policy as ``input.Item`` in
  one evaluation, and the answer is re-serialized with the visible items only,
  fields named by ``remove`` taken out, in dockerd's framing (a new
  ``Content-Length`` when dockerd sent one, chunked otherwise);
- the event stream stays a stream: each line is decided when it is complete
  and passed on or dropped, in order.

Anything but a ``200`` JSON answer passes unchanged (errors are dockerd's own).
An evaluation failure before the answer started is a refusal; after it
started (events), the client's connection is cut: never an unfiltered item.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any, Awaitable, Callable

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python.failure import Failure

from dsfw import jsoncodec
from dsfw.edge.upstream import ResponseHead
from dsfw.errors import DsfwError, UpstreamUnavailable
from dsfw.scope.target import OWNER_UID_LABEL, identity, owner_of

DEFAULT_MAX_ANSWER = 64 << 20
MAX_EVENT_BACKLOG = 1 << 20

# List endpoints: template -> kind of their items.
LIST_KINDS = {
    "/containers/json": "container", "/images/json": "image", "/volumes": "volume",
    "/networks": "network", "/networks/": "network", "/services": "service", "/tasks": "task",
    "/secrets": "secret", "/configs": "config", "/plugins": "plugin", "/nodes": "node",
}
# Inspect endpoints, whose answer is one object (``remove`` applies).
INSPECT_TEMPLATES = frozenset({
    "/containers/{id}/json", "/images/{name}/json", "/volumes/{name}", "/networks/{id}",
    "/services/{id}", "/tasks/{id}", "/nodes/{id}", "/secrets/{id}", "/configs/{id}",
    "/plugins/{name}/json", "/exec/{id}/json",
})
EVENTS_TEMPLATE = "/events"
# Event types whose Actor.Attributes do not carry the object's labels.
LABELLESS_EVENTS = frozenset({"volume", "network", "service", "secret", "config", "node",
                               "plugin"})

Visible = Callable[[list[dict[str, Any]]], Awaitable[list[bool]]]


def _strip(name: Any) -> str:
    return name.lstrip("/") if isinstance(name, str) else ""


def list_item(kind: str, raw: Any) -> dict[str, Any]:
    """``input.Item`` for one entry of a list answer: the shape of ``input.Target``."""
    if not isinstance(raw, dict):
        return {"Kind": kind, "ID": "", "Name": "", "Names": [], "Labels": {}, "Owner": None}
    if kind == "container":
        # the hot case (GET /containers/json): dockerd's Go types make Names a
        # list of strings and Labels a map of strings, so no per-value checks
        names = raw.get("Names")
        names = [n[1:] if n[:1] == "/" else n for n in names] if isinstance(names, list) else []
        labels = raw.get("Labels")
        labels = labels if isinstance(labels, dict) else {}
        return {"Kind": kind, "ID": raw.get("Id") or "", "Name": names[0] if names else "",
                "Names": names, "Labels": labels,
                "Owner": owner_of(labels) if OWNER_UID_LABEL in labels else None,
                "Image": raw.get("Image"), "ImageID": raw.get("ImageID")}
    if kind == "image":
        labels = raw.get("Labels") if isinstance(raw.get("Labels"), dict) else {}
        labels = {k: v for k, v in labels.items() if isinstance(v, str)}
        tags = [t for t in raw.get("RepoTags") or [] if isinstance(t, str)]
        return {"Kind": kind, "ID": raw.get("Id") or "", "Name": tags[0] if tags else "",
                "Names": tags, "Labels": labels, "Owner": owner_of(labels)}
    return identity(kind, raw)


def event_item(event: Any) -> dict[str, Any]:
    """``input.Item`` for one event: its actor in the shape of ``input.Target``, plus ``Action``.

    Container and image events carry the object's labels among their
    attributes (with ``name``, ``image``, ``exitCode``...), so ``Labels`` holds
    all attributes.
    """
    if not isinstance(event, dict):
        return {"Kind": "", "ID": "", "Name": "", "Names": [], "Labels": {}, "Owner": None,
                "Action": ""}
    actor = event.get("Actor") if isinstance(event.get("Actor"), dict) else {}
    attributes = actor.get("Attributes") if isinstance(actor.get("Attributes"), dict) else {}
    attributes = {k: v for k, v in attributes.items() if isinstance(v, str)}
    name = attributes.get("name", "")
    return {"Kind": event.get("Type") or "", "ID": actor.get("ID") or "", "Name": name,
            "Names": [name] if name else [], "Labels": attributes,
            "Owner": owner_of(attributes), "Action": event.get("Action") or ""}


def remove_fields(doc: Any, fields: tuple[str, ...]) -> Any:
    """``doc`` without each dotted field (``Config.Env``); lists on the way apply to every element."""
    for field in fields:
        _remove(doc, field.split("."))
    return doc


def _remove(node: Any, parts: list[str]) -> None:
    if isinstance(node, list):
        for element in node:
            _remove(element, parts)
        return
    if not isinstance(node, dict):
        return
    if len(parts) == 1:
        node.pop(parts[0], None)
        return
    _remove(node.get(parts[0]), parts[1:])


def serialize(value: Any) -> bytes:
    """Compact JSON and a newline, as Go's ``json.Encoder`` writes dockerd's answers."""
    return jsoncodec.dumps_compact(value) + b"\n"


def _is_json(head: ResponseHead) -> bool:
    return (head.get(b"content-type") or b"").split(b";")[0].strip().lower() == b"application/json"


class _Passthrough:
    """What every filter does with answers it leaves alone."""

    def __init__(self, inner):
        self._inner = inner
        self._pass = False

    def hijacked(self, head, connection, leftover) -> None:
        self._inner.hijacked(head, connection, leftover)

    def failed(self, reason: Failure) -> None:
        self._inner.failed(reason)


class AnswerMemo:
    """Filtered answers remembered by ``(request key, SHA-256 of dockerd's answer)``, LRU.

    A dashboard polling an unchanged list gets dockerd's same bytes again;
    only a deterministic policy (PolicyDecision.deterministic) may have its
    filtered answer reused, and the request key covers the policy revision
    and the whole input (caller included).  Bounded by bytes; answers above
    ``max_entry`` bytes are not kept.
    """

    def __init__(self, max_bytes: int = 8 << 20, max_entry: int = 1 << 20):
        self._max = max_bytes
        self._max_entry = max_entry
        self._entries: OrderedDict[tuple[bytes, bytes], bytes] = OrderedDict()
        self.bytes = 0

    def get(self, key: tuple[bytes, bytes]) -> bytes | None:
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    def put(self, key: tuple[bytes, bytes], answer: bytes) -> None:
        if len(answer) > self._max_entry or key in self._entries:
            return
        self._entries[key] = answer
        self.bytes += len(answer) + 128
        while self.bytes > self._max:
            _, old = self._entries.popitem(last=False)
            self.bytes -= len(old) + 128


class JsonAnswerFilter(_Passthrough):
    """Collects one JSON answer, transforms it (asynchronously), then sends it whole."""

    def __init__(self, inner, transform: Callable[[Any], Awaitable[Any]],
                 max_bytes: int = DEFAULT_MAX_ANSWER,
                 memo: tuple[AnswerMemo, bytes] | None = None):
        super().__init__(inner)
        self._transform = transform
        self._memo = memo
        self._max = max_bytes
        self._head: ResponseHead | None = None
        self._parts: list[bytes] = []
        self._size = 0
        self._failed = False

    def head_received(self, head: ResponseHead) -> None:
        if head.status != 200 or not _is_json(head):
            self._pass = True
            self._inner.head_received(head)
            return
        self._head = head

    def body_received(self, data: bytes) -> None:
        if self._pass:
            self._inner.body_received(data)
            return
        if self._failed:
            return
        self._size += len(data)
        if self._size > self._max:
            self._failed = True
            self._parts.clear()
            self._inner.failed(Failure(UpstreamUnavailable(
                f"dockerd's answer exceeds the {self._max} bytes dsfw filters")))
            return
        self._parts.append(data)

    def body_finished(self) -> None:
        if self._pass:
            self._inner.body_finished()
            return
        if self._failed:
            return
        body, self._parts = b"".join(self._parts), []
        key = None
        if self._memo is not None:
            memo, request_key = self._memo
            key = (request_key, hashlib.sha256(body).digest())
            remembered = memo.get(key)
            if remembered is not None:
                self._send(remembered)
                return
        d = ensureDeferred(self._filtered(body))
        if key is not None:
            d.addCallback(self._remember, key)
        d.addCallbacks(self._send, self._inner.failed)

    def _remember(self, answer: bytes, key: tuple[bytes, bytes]) -> bytes:
        self._memo[0].put(key, answer)
        return answer

    async def _filtered(self, body: bytes) -> bytes:
        try:
            value = jsoncodec.loads(body)
        except ValueError:
            raise UpstreamUnavailable("dockerd's answer is not the JSON it announced") from None
        return serialize(await self._transform(value))

    def _send(self, body: bytes) -> None:
        head = self._head
        if head.get(b"content-length") is not None:
            head = ResponseHead(head.status, head.reason, tuple(
                (k, str(len(body)).encode() if k.lower() == b"content-length" else v)
                for k, v in head.headers))
        self._inner.head_received(head)
        self._inner.body_received(body)
        self._inner.body_finished()


class EventStreamFilter(_Passthrough):
    """Decides each event line as it completes; visible lines go on, in order."""

    def __init__(self, inner, decide: Callable[[Any], Awaitable[bool]], connection=None,
                 max_backlog: int = MAX_EVENT_BACKLOG):
        super().__init__(inner)
        self._decide = decide
        self._buf = b""
        self._queue: list[bytes] = []
        self._queued = 0
        self._busy = False
        self._finished = False
        self._dead = False
        self._max = max_backlog
        self.connection = connection

    def head_received(self, head: ResponseHead) -> None:
        self._pass = head.status != 200
        self._inner.head_received(head)

    def body_received(self, data: bytes) -> None:
        if self._pass:
            self._inner.body_received(data)
            return
        if self._dead:
            return
        self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            if line.strip():
                self._queue.append(line)
                self._queued += len(line)
        if self._queued + len(self._buf) > self._max:
            self._die(UpstreamUnavailable("events arrive faster than dsfw can decide them"))
            return
        self._run()

    def body_finished(self) -> None:
        if self._pass:
            self._inner.body_finished()
            return
        self._finished = True
        self._run()

    def _run(self) -> None:
        while self._queue and not self._busy and not self._dead:
            line = self._queue.pop(0)
            self._queued -= len(line)
            self._busy = True
            d = ensureDeferred(self._one(line))
            d.addErrback(lambda f: self._die(f.value))
            # a synchronous engine answers at once; an asynchronous one resumes the loop
            if not d.called:
                d.addBoth(lambda _: self._resume())
                return
            self._busy = False
        if self._finished and not self._queue and not self._busy and not self._dead:
            self._inner.body_finished()

    def _resume(self) -> None:
        self._busy = False
        self._run()

    async def _one(self, line: bytes) -> None:
        try:
            event = jsoncodec.loads(line)
        except ValueError:
            raise UpstreamUnavailable("dockerd sent an event dsfw cannot read") from None
        if await self._decide(event) and not self._dead:
            self._inner.body_received(line + b"\n")

    def _die(self, error: BaseException) -> None:
        if self._dead:
            return
        self._dead = True
        self._queue.clear()
        if self.connection is not None and self.connection.transport is not None:
            self.connection.transport.abortConnection()
        self._inner.failed(Failure(error if isinstance(error, DsfwError) else UpstreamUnavailable(
            f"filtering the event stream failed: {error!r}")))
