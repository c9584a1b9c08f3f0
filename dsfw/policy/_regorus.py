"""regorus, loaded with the settings dsfw runs it with.

Both are read from the environment: mimalloc's when the library is loaded
(so before this import), Rust's backtrace switch at the first error.  An
operator's own value wins.  What each one costs is measured in
docs/benchmarks.md ("Memory at rest").

- ``RUST_LIB_BACKTRACE=0``: regorus reports errors through Rust's anyhow,
  which, when ``RUST_BACKTRACE=1`` is set, captures a backtrace for every
  error and symbolizes it into the message.  dsfw drops that part of the
  message, but the symbolizer's tables stay in memory for good, and every
  Rego v0 file fails once (it is tried as v1 first): about 60 MB.
- ``MIMALLOC_ARENA_EAGER_COMMIT=0``: regorus allocates with its own mimalloc,
  which otherwise commits its arena eagerly, backed by transparent huge pages:
  a few MB resident that a small policy never uses.
"""
import os

os.environ.setdefault("RUST_LIB_BACKTRACE", "0")
os.environ.setdefault("MIMALLOC_ARENA_EAGER_COMMIT", "0")

import regorus  # noqa: E402  (after the settings it reads when loaded)

__all__ = ["regorus"]
