"""The one place dsfw relies on Twisted beyond its documented interfaces.

dsfw owns its HTTP server protocol (:mod:`dsfw.edge.server`) and its dockerd
client (:mod:`dsfw.edge.upstream`), so twisted.web's private state is never
touched.  What is left is a tuning knob of Twisted's socket transports;
tests/test_twisted_internals.py pins it against the installed Twisted on a
real socket, so an upgrade that changes it fails there first.
"""
from __future__ import annotations

LARGE_READ = 1 << 17


def use_large_reads(transport) -> None:
    """Read (and buffer writes) up to 128 kB at a time on this transport.

    Twisted reads 64 kB per wake-up (``FileDescriptor.bufferSize``, an
    undocumented class attribute that ``doRead`` passes to ``recv``); build
    contexts, archives and image tarballs cross dsfw in hundreds of
    megabytes, and the per-read cost was a large share of their relay time.
    Not more: the UNIX transport allocates the whole buffer for every
    ``recvmsg``, and above 128 kB that allocation is an mmap/munmap pair that
    every small request pays for.
    """
    if hasattr(transport, "bufferSize"):
        transport.bufferSize = LARGE_READ
