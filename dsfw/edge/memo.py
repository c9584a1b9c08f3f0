"""Results of pure functions of short byte strings, remembered by those bytes.

Clients send the same request heads again and again (a poll, a CLI's fixed
headers) and dockerd answers with the same few heads (only ``Date`` changes,
once a second): parsing them once per distinct bytes took a visible share of
a small request's cost (docs/benchmarks.md).  Bounded in entries and in key
size; a computation that raises is not remembered, so a refusal is reached
again every time.  Values must be immutable (or never changed by their users).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable


class BytesMemo:
    """An LRU of ``bytes -> value`` for keys of at most ``max_key`` bytes."""

    def __init__(self, entries: int, max_key: int):
        self.max_entries = entries
        self.max_key = max_key
        self._entries: OrderedDict[bytes, Any] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes, compute: Callable[..., Any], *args: Any) -> Any:
        """The value remembered for ``key``, or ``compute(*args)`` (remembered if it returns)."""
        if len(key) > self.max_key:
            return compute(*args)
        entries = self._entries
        value = entries.get(key)
        if value is not None:
            entries.move_to_end(key)
            return value
        value = entries[key] = compute(*args)
        if len(entries) > self.max_entries:
            entries.popitem(last=False)
        return value
