"""A byte-bounded memory of resolved objects, forgotten on dockerd's events.

Keys are what clients write (``web``, a full ID, an ID prefix, ``busybox``);
values are the identities :mod:`dsfw.scope.target` built.  An entry is
dropped when dockerd reports an event about any object it contains (a
container's rename, an exec's container being destroyed), and every entry of
a kind when an event may move a name to another object (create, rename,
tag): dockerd resolves a name before an ID prefix, so a new name can shadow a
cached prefix.  A lookup that started before an invalidation is not stored
(``generation``), so an answer older than an event never outlives it.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

DEFAULT_MAX_BYTES = 8 << 20

# Event actions after which a reference may resolve to another object.
_MOVES_NAMES = frozenset({"create", "rename", "tag", "untag", "import", "load", "pull",
                          "delete", "destroy", "remove", "update"})

MISS = object()


def _size_of(key: tuple[str, str], target: Any) -> int:
    return len(key[1]) + len(json.dumps(target, separators=(",", ":"))) + 200


def ids_of(target: dict | None) -> frozenset[str]:
    """The IDs an identity depends on: its own, and an exec's container."""
    if not target:
        return frozenset()
    ids = {target.get("ID")}
    container = target.get("Container")
    if isinstance(container, dict):
        ids.add(container.get("ID"))
    return frozenset(i for i in ids if isinstance(i, str))


class TargetCache:
    """``(kind, reference) → identity``, LRU, at most ``max_bytes`` (estimated)."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        self._max = max_bytes
        self._entries: OrderedDict[tuple[str, str], tuple[Any, int]] = OrderedDict()
        self._by_id: dict[str, set[tuple[str, str]]] = {}
        self._bytes = 0
        self.generation = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size(self) -> int:
        return self._bytes

    def get(self, kind: str, ref: str) -> Any:
        entry = self._entries.get((kind, ref))
        if entry is None:
            self.misses += 1
            return MISS
        self._entries.move_to_end((kind, ref))
        self.hits += 1
        return entry[0]

    def put(self, kind: str, ref: str, target: dict, generation: int) -> None:
        """Remember ``target`` unless an invalidation happened since ``generation``."""
        if generation != self.generation or not target:
            return
        key = (kind, ref)
        size = _size_of(key, target)
        if size > self._max:
            return
        self._drop(key)
        self._entries[key] = (target, size)
        self._bytes += size
        for ident in ids_of(target):
            self._by_id.setdefault(ident, set()).add(key)
        while self._bytes > self._max:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: tuple[str, str]) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self._bytes -= entry[1]
        for ident in ids_of(entry[0]):
            keys = self._by_id.get(ident)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_id[ident]

    def event(self, kind: str, action: str, ident: str | None) -> None:
        """Forget what an event of dockerd may have changed."""
        self.generation += 1
        if action.split(":", 1)[0] in _MOVES_NAMES or kind == "image" or not ident:
            self.forget_kind(kind)
        for key in list(self._by_id.get(ident or "", ())):
            self._drop(key)

    def forget_kind(self, kind: str) -> None:
        self.generation += 1
        for key in [k for k in self._entries if k[0] == kind]:
            self._drop(key)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()
        self._by_id.clear()
        self._bytes = 0
