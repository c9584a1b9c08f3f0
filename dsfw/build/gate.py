"""Builds: the context is read, rewritten and its Dockerfile shown to the policy.

A ``POST /build`` is decided twice: ``data.docker.authz.allow`` sees the
request (query included: ``networkmode``, ``buildargs``...), and
``data.docker.build.allow`` sees the Dockerfile dockerd will use.  The
Dockerfile comes from dsfw's own canonical re-serialization of the context
(:func:`dsfw.build.context.rewrite_context`), which is also what is forwarded,
with the ``dockerfile`` parameter pointing at the exact file the policy saw;
and that file is replaced by the rendering of the canonical steps the policy
judged (:func:`dsfw.build.steps.canonical_dockerfile`), so dockerd parses
what the policy saw, not the client's spelling of it.

What dsfw cannot see, it refuses by default: ``remote=`` contexts (dockerd
fetches them itself) and BuildKit builds (the Dockerfile travels over the
``/session`` tunnel, never through the build request).  Operators can allow
either explicitly; an allowed uninspected build is logged as such, and the
build policy is never asked about a Dockerfile it was not shown.
"""
from __future__ import annotations

import dataclasses
import json
import tempfile
import threading
from dataclasses import dataclass
from typing import Any, Awaitable, BinaryIO, Callable, Protocol

import structlog
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool

from dsfw.build.context import BuildContext, ContextLimits, rewrite_context
from dsfw.build.splice import replace_member
from dsfw.build.stream import ContextStream
from dsfw.build.steps import CanonicalDockerfile, canonical_dockerfile
from dsfw.errors import BadRequest, DsfwError, Forbidden
from dsfw.input.request import CanonicalRequest

log = structlog.get_logger("dsfw")

_PREFIX_PIECE = 1 << 20
DEFAULT_MAX_SPOOL = 4 << 30


class ClientContext(Protocol):
    """The client's build context as it arrives (:class:`dsfw.edge.feed.BodyFeed`)."""

    def read(self, size: int = -1) -> bytes: ...

    def bypass(self, size: int, sink: ContextStream) -> int:
        """Send the next ``size`` bytes to ``sink`` from the reactor; how many there were."""


@dataclass(frozen=True)
class BuildOptions:
    """Operator choices about builds dsfw cannot inspect, and context bounds.

    ``max_spool_bytes`` bounds what all builds together keep on disk while
    their Dockerfile is not settled (a context whose Dockerfile comes last is
    spooled whole, decompressed): each request is bounded by ``limits``, but
    concurrent ones would otherwise add up to fill the disk.
    """

    allow_buildkit: bool = False
    allow_remote_context: bool = False
    limits: ContextLimits = ContextLimits()
    max_spool_bytes: int = DEFAULT_MAX_SPOOL


class SpoolFull(DsfwError):
    """The build contexts waiting for their Dockerfile hold the whole spool budget."""

    status = 503


class _SpoolBudget:
    """Bytes held by all build spools; written from the rewrite threads."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.used = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        with self._lock:
            if self.used + n > self.max_bytes:
                raise SpoolFull(f"build contexts waiting for their Dockerfile already hold "
                                f"{self.used} bytes on disk (limit {self.max_bytes}); retry later")
            self.used += n

    def give(self, n: int) -> None:
        with self._lock:
            self.used -= n


class _Spool:
    """A spool file whose bytes count against the budget until it is emptied or closed."""

    def __init__(self, budget: _SpoolBudget):
        self._file = tempfile.TemporaryFile(prefix="dsfw-context-")
        self._budget = budget
        self._held = 0

    def write(self, data) -> int:
        n = len(data)
        self._budget.take(n)
        self._held += n
        return self._file.write(data)

    def _release(self) -> None:
        held, self._held = self._held, 0
        self._budget.give(held)

    def truncate(self, size: int | None = None) -> int:
        if size == 0:
            self._release()
        return self._file.truncate(size)

    def close(self) -> None:
        self._release()
        self._file.close()

    def __getattr__(self, name: str):
        return getattr(self._file, name)


@dataclass(frozen=True)
class PreparedBuild:
    """A build request ready for the policies and the relay.

    ``fields`` are added to the input document of ``data.docker.build``;
    ``context`` is the canonical tar to forward (None when nothing is sent);
    ``relay_body``: the client's body goes to dockerd as it is (a remote
    context allowed uninspected).
    """

    request: CanonicalRequest
    fields: dict[str, Any] | None
    context: BinaryIO | None
    context_length: int | None
    relay_body: bool = False


def buildargs_of(req: CanonicalRequest) -> dict[str, str | None]:
    raw = req.target.param("buildargs")
    if not raw:
        return {}
    try:
        args = json.loads(raw)
    except ValueError:
        raise BadRequest("the buildargs parameter is not valid JSON") from None
    if not isinstance(args, dict) or not all(
            isinstance(v, str) or v is None for v in args.values()):
        raise BadRequest("the buildargs parameter must be a JSON object of strings")
    return args


def _with_dockerfile(req: CanonicalRequest, path: str) -> CanonicalRequest:
    """The request with ``dockerfile=`` set to the file the policy saw."""
    query = [(k, v) for k, v in req.target.query if k != "dockerfile"]
    query.append(("dockerfile", path))
    target = dataclasses.replace(req.target, query=tuple(query))
    return dataclasses.replace(req, target=target)


def _forwarded(out: BinaryIO, ctx: BuildContext,
               canonical: CanonicalDockerfile) -> tuple[BinaryIO, int]:
    """The canonical tar with the Dockerfile rendered from the steps the policy saw."""
    if canonical.rendered == ctx.dockerfile:
        return out, ctx.output_bytes
    spliced = replace_member(out, ctx.dockerfile_member, ctx.output_bytes, canonical.rendered)
    return spliced, spliced.seek(0, 2)


def _first(settled: Deferred, rewrite: Deferred) -> Deferred:
    """``(0, judged prefix)`` once the Dockerfile is settled, else ``(1, context)`` at the end.

    ``rewrite`` goes on after the first; its errors before that are the answer.
    """
    first: Deferred = Deferred()

    def won(result, index):
        if not first.called:
            first.callback((index, result))
        return result

    def lost(failure):
        if not first.called:
            first.errback(failure)
            return None
        return failure

    settled.addCallback(won, 0)
    rewrite.addCallbacks(won, lost, callbackArgs=(1,))
    return first


_BUILDKIT_REFUSED = ("BuildKit builds and sessions cannot be inspected by the firewall and are "
                     "refused; build with DOCKER_BUILDKIT=0 (the classic builder)")
_REMOTE_REFUSED = ("remote build contexts (remote=) cannot be inspected by the firewall and are "
                   "refused; send the build context from the client instead")


def _uninspected(allowed: bool, what: str, refusal: str, bound) -> None:
    """Refuse a build dsfw cannot see, unless the operator allowed it (then log it)."""
    if not allowed:
        raise Forbidden(refusal)
    bound.warning("build.uninspected_allowed", reason=what)


def is_buildkit(req: CanonicalRequest) -> bool:
    return req.target.param("version") == "2"


class BuildGate:
    """Turns a build request into a :class:`PreparedBuild`, or refuses it."""

    def __init__(self, reactor, threadpool, options: BuildOptions = BuildOptions()):
        self._reactor = reactor
        self._threadpool = threadpool
        self._options = options
        self._spools = _SpoolBudget(options.max_spool_bytes)

    def check_buildkit_endpoint(self, req: CanonicalRequest, bound) -> None:
        """``/session`` and ``/grpc`` only serve BuildKit builds dsfw cannot read."""
        if req.route.endpoint.buildkit:
            _uninspected(self._options.allow_buildkit, "BuildKit session", _BUILDKIT_REFUSED, bound)

    async def prepare(self, req: CanonicalRequest,
                      open_content: Callable[[], Awaitable[ClientContext]] | None,
                      bound) -> PreparedBuild:
        """Decide what is sent for a build; ``open_content()`` starts reading the client's context.

        It is awaited (on the reactor) only for a local context, and what it
        gives is read on a worker thread while it arrives: the client's bytes
        go once through the rewrite.  Only the prefix up to the settled
        Dockerfile is spooled; the prepared build then holds a
        :class:`ContextStream` that the relay sends while the rest is
        rewritten (the contents of large files of a plain tar go from the
        client's reads to that stream on the reactor, around the thread).
        Without a settled Dockerfile before the end, the whole canonical tar
        is in the spool before anything is decided, as before.
        """
        if req.target.param("remote"):
            _uninspected(self._options.allow_remote_context, "remote context", _REMOTE_REFUSED,
                         bound)
            return PreparedBuild(req, None, None, None, relay_body=True)
        if is_buildkit(req):
            _uninspected(self._options.allow_buildkit, "BuildKit build", _BUILDKIT_REFUSED, bound)
            return PreparedBuild(req, None, None, None)
        if open_content is None:
            raise BadRequest("a build request needs a build context")
        content = await open_content()
        buildargs = buildargs_of(req)
        dockerfile = req.target.param("dockerfile") or "Dockerfile"
        out = _Spool(self._spools)
        stream = ContextStream(self._reactor)
        settled: Deferred = Deferred()

        def on_dockerfile(ctx: BuildContext):
            # worker thread: judge the prefix, then send it and the rest as it comes
            canonical = canonical_dockerfile(ctx.dockerfile, buildargs)
            self._reactor.callFromThread(settled.callback, (ctx, canonical))
            prefix, _ = _forwarded(out, ctx, canonical)
            prefix.seek(0)
            while piece := prefix.read(_PREFIX_PIECE):
                stream.write(piece)
            out.truncate(0)
            return stream

        rewrite = deferToThreadPool(self._reactor, self._threadpool, rewrite_context, content,
                                    out, dockerfile, self._options.limits, on_dockerfile,
                                    lambda size: content.bypass(size, stream))
        try:
            first = await _first(settled, rewrite)
        except BaseException:
            out.close()
            stream.close()
            raise
        if first[0] == 0:
            ctx, canonical = first[1]
            rewrite.addCallbacks(lambda _: stream.finish(), lambda f: stream.failed(f.value))
            rewrite.addBoth(lambda _: out.close())
            bound.debug("build.context", dockerfile=ctx.dockerfile_path, streamed=True,
                        prefix_members=ctx.members, prefix_bytes=ctx.output_bytes,
                        compression=ctx.compression,
                        dockerfile_rewritten=canonical.rendered != ctx.dockerfile)
            return PreparedBuild(_with_dockerfile(req, ctx.dockerfile_path), canonical.fields,
                                 stream, None)
        ctx = first[1]
        try:
            canonical = await deferToThreadPool(self._reactor, self._threadpool,
                                                canonical_dockerfile, ctx.dockerfile, buildargs)
            forwarded, length = _forwarded(out, ctx, canonical)
        except BaseException:
            out.close()
            raise
        bound.debug("build.context", dockerfile=ctx.dockerfile_path, members=ctx.members,
                    bytes=ctx.content_bytes, compression=ctx.compression, streamed=False,
                    dockerfile_rewritten=forwarded is not out)
        return PreparedBuild(_with_dockerfile(req, ctx.dockerfile_path), canonical.fields,
                             forwarded, length)
