"""End to end with the Python docker SDK: ``docker.DockerClient`` -> dsfw (twistd) -> dockerd.

The SDK speaks the API differently from the CLI (requests over a UNIX
adapter, its own hijack for exec/attach sockets), so the core workflows are
run again this way.  dsfw runs the repo's shipped ``policies/``.
"""
from __future__ import annotations

import io
import os
import socket
import tarfile
import time

import pytest

from dsfw.testing.e2e import DOCKER_SOCKET, TEST_IMAGE, requires_docker, unique_name

docker = pytest.importorskip("docker")

pytestmark = requires_docker


@pytest.fixture
def client(dsfw):
    c = docker.DockerClient(base_url="unix://" + dsfw.socket, timeout=60)
    yield c
    c.close()


@pytest.fixture
def direct():
    """A client on dockerd's own socket, to check what really happened."""
    c = docker.DockerClient(base_url="unix://" + DOCKER_SOCKET, timeout=60)
    yield c
    c.close()


@pytest.fixture
def container(client, direct):
    name = unique_name()
    c = client.containers.run(TEST_IMAGE, ["sh", "-c", "echo started; exec sleep 120"],
                              name=name, detach=True)
    yield c
    try:
        direct.containers.get(name).remove(force=True)
    except docker.errors.NotFound:
        pass


def test_version_and_ping(client, direct):
    assert client.ping() is True
    assert client.version()["Version"] == direct.version()["Version"]


def test_run_returns_output(client):
    out = client.containers.run(TEST_IMAGE, ["echo", "hello"], remove=True)
    assert out == b"hello\n"


def test_run_failure_is_container_error(client):
    with pytest.raises(docker.errors.ContainerError) as info:
        client.containers.run(TEST_IMAGE, ["sh", "-c", "exit 4"], remove=True)
    assert info.value.exit_status == 4


def test_detached_logs_stream_stop_remove(client, direct, container):
    stream = client.api.logs(container.id, stream=True, follow=True)
    try:
        seen, deadline = b"", time.monotonic() + 20
        for chunk in stream:  # bounded: the container prints 'started' at once
            seen += chunk
            if b"started" in seen or time.monotonic() > deadline:
                break
        assert b"started" in seen
    finally:
        stream.close()
    container.stop(timeout=1)
    assert direct.containers.get(container.id).status == "exited"
    container.remove()
    with pytest.raises(docker.errors.NotFound):
        direct.containers.get(container.id)


def test_logs_stream_ends_with_the_container(client, direct):
    name = unique_name()
    c = client.containers.run(TEST_IMAGE, ["sh", "-c", "echo one; sleep 1; echo two"],
                              name=name, detach=True)
    try:
        started = time.monotonic()
        lines = list(c.logs(stream=True, follow=True))
        assert b"".join(lines) == b"one\ntwo\n"
        assert time.monotonic() - started < 30
    finally:
        direct.containers.get(name).remove(force=True)


def test_exec_run(container):
    result = container.exec_run(["echo", "hi"])
    assert (result.exit_code, result.output) == (0, b"hi\n")
    assert container.exec_run(["false"]).exit_code == 1


def _read_frames(sock: socket.socket, deadline: float) -> bytes:
    """Demultiplex Docker's 8-byte-header stream frames until EOF; stdout only."""
    raw = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            break
        raw += chunk
    else:
        raise AssertionError(f"no EOF from the exec socket before the deadline; got {raw!r}")
    out, pos = b"", 0
    while pos + 8 <= len(raw):
        kind, size = raw[pos], int.from_bytes(raw[pos + 4:pos + 8], "big")
        if kind == 1:
            out += raw[pos + 8:pos + 8 + size]
        pos += 8 + size
    assert pos == len(raw), f"truncated frame in {raw!r}"
    return out


def test_exec_stdin_half_close(client, container):
    exec_id = client.api.exec_create(container.id, ["cat"], stdin=True)["Id"]
    sock_wrapper = client.api.exec_start(exec_id, socket=True)
    sock = getattr(sock_wrapper, "_sock", sock_wrapper)
    try:
        sock.sendall(b"through the half-close\n")
        sock.shutdown(socket.SHUT_WR)  # cat exits only on EOF
        out = _read_frames(sock, time.monotonic() + 30)
    finally:
        sock.close()
    assert out == b"through the half-close\n"
    assert client.api.exec_inspect(exec_id)["ExitCode"] == 0


def test_put_and_get_archive(container):
    payload = os.urandom(300_000)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("payload.bin")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    assert container.put_archive("/", buf.getvalue()) is True
    stream, stat = container.get_archive("/payload.bin")
    assert stat["size"] == len(payload)
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        assert tar.extractfile("payload.bin").read() == payload


def test_image_save_load(client, direct):
    tag = unique_name("dsfw-e2e-sdk") + ":rt"
    repo, _, version = tag.partition(":")
    image = client.images.get(TEST_IMAGE)
    assert image.tag(repo, version)
    try:
        archive = b"".join(client.images.get(tag).save(named=True))
        client.images.remove(tag)
        with pytest.raises(docker.errors.ImageNotFound):
            direct.images.get(tag)
        loaded = client.images.load(archive)
        assert [i.id for i in loaded] == [image.id]
        assert direct.images.get(tag).id == image.id
    finally:
        try:
            direct.images.remove(tag)
        except docker.errors.ImageNotFound:
            pass


def test_events_until(client, direct):
    name = unique_name()
    since = int(time.time()) - 1
    client.volumes.create(name).remove()
    started = time.monotonic()
    events = list(client.events(since=since, until=int(time.time()) + 2, decode=True,
                                filters={"type": "volume"}))
    assert time.monotonic() - started < 30
    actions = [e["Action"] for e in events if e.get("Actor", {}).get("ID") == name]
    assert actions == ["create", "destroy"], events


def test_volumes(client, direct):
    name = unique_name()
    volume = client.volumes.create(name, labels={"dsfw-e2e": "1"})
    try:
        assert direct.volumes.get(name).attrs["Labels"] == {"dsfw-e2e": "1"}
        assert name in [v.name for v in client.volumes.list()]
    finally:
        volume.remove()
    with pytest.raises(docker.errors.NotFound):
        direct.volumes.get(name)


def test_network_create_refused(client, direct):
    name = unique_name()
    try:
        with pytest.raises(docker.errors.APIError) as info:
            client.networks.create(name)
        assert info.value.status_code == 403
        assert info.value.explanation.startswith("dsfw: ")
        assert "data.docker.authz.allow" in info.value.explanation
        assert direct.networks.list(names=[name]) == []
    finally:
        for net in direct.networks.list(names=[name]):
            net.remove()
    assert "bridge" in [n.name for n in client.networks.list()]
