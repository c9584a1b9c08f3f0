"""Polling a policy directory for changes.

Polling (names, sizes, mtimes every few seconds) rather than inotify: it works
the same on every platform and on bind-mounted or network directories, costs a
few ``stat`` calls, and runs on a clock that is passed in, so tests drive it
with :class:`twisted.internet.task.Clock`.
"""
from __future__ import annotations

from typing import Protocol

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

DEFAULT_INTERVAL = 2.0


class Reloadable(Protocol):
    def reload_if_changed(self) -> bool: ...


class PolicyWatcher(Service):
    """While running, calls ``engine.reload_if_changed()`` every ``interval`` seconds."""

    def __init__(self, engine: Reloadable, clock: IReactorTime, interval: float = DEFAULT_INTERVAL):
        if interval <= 0:
            raise ValueError("policy reload interval must be positive")
        self._engine = engine
        self._interval = interval
        self._loop = LoopingCall(engine.reload_if_changed)
        self._loop.clock = clock

    def startService(self) -> None:
        super().startService()
        # now=False: the engine has just loaded the directory itself.
        self._loop.start(self._interval, now=False)

    def stopService(self) -> None:
        if self._loop.running:
            self._loop.stop()
        return super().stopService()
