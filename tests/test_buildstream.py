"""The build context rewritten while it arrives: only the prefix up to the Dockerfile is spooled.

:func:`rewrite_context` with ``on_dockerfile`` switches its output from the
spool to a stream once the Dockerfile the build uses is settled.  What goes
out (spool prefix + stream) must be byte for byte what the spooling rewrite
writes, and a later member that would change the judged Dockerfile must be
refused before the end of the tar goes out.
"""
from __future__ import annotations

import io
import tarfile
import tempfile

import pytest
from hypothesis import given, settings, strategies as st

from dsfw.build.context import (AmbiguousContext, BuildContextError, DockerfileNotFound,
                               DockerfileTooLarge, ContextLimits, rewrite_context)
from tests.test_buildcontext import DF, entry, make_tar, rewrite

END = 2 * tarfile.BLOCKSIZE


class Streamed:
    """One streaming rewrite: what was spooled, what was streamed, what was judged."""

    def __init__(self, path: str, dockerfile: str = "Dockerfile", limits=ContextLimits()):
        self.spool = tempfile.TemporaryFile()
        self.sink = io.BytesIO()
        self.judged = None
        self.spooled_at_switch = None
        with open(path, "rb") as src:
            self.ctx = rewrite_context(src, self.spool, dockerfile, limits, self._switch)

    def _switch(self, ctx):
        assert self.judged is None, "settled twice"
        self.judged = ctx
        self.spooled_at_switch = self.spool.seek(0, 2)
        return self.sink

    def forwarded(self) -> bytes:
        self.spool.seek(0)
        return self.spool.read() + self.sink.getvalue()


def spooled(path: str, dockerfile: str = "Dockerfile") -> bytes:
    _, dst = rewrite(path, dockerfile)
    dst.seek(0)
    return dst.read()


def test_dockerfile_first_spools_only_its_member_and_streams_the_rest():
    path = make_tar([entry("Dockerfile", DF), entry("big", b"x" * 3_000_000),
                     entry("src/app.py", b"print(1)\n")])
    s = Streamed(path)
    assert (s.judged.dockerfile_path, s.judged.dockerfile) == ("Dockerfile", DF)
    assert s.judged.members == 1 and s.judged.output_bytes == 1024
    assert s.judged.dockerfile_member == (0, 1024)
    # nothing was written to the spool after the switch
    assert s.spool.seek(0, 2) == s.spooled_at_switch == 1024
    assert len(s.sink.getvalue()) > 3_000_000
    assert s.forwarded() == spooled(path)
    assert (s.ctx.dockerfile_path, s.ctx.members) == ("Dockerfile", 3)


def test_a_symlink_to_a_later_member_settles_when_the_target_arrives():
    path = make_tar([entry("Dockerfile", kind=tarfile.SYMTYPE, link="real/df"),
                     entry("pad", b"p" * 100_000), entry("real/df", DF),
                     entry("zzz", b"z" * 100_000)])
    s = Streamed(path)
    assert (s.judged.dockerfile_path, s.judged.dockerfile, s.judged.members) == ("real/df", DF, 3)
    assert s.forwarded() == spooled(path)


def test_dockerfile_last_is_the_whole_context_spooled_before_the_decision():
    path = make_tar([entry("a", b"a" * 100_000), entry("Dockerfile", DF)])
    s = Streamed(path)
    assert s.judged.members == 2
    assert s.sink.getvalue().strip(b"\0") == b""  # only the end of the tar follows
    assert s.forwarded() == spooled(path)


@pytest.mark.parametrize("entries, error", [
    ([entry("a", b"x")], DockerfileNotFound),
    ([entry("Dockerfile", DF * 100)], DockerfileTooLarge),
    ([entry("Dockerfile", kind=tarfile.SYMTYPE, link="missing")], DockerfileNotFound),
])
def test_unsettled_dockerfile_never_switches_and_is_refused_at_the_end(entries, error):
    limits = ContextLimits(max_dockerfile_bytes=len(DF) * 10)
    spool, calls = tempfile.TemporaryFile(), []
    with open(make_tar(entries), "rb") as src, pytest.raises(error):
        rewrite_context(src, spool, "Dockerfile", limits, calls.append)
    assert calls == []


@pytest.mark.parametrize("entries, dockerfile", [
    # a second Dockerfile after the judged one
    ([entry("Dockerfile", DF), entry("pad", b"p" * 50_000), entry("./Dockerfile", b"FROM x\n")],
     "Dockerfile"),
    # the upper-case name after the lower-case fallback was judged: dockerd would pick it
    ([entry("dockerfile", DF), entry("pad", b"p"), entry("Dockerfile", b"FROM x\n")],
     "Dockerfile"),
    # a component of the judged path replaced by a symlink, or by a file
    ([entry("sub/Dockerfile", DF), entry("sub", kind=tarfile.SYMTYPE, link="other")],
     "sub/Dockerfile"),
    ([entry("sub/Dockerfile", DF), entry("sub", b"file")], "sub/Dockerfile"),
    # an entry below the judged file
    ([entry("sub/Dockerfile", DF), entry("sub/Dockerfile/x", b"")], "sub/Dockerfile"),
])
def test_a_later_member_changing_the_judged_dockerfile_is_refused_before_the_end(entries,
                                                                                 dockerfile):
    spool, sink, judged = tempfile.TemporaryFile(), io.BytesIO(), []

    def switch(ctx):
        judged.append(ctx)
        return sink

    with open(make_tar(entries), "rb") as src, pytest.raises(AmbiguousContext):
        rewrite_context(src, spool, dockerfile, ContextLimits(), switch)
    assert judged and judged[0].dockerfile == DF
    assert not sink.getvalue().endswith(bytes(END))  # the end of the tar never went out


NAMES = st.sampled_from(["Dockerfile", "dockerfile", "d", "d/Dockerfile", "d/x", "l", "l/x",
                         "./Dockerfile", "x"])


@st.composite
def members(draw):
    out = []
    for name in draw(st.lists(NAMES, max_size=6)):
        kind = draw(st.sampled_from(["file", "file", "symlink", "dir"]))
        if kind == "file":
            out.append(entry(name, draw(st.sampled_from([DF, b"FROM other\n"]))))
        elif kind == "dir":
            out.append(entry(name, kind=tarfile.DIRTYPE))
        else:
            out.append(entry(name, kind=tarfile.SYMTYPE,
                             link=draw(st.sampled_from(["d", "x", "d/Dockerfile", "dockerfile"]))))
    return out


@settings(max_examples=200, deadline=None)
@given(entries=members(), dockerfile=st.sampled_from(["Dockerfile", "d/Dockerfile", "l/x"]))
def test_streaming_forwards_nothing_the_spooling_rewrite_would_judge_differently(entries,
                                                                                  dockerfile):
    path = make_tar(entries)
    try:
        s = Streamed(path, dockerfile)
    except BuildContextError:
        return  # refusing is always safe
    ctx, _ = rewrite(path, dockerfile)  # a streamed success is a spooled success...
    if s.judged is not None:  # ...with the same Dockerfile and the same bytes
        assert (s.judged.dockerfile_path, s.judged.dockerfile) == (ctx.dockerfile_path,
                                                                   ctx.dockerfile)
    assert s.forwarded() == spooled(path, dockerfile)
