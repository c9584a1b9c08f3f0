"""The edge against real dockerd: refused bodies cost nothing, limits bite while bodies arrive,
websocket attach works with a real websocket client.

Uploads are sent by a raw AF_UNIX client that keeps writing while it reads
the answer, as the docker CLI does; what is checked is what the client sees
and what dsfw's process did on the host (bytes written to storage, open
temporary files).
"""
from __future__ import annotations

import io
import json
import os
import re
import select
import socket
import subprocess
import tarfile
import time

import pytest

from dsfw import routes
from dsfw.testing.e2e import DOCKER_SOCKET, _response_end, TEST_IMAGE, policy_dir, raw_request, unique_name

pytestmark = pytest.mark.requires_docker

# Every route whose body dockerd reads as a stream or a build context, from the one route table:
# a stream route added there is covered here (its query, if it needs one, below).
STREAM_ROUTES = tuple(e for e in routes.ENDPOINTS if e.body in (routes.STREAM, routes.BUILD))
_QUERIES = {"/containers/{id}/archive": "?path=%2Ftmp", "/images/create": "?fromSrc=-&repo=x",
            "/plugins/create": "?name=x", "/build": "?t=x"}
STREAM_TARGETS = [f"{e.method} /v1.41{re.sub(r'{[^}]*}', 'dsfw-none', e.template)}"
                  f"{_QUERIES.get(e.template, '')}".encode() for e in STREAM_ROUTES]
DENY_STREAMS = f"""
package docker.authz
import rego.v1

default allow := false
allow if not input.Route in {{{", ".join(json.dumps(e.template) for e in STREAM_ROUTES)}}}
"""
ALLOW_ALL = "package docker.authz\nallow := true\n"
BUILD_ALLOW = "package docker.build\nallow := true\n"

GIB = 1 << 30


def test_the_stream_routes_are_the_ones_issue_11_names():
    assert {(e.method, e.template) for e in STREAM_ROUTES} >= {
        ("PUT", "/containers/{id}/archive"), ("POST", "/images/load"), ("POST", "/images/create"),
        ("POST", "/plugins/create"), ("POST", "/build")}


def _io_written(pid: int) -> int:
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    raise AssertionError("no write_bytes in /proc/PID/io")


def _open_files(pid: int) -> list[str]:
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    # regular files other than dsfw's own output: a spool would be one (deleted or not)
    return [p for p in out if p.startswith("/") and not p.startswith(("/dev/", "/proc/"))
            and not p.endswith(".log")]


def upload(sock: str, head: bytes, total: int, chunked: bool = False,
           timeout: float = 30, first: bytes = b"", on_answer=None) -> tuple[bytes, int]:
    """Send ``head``, ``first`` and zeros, up to ``total`` body bytes, while reading.

    Returns (answer, bytes sent).  Stops sending once an answer has arrived or
    the server stopped reading; ``on_answer()`` is called then, the connection
    still open.
    """
    piece = bytes(64 << 10)
    frame = b"%x\r\n" % len(piece) + piece + b"\r\n" if chunked else piece
    pending = memoryview(head + (b"%x\r\n%s\r\n" % (len(first), first) if chunked and first
                                 else first))
    queued = len(first)  # body bytes handed to ``pending`` so far
    sent = 0
    answer = b""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(sock)
        s.setblocking(False)
        out_open = True
        while time.monotonic() < deadline:
            more = bool(pending) or queued < total
            wants_write = [s] if out_open and more and not answer else []
            readable, writable, _ = select.select([s], wants_write, [], 0.5)
            if readable:
                try:
                    data = s.recv(65536)
                except ConnectionResetError:
                    break
                if not data:
                    break
                answer += data
                if b"\r\n\r\n" in answer and not answer.startswith(b"HTTP/1.1 100 "):
                    head_end = answer.index(b"\r\n\r\n")
                    lengths = [ln for ln in answer[:head_end].split(b"\r\n")
                               if ln.lower().startswith(b"content-length:")]
                    if lengths and len(answer) >= head_end + 4 + int(lengths[0].split(b":")[1]):
                        if on_answer is not None:
                            on_answer()
                        break
            if writable:
                if not pending:
                    pending, queued = memoryview(frame), queued + len(piece)
                try:
                    n = s.send(pending)  # a partial send keeps the rest: framing stays whole
                    sent += n
                    pending = pending[n:]
                except (BrokenPipeError, ConnectionResetError):
                    out_open = False
                except BlockingIOError:
                    pass
            if not readable and not writable and not wants_write and not out_open:
                break
    return answer, sent


def _status(answer: bytes) -> int:
    while answer.startswith(b"HTTP/1.1 100 "):
        answer = answer.partition(b"\r\n\r\n")[2]
    return int(answer.split(b" ", 2)[1])


def _message(answer: bytes) -> str:
    return json.loads(answer.partition(b"\r\n\r\n")[2])["message"]


@pytest.fixture
def denying(dsfw_factory, tmp_path):
    """dsfw refusing every stream route, with a temporary directory of its own to watch."""
    spool = tmp_path / "tmpdir"
    spool.mkdir()
    proc = dsfw_factory(policy_dir(tmp_path, {"authz.rego": DENY_STREAMS,
                                              "build.rego": BUILD_ALLOW}),
                        env={"TMPDIR": str(spool)})
    proc.tmpdir = spool
    return proc


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
def test_denied_1gb_uploads_are_not_read_and_use_no_disk(denying, chunked):
    """On the filesystem: nothing in dsfw's own TMPDIR, no file open (an unlinked spool
    too) when it answers, and no bytes written to storage by its process."""
    written = _io_written(denying.pid)
    for target in STREAM_TARGETS:
        framing = b"Transfer-Encoding: chunked\r\n" if chunked else b"Content-Length: %d\r\n" % GIB
        head = (target + b" HTTP/1.1\r\nHost: docker\r\nContent-Type: application/x-tar\r\n"
                + framing + b"\r\n")
        started = time.monotonic()
        held: list[list[str]] = []
        answer, sent = upload(denying.socket, head, GIB, chunked,
                              on_answer=lambda: held.append(_open_files(denying.pid)))
        assert _status(answer) == 403, (target, answer[:300])
        assert "denied by policy" in _message(answer)
        assert sent < 64 << 20, f"{target!r}: the client could push {sent} bytes"
        assert time.monotonic() - started < 10
        assert held == [[]], (target, held)
        assert not _open_files(denying.pid)
        assert not list(denying.tmpdir.rglob("*")), target
    assert _io_written(denying.pid) - written < 1 << 20
    assert denying.alive()


def send_after_100(sock: str, head: bytes, body: bytes) -> bytes:
    """``head`` with ``Expect: 100-continue``; ``body`` once (only once) a ``100`` came; the answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(sock)
        s.sendall(head + b"Expect: 100-continue\r\n\r\n")
        assert s.recv(1000) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(body)
        reply = b""
        while _response_end(reply, 0) is None:
            data = s.recv(65536)
            assert data, reply
            reply += data
    return reply


@pytest.mark.parametrize("target", STREAM_TARGETS, ids=[t.decode() for t in STREAM_TARGETS])
def test_expect_100_continue_to_a_denied_endpoint_gets_no_100(denying, target):
    reply = raw_request(denying.socket, target + b" HTTP/1.1\r\nHost: docker\r\n"
                        b"Content-Type: application/x-tar\r\nContent-Length: 1000000\r\n"
                        b"Expect: 100-continue\r\n\r\n", timeout=5)
    assert reply.startswith(b"HTTP/1.1 403 "), reply
    assert b"100 Continue" not in reply
    assert b"Connection: close\r\n" in reply


def test_expect_100_continue_to_a_json_endpoint_the_policy_denies_on_its_head(dsfw):
    """The shipped policies read no body: a network create is refused before its body."""
    reply = raw_request(dsfw.socket, b"POST /v1.41/networks/create HTTP/1.1\r\nHost: docker\r\n"
                        b"Content-Type: application/json\r\nContent-Length: 1000000\r\n"
                        b"Expect: 100-continue\r\n\r\n", timeout=5)
    assert reply.startswith(b"HTTP/1.1 403 "), reply
    assert b"100 Continue" not in reply


def test_expect_100_continue_to_an_allowed_stream_gets_100_then_the_answer(limited, cat_container):
    """The ``100`` follows the allow, and only then is the archive read and relayed."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = b"sent after the 100\n"
        info = tarfile.TarInfo("dsfw-expect.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    body = buf.getvalue()
    reply = send_after_100(limited.socket, b"PUT /v1.41/containers/%s/archive?path=%%2F HTTP/1.1\r\n"
                           b"Host: docker\r\nContent-Type: application/x-tar\r\n"
                           b"Content-Length: %d\r\n" % (cat_container.encode(), len(body)), body)
    assert reply.startswith(b"HTTP/1.1 200 "), reply
    copied = subprocess.run(["docker", "-H", f"unix://{DOCKER_SOCKET}", "exec", cat_container,
                             "cat", "/dsfw-expect.txt"], capture_output=True, timeout=30)
    assert copied.stdout == b"sent after the 100\n", copied


def test_expect_100_continue_to_an_allowed_endpoint_gets_100_then_the_answer(denying):
    body = b'{"Image": "%s", "Cmd": ["true"]}' % TEST_IMAGE.encode()
    name = unique_name("dsfw-e2e-expect")
    reply = send_after_100(denying.socket, b"POST /v1.41/containers/create?name=%s HTTP/1.1\r\n"
                           b"Host: docker\r\nContent-Type: application/json\r\n"
                           b"Content-Length: %d\r\n" % (name.encode(), len(body)), body)
    try:
        assert reply.startswith(b"HTTP/1.1 201 "), reply
    finally:
        subprocess.run(["docker", "-H", f"unix://{DOCKER_SOCKET}", "rm", "-f", name],
                       capture_output=True)


@pytest.fixture
def limited(dsfw_factory, tmp_path):
    return dsfw_factory(policy_dir(tmp_path, {"authz.rego": ALLOW_ALL, "build.rego": BUILD_ALLOW}),
                        "--max-json-body", "100000", "--max-stream-body", str(4 << 20),
                        "--max-context-size", str(4 << 20))


def _tar_head(name: str, size: int = GIB, **pax: str) -> bytes:
    """The header of a tar member of ``size`` bytes whose data follows (zeros, 1 GB by default)."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.pax_headers = pax
    return info.tobuf(tarfile.PAX_FORMAT if pax else tarfile.USTAR_FORMAT)


# (request, first body bytes, what the refusal names): zeros follow, up to 1 GB
LIMITS = {
    "json": (b"POST /v1.41/containers/create", b"", "(--max-json-body)"),
    "context": (b"POST /v1.41/build?t=dsfw-e2e-limit", _tar_head("big"),
                "the build context is larger than 4194304 bytes"),
    "dockerfile": (b"POST /v1.41/build?t=dsfw-e2e-limit", _tar_head("Dockerfile"),
                   "than the limit of 1048576 bytes"),
    "tar header": (b"POST /v1.41/build?t=dsfw-e2e-limit",
                   _tar_head("a", 0, comment="x" * (2 << 20))[:2048], "exceeds the limit of"),
}


@pytest.mark.parametrize("limit", LIMITS)
def test_every_limit_answers_413_while_the_body_arrives(limited, limit):
    target, first, named = LIMITS[limit]
    content_type = b"application/json" if limit == "json" else b"application/x-tar"
    head = (target + b" HTTP/1.1\r\nHost: docker\r\nContent-Type: " + content_type
            + b"\r\nTransfer-Encoding: chunked\r\n\r\n")
    answer, sent = upload(limited.socket, head, GIB, chunked=True, first=first)
    assert _status(answer) == 413, answer[:300]
    assert named in _message(answer), _message(answer)
    assert sent < 64 << 20, sent  # refused while arriving, not after 1 GB
    assert limited.alive()


def test_max_json_body_raises_the_limit_above_16_mib(dsfw_factory, tmp_path):
    """Issue 11: the option was capped by the body canonicalizer's own 16 MiB."""
    env = [f"V{i}=" + "x" * 1000 for i in range(20_000)]
    body = json.dumps({"Image": "dsfw-e2e-no-such-image", "Env": env}).encode()
    assert len(body) > 18 << 20
    head = (b"POST /v1.41/containers/create HTTP/1.1\r\nHost: docker\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
    policies = policy_dir(tmp_path, {"authz.rego": ALLOW_ALL})
    for extra, status, named in (((), 413, "(--max-json-body)"),
                                 (("--max-json-body", str(32 << 20)), 404, "No such image")):
        proc = dsfw_factory(policies, *extra)
        answer, _ = upload(proc.socket, head, 0, first=body, timeout=120)
        assert _status(answer) == status, answer[:300]
        assert named in _message(answer), _message(answer)


def test_an_endless_request_head_is_431_while_it_arrives(limited):
    answer, sent = upload(limited.socket, b"GET /_ping HTTP/1.1\r\nX-Pad: ", GIB)
    assert _status(answer) == 431, answer[:300]
    assert "request head larger than 1048576 bytes" in _message(answer)
    assert sent < 64 << 20, sent
    assert limited.alive()


@pytest.mark.parametrize("route", [e for e in STREAM_ROUTES if e.body == routes.STREAM],
                         ids=lambda e: e.template)
def test_every_stream_route_answers_413_past_the_stream_limit(limited, cat_container, route):
    """Allowed and relayed as it arrives, cut at --max-stream-body: nothing half-imported.

    dockerd's side is aborted, not ended: an import or a plugin is not created from
    the cut stream.  (An archive extracts as it arrives, through dsfw or not: the
    first member's first bytes are in the container.)
    """
    name = unique_name("dsfw-e2e-cut")
    queries = {"/containers/{id}/archive": "?path=%2F", "/images/create": f"?fromSrc=-&repo={name}",
               "/plugins/create": f"?name={name}"}
    path = re.sub(r"{[^}]*}", cat_container, route.template) + queries.get(route.template, "")
    head = (f"{route.method} /v1.41{path} HTTP/1.1\r\nHost: docker\r\n"
            f"Content-Type: application/x-tar\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    answer, sent = upload(limited.socket, head, GIB, chunked=True, first=_tar_head("dsfw-cut"))
    assert _status(answer) == 413, answer[:300]
    assert "--max-stream-body" in _message(answer), _message(answer)
    assert sent < 64 << 20, sent
    docker = ["docker", "-H", f"unix://{DOCKER_SOCKET}"]
    images = subprocess.run(docker + ["images", "-q", name], capture_output=True, text=True)
    plugins = subprocess.run(docker + ["plugin", "ls", "--format", "{{.Name}}"],
                             capture_output=True, text=True)
    assert images.returncode == 0 and plugins.returncode == 0, images.stderr + plugins.stderr
    assert images.stdout.strip() == "" and name not in plugins.stdout
    assert limited.alive()


def test_declared_length_over_the_stream_limit_is_refused_before_reading(limited):
    reply = raw_request(limited.socket, b"POST /v1.41/images/load HTTP/1.1\r\nHost: docker\r\n"
                        b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % (5 << 20), timeout=5)
    assert reply.startswith(b"HTTP/1.1 413 "), reply
    assert b"100 Continue" not in reply


# --- websocket attach ------------------------------------------------------------------------

@pytest.fixture
def cat_container():
    name = unique_name("dsfw-e2e-ws")
    docker = ["docker", "-H", f"unix://{DOCKER_SOCKET}"]
    done = subprocess.run(docker + ["run", "-d", "-i", "--name", name, TEST_IMAGE, "cat"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    yield name
    subprocess.run(docker + ["rm", "-f", name], capture_output=True, timeout=60)


def test_websocket_attach_with_a_real_client(dsfw_factory, tmp_path, cat_container):
    """websocket-client (the library the docker SDK attaches with) over dsfw's socket."""
    import websocket
    proc = dsfw_factory(policy_dir(tmp_path, {"authz.rego": ALLOW_ALL}))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(proc.socket)
    ws = websocket.create_connection(
        f"ws://docker/v1.41/containers/{cat_container}/attach/ws?stream=1&stdin=1&stdout=1&stderr=1",
        socket=sock, timeout=10)
    try:
        assert ws.getstatus() == 101
        ws.send("hello through dsfw\n")
        seen = ""
        deadline = time.monotonic() + 10
        while "hello through dsfw\n" not in seen and time.monotonic() < deadline:
            data = ws.recv()
            seen += data.decode() if isinstance(data, bytes) else data
        assert "hello through dsfw\n" in seen
        ws.send("and back again\n")  # the session stays up both ways
        seen = ""
        while "and back again\n" not in seen and time.monotonic() < deadline:
            data = ws.recv()
            seen += data.decode() if isinstance(data, bytes) else data
        assert "and back again\n" in seen
    finally:
        ws.close()


def test_websocket_upgrade_only_where_dockerd_speaks_it(dsfw_factory, tmp_path):
    proc = dsfw_factory(policy_dir(tmp_path, {"authz.rego": ALLOW_ALL}))
    for request in [
        b"POST /v1.41/exec/x/start HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Content-Length: 0\r\n\r\n",
        b"GET /v1.41/containers/x/attach/ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n",
    ]:
        reply = raw_request(proc.socket, request, responses=1, timeout=5)
        assert reply.startswith(b"HTTP/1.1 400 "), reply
        assert b"does not accept a connection upgrade" in reply


def test_http10_keep_alive_as_go_does_it(dsfw_factory, tmp_path):
    proc = dsfw_factory(policy_dir(tmp_path, {"authz.rego": ALLOW_ALL}))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(proc.socket)
        for _ in range(2):  # the same connection serves both
            s.sendall(b"GET /_ping HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            reply = b""
            while not reply.endswith(b"OK"):
                data = s.recv(65536)
                assert data, reply
                reply += data
            assert reply.startswith(b"HTTP/1.1 200 "), reply
            assert b"\r\nConnection: keep-alive\r\n" in reply
    reply = raw_request(proc.socket, b"GET /_ping HTTP/1.0\r\n\r\n", timeout=5)  # until closed
    assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(b"OK")
    assert b"keep-alive" not in reply.lower()
