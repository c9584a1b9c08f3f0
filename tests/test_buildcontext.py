"""Tests for the build context rewriter, on real tar files built here."""
from __future__ import annotations

import gzip
import io
import os
import tarfile
import tempfile
import uuid

import pytest
from hypothesis import given, settings, strategies as st

from dsfw.build.context import (AmbiguousContext, BuildContextError, ContextLimits,
                               ContextTooLarge, CorruptContext, DockerfileNotFound,
                               DockerfileTooLarge, ForbiddenPath, UnsupportedEntry,
                               rewrite_context)

DF = b"FROM localbusybox:latest\nRUN echo marker\n"


def entry(name, data=b"", kind=tarfile.REGTYPE, link=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    if kind == tarfile.REGTYPE:
        info.size = len(data)
    return info, data


def make_tar(entries, mode="w", path=None) -> str:
    """Write a real tar file (compressed per ``mode``) and return its path."""
    fd, path = tempfile.mkstemp(suffix=".tar")
    os.close(fd)
    with tarfile.open(path, mode) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def rewrite(path_or_bytes, dockerfile="Dockerfile", limits=ContextLimits()):
    dst = tempfile.TemporaryFile()
    if isinstance(path_or_bytes, bytes):
        return rewrite_context(io.BytesIO(path_or_bytes), dst, dockerfile, limits), dst
    with open(path_or_bytes, "rb") as src:
        return rewrite_context(src, dst, dockerfile, limits), dst


def members(dst) -> dict[str, tarfile.TarInfo]:
    dst.seek(0)
    with tarfile.open(fileobj=dst, mode="r:") as tar:
        return {m.name: m for m in tar.getmembers()}


@pytest.mark.parametrize("mode, kind", [("w", "none"), ("w:gz", "gzip"),
                                        ("w:bz2", "bzip2"), ("w:xz", "xz")])
def test_every_compression_becomes_one_plain_tar(mode, kind):
    path = make_tar([entry("./Dockerfile", DF), entry("src/", kind=tarfile.DIRTYPE),
                     entry("src/app.py", b"print(1)\n")], mode)
    ctx, dst = rewrite(path)
    assert (ctx.compression, ctx.dockerfile_path, ctx.dockerfile) == (kind, "Dockerfile", DF)
    assert (ctx.members, ctx.content_bytes) == (3, len(DF) + 9)
    out = members(dst)
    assert sorted(out) == ["Dockerfile", "src", "src/app.py"]
    assert all(m.uname == "" for m in out.values())


def test_subdirectory_dockerfile_and_dot_slash_parameter():
    path = make_tar([entry("ci/build/Dockerfile.prod", DF), entry("Dockerfile", b"FROM other\n")])
    ctx, _ = rewrite(path, "./ci/build/Dockerfile.prod")
    assert (ctx.dockerfile_path, ctx.dockerfile) == ("ci/build/Dockerfile.prod", DF)
    ctx, _ = rewrite(path, "/ci//build/../build/Dockerfile.prod")
    assert ctx.dockerfile_path == "ci/build/Dockerfile.prod"


def test_lowercase_fallback_only_for_the_default_name():
    path = make_tar([entry("dockerfile", DF)])
    assert rewrite(path)[0].dockerfile_path == "dockerfile"
    assert rewrite(path, "")[0].dockerfile_path == "dockerfile"
    with pytest.raises(DockerfileNotFound):
        rewrite(path, "./Dockerfile")


def test_default_name_wins_over_lowercase():
    path = make_tar([entry("dockerfile", b"FROM low\n"), entry("Dockerfile", DF)])
    assert rewrite(path)[0].dockerfile == DF


def test_dockerfile_symlink_inside_context_is_resolved():
    path = make_tar([entry("real/df", DF), entry("Dockerfile", kind=tarfile.SYMTYPE,
                                                  link="real/df")])
    ctx, _ = rewrite(path)
    assert (ctx.dockerfile_path, ctx.dockerfile) == ("real/df", DF)


def test_dockerfile_hardlink_reads_its_target():
    path = make_tar([entry("a", DF), entry("Dockerfile", kind=tarfile.LNKTYPE, link="./a")])
    ctx, dst = rewrite(path)
    assert ctx.dockerfile == DF and members(dst)["Dockerfile"].linkname == "a"


@pytest.mark.parametrize("entries, dockerfile, error", [
    ([entry("Dockerfile", kind=tarfile.SYMTYPE, link="../../etc/passwd")], "Dockerfile",
     ForbiddenPath),
    ([entry("Dockerfile", kind=tarfile.SYMTYPE, link="/etc/passwd")], "Dockerfile",
     ForbiddenPath),
    ([entry("up", kind=tarfile.SYMTYPE, link="."), entry("l", kind=tarfile.SYMTYPE,
                                                           link="up/../x")], "l", ForbiddenPath),
    ([entry("Dockerfile", DF)], "../Dockerfile", ForbiddenPath),
    ([entry("../x", b"")], "Dockerfile", ForbiddenPath),
    ([entry("Dockerfile", DF), entry("./Dockerfile", DF)], "Dockerfile", AmbiguousContext),
    ([entry("d/x", b""), entry("d", b"")], "Dockerfile", AmbiguousContext),
    ([entry("l", kind=tarfile.SYMTYPE, link="sub"), entry("l/Dockerfile", DF)], "l/Dockerfile",
     AmbiguousContext),
    ([entry("Dockerfile", kind=tarfile.LNKTYPE, link="missing")], "Dockerfile",
     AmbiguousContext),
    ([entry("dev", kind=tarfile.CHRTYPE)], "Dockerfile", UnsupportedEntry),
    ([entry("fifo", kind=tarfile.FIFOTYPE)], "Dockerfile", UnsupportedEntry),
    ([entry("Dockerfile", kind=tarfile.DIRTYPE)], "Dockerfile", DockerfileNotFound),
    ([entry("other", DF)], "Dockerfile", DockerfileNotFound),
])
def test_refusals(entries, dockerfile, error):
    with pytest.raises(error) as info:
        rewrite(make_tar(entries), dockerfile)
    assert info.value.message and isinstance(info.value, BuildContextError)


def test_statuses():
    assert CorruptContext("x").status == 400 and ContextTooLarge("x").status == 413
    assert DockerfileTooLarge("x").client_message() == "dsfw: x"


def test_gzip_bomb_is_bounded_by_the_decompressed_limit():
    info = tarfile.TarInfo("zeros")
    info.size = 64 * 1024 * 1024
    data = gzip.compress(info.tobuf() + b"\0" * info.size, 9)
    assert len(data) < 100_000
    with pytest.raises(ContextTooLarge):
        rewrite(data, limits=ContextLimits(max_total_bytes=8 * 1024 * 1024))


def test_input_size_and_entry_count_and_dockerfile_size_limits():
    path = make_tar([entry(f"f{i}", b"x") for i in range(20)] + [entry("Dockerfile", DF)])
    with pytest.raises(ContextTooLarge):
        rewrite(path, limits=ContextLimits(max_entries=10))
    with pytest.raises(ContextTooLarge):
        rewrite(path, limits=ContextLimits(max_input_bytes=4096))
    with pytest.raises(DockerfileTooLarge):
        rewrite(path, limits=ContextLimits(max_dockerfile_bytes=10))


def test_oversized_pax_header_is_refused_before_buffering():
    path = make_tar([entry("Dockerfile", DF), entry("x" * 5000, b"")], mode="w")
    with open(path, "rb") as f:
        raw = f.read()
    with pytest.raises(ContextTooLarge):
        rewrite(raw, limits=ContextLimits(max_header_bytes=1024))


@pytest.mark.parametrize("cut", [100, 600, 1100, 1536, 2600])
def test_truncation_is_corrupt(cut):
    path = make_tar([entry("Dockerfile", DF), entry("big", b"y" * 1000)])
    with open(path, "rb") as f:
        raw = f.read()
    with pytest.raises(CorruptContext):
        rewrite(raw[:cut])
    with pytest.raises(CorruptContext):
        rewrite(gzip.compress(raw[:cut]))
    compressed = gzip.compress(raw)
    with pytest.raises(CorruptContext):
        rewrite(compressed[:len(compressed) // 2])


def test_garbage_after_a_zero_block_is_corrupt():
    path = make_tar([entry("Dockerfile", DF)])
    with open(path, "rb") as f:
        raw = f.read()
    with pytest.raises(CorruptContext):
        rewrite(raw[:1024] + b"\0" * 512 + b"garbage!" * 64)


def test_global_pax_header_changing_fields_is_refused():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"path": "Dockerfile"}) as tar:
        tar.addfile(*[entry("other", DF)[0]], io.BytesIO(DF))
    with pytest.raises(AmbiguousContext):
        rewrite(buf.getvalue())


def test_zstd_and_garbage_are_corrupt():
    for data in (b"\x28\xb5\x2f\xfd" + b"\0" * 100, b"hello world" * 100, b""):
        with pytest.raises(CorruptContext):
            rewrite(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_only_raise_build_context_errors(data):
    try:
        rewrite(data)
    except BuildContextError:
        pass


@settings(max_examples=60, deadline=None)
@given(names=st.lists(st.from_regex(r"(\./|/)?[a-zA-Z]{1,3}(/[a-zA-Z]{1,3})?", fullmatch=True),
                      max_size=6),
       content=st.binary(max_size=200), mode=st.sampled_from(["w", "w:gz", "w:xz"]))
def test_rewritten_tar_holds_the_reported_dockerfile(names, content, mode):
    entries = [entry(n, n.encode()) for n in names] + [entry("Dockerfile", content)]
    try:
        ctx, dst = rewrite(make_tar(entries, mode))
    except BuildContextError:
        return
    dst.seek(0)
    with tarfile.open(fileobj=dst, mode="r:") as tar:
        assert tar.extractfile(ctx.dockerfile_path).read() == ctx.dockerfile == content


@pytest.mark.requires_docker
def test_dockerd_builds_from_the_reported_dockerfile():
    import docker
    marker = uuid.uuid4().hex
    df = f"FROM localbusybox:latest\nRUN echo {marker}\n".encode()
    path = make_tar([entry("./sub/Dockerfile", df), entry("dockerfile", b"FROM nope\n")],
                    mode="w:gz")
    ctx, dst = rewrite(path, "sub/Dockerfile")
    assert ctx.dockerfile == df
    dst.seek(0)
    api = docker.APIClient(base_url="unix:///var/run/docker.sock", version="1.41")
    stream = api.build(fileobj=dst, custom_context=True, dockerfile=ctx.dockerfile_path,
                       rm=True, forcerm=True, decode=True)
    output = "".join(chunk.get("stream", "") + chunk.get("error", "") for chunk in stream)
    assert f"RUN echo {marker}" in output and "Successfully built" in output, output


def test_stream_ending_right_after_the_last_members_data_is_a_clean_end():
    """The docker CLI's `-f -` contexts stop there; Go's reader ends cleanly, so must dsfw."""
    path = make_tar([entry("Dockerfile", DF), entry(".dockerignore", b"x" * 47)])
    with open(path, "rb") as f:
        raw = f.read()
    end_of_data = 512 + 512 + 512 + 47  # two headers, Dockerfile padded, then 47 bytes
    ctx, _ = rewrite(raw[:end_of_data])
    assert ctx.dockerfile == DF and ctx.members == 2
    ctx, _ = rewrite(gzip.compress(raw[:end_of_data]))
    assert ctx.members == 2
    for cut in (end_of_data + 1, end_of_data + 100, end_of_data - 1):  # part padding, part data
        with pytest.raises(CorruptContext):
            rewrite(raw[:cut])
