"""``input.Target``: the identity of the object a request names, from dockerd.

:func:`identity` turns dockerd's inspect answer into the small document the
policy sees -- the same shape for every kind (``Kind``, ``ID``, ``Name``,
``Names``, ``Labels``, ``Owner``), plus a container's image, stored
``HostConfig`` and ``Mounts`` (so its host paths can be judged again when it
is started, :mod:`dsfw.scope.mounts`) and an exec instance's container.  :class:`TargetResolver` asks
dockerd through the edge's pool, remembers answers in a
:class:`~dsfw.scope.cache.TargetCache` while the event watcher is connected
(and only then), and fails closed: anything but an answer or dockerd's own
"no such object" is an error that denies the request.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import structlog

from dsfw.errors import DsfwError
from dsfw.input.values import stored_host_config
from dsfw.scope.cache import MISS, TargetCache
from dsfw.scope.dockerapi import api_path, get_json
from dsfw.scope.named import familiar_repository

log = structlog.get_logger("dsfw.scope")

# Labels dsfw's ownership policies stamp (policies/library/ownership.rego).
OWNER_UID_LABEL = "dsfw.owner.uid"
OWNER_USER_LABEL = "dsfw.owner.user"

_INSPECT = {
    "container": "/containers/{ref}/json",
    "exec": "/exec/{ref}/json",
    "image": "/images/{ref}/json",
    "volume": "/volumes/{ref}",
    "network": "/networks/{ref}",
    "service": "/services/{ref}",
    "task": "/tasks/{ref}",
    "node": "/nodes/{ref}",
    "secret": "/secrets/{ref}",
    "config": "/configs/{ref}",
    "plugin": "/plugins/{ref}/json",
}
_SWARM_KINDS = frozenset({"service", "task", "node", "secret", "config"})


@dataclass(frozen=True)
class Absent:
    """dockerd's own answer when dsfw looked up an object that does not exist.

    dsfw answers a request naming it from this (:mod:`dsfw.scope.scoping`)
    rather than forwarding the name, which an object made later could take.
    """

    status: int
    message: str


class TargetLookupFailed(DsfwError):
    """dockerd could not say what a request names: deny rather than guess."""

    status = 502


def _labels(value: Any) -> dict[str, str]:
    return {k: v for k, v in value.items() if isinstance(v, str)} if isinstance(value, dict) else {}


def owner_of(labels: dict[str, str]) -> dict[str, Any] | None:
    """``{"Uid": 1000, "User": "alice"}`` from the owner labels, or None."""
    uid = labels.get(OWNER_UID_LABEL)
    if uid is None:
        return None
    return {"Uid": int(uid) if uid.isascii() and uid.isdigit() else uid, "User": labels.get(OWNER_USER_LABEL)}


def _doc(kind: str, ident: Any, name: Any, names: list, labels: Any, **extra: Any) -> dict[str, Any]:
    lab = _labels(labels)
    names = [n for n in names if isinstance(n, str)]
    doc = {"Kind": kind, "ID": ident if isinstance(ident, str) else "",
           "Name": name if isinstance(name, str) else (names[0] if names else ""),
           "Names": names, "Labels": lab, "Owner": owner_of(lab)}
    doc.update(extra)
    return doc


def _spec(answer: dict) -> dict:
    spec = answer.get("Spec")
    return spec if isinstance(spec, dict) else {}


def identity(kind: str, answer: Any) -> dict[str, Any]:
    """The identity document of dockerd's inspect ``answer`` for an object of ``kind``."""
    if not isinstance(answer, dict):
        raise TargetLookupFailed(f"dockerd's description of a {kind} is not an object")
    if kind == "container":
        config = answer.get("Config") if isinstance(answer.get("Config"), dict) else {}
        name = str(answer.get("Name") or "").lstrip("/")
        host_config, unreadable = stored_host_config(answer.get("HostConfig"))
        doc = _doc(kind, answer.get("Id"), name, [name] if name else [], config.get("Labels"),
                   Image=config.get("Image"), ImageID=answer.get("Image"),
                   HostConfig=host_config, Mounts=answer.get("Mounts") or [])
        if unreadable is not None:
            doc["HostConfigError"] = unreadable
        return doc
    if kind == "image":
        config = answer.get("Config") if isinstance(answer.get("Config"), dict) else {}
        tags = answer.get("RepoTags") or []
        return _doc(kind, answer.get("Id"), None, list(tags), config.get("Labels"),
                    RepoDigests=answer.get("RepoDigests") or [])
    if kind == "volume":
        return _doc(kind, answer.get("Name"), answer.get("Name"), [answer.get("Name")],
                    answer.get("Labels"), Driver=answer.get("Driver"),
                    Options=answer.get("Options") or {})
    if kind == "network":
        return _doc(kind, answer.get("Id"), answer.get("Name"), [answer.get("Name")],
                    answer.get("Labels"), Driver=answer.get("Driver"))
    if kind == "node":
        desc = answer.get("Description") if isinstance(answer.get("Description"), dict) else {}
        return _doc(kind, answer.get("ID"), desc.get("Hostname"), [desc.get("Hostname")],
                    _spec(answer).get("Labels"))
    if kind == "task":
        spec = _spec(answer).get("ContainerSpec") or {}
        labels = {**_labels(spec.get("Labels") if isinstance(spec, dict) else {}),
                  **_labels(answer.get("Labels"))}
        return _doc(kind, answer.get("ID"), answer.get("Name"), [], labels,
                    ServiceID=answer.get("ServiceID"))
    if kind == "plugin":
        return _doc(kind, answer.get("Id"), answer.get("Name"), [answer.get("Name")], {})
    spec = _spec(answer)  # service, secret, config
    return _doc(kind, answer.get("ID"), spec.get("Name"), [spec.get("Name")], spec.get("Labels"))


def _is_absent(kind: str, status: int, answer: Any) -> bool:
    """dockerd's own way of saying "no such object" (it will say it to the client too)."""
    if status == 404:
        return True
    if kind == "image" and status == 400:
        return True  # not a reference at all ("invalid reference format")
    message = answer.get("message", "") if isinstance(answer, dict) else ""
    return kind in _SWARM_KINDS and status == 503 and "not a swarm manager" in message


class TargetResolver:
    """Resolves ``(kind, reference)`` to an identity, through dockerd and a cache.

    ``trusted()`` says whether the cache may be used: the event watcher's
    connection is up, so every change since the cache was filled is known.
    """

    def __init__(self, pool, clock, cache: TargetCache | None = None, trusted=lambda: False,
                 timeout: float = 5.0):
        self._pool = pool
        self._clock = clock
        self.cache = cache if cache is not None else TargetCache()
        self._trusted = trusted
        self._timeout = timeout

    async def resolve(self, kind: str, ref: str) -> dict[str, Any] | None:
        """The identity of ``ref``, or None when dockerd has no such object.

        Raises :class:`TargetLookupFailed` when dockerd cannot say.
        """
        found = await self.find(kind, ref)
        return None if isinstance(found, Absent) else found

    async def find(self, kind: str, ref: str, fresh: bool = False) -> dict[str, Any] | Absent:
        """:meth:`resolve`, with dockerd's own answer (:class:`Absent`) for a missing object.

        ``fresh`` asks dockerd even when the cache holds ``ref``.
        """
        trusted = self._trusted()
        if trusted and not fresh:
            cached = self.cache.get(kind, ref)
            if cached is not MISS:
                return cached
        generation = self.cache.generation
        target = await self._lookup(kind, ref)
        if trusted and not isinstance(target, Absent) and self._trusted():
            self.cache.put(kind, ref, target, generation)
        return target

    async def repository(self, name: str) -> list[str]:
        """Every tag and digest reference of the repository ``name`` (familiar form), from dockerd now."""
        filters = json.dumps({"reference": [name]}, separators=(",", ":"))
        path = b"/images/json?filters=" + quote(filters, safe="").encode()
        try:
            status, answer = await get_json(self._pool, self._clock, path, timeout=self._timeout)
        except DsfwError as e:
            raise TargetLookupFailed(f"cannot list repository {name!r} in dockerd, so the "
                                     f"request is denied: {e.message}") from e
        if status != 200 or not isinstance(answer, list):
            raise TargetLookupFailed(f"dockerd answered {status} when dsfw listed repository "
                                     f"{name!r}; request denied")
        refs: list[str] = []
        for image in answer:
            for key in ("RepoTags", "RepoDigests"):
                for ref in (image.get(key) if isinstance(image, dict) else None) or ():
                    if isinstance(ref, str) and ref not in refs and familiar_repository(ref) == name:
                        refs.append(ref)
        return refs

    async def _lookup(self, kind: str, ref: str) -> dict[str, Any] | Absent:
        path = api_path(_INSPECT[kind], ref)
        try:
            status, answer = await get_json(self._pool, self._clock, path, timeout=self._timeout)
        except DsfwError as e:
            raise TargetLookupFailed(f"cannot look up {kind} {ref!r} in dockerd, so the "
                                     f"request is denied: {e.message}") from e
        if status == 200:
            if kind == "exec" and isinstance(answer, dict):
                return await self._exec(answer)
            return identity(kind, answer)
        message = answer.get("message") if isinstance(answer, dict) else None
        if _is_absent(kind, status, answer):
            return Absent(status, message if isinstance(message, str) else "")
        raise TargetLookupFailed(f"dockerd answered {status} when dsfw looked up {kind} {ref!r} "
                                 f"({message or 'no message'}); request denied")

    async def _exec(self, answer: dict) -> dict[str, Any]:
        container_id = answer.get("ContainerID")
        container = await self.resolve("container", container_id) if isinstance(
            container_id, str) and container_id else None
        process = answer.get("ProcessConfig") if isinstance(answer.get("ProcessConfig"), dict) else {}
        return {"Kind": "exec", "ID": answer.get("ID") or "", "Name": "", "Names": [],
                "Labels": {}, "Owner": container.get("Owner") if container else None,
                "Container": container, "ProcessConfig": process}


def with_object_id(req, named, object_id: str):
    """``req`` naming its object by ``object_id``: what dockerd acts on is what the policy saw."""
    from dataclasses import replace

    target = req.target
    if named.param.startswith("?"):  # a query parameter: Go reads the first
        key, query, done = named.param[1:], [], False
        for k, v in target.query:
            if k == key:
                if done:
                    continue
                v, done = object_id, True
            query.append((k, v))
        return replace(req, target=replace(target, query=tuple(query)))
    plain = named.path_with(object_id)
    if plain == target.plain_path:
        return req
    path = f"/v{target.version}{plain}" if target.version else plain
    return replace(req, target=replace(target, path=path, plain_path=plain), route=named.route)
