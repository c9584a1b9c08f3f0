"""Shared helpers for the end-to-end tests: a real ``twistd dsfw`` in front of a real dockerd.

Import what you need from ``dsfw.testing.e2e`` in a test module; the fixtures are
made visible to every test by ``tests/conftest.py``. Needs pytest (the test extras).

Fixtures
    ``dsfw_factory``  -- ``start(policy_dir=SHIPPED_POLICIES, *extra_args, target=DOCKER_SOCKET,
                          host=None, env=None)`` starts one more dsfw and returns a :class:`DsfwProcess`;
                          every process it started is killed at teardown.
    ``dsfw``          -- one dsfw with the repo's ``policies/`` in front of the real dockerd
                          (the test is failed or skipped as :data:`requires_docker` says).

Functions and values
    :class:`DsfwProcess` (``.socket``, ``.pid``, ``.log_text()``, ``.stop()``, ``.alive()``,
    ``.returncode``); :func:`docker_cli` (the real CLI on a socket); :func:`raw_request` and
    :func:`split_responses` (raw HTTP over AF_UNIX); :func:`policy_dir`; :func:`unique_name`;
    :func:`require_root` (callers as other uids);
    :data:`TEST_IMAGE` (env ``DSFW_TEST_IMAGE``, default ``localbusybox:latest``);
    :data:`DOCKER_SOCKET`, :data:`SHIPPED_POLICIES`, :data:`REPO_ROOT`;
    :data:`TWISTD` + :func:`dsfw_args` + :func:`subprocess_env` to run twistd yourself
    (e.g. daemonized); :data:`requires_docker`, a marker that skips without dockerd, the
    docker CLI or the test image -- but *fails* when ``CI`` is set, because CI exists to
    run these tests (:func:`require_docker` does the same from inside a test or fixture).

Everything here is bounded in time: a hung dsfw or dockerd fails a test, it never hangs the run.
"""
from __future__ import annotations

import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout dsfw runs from
SHIPPED_POLICIES = REPO_ROOT / "policies"
DOCKER_SOCKET = "/var/run/docker.sock"
TEST_IMAGE = os.environ.get("DSFW_TEST_IMAGE", "localbusybox:latest")

#: Mark tests that need dockerd at :data:`DOCKER_SOCKET` (and the docker CLI when they call it).
requires_docker = pytest.mark.requires_docker

# twistd's own entry point; ``python -m twisted`` is ``twist``, which has no -n or --pidfile.
TWISTD = [sys.executable, "-c",
          "import sys; sys.argv[0] = 'twistd'; from twisted.scripts.twistd import run; run()"]
START_TIMEOUT = 20.0


def docker_unavailable_reason() -> str | None:
    """Why the Docker end-to-end tests cannot run here, or None if they can."""
    if not os.path.exists(DOCKER_SOCKET):
        return f"no dockerd socket at {DOCKER_SOCKET}"
    if shutil.which("docker") is None:
        return "the docker CLI is not on PATH"
    if not _image_present(DOCKER_SOCKET, TEST_IMAGE):
        return f"the test image {TEST_IMAGE} is missing (.ci/run shows how to docker import one)"
    return None


@functools.lru_cache(maxsize=None)
def _image_present(sock: str, image: str) -> bool:
    try:
        reply = raw_request(sock, f"GET /images/{image}/json HTTP/1.1\r\nHost: docker\r\n"
                            f"Connection: close\r\n\r\n".encode(), responses=1, timeout=10)
    except OSError:
        return False
    return reply.startswith(b"HTTP/1.1 200 ")


def require_docker() -> None:
    """Skip the current test without Docker -- or fail it when ``CI`` is set."""
    reason = docker_unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, so Docker end-to-end tests must run, but {reason}", pytrace=False)
    pytest.skip(f"Docker end-to-end test skipped: {reason}")


def require_root(why: str) -> None:
    """Skip a test that needs root (callers as other uids) -- or fail it when ``CI`` is set,
    because CI runs as root and such a test skipped there would test nothing."""
    missing = [p for p in ("useradd", "runuser") if shutil.which(p) is None]
    if os.geteuid() == 0 and not missing and os.path.exists("/usr/bin/python3"):
        return
    reason = f"needs root, useradd, runuser and /usr/bin/python3 ({why})"
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, so this test must run, but it {reason}", pytrace=False)
    pytest.skip(reason)


def unique_name(prefix: str = "dsfw-e2e") -> str:
    """A docker object name no other test run uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def subprocess_env(**extra: str) -> dict[str, str]:
    """This environment with the repo first on PYTHONPATH, so twistd finds the repo's plugin."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def docker_cli(sock: str | os.PathLike, *args: str, input: bytes | str | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the real docker CLI against ``sock``; output is captured as text, never raises on rc.

    A timeout raises :class:`subprocess.TimeoutExpired` (the CLI is killed), which fails the test.
    """
    env = dict(os.environ, DOCKER_HOST=f"unix://{sock}", DOCKER_BUILDKIT="0")
    env.pop("DOCKER_CONTEXT", None)
    if isinstance(input, str):
        input = input.encode()
    proc = subprocess.run(["docker", *args], input=input, capture_output=True, env=env,
                          timeout=timeout, stdin=None if input is not None else subprocess.DEVNULL)
    return subprocess.CompletedProcess(proc.args, proc.returncode,
                                       proc.stdout.decode("utf-8", "replace"),
                                       proc.stderr.decode("utf-8", "replace"))


def policy_dir(tmp_path: Path, files: dict[str, str], name: str = "policies") -> Path:
    """Write ``{"a.rego": source, ...}`` into a fresh directory under ``tmp_path``."""
    directory = tmp_path / name
    directory.mkdir()
    for filename, text in files.items():
        (directory / filename).write_text(text)
    return directory


# --- raw HTTP over AF_UNIX -------------------------------------------------------------------

def _response_end(buf: bytes, start: int) -> int | None:
    """Offset just past the HTTP response starting at ``start``, or None if incomplete.

    Knows Content-Length, chunked bodies and the bodiless statuses; a response
    with neither length nor chunking runs to the close (returns None).
    """
    head_end = buf.find(b"\r\n\r\n", start)
    if head_end < 0:
        return None
    head = buf[start:head_end].decode("latin-1").split("\r\n")
    pos = head_end + 4
    try:
        status = int(head[0].split(" ", 2)[1])
    except (IndexError, ValueError):
        raise AssertionError(f"not an HTTP status line: {head[0]!r}") from None
    headers = {}
    for line in head[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    if 100 <= status < 200 or status in (204, 304):
        return pos
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            line_end = buf.find(b"\r\n", pos)
            if line_end < 0:
                return None
            size = int(buf[pos:line_end].split(b";")[0], 16)
            pos = line_end + 2
            if size == 0:
                trailer_end = buf.find(b"\r\n\r\n", pos - 2)
                return None if trailer_end < 0 else trailer_end + 4
            pos += size + 2
            if pos > len(buf):
                return None
    if "content-length" in headers:
        end = pos + int(headers["content-length"])
        return end if end <= len(buf) else None
    return None


def raw_request(sock: str | os.PathLike, data: bytes, responses: int | None = None,
                timeout: float = 10) -> bytes:
    """Send ``data`` as is over AF_UNIX and return what came back.

    With ``responses=None`` read until the server closes; with ``responses=n``
    stop once n complete HTTP responses have arrived (or the server closed).
    Raises ``TimeoutError`` (``socket.timeout``) if the server is silent for ``timeout`` s.
    """
    deadline = time.monotonic() + timeout
    buf = b""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(os.fspath(sock))
        s.sendall(data)
        while True:
            if responses is not None:
                count, pos = 0, 0
                while count < responses:
                    end = _response_end(buf, pos)
                    if end is None:
                        break
                    count, pos = count + 1, end
                if count >= responses:
                    return buf
            s.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = s.recv(65536)
            if not chunk:
                return buf
            buf += chunk


def split_responses(buf: bytes) -> list[bytes]:
    """Split back-to-back HTTP responses (each with a known length) into a list."""
    out, pos = [], 0
    while pos < len(buf):
        end = _response_end(buf, pos)
        if end is None:
            out.append(buf[pos:])
            break
        out.append(buf[pos:end])
        pos = end
    return out


# --- the dsfw process ------------------------------------------------------------------------

class DsfwStartError(AssertionError):
    """dsfw exited or never answered on its socket; carries the process output."""


class DsfwProcess:
    """One ``twistd -n dsfw`` subprocess, its output going to a file."""

    def __init__(self, args: list[str], socket_path: Path, log_path: Path,
                 env: dict[str, str] | None = None):
        self.socket = str(socket_path)
        self.args = args
        self._log_path = log_path
        self._log_file = open(log_path, "wb")
        self._proc = subprocess.Popen(TWISTD + args, stdin=subprocess.DEVNULL,
                                      stdout=self._log_file, stderr=subprocess.STDOUT,
                                      env=subprocess_env(**(env or {})), cwd=str(log_path.parent))
        self.pid = self._proc.pid

    def log_text(self) -> str:
        """Everything the process printed so far (stdout and stderr)."""
        self._log_file.flush()
        return self._log_path.read_text("utf-8", "replace")

    def alive(self) -> bool:
        return self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll()

    def wait_ready(self, timeout: float = START_TIMEOUT) -> "DsfwProcess":
        """Wait until the socket answers HTTP (any status: a 502 is an answer too)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if not self.alive():
                raise DsfwStartError(f"dsfw exited with {self.returncode} before answering; "
                                     f"output:\n{self.log_text()}")
            if os.path.exists(self.socket):
                try:
                    reply = raw_request(self.socket, b"GET /_ping HTTP/1.1\r\nHost: dsfw\r\n"
                                        b"Connection: close\r\n\r\n", responses=1, timeout=2)
                    if reply.startswith(b"HTTP/1."):
                        return self
                    last = reply
                except OSError as e:
                    last = e
            time.sleep(0.05)
        self.stop()
        raise DsfwStartError(f"dsfw did not answer on {self.socket} within {timeout}s "
                             f"(last: {last!r}); output:\n{self.log_text()}")

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM, then SIGKILL after ``timeout`` s; returns the exit status."""
        if self.alive():
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout)
        self._log_file.close()
        return self._proc.returncode


def dsfw_args(host: str | os.PathLike, policy_dir: str | os.PathLike,
              target: str | os.PathLike = DOCKER_SOCKET, *extra: str) -> list[str]:
    """twistd's arguments for a foreground dsfw (no pidfile, so instances can run side by side).

    Logs in the console format (the default, ``auto``, writes JSON lines to a file), so
    tests can look for ``key=value`` in :meth:`DsfwProcess.log_text`.
    """
    return ["-n", "--pidfile=", "dsfw", "--host", os.fspath(host), "--target", os.fspath(target),
            "--policyDir", os.fspath(policy_dir), "--log-format", "console", *extra]


@pytest.fixture
def dsfw_factory(tmp_path: Path) -> Iterator[Callable[..., DsfwProcess]]:
    """``start(policy_dir=SHIPPED_POLICIES, *extra_args, target=..., host=..., wait=True, env=None)``.

    ``env`` adds to the process's environment (``TMPDIR`` to watch where it could spool).
    """
    started: list[DsfwProcess] = []

    def start(policy_dir: str | os.PathLike = SHIPPED_POLICIES, *extra: str,
              target: str | os.PathLike = DOCKER_SOCKET, host: str | os.PathLike | None = None,
              wait: bool = True, env: dict[str, str] | None = None) -> DsfwProcess:
        n = len(started)
        # AF_UNIX paths are limited to 107 bytes: pytest's tmp_path can be longer than that.
        if host is None:
            host = tmp_path / f"dsfw{n}.sock"
            if len(os.fsencode(host)) > 100:
                host = Path(tempfile.mkdtemp(prefix="dsfw-e2e-")) / "dsfw.sock"
        proc = DsfwProcess(dsfw_args(host, policy_dir, target, *extra), Path(host),
                           tmp_path / f"dsfw{n}.log", env)
        started.append(proc)
        return proc.wait_ready() if wait else proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def dsfw(dsfw_factory) -> DsfwProcess:
    """dsfw with the repo's shipped ``policies/`` (allow all but network creation)."""
    require_docker()
    return dsfw_factory(SHIPPED_POLICIES)
