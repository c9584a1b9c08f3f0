"""Giving the heap that large transfers leave free back to the system.

glibc keeps freed memory for reuse, and after the first 1 MiB buffer is freed
it serves later large buffers from the heap instead of fresh mappings (its
mmap threshold rises), so what a build upload or an image download used stays
resident once they are over: a few MB above the daemon's resting size after
every busy spell (docs/benchmarks.md, "Memory at rest").  ``malloc_trim(0)``
hands the free pages back; it takes tens of microseconds, so it simply runs
every few seconds on the reactor instead of being tied to the requests that
caused it.  Where the C library has no ``malloc_trim`` (musl) nothing runs.
"""
from __future__ import annotations

import ctypes
from typing import Callable

from twisted.application.service import Service
from twisted.internet.task import LoopingCall

INTERVAL = 10.0  # seconds


def malloc_trim() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)`` as a function of no arguments, or None without glibc."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class HeapTrimmer(Service):
    """Calls ``trim`` every ``interval`` seconds on ``clock`` while running."""

    def __init__(self, clock, trim: Callable[[], object], interval: float = INTERVAL):
        self._loop = LoopingCall(trim)
        self._loop.clock = clock
        self._interval = interval

    def startService(self) -> None:
        super().startService()
        self._loop.start(self._interval, now=False)

    def stopService(self):
        super().stopService()
        if self._loop.running:
            self._loop.stop()


def heap_trimmer(clock, interval: float = INTERVAL) -> HeapTrimmer | None:
    """The trimmer for this process's C library, or None where there is nothing to trim."""
    trim = malloc_trim()
    return None if trim is None else HeapTrimmer(clock, trim, interval)
