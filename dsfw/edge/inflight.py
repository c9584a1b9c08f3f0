"""In-flight requests and hijacked streams, so that SIGTERM can drain them.

On stop dsfw stops listening, refuses new requests on open connections, and
waits for what is in flight -- answers being streamed, attach/exec sessions --
to finish, for at most a bound; whatever is still open then is closed, so a
``docker logs -f`` cannot hold a shutdown forever.
"""
from __future__ import annotations

import itertools
from typing import Callable

from twisted.internet.defer import Deferred, succeed


class InFlight:
    """Tracks work by token; each entry knows how to abort itself."""

    def __init__(self, clock):
        self._clock = clock
        self._entries: dict[int, Callable[[], None]] = {}
        self._ids = itertools.count()
        self._waiters: list[Deferred] = []
        self.draining = False

    def __len__(self) -> int:
        return len(self._entries)

    def begin(self, abort: Callable[[], None]) -> int:
        token = next(self._ids)
        self._entries[token] = abort
        return token

    def end(self, token: int) -> None:
        self._entries.pop(token, None)
        if not self._entries:
            self._wake_waiters()

    def _wake_waiters(self) -> None:
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)

    def drain(self, timeout: float) -> Deferred:
        """Fires when nothing is in flight, aborting stragglers after ``timeout`` s."""
        self.draining = True
        if not self._entries:
            return succeed(None)
        d: Deferred = Deferred()
        self._waiters.append(d)
        call = self._clock.callLater(timeout, self._abort_all)
        d.addBoth(lambda r: (call.cancel() if call.active() else None, r)[1])
        return d

    def _abort_all(self) -> None:
        for abort in list(self._entries.values()):
            try:
                abort()
            except Exception:
                pass
        self._entries.clear()
        self._wake_waiters()
