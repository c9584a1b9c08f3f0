"""End to end: a build context goes on to dockerd while it arrives, once its Dockerfile is judged.

Raw HTTP sends a context piece by piece and watches dockerd's own unpacking
directory (``<DockerRootDir>/tmp/docker-builder*``, where the classic builder
untars the context before it builds): a large file behind the Dockerfile
appears there while the client still holds back the rest.  A member that
would change the judged Dockerfile, sent after that, is refused by dsfw and
the upstream request aborted: dockerd's untar fails and no image is built.
"""
from __future__ import annotations

import glob
import json
import os
import socket
import tarfile
import time
from urllib.parse import urlencode

import pytest

from dsfw.testing.e2e import (DOCKER_SOCKET, SHIPPED_POLICIES, TEST_IMAGE, docker_cli,
                              requires_docker, unique_name)
from tests.test_e2e_build import BUILD_TIMEOUT, builds, image_exists  # noqa: F401 (fixture)

pytestmark = requires_docker

BIG = 64 << 20
HELD_BACK = 8 << 20  # the client sends all but this much of the big file, then waits
SEEN_TIMEOUT = 60


def member(name: str, data: bytes = b"", kind=tarfile.REGTYPE, link: str = "",
           size: int | None = None) -> bytes:
    """One tar member: header, and the data padded when it is given."""
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    info.size = len(data) if size is None else size
    head = info.tobuf(tarfile.USTAR_FORMAT)
    if size is not None:
        return head
    return head + data + bytes(-len(data) % tarfile.BLOCKSIZE)


def builder_copy(marker: str) -> list[str]:
    root = docker_cli(DOCKER_SOCKET, "info", "-f", "{{.DockerRootDir}}").stdout.strip()
    return glob.glob(os.path.join(root or "/var/lib/docker", "tmp", "docker-builder*", marker))


def wait_until_dockerd_unpacks(marker: str) -> None:
    deadline = time.monotonic() + SEEN_TIMEOUT
    while time.monotonic() < deadline:
        found = builder_copy(marker)
        if found and any(os.path.getsize(p) > 0 for p in found if os.path.exists(p)):
            return
        time.sleep(0.2)
    raise AssertionError(f"dockerd never started unpacking {marker} while the client held back "
                         "the rest of the context: dsfw did not stream it")


class HeldUpload:
    """A ``POST /build`` whose context is sent in parts, the rest when the test says."""

    def __init__(self, sock: str, query: str, total: int):
        self._s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._s.settimeout(BUILD_TIMEOUT)
        self._s.connect(sock)
        self._s.sendall(b"POST /v1.41/build?%s HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n"
                        b"Content-Type: application/x-tar\r\nContent-Length: %d\r\n\r\n"
                        % (query.encode(), total))

    def send(self, data: bytes) -> None:
        self._s.sendall(data)

    def send_zeros(self, count: int) -> None:
        piece = bytes(1 << 20)
        while count > 0:
            self._s.sendall(piece[:min(count, len(piece))])
            count -= len(piece)

    def answer(self) -> tuple[int, bytes]:
        buf = b""
        try:
            while True:
                chunk = self._s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        finally:
            self._s.close()
        status = int(buf.split(b" ", 2)[1]) if buf.startswith(b"HTTP/1.1 ") else 0
        return status, buf


def labelled_images(marker: str) -> str:
    return docker_cli(DOCKER_SOCKET, "images", "-a", "-q", "--filter",
                      f"label=dsfw.e2e={marker}").stdout.strip()


def start_upload(dsfw, builds, head: bytes, tail: bytes, dockerfile: str | None = None):
    """Send ``head``, a big file, and wait until dockerd unpacks it; ``tail`` is not sent yet."""
    marker = unique_name("big")
    tag = builds.tag()
    query = {"t": tag, "labels": json.dumps({"dsfw.e2e": marker})}
    if dockerfile:
        query["dockerfile"] = dockerfile
    upload = HeldUpload(dsfw.socket, urlencode(query), len(head) + 512 + BIG + len(tail) + 1024)
    upload.send(head + member(marker, size=BIG))
    upload.send_zeros(BIG - HELD_BACK)
    wait_until_dockerd_unpacks(marker)
    upload.send_zeros(HELD_BACK)
    return upload, tag, marker


GOOD = f"FROM {TEST_IMAGE}\nRUN echo judged\n".encode()
EVIL = f"FROM {TEST_IMAGE}\nRUN echo not-judged\n".encode()


def test_a_large_context_reaches_dockerd_before_the_client_sent_it_all(dsfw, builds):
    upload, tag, marker = start_upload(dsfw, builds, member("Dockerfile", GOOD),
                                       member("after", b"x" * 1000))
    upload.send(member("after", b"x" * 1000) + bytes(1024))
    status, answer = upload.answer()
    assert status == 200 and b"Successfully built" in answer, answer[-2000:]
    assert b"RUN echo judged" in answer
    assert image_exists(tag) and labelled_images(marker)


@pytest.mark.parametrize("head, tail, dockerfile, reason", [
    # a second Dockerfile after the judged one: dockerd would unpack it over the first
    (member("Dockerfile", GOOD), member("./Dockerfile", EVIL), None, "more than one entry"),
    # the judged path's directory swapped for a symlink to another Dockerfile
    (member("sub/Dockerfile", GOOD),
     member("evil/Dockerfile", EVIL) + member("sub", kind=tarfile.SYMTYPE, link="evil"),
     "sub/Dockerfile", "would replace a directory"),
    # the lower-case fallback judged, then the name dockerd prefers arrives
    (member("dockerfile", GOOD), member("Dockerfile", EVIL), None,
     "changes which Dockerfile the build uses"),
])
def test_a_later_member_changing_the_judged_dockerfile_is_refused_and_nothing_is_built(
        dsfw, builds, head, tail, dockerfile, reason):
    upload, tag, marker = start_upload(dsfw, builds, head, tail, dockerfile)
    upload.send(tail + bytes(1024))
    status, answer = upload.answer()
    assert status == 400, answer[-2000:]
    body = answer.split(b"\r\n\r\n", 1)[1]
    assert json.loads(body)["message"].startswith("dsfw: ") and reason in body.decode(), body
    assert not image_exists(tag) and not labelled_images(marker)
    deadline = time.monotonic() + 30  # dockerd's untar failed: it removes its copy
    while builder_copy(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not builder_copy(marker)
    assert "request.refused" in dsfw.log_text() and dsfw.alive()


def test_cli_stdin_context_with_a_late_duplicate_dockerfile_is_refused(dsfw, builds):
    context = (member("Dockerfile", GOOD) + member("pad", os.urandom(12 << 20))
               + member("Dockerfile", EVIL) + bytes(1024))
    tag = builds.tag()
    done = docker_cli(dsfw.socket, "build", "-t", tag, "-", input=context, timeout=BUILD_TIMEOUT)
    assert done.returncode != 0 and "dsfw: " in done.stderr, done
    assert "more than one entry named 'Dockerfile'" in done.stderr, done.stderr
    assert not image_exists(tag)


def test_cli_dockerignore_listing_the_dockerfile_builds_the_judged_one(dsfw, builds):
    """dockerd reads the Dockerfile before it applies .dockerignore (which then only drops it
    from what COPY sees): the judged file is the one built."""
    tag = builds.built(dsfw.socket, {
        "Dockerfile": f"FROM {TEST_IMAGE}\nCOPY . /ctx/\n"
                      "RUN test -e /ctx/keep && test ! -e /ctx/Dockerfile\n",
        ".dockerignore": "Dockerfile\n", "keep": "x"})
    assert image_exists(tag)


def test_contexts_waiting_for_their_dockerfile_share_a_bounded_spool(dsfw_factory, builds):
    """A context spooled until its (late) Dockerfile counts against --max-build-spool: beyond
    it, 503 while it arrives; the place is given back, and a settled build streams on."""
    from tests.test_e2e_edge import _message, _status, upload
    proxy = dsfw_factory(SHIPPED_POLICIES, "--max-build-spool", str(8 << 20))
    head = (f"POST /v1.41/build?t={builds.tag()} HTTP/1.1\r\nHost: docker\r\n"
            f"Content-Type: application/x-tar\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    # "Assets" sorts before "Dockerfile": 1 GB of it would be spooled before the decision
    answer, sent = upload(proxy.socket, head, 1 << 30, chunked=True,
                          first=member("Assets", size=1 << 30))
    assert _status(answer) == 503, answer[:300]
    assert "waiting for their Dockerfile already hold" in _message(answer)
    assert sent < 64 << 20, sent
    tag = builds.tag()
    context = member("Dockerfile", GOOD) + member("Assets", bytes(16 << 20)) + bytes(1024)
    held = HeldUpload(proxy.socket, urlencode({"t": tag}), len(context))
    held.send(context)
    status, body = held.answer()
    assert status == 200 and image_exists(tag), body[-500:]
