"""The body worker process: ``python -m dsfw.offload.worker``, started by the daemon.

Frames in on standard input, answers out on standard output, one at a time;
log lines (warnings and worse) on standard error.  End of input (the daemon
closed the pipe or died) ends the process.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
import sys

import structlog

from dsfw.offload.frames import read_frame, write_frame
from dsfw.offload.jobs import BodyJobs


# Bulk work yields to the daemon's reactor: with both cores busy the scheduler then
# runs the daemon as soon as a client's request is in (docs/benchmarks.md).
NICENESS = 10


def main() -> None:
    os.nice(NICENESS)
    frames_in = os.fdopen(os.dup(0), "rb", buffering=1 << 20)
    frames_out = os.fdopen(os.dup(1), "wb", buffering=1 << 20)
    # nothing else may write into the answer pipe: stray output goes to the log
    os.dup2(2, 1)
    os.close(0)
    structlog.configure(
        processors=[structlog.processors.add_log_level,
                    structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    jobs = BodyJobs()
    while True:
        frame = read_frame(frames_in)
        if frame is None:
            return
        answer = jobs.handle(*frame)
        if answer is not None:
            write_frame(frames_out, *answer)
            del answer
        del frame
        _give_back()


def _give_back() -> None:
    """Return freed heap to the system: a 16 MB body's objects leave ~100 MB otherwise."""
    gc.collect()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim  # glibc only
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _libc()


if __name__ == "__main__":
    main()
