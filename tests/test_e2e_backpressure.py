"""A slow reader pauses dockerd through dsfw instead of filling dsfw's memory."""
from __future__ import annotations

import io
import os
import socket
import subprocess
import tarfile
import time

import pytest

from dsfw.testing.e2e import DOCKER_SOCKET, docker_cli, unique_name

pytestmark = pytest.mark.requires_docker

SIZE = 64 << 20


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
def big_image():
    """An image with one 64 MB layer of incompressible bytes, made with docker import."""
    name = unique_name("dsfw-e2e-big") + ":1"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("blob")
        info.size = SIZE
        tar.addfile(info, io.BytesIO(os.urandom(SIZE)))
    done = subprocess.run(["docker", "-H", f"unix://{DOCKER_SOCKET}", "import", "-", name],
                          input=buf.getvalue(), capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    yield name
    docker_cli(DOCKER_SOCKET, "rmi", "-f", name)


def test_slow_reader_of_an_image_save_does_not_grow_dsfw(dsfw, big_image):
    with socket.socket(socket.AF_UNIX) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        s.settimeout(30)
        s.connect(dsfw.socket)
        s.sendall(f"GET /v1.41/images/{big_image}/get HTTP/1.1\r\nHost: d\r\n"
                  f"Connection: close\r\n\r\n".encode())
        got = s.recv(65536)
        assert got.startswith(b"HTTP/1.1 200"), got[:200]
        before = _rss_kb(dsfw.pid)
        time.sleep(3)  # dockerd has 64 MB to send; a relay without backpressure would buffer it
        grown_mb = (_rss_kb(dsfw.pid) - before) / 1024
        assert grown_mb < 24, f"dsfw grew by {grown_mb:.0f} MB while its client did not read"
        total = len(got)
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            total += len(chunk)
    assert total > SIZE  # the whole tarball arrived once the reader caught up
