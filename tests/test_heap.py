"""dsfw.ops.heap: freed heap handed back to the system, every few seconds."""
from __future__ import annotations

import os
import subprocess
import sys

from twisted.internet.task import Clock

import dsfw
from dsfw.ops.heap import INTERVAL, HeapTrimmer, malloc_trim

REPO = os.path.dirname(os.path.dirname(os.path.abspath(dsfw.__file__)))

# Freed large buffers below a live one: glibc keeps them resident until trimmed.
_FRAGMENTED = """
import sys
from dsfw.ops.heap import malloc_trim

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

first = b"x" * (1 << 20)  # mmapped; freeing it raises glibc's mmap threshold
del first
buffers = [b"x" * (1 << 20) for _ in range(64)]  # so these come from the heap
pinned = buffers[-1]
del buffers
before = rss()
if sys.argv[1] == "trim":
    malloc_trim()()
print((before - rss()) >> 20)
"""


def released_mb(action: str) -> int:
    done = subprocess.run([sys.executable, "-c", _FRAGMENTED, action], capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=REPO), timeout=60)
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


def test_trim_gives_freed_heap_back():
    assert malloc_trim() is not None  # glibc on these machines
    assert released_mb("keep") == 0
    assert released_mb("trim") >= 48


def test_trims_every_interval_while_running():
    clock, calls = Clock(), []
    trimmer = HeapTrimmer(clock, lambda: calls.append(clock.seconds()))
    trimmer.startService()
    clock.advance(INTERVAL - 1)
    assert calls == []
    clock.pump([1, INTERVAL, INTERVAL])
    assert calls == [INTERVAL, 2 * INTERVAL, 3 * INTERVAL]
    trimmer.stopService()
    clock.advance(10 * INTERVAL)
    assert len(calls) == 3 and clock.getDelayedCalls() == []
