"""What the edge asks of scoping for one request, in one place.

The resource calls, in order: :meth:`Scope.target_of` before the policy
decides (the object the request names, as ``input.Target``, the request naming
it by ID, and for requests that make dockerd mount a container's volumes
the mount facts of :mod:`dsfw.scope.mounts`); :meth:`Scope.check_visible` with the decision, before a
denial is enforced (an object the caller may not see is answered as missing,
never as forbidden, which would say it exists); :meth:`Scope.forwardable`
(a name that named nothing is answered, never forwarded); :meth:`Scope.stamp` (labels
on what the request creates); and :meth:`Scope.answer_filter` (filtered
answers).  A policy without the scoping rules costs a dictionary lookup here.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from twisted.internet.defer import Deferred, ensureDeferred

from dsfw.scope.mounts import MOUNT_FACTS, MOUNTING, mount_facts, with_request_facts
from dsfw import jsoncodec
from dsfw.errors import DsfwError, Forbidden, PolicyEngineError, UpstreamUnavailable
from dsfw.input.body import serialize_json_body
from dsfw.policy import AUTHZ, PolicyDecision, PolicyEngine
from dsfw.scope import filter as answers
from dsfw.scope.labels import creates_labelled, stamp
from dsfw.scope.missing import HiddenObject, missing_answer, related_missing, save_missing
from dsfw.scope.named import (BODY_NAMED, PUSH, SAVE, SAVE_ALL, NamedObject, destinations,
                              familiar_repository, forwarded_by_id, named_object, push_reference)
from dsfw.scope.target import Absent, TargetLookupFailed, TargetResolver, with_object_id

# Visibility of list items by (request input, item key), deterministic policies only.
ITEM_MEMO_BYTES = 2 << 20
DF_TEMPLATE = "/system/df"
_DF_SECTIONS = {"Images": "image", "Containers": "container", "Volumes": "volume"}


class ObjectMoved(DsfwError):
    """A name moved to another object between the decision and the relay."""

    status = 409


_CREATES_MOUNTS = frozenset({("POST", "/containers/create")})

# The input fields scoping adds; a policy that can read none of them needs no lookup.
SCOPE_FIELDS = frozenset({"Target", "Container", "Images", "Destinations", "Volumes",
                          *MOUNT_FACTS})
# Refused whatever the policy reads: they act on more than one object (named.py).
_ALWAYS_RESOLVED = frozenset({PUSH, SAVE, SAVE_ALL})


def named_volumes(req) -> list[str]:
    """The named volumes a container create mounts (``-v name:/dst``, ``--mount source=name``)."""
    if (req.method, req.route.template) not in _CREATES_MOUNTS or not isinstance(req.body, dict):
        return []
    return volume_names(req.body.get("HostConfig"))


def volume_names(host_config: Any) -> list[str]:
    """The named volumes a ``HostConfig`` (a create's, or a container's as stored) mounts."""
    if not isinstance(host_config, dict):
        return []
    names: list[str] = []
    for spec in host_config.get("Binds") or ():
        # volume/mounts/linux_parser.go: a source that is not an absolute path is a volume name
        source = spec.split(":", 1)[0] if isinstance(spec, str) and ":" in spec else ""
        if source and not source.startswith("/") and source not in names:
            names.append(source)
    for mount in host_config.get("Mounts") or ():
        if isinstance(mount, dict) and str(mount.get("Type", "")).lower() == "volume":
            source = mount.get("Source")
            if isinstance(source, str) and source and source not in names:
                names.append(source)
    return names


@dataclass(frozen=True)
class ScopedRequest:
    """A request with the object it names: ``forward`` names it by ID for dockerd."""

    forward: Any
    named: NamedObject | None = None
    target: dict[str, Any] | None = None
    facts: dict[str, Any] = field(default_factory=dict)  # mount facts judged again
    # dsfw's answer instead of the relay, once the policy has decided: dockerd's words for an
    # object that did not exist, or a refusal of what no input can show as one object
    missing: DsfwError | None = None
    # (kind, name, ID) forwarded by name: looked up again just before the relay
    recheck: tuple[tuple[str, str, str], ...] = ()
    related: dict[str, Any] = field(default_factory=dict)  # more input fields (Container, Images)
    # objects besides Target, in dockerd's order, each with its answer when hidden
    guarded: tuple[tuple[dict[str, Any], HiddenObject], ...] = ()
    # set when nothing was looked up because the policy set of this revision cannot
    # read what scoping adds: the decision must come from that same set
    unresolved_under: str | None = None

    @property
    def fields(self) -> dict[str, Any] | None:
        """The input fields scoping adds (``Target``, mount facts, ``Volumes``), or None."""
        if self.named is None:
            return {**self.related, **self.facts} or None
        return {"Target": self.target, **self.related, **self.facts}


class Scope:
    """Resolves the objects requests name, for the policy and for the relay."""

    def __init__(self, resolver: TargetResolver, engine: PolicyEngine, full_inputs: bool = False):
        self.resolver = resolver
        self._engine = engine
        # inputs are kept for later (recorded, shipped to a decision log) and then shown
        # whole to other policies: look up what the request names whatever this one reads
        self._full_inputs = full_inputs
        self._memo = answers.AnswerMemo()
        self._items = answers.ItemMemo(ITEM_MEMO_BYTES)

    async def target_of(self, req, volumes: list[str] | None = None) -> ScopedRequest:
        """The request with its named object resolved; raises when the lookup fails.

        ``volumes`` are its body's named volumes when the body was parsed elsewhere
        (a body worker: ``req`` is then its head); None reads them from ``req``.

        Nothing is looked up when the policy in force cannot read any field scoping
        adds (:data:`SCOPE_FIELDS`): the request goes on as it was written, which is
        all such a policy judged.
        """
        if volumes is None and not self._full_inputs and \
                (req.method, req.route.template) not in _ALWAYS_RESOLVED:
            if self._reads_no_scope():
                return ScopedRequest(req, unresolved_under=self._engine.revision())
        scoped = await self._target_of(req, volumes)
        names = destinations(req.method, req.route.template, req.target)
        if names:
            # what each name the request gives its image names now (input.Destinations)
            held = {ref: await self.resolver.resolve("image", ref) for ref in names}
            scoped = replace(scoped, related={**scoped.related, "Destinations": held})
        return scoped

    def _reads_no_scope(self) -> bool:
        fields = self._engine.input_fields()
        return fields is not None and not fields & SCOPE_FIELDS

    async def _target_of(self, req, volumes: list[str] | None) -> ScopedRequest:
        named = named_object(req.method, req.route, req.target)
        if named is None and (req.method, req.route.template) == SAVE_ALL:
            return await self._saved(req)
        if named is None:
            volumes = named_volumes(req) if volumes is None else volumes
            if not volumes:
                return ScopedRequest(req)
            # a create mounting named volumes: whose they are (input.Volumes)
            found = {name: await self.resolver.resolve("volume", name) for name in volumes}
            return ScopedRequest(req, facts={"Volumes": found})
        if (req.method, named.route.template) == PUSH:
            ref = push_reference(named.ref, req.target.param("tag"))
            if ref is None:  # decided without a Target, then refused
                return ScopedRequest(req, missing=Forbidden(
                    "a push of every tag of a repository acts on several images, which no "
                    "policy input can show as one object; push one tag"))
            named = replace(named, ref=ref)
        found = await self.resolver.find(named.kind, named.ref)
        req, related, guarded = await self._body_named(req, named, volumes is not None)
        if None in related.values() or isinstance(found, Absent):
            # dockerd looks the body's container up first (network connect/disconnect)
            missing = guarded[0][1] if None in related.values() else missing_answer(named, req, found)
            target = None if isinstance(found, Absent) else found
            return ScopedRequest(req, named, target, related=related, missing=missing)
        target = found
        forward, by_name = req, not forwarded_by_id(named, target)
        if by_name and (req.method, named.route.template) == SAVE and \
                push_reference(named.ref, None) is None:
            return ScopedRequest(req, named, target, missing=Forbidden(
                "saving a repository saves every tag of it, which no policy input can show as "
                "one object; name a tag or the image ID"))
        if not by_name:
            if not target.get("ID"):
                raise TargetLookupFailed(f"dockerd gave no ID for {named.kind} {named.ref!r}; "
                                         "request denied")
            forward = with_object_id(req, named, target["ID"])
        facts: dict[str, Any] = {}
        if target is not None and (req.method, req.route.template) in MOUNTING:
            # dockerd resolves host paths now, not at create: judge them again
            facts = with_request_facts(req, await mount_facts(self.resolver, target))
            # whose the named volumes are, now: one made by another caller in the gap
            # between a create's lookup (null: "dockerd will make it") and dockerd's
            # own is refused here, before anything runs with it
            container = target.get("Container") if target.get("Kind") == "exec" else target
            names = volume_names(container.get("HostConfig") if isinstance(container, dict) else None)
            if names:
                facts["Volumes"] = {n: await self.resolver.resolve("volume", n) for n in names}
        recheck = ((named.kind, named.ref, target["ID"]),) if by_name else ()
        return ScopedRequest(forward, named, target, facts, recheck=recheck, related=related,
                             guarded=guarded)

    async def _body_named(self, req, named: NamedObject, parsed_elsewhere: bool):
        """``(request, {"Container": identity or None}, guarded)`` for an object the body names.

        ``docker network connect/disconnect`` name a container in the body:
        the policy sees it as ``input.Container``, dockerd gets it by ID, and
        one that does not exist is answered, never forwarded.
        """
        spec = BODY_NAMED.get((req.method, named.route.template))
        if spec is not None and parsed_elsewhere:
            raise Forbidden(f"a {named.route.template} body this large is not read here, so the "
                            f"container it names cannot be judged; send a smaller body")
        ref = req.body.get(spec[1]) if spec is not None and isinstance(req.body, dict) else None
        if not isinstance(ref, str) or not ref:
            return req, {}, ()  # dockerd refuses it ("invalid name or ID supplied")
        kind, key = spec
        found = await self.resolver.find(kind, ref)
        answer = related_missing(req, ref)
        if isinstance(found, Absent):
            return req, {key: None}, ((None, answer),)
        if not found.get("ID"):
            raise TargetLookupFailed(f"dockerd gave no ID for {kind} {ref!r}; request denied")
        body = {**req.body, key: found["ID"]}
        return (replace(req, body=body, json_body=serialize_json_body(body)), {key: found},
                ((found, answer),))

    async def _saved(self, req) -> ScopedRequest:
        """``docker save``: every image it writes as ``input.Images``, forwarded by name.

        dockerd saves every tag of a repository named without a tag
        (tarexport's parseNames): dsfw lists them and forwards them one by
        one, so the policy sees each image written and dockerd writes no
        other; a name that is an ID prefix goes by the full ID.
        """
        names, images, guarded, recheck = [], {}, [], []
        for name in [v for k, v in req.target.query if k == "names"]:
            refs = [name]
            repository_only = push_reference(name, None) is None and not name.startswith("sha256:")
            if repository_only:
                refs = await self.resolver.repository(familiar_repository(name)) or [name]
            for ref in refs:
                found = await self.resolver.find("image", ref)
                answer = save_missing(name, found if isinstance(found, Absent) else None)
                if isinstance(found, Absent):
                    return ScopedRequest(req, related={"Images": {**images, ref: None}},
                                         missing=answer)
                by_id = ref == name and repository_only or name.startswith("sha256:")
                names.append(found["ID"] if by_id else ref)
                images[ref] = found
                guarded.append((found, answer))
                if not by_id:
                    recheck.append(("image", ref, found["ID"]))
        query = [(k, v) for k, v in req.target.query if k != "names"] + [("names", n) for n in names]
        forward = replace(req, target=replace(req.target, query=tuple(query)))
        return ScopedRequest(forward, related={"Images": images}, guarded=tuple(guarded),
                             recheck=tuple(recheck))

    async def forwardable(self, scoped: ScopedRequest) -> Any:
        """The request for dockerd; raises dockerd's missing-object answer for a null target.

        A name that named nothing at lookup is never forwarded: an object
        made since then (by anyone, on any socket) would be acted on although
        the policy judged "no such object".  A request that must name its
        object by name (``docker rmi name``, push, save) is looked up again,
        uncached, just before it leaves: if the name now names another
        object, it is refused.
        """
        if scoped.missing is not None:
            raise scoped.missing
        for kind, ref, ident in scoped.recheck:
            now = await self.resolver.find(kind, ref, fresh=True)
            if isinstance(now, Absent) or now.get("ID") != ident:
                raise ObjectMoved(f"{kind} {ref} names another object than the one the policy "
                                  "judged (it changed meanwhile); request refused, try again")
        return scoped.forward

    def hidden(self, scoped: ScopedRequest) -> HiddenObject:
        """The answer for a request whose named object the policy hides: dockerd's for a missing one."""
        return missing_answer(scoped.named, scoped.forward)

    async def check_visible(self, decision: PolicyDecision, doc: dict[str, Any],
                            scoped: ScopedRequest) -> None:
        """Raise :class:`HiddenObject` when the policy hides the named object.

        A request decided without its objects looked up must have been decided by
        the policy set that cannot read them: a reload in between is refused.
        """
        if scoped.unresolved_under is not None and (
                decision.revision != scoped.unresolved_under or not self._reads_no_scope()):
            raise PolicyEngineError("the policy changed while this request was decided; "
                                    "request denied, try again")
        if not decision.filters:
            return
        guarded = [(item, answer) for item, answer in scoped.guarded if item is not None]
        items = [item for item, _ in guarded] + ([scoped.target] if scoped.target else [])
        if not items:
            return
        shown = await self._engine.visible(AUTHZ, doc, items)
        for (_, answer), seen in zip(guarded, shown):  # dockerd's order: these first
            if not seen:
                raise answer
        if scoped.target is not None and not shown[-1]:
            raise self.hidden(scoped)

    def stamp(self, decision: PolicyDecision, forward):
        """``forward`` with the policy's labels on what it creates."""
        if not decision.labels or not creates_labelled(forward.method, forward.route.template):
            return forward
        return stamp(forward, decision.labels)

    def answer_filter(self, decision: PolicyDecision, doc: dict[str, Any],
                      forward) -> Callable[[Any, Any], Any] | None:
        """A wrapper for the relay's response sink, or None when the answer passes as it is."""
        if forward.method != "GET" or not (decision.filters or decision.remove):
            return None
        template = forward.route.template
        remove = decision.remove
        kind = answers.LIST_KINDS.get(template)
        if kind is not None:
            request_key = _request_key(decision, template, doc)
            memo = (self._memo, request_key) if request_key is not None else None
            return lambda sink, conn: answers.JsonAnswerFilter(
                sink, lambda body: self._filter_list(kind, body, doc, decision, request_key),
                memo=memo)
        if template == DF_TEMPLATE:
            return lambda sink, conn: answers.JsonAnswerFilter(
                sink, lambda body: self._filter_df(body, doc, decision))
        if template in answers.INSPECT_TEMPLATES and remove:
            return lambda sink, conn: answers.JsonAnswerFilter(
                sink, lambda body: _done(answers.without_fields(body, remove)))
        if template == answers.EVENTS_TEMPLATE and decision.filters:
            decide = self._event_decider(doc, _request_key(decision, template, doc))
            return lambda sink, conn: answers.EventStreamFilter(sink, decide, conn)
        return None

    async def _filter_list(self, kind: str, body: bytes, doc: dict[str, Any],
                           decision: PolicyDecision, request_key: bytes | None) -> bytes:
        listing = answers.ListAnswer(kind, body)
        shown = None
        if decision.filters and listing.items:
            shown = await self._list_visible(listing, doc, request_key)
        return listing.write(shown, decision.remove)

    async def _list_visible(self, listing: answers.ListAnswer, doc: dict[str, Any],
                            request_key: bytes | None) -> list[bool]:
        """Each item's visibility: remembered by item key for a deterministic policy
        (``request_key`` set), the others decided in one evaluation."""
        keys = listing.keys()
        if request_key is None:
            shown: list[bool | None] = [None] * len(keys)
        else:
            shown = self._items.lookup(request_key, keys)
        todo = [i for i, flag in enumerate(shown) if flag is None]
        if todo:
            flags = await self._engine.visible(AUTHZ, doc, [listing.item(i) for i in todo])
            if len(flags) != len(todo):
                raise PolicyEngineError("the engine decided a different number of items than asked")
            for i, flag in zip(todo, flags):
                shown[i] = flag is True
            if request_key is not None:
                self._items.remember(request_key, [(keys[i], shown[i]) for i in todo])
        return shown

    async def _filter_df(self, body: bytes, doc: dict[str, Any], decision: PolicyDecision) -> bytes:
        """``docker system df``: each section filtered as its list is (build cache records
        as items of kind ``buildcache``, without labels); ``LayersSize`` stays dockerd's total."""
        try:
            value = json.loads(body)
        except ValueError:
            raise UpstreamUnavailable("dockerd's answer is not the JSON it announced") from None
        if not isinstance(value, dict):
            raise UpstreamUnavailable("dockerd's system df answer has a shape dsfw cannot filter")
        for key, kind in _DF_SECTIONS.items():
            if value.get(key) is not None:
                section = json.dumps(value[key]).encode()
                value[key] = json.loads(await self._filter_list(kind, section, doc, decision, None))
        cache = value.get("BuildCache")
        if cache is not None and decision.filters:
            if not isinstance(cache, list):
                raise UpstreamUnavailable("dockerd's build cache list has a shape dsfw cannot filter")
            items = [{"Kind": "buildcache", "ID": r.get("ID") or "" if isinstance(r, dict) else "",
                      "Name": "", "Names": [], "Labels": {}, "Owner": None} for r in cache]
            flags = await self._engine.visible(AUTHZ, doc, items) if items else []
            value["BuildCache"] = [r for r, shown in zip(cache, flags) if shown is True]
        return json.dumps(value, separators=(",", ":")).encode() + b"\n"

    def _event_decider(self, doc: dict[str, Any], request_key: bytes | None):
        """``decide(line)`` for one event stream: a bool when the item is remembered, else a Deferred."""
        def decide(line: bytes) -> "bool | Deferred[bool]":
            event = answers.EventLine(line)
            if request_key is not None:
                shown = self._items.get(request_key, event.key)
                if shown is not None:
                    return shown
            item = event.item()
            if item["Kind"] in answers.LABELLESS_EVENTS and item["ID"]:
                # decided on the object's labels as dockerd has them now: never remembered
                return ensureDeferred(self._labelless_visible(item, doc))
            d = self._engine.visible(AUTHZ, doc, [item])
            return d.addCallback(self._event_decided, request_key, event.key)
        return decide

    def _event_decided(self, flags: list[bool], request_key: bytes | None, key: bytes) -> bool:
        (shown,) = flags
        shown = shown is True
        if request_key is not None:
            self._items.remember(request_key, [(key, shown)])
        return shown

    async def _labelless_visible(self, item: dict[str, Any], doc: dict[str, Any]) -> bool:
        try:
            target = await self.resolver.resolve(item["Kind"], item["ID"])
        except TargetLookupFailed:
            target = None
        if target is not None:
            item = {**target, "Action": item["Action"]}
        (shown,) = await self._engine.visible(AUTHZ, doc, [item])
        return shown is True


def _request_key(decision: PolicyDecision, template: str, doc: dict[str, Any]) -> bytes | None:
    """What remembered answers and items are keyed by: policy revision, route and the whole
    input; None when the policy may answer the same input differently."""
    if not decision.deterministic:
        return None
    return hashlib.sha256(decision.revision.encode() + b"\0" + template.encode() + b"\0"
                          + jsoncodec.dumps_sorted(doc)).digest()


async def _done(value: Any) -> Any:
    return value
