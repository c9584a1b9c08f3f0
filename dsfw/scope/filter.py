"""Answers with only what the caller may see: lists, the event stream, inspect fields.

A filter wraps the relay's response sink (:class:`~dsfw.edge.upstream.ResponseSink`):

- list answers (``GET /containers/json`` ...) and inspect answers are
  collected (bounded); a list is split into its items' bytes (:class:`ListAnswer`),
  the items are shown to the policy as ``input.Item`` in one evaluation, and
  the answer is written again with the visible items only, each as dockerd
  wrote it unless ``remove`` names fields to take out, in dockerd's framing
  (a new ``Content-Length`` when dockerd sent one, chunked otherwise);
- the event stream stays a stream: each line is decided when it is complete
  and passed on or dropped, in order.

Anything but a ``200`` JSON answer passes unchanged (errors are dockerd's own).
An evaluation failure before the answer started is a refusal; after it
started (events), the client's connection is cut: never an unfiltered item.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict, deque
from typing import Any, Awaitable, Callable

import msgspec
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


def _container_item(ident: Any, names: Any, labels: Any, image: Any, image_id: Any) -> dict[str, Any]:
    # the hot case (GET /containers/json): dockerd's Go types make Names a
    # list of strings and Labels a map of strings, so no per-value checks
    names = [n[1:] if n[:1] == "/" else n for n in names] if isinstance(names, list) else []
    labels = labels if isinstance(labels, dict) else {}
    return {"Kind": "container", "ID": ident or "", "Name": names[0] if names else "",
            "Names": names, "Labels": labels,
            "Owner": owner_of(labels) if OWNER_UID_LABEL in labels else None,
            "Image": image, "ImageID": image_id}


def list_item(kind: str, raw: Any) -> dict[str, Any]:
    """``input.Item`` for one entry of a list answer: the shape of ``input.Target``."""
    if not isinstance(raw, dict):
        return {"Kind": kind, "ID": "", "Name": "", "Names": [], "Labels": {}, "Owner": None}
    if kind == "container":
        return _container_item(raw.get("Id"), raw.get("Names"), raw.get("Labels"),
                               raw.get("Image"), raw.get("ImageID"))
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


def _remove(node: Any, parts: list[str]) -> bool:
    """Whether something was removed."""
    if isinstance(node, list):
        removed = False
        for element in node:
            removed = _remove(element, parts) or removed
        return removed
    if not isinstance(node, dict):
        return False
    if len(parts) == 1:
        return node.pop(parts[0], _ABSENT) is not _ABSENT
    return _remove(node.get(parts[0]), parts[1:])


_ABSENT = object()


def _item_without(raw: msgspec.Raw, fields: tuple[str, ...], names: tuple[bytes, ...]) -> bytes:
    """A list item without ``fields``: dockerd's bytes when it holds none of them."""
    data = bytes(raw)
    if b"\\" not in data and not any(name in data for name in names):
        return data  # no key spelled as a removed field's first name: nothing to remove
    try:
        value = jsoncodec.loads(data)
    except ValueError:
        raise UpstreamUnavailable("dockerd's answer is not the JSON it announced") from None
    removed = False
    for field in fields:
        removed = _remove(value, field.split(".")) or removed
    return jsoncodec.dumps_compact(value) if removed else data


def serialize(value: Any) -> bytes:
    """Compact JSON and a newline, as Go's ``json.Encoder`` writes dockerd's answers."""
    return jsoncodec.dumps_compact(value) + b"\n"


def without_fields(body: bytes, fields: tuple[str, ...]) -> bytes:
    """dockerd's JSON ``body`` written again without ``fields`` (an inspect answer)."""
    try:
        value = jsoncodec.loads(body)
    except ValueError:
        raise UpstreamUnavailable("dockerd's answer is not the JSON it announced") from None
    return serialize(remove_fields(value, fields))


_RAW_NULL = msgspec.Raw(b"null")
# A list answer, or the object holding one ({"Volumes": [...], "Warnings": ...}).
_LISTING = msgspec.json.Decoder(dict[str, msgspec.Raw] | list[msgspec.Raw] | None)
_ITEMS = msgspec.json.Decoder(list[msgspec.Raw] | None)
_KEY = msgspec.json.Encoder()
# Memo keys longer than this are replaced by their SHA-256, so a bound in
# bytes holds enough entries.
MAX_INLINE_KEY = 1024


class _ContainerFields(msgspec.Struct):
    """What ``input.Item`` of a container list entry is made of, as dockerd wrote it."""

    Id: msgspec.Raw = _RAW_NULL
    Names: msgspec.Raw = _RAW_NULL
    Labels: msgspec.Raw = _RAW_NULL
    Image: msgspec.Raw = _RAW_NULL
    ImageID: msgspec.Raw = _RAW_NULL


_CONTAINER = msgspec.json.Decoder(_ContainerFields)
_CONTAINERS = msgspec.json.Decoder(list[_ContainerFields])


def _container_fields(raw: msgspec.Raw) -> _ContainerFields | None:
    try:
        return _CONTAINER.decode(raw)
    except msgspec.ValidationError:
        return None


class ListAnswer:
    """A list answer split into its items' bytes, to be written back with only some of them.

    Parsing dockerd's whole answer into Python values cost more than relaying
    it; here the answer is checked to be JSON (UTF-8 included) and cut at its
    items without building values, a container entry is read only for the
    fields ``input.Item`` is made of, and a visible item goes to the client
    as the bytes dockerd wrote (Go's encoder writes no key twice, so those
    bytes mean what the policy saw).  :meth:`keys` names each item by the
    bytes its ``input.Item`` is decoded from, so a memo of visibility by key
    is exact.  Raises UpstreamUnavailable when the answer is not JSON or not
    a list.
    """

    def __init__(self, kind: str, body: bytes):
        self.kind = kind
        self._body = body
        self._holder: dict[str, Any] | None = None
        self._fields: list[_ContainerFields | None] = []
        try:
            if not body.isascii():
                body.decode("utf-8")  # the splitter does not check UTF-8 inside strings
            top = _LISTING.decode(body)
            if isinstance(top, dict) and kind == "volume":
                self._holder = top
                top = _ITEMS.decode(top.get("Volumes", _RAW_NULL))
        except msgspec.ValidationError:
            raise UpstreamUnavailable(f"dockerd's {kind} list has a shape dsfw cannot filter") from None
        except ValueError:
            raise UpstreamUnavailable("dockerd's answer is not the JSON it announced") from None
        if isinstance(top, dict):
            raise UpstreamUnavailable(f"dockerd's {kind} list has a shape dsfw cannot filter")
        self.items: list[msgspec.Raw] | None = top  # None: dockerd's ``null``

    def keys(self) -> list[bytes]:
        """One key per item: equal keys mean equal ``input.Item``s."""
        items = self.items or []
        fields: list[_ContainerFields | None] = [None] * len(items)
        if self.kind == "container":
            try:  # every entry an object, as dockerd writes them: one call for all
                fields = _CONTAINERS.decode(self._body)
            except msgspec.ValidationError:  # not: each read alone, others keyed whole
                fields = [_container_fields(raw) for raw in items]
        self._fields = fields
        join = b"\0".join
        # a JSON value holds no NUL byte and never starts with "#": the three
        # spellings of a key cannot meet
        keys = [bytes(raw) if f is None else join((f.Id, f.Names, f.Labels, f.Image, f.ImageID))
                for raw, f in zip(items, fields)]
        if max(map(len, keys), default=0) > MAX_INLINE_KEY:
            keys = [k if len(k) <= MAX_INLINE_KEY else b"#" + hashlib.sha256(k).digest()
                    for k in keys]
        return keys

    def item(self, i: int) -> dict[str, Any]:
        """``input.Item`` of item ``i``, decoded from the bytes its key names (after :meth:`keys`)."""
        fields = self._fields[i]
        try:
            if fields is None:
                return list_item(self.kind, msgspec.json.decode(self.items[i]))
            decode = msgspec.json.decode
            return _container_item(decode(fields.Id), decode(fields.Names), decode(fields.Labels),
                                   decode(fields.Image), decode(fields.ImageID))
        except msgspec.DecodeError:
            raise UpstreamUnavailable("dockerd's answer is not the JSON it announced") from None

    def write(self, shown: list[bool] | None, remove: tuple[str, ...] = ()) -> bytes:
        """The answer with the items whose flag is true (all when ``shown`` is None)."""
        if self.items is None:
            return self._body
        kept = self.items if shown is None else [r for r, s in zip(self.items, shown) if s]
        if remove:
            names = tuple(jsoncodec.dumps_compact(f.split(".", 1)[0]) for f in remove)
            kept = [_item_without(r, remove, names) for r in kept]
        listed = b"[" + b",".join(kept) + b"]"
        if self._holder is not None:
            self._holder["Volumes"] = listed
            listed = b"{" + b",".join(_KEY.encode(k) + b":" + bytes(v)
                                      for k, v in self._holder.items()) + b"}"
        return listed + b"\n"


class _EventFields(msgspec.Struct):
    """What ``input.Item`` of an event is made of, as dockerd wrote it."""

    Type: msgspec.Raw = _RAW_NULL
    Action: msgspec.Raw = _RAW_NULL
    Actor: msgspec.Raw = _RAW_NULL


_EVENT = msgspec.json.Decoder(_EventFields)


class EventLine:
    """One line of the event stream, checked to be JSON and named by what its ``input.Item`` is made of.

    ``key`` is equal for two lines exactly when their items are (the time
    fields differ from line to line; the item does not hold them).  Raises
    UpstreamUnavailable when the line is not JSON.
    """

    def __init__(self, line: bytes):
        try:
            if not line.isascii():
                line.decode("utf-8")  # msgspec does not check UTF-8 inside skipped strings
            self._fields: _EventFields | None = _EVENT.decode(line)
            self._value: Any = None
        except msgspec.ValidationError:  # not an object: read whole (and checked whole)
            self._fields = None
        except ValueError:
            raise UpstreamUnavailable("dockerd sent an event dsfw cannot read") from None
        if self._fields is None:
            try:
                self._value = jsoncodec.loads(line)
            except ValueError:
                raise UpstreamUnavailable("dockerd sent an event dsfw cannot read") from None
            key = line
        else:
            f = self._fields
            key = b"\0".join((f.Type, f.Action, f.Actor))
        self.key = key if len(key) <= MAX_INLINE_KEY else b"#" + hashlib.sha256(key).digest()

    def item(self) -> dict[str, Any]:
        """``input.Item`` of the event (:func:`event_item`), decoded from the bytes ``key`` names."""
        f = self._fields
        if f is None:
            return event_item(self._value)
        decode = msgspec.json.decode
        try:
            return event_item({"Type": decode(f.Type), "Action": decode(f.Action),
                               "Actor": decode(f.Actor)})
        except msgspec.DecodeError:
            raise UpstreamUnavailable("dockerd sent an event dsfw cannot read") from None


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
    """The last filtered answer per request key, with dockerd's answer it was made from; LRU.

    A dashboard polling an unchanged list gets dockerd's same bytes again:
    comparing them with the last answer costs a memory compare (a digest of
    an 83 kB answer cost as much as a tenth of relaying it).  Only a
    deterministic policy (PolicyDecision.deterministic) may have its filtered
    answer reused, and the request key covers the policy revision and the
    whole input (caller included).  Bounded by bytes (dockerd's answer and
    the filtered one both count); answers above ``max_entry`` bytes are not
    kept.
    """

    def __init__(self, max_bytes: int = 8 << 20, max_entry: int = 1 << 20):
        self._max = max_bytes
        self._max_entry = max_entry
        self._entries: OrderedDict[bytes, tuple[bytes, bytes]] = OrderedDict()
        self.bytes = 0

    @staticmethod
    def _cost(entry: tuple[bytes, bytes]) -> int:
        return len(entry[0]) + len(entry[1]) + 128

    def get(self, request_key: bytes, body: bytes) -> bytes | None:
        """The filtered answer made from exactly ``body`` for this request key, or None."""
        entry = self._entries.get(request_key)
        if entry is None or entry[0] != body:
            return None
        self._entries.move_to_end(request_key)
        return entry[1]

    def put(self, request_key: bytes, body: bytes, answer: bytes) -> None:
        old = self._entries.pop(request_key, None)
        if old is not None:
            self.bytes -= self._cost(old)
        if len(body) + len(answer) > self._max_entry:
            return
        entry = (body, answer)
        self._entries[request_key] = entry
        self.bytes += self._cost(entry)
        while self.bytes > self._max:
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= self._cost(evicted)


class ItemMemo:
    """Visibility of list items by request key and item key (:meth:`ListAnswer.keys`), LRU.

    For deterministic policies only: a changed list (a container's Status
    moved on) has the policy decide just the items it has not seen, and an
    event stream the events whose item it has not seen.  Items
    are grouped by request key, so one answer is looked up in one dict;
    the least recently used request's group goes first, and a group that
    alone outgrows the bound starts again empty.  Bounded by bytes.
    """

    ENTRY = 96  # the dict slot and the key object, on the safe side

    def __init__(self, max_bytes: int = 2 << 20):
        self._max = max_bytes
        self._groups: OrderedDict[bytes, tuple[dict[bytes, bool], list[int]]] = OrderedDict()
        self.bytes = 0

    def lookup(self, request_key: bytes, keys: list[bytes]) -> list[bool | None]:
        group = self._groups.get(request_key)
        if group is None:
            return [None] * len(keys)
        self._groups.move_to_end(request_key)
        return list(map(group[0].get, keys))

    def get(self, request_key: bytes, key: bytes) -> bool | None:
        group = self._groups.get(request_key)
        if group is None:
            return None
        self._groups.move_to_end(request_key)
        return group[0].get(key)

    def remember(self, request_key: bytes, decided: list[tuple[bytes, bool]]) -> None:
        group = self._groups.get(request_key)
        if group is None:
            group = self._groups[request_key] = ({}, [len(request_key) + self.ENTRY])
            self.bytes += group[1][0]
        entries, size = group
        for key, shown in decided:
            if key not in entries:
                entries[key] = shown
                size[0] += len(key) + self.ENTRY
                self.bytes += len(key) + self.ENTRY
        if size[0] > self._max:  # one caller's lists alone outgrew the bound
            self.bytes -= size[0]
            del self._groups[request_key]
        while self.bytes > self._max:
            _, (_, evicted) = self._groups.popitem(last=False)
            self.bytes -= evicted[0]


class JsonAnswerFilter(_Passthrough):
    """Collects one JSON answer, transforms its bytes (asynchronously), then sends it whole."""

    def __init__(self, inner, transform: Callable[[bytes], Awaitable[bytes]],
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
        if self._memo is not None:
            remembered = self._memo[0].get(self._memo[1], body)
            if remembered is not None:
                self._send(remembered)
                return
        d = ensureDeferred(self._transform(body))
        if self._memo is not None:
            d.addCallback(self._remember, body)
        d.addCallbacks(self._send, self._inner.failed)

    def _remember(self, answer: bytes, body: bytes) -> bytes:
        self._memo[0].put(self._memo[1], body, answer)
        return answer

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
    """Decides each event line as it completes; visible lines go on, in order.

    ``decide(line)`` answers True/False at once when it can (a remembered
    item, a synchronous engine) or with a Deferred; the next line waits for
    it, so the order holds.
    """

    def __init__(self, inner, decide: Callable[[bytes], "bool | Deferred[bool]"], connection=None,
                 max_backlog: int = MAX_EVENT_BACKLOG):
        super().__init__(inner)
        self._decide = decide
        self._buf = b""
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._busy = False
        self._sync = False
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
            line = self._queue.popleft()
            self._queued -= len(line)
            try:
                shown = self._decide(line)
            except Exception as e:  # an unreadable line or a failed decision
                self._die(e)
                return
            if not isinstance(shown, Deferred):
                self._emit(line, shown)
                continue
            self._busy = self._sync = True
            shown.addCallbacks(self._decided, self._failed, callbackArgs=(line,))
            self._sync = False
            if self._busy:
                return  # decided later: _decided resumes the loop
        if self._finished and not self._queue and not self._busy and not self._dead:
            self._inner.body_finished()

    def _decided(self, shown: bool, line: bytes) -> None:
        self._busy = False
        self._emit(line, shown)
        if not self._sync:
            self._run()

    def _failed(self, failure: Failure) -> None:
        self._busy = False
        self._die(failure.value)

    def _emit(self, line: bytes, shown: bool) -> None:
        if shown is True and not self._dead:
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
