"""Keeping the embedded engine on the newest good bundle: fetch, verify, compile, swap.

``--bundle-url`` is polled every ``--bundle-poll-interval`` seconds (each wait
drawn from 0.8x-1.2x of it, so a fleet does not poll in step) with
``If-None-Match``, so an unchanged bundle costs a ``304`` and no download.
``--bundle-file`` (or a ``file://`` URL) is re-read when its size, mtime or
inode change.  A new bundle is unpacked and its signature checked in a worker
thread, then compiled on the reactor thread (regorus engines may not change
threads) and put in force as a whole.  A download, signature or compile
failure is logged and shown in ``/_dsfw/health``; the last good revision
stays in force.  Before the first bundle of a URL arrives, every request is
denied (fail closed); a local bundle file must load at start-up.
"""
from __future__ import annotations

import os
import random
from typing import TYPE_CHECKING, Callable
from urllib.parse import unquote, urlsplit

import structlog
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.protocol import Protocol
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.web.iweb import UNKNOWN_LENGTH

from dsfw.policy.bundle import DEFAULT_MAX_BYTES, Bundle, BundleError, BundleVerifier, read_bundle
from dsfw.policy.loader import PolicyLoadError, compile_policy

if TYPE_CHECKING:
    from treq.client import HTTPClient

log = structlog.get_logger("dsfw.policy")

DEFAULT_POLL_INTERVAL = 60.0
FETCH_TIMEOUT = 30.0
JITTER = 0.2
BUNDLE_ROOT = "/bundle"


class _TooLarge(Exception):
    pass


def local_path(source: str) -> str | None:
    """The file a ``file://`` URL or plain path names; None for http(s)."""
    parts = urlsplit(source)
    if parts.scheme == "file":
        return unquote(parts.path)
    if parts.scheme in ("http", "https"):
        return None
    if parts.scheme == "":
        return source
    raise ValueError(f"bundle source {source!r}: only http://, https:// and file:// are supported")


def compile_bundle(bundle: Bundle, origin: str):
    """The bundle's files as one compiled policy (reactor thread only)."""
    contents = {f"{BUNDLE_ROOT}/{name}": raw for name, raw in bundle.files.items()}
    revision = bundle.revision or f"sha256:{bundle.digest[:12]}"
    return compile_policy(BUNDLE_ROOT, contents, revision, bundle.roots)


class BundleService(Service):
    """Polls one bundle source and installs each new good revision into ``engine``."""

    def __init__(self, reactor, engine, source: str, *, interval: float = DEFAULT_POLL_INTERVAL,
                 verifier: BundleVerifier | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                 threadpool=None, name: str = "dsfw", rng: Callable[[], float] = random.random,
                 http_client: HTTPClient | None = None):
        self._reactor = reactor
        self._engine = engine
        self.source = source
        self.name = name
        self._path = local_path(source)
        self._interval = interval
        self._verifier = verifier
        self._max_bytes = max_bytes
        self._threadpool = threadpool if threadpool is not None else reactor.getThreadPool()
        self._rng = rng
        self._client = http_client
        self._pool = None
        self._call = None
        self._running_poll: Deferred | None = None
        self._etag: str | None = None
        self._file_id: tuple | None = None
        self._status: dict = {"name": name, "source": _redact_url(source), "revision": None,
                              "active_since": None, "last_attempt": None, "last_error": None,
                              "downloads": 0, "not_modified": 0, "failures": 0}

    # --- start-up and life cycle -----------------------------------------------------------

    def load_now(self) -> None:
        """Load a local bundle file synchronously (start-up); raises on any failure."""
        if self._path is None:
            raise ValueError("only a local bundle file can be loaded at start-up")
        data, self._file_id = self._read_file()
        self._activate(read_bundle(data, self._verifier, self._max_bytes))

    def startService(self) -> None:
        super().startService()
        if self._path is None and self._client is None:
            # treq and twisted.web.client load only for a bundle URL (they bring TLS along).
            from treq.client import HTTPClient
            from twisted.web.client import Agent, HTTPConnectionPool
            self._pool = HTTPConnectionPool(self._reactor, persistent=True)
            self._client = HTTPClient(Agent(self._reactor, pool=self._pool,
                                            connectTimeout=FETCH_TIMEOUT))
        # A URL is fetched at once; a file that load_now read waits for its first change.
        self._schedule(0 if self._path is None or self._file_id is None else None)

    def stopService(self):
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._running_poll is not None:
            self._running_poll.cancel()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            return pool.closeCachedConnections()
        return None

    def poll_now(self) -> None:
        """Check the source now (SIGHUP), unless a check is running."""
        if self.running and self._running_poll is None:
            if self._call is not None and self._call.active():
                self._call.cancel()
            self._poll()

    def status(self) -> dict:
        """What ``/_dsfw/health`` shows about the bundle."""
        return dict(self._status)

    # --- polling ---------------------------------------------------------------------------

    def _schedule(self, delay: float | None = None) -> None:
        if not self.running:
            return
        if delay is None:
            delay = self._interval * (1 - JITTER + 2 * JITTER * self._rng())
        self._call = self._reactor.callLater(delay, self._poll)

    def _poll(self) -> None:
        self._call = None
        d = ensureDeferred(self._poll_once())
        self._running_poll = d
        # treq's own timeout ends at the response head; this one covers a dripping body too
        d.addTimeout(2 * FETCH_TIMEOUT, self._reactor)

        def done(result):
            self._running_poll = None
            if isinstance(result, Failure) and self.running:
                self._failed(f"bundle check did not finish: {result.value!r}")
            self._schedule()
        d.addBoth(done)

    async def _poll_once(self) -> None:
        self._status["last_attempt"] = self._reactor.seconds()
        try:
            data = await self._fetch()
            if data is None:
                self._status["not_modified"] += 1
                return
            bundle = await deferToThreadPool(self._reactor, self._threadpool, read_bundle,
                                             data, self._verifier, self._max_bytes)
            self._activate(bundle)
        except CancelledError:
            raise
        except (BundleError, PolicyLoadError, _TooLarge, OSError, ValueError) as e:
            self._failed(str(e))
        except Exception as e:  # never let the poller die: the last good policy stays
            self._failed(repr(e))

    def _activate(self, bundle: Bundle) -> None:
        policy = compile_bundle(bundle, self.source)
        if policy.revision == self._engine.revision():
            self._status["last_error"] = None
            return
        self._engine.install(policy, f"bundle {self.name}")
        self._status.update(revision=policy.revision, active_since=self._reactor.seconds(),
                            last_error=None, signed=bundle.signed)

    def _failed(self, error: str) -> None:
        self._status["failures"] += 1
        self._status["last_error"] = error
        log.error("bundle.activation_failed", bundle=self.name, source=_redact_url(self.source),
                  error=error, revision_in_force=self._engine.revision() or None)

    async def _fetch(self) -> bytes | None:
        if self._path is not None:
            if self._file_id is not None and self._stat_id() == self._file_id:
                return None
            data, self._file_id = self._read_file()
            self._status["downloads"] += 1
            return data
        headers = {b"Accept-Encoding": [b"identity"]}
        if self._etag is not None:
            headers[b"If-None-Match"] = [self._etag.encode("latin-1")]
        response = await self._client.get(self.source, headers=headers, unbuffered=True,
                                          timeout=FETCH_TIMEOUT)
        if response.code == 304:
            response.deliverBody(_Discard())
            return None
        if response.code != 200:
            response.deliverBody(_Discard())
            raise BundleError(f"bundle server answered HTTP {response.code}")
        if response.length is not UNKNOWN_LENGTH and response.length > self._max_bytes:
            response.deliverBody(_Discard())
            raise _TooLarge(f"bundle of {response.length} bytes exceeds the limit of "
                            f"{self._max_bytes}")
        chunks: list[bytes] = []
        size = 0

        def keep(chunk: bytes) -> None:
            nonlocal size
            size += len(chunk)
            if size > self._max_bytes:
                raise _TooLarge(f"bundle download exceeds the limit of {self._max_bytes} bytes")
            chunks.append(chunk)
        from treq import collect
        await collect(response, keep)
        self._status["downloads"] += 1
        etag = response.headers.getRawHeaders(b"etag")
        # Remembered even if the bundle then fails: the same bytes would fail again.
        self._etag = etag[0].decode("latin-1") if etag else None
        return b"".join(chunks)

    def _stat_id(self) -> tuple | None:
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _read_file(self) -> tuple[bytes, tuple | None]:
        ident = self._stat_id()
        if ident is not None and ident[1] > self._max_bytes:
            raise _TooLarge(f"bundle file of {ident[1]} bytes exceeds the limit of "
                            f"{self._max_bytes}")
        with open(self._path, "rb") as f:
            data = f.read(self._max_bytes + 1)
        if len(data) > self._max_bytes:
            raise _TooLarge(f"bundle file exceeds the limit of {self._max_bytes} bytes")
        return data, ident


class _Discard(Protocol):
    """Reads and drops a response body nobody wants, so the connection can be reused."""


def _redact_url(url: str) -> str:
    """A URL without user:password (bundle servers are sometimes given them inline)."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        parts = parts._replace(netloc=netloc)
    return parts.geturl()

