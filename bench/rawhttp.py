"""Minimal HTTP/1.1 over AF_UNIX for the benchmark's bulk transfers and set-up.

Why not http.client or the docker SDK: the bulk scenarios must stream 2 GB
without holding it, count body bytes without storing them, and keep the
client's cost per byte at a memcpy into the kernel; small requests go through
the C load generator (loadgen.c) instead.
"""
import socket
import tarfile
import time

_BUF = 1 << 20
_PATTERN = bytes(range(256)) * (_BUF // 256)  # not zeros: nothing may shortcut it


class HTTPError(Exception):
    """The target answered with something the benchmark cannot use."""


def connect(path, timeout=600.0):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(path)
    return sock


class Response:
    """Status, lower-cased headers, body size, and the first 64 kB of the body."""

    def __init__(self, status, headers, size, head):
        self.status = status
        self.headers = headers
        self.size = size
        self.head = head

    def json_lines_error(self):
        """Docker streams build/pull errors inside a 200 response."""
        if b'"errorDetail"' in self.head or b'"error"' in self.head:
            return self.head[:300].decode("utf-8", "replace")
        return None


def _send_head(sock, method, path, headers):
    lines = [f"{method} {path} HTTP/1.1", "Host: docker", "User-Agent: dsfw-bench"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))


def read_response(reader, keep=65536):
    """Read one response from a buffered reader, counting (not storing) the body."""
    status_line = reader.readline()
    if not status_line:
        raise HTTPError("connection closed before a response")
    try:
        status = int(status_line.split()[1])
    except (IndexError, ValueError):
        raise HTTPError(f"bad status line {status_line[:100]!r}") from None
    headers = {}
    while True:
        line = reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    head = bytearray()
    buf = bytearray(_BUF)
    view = memoryview(buf)

    def consume(n):
        left = n
        while left:
            got = reader.readinto(view[: min(left, _BUF)])
            if not got:
                raise HTTPError("connection closed inside the body")
            if len(head) < keep:
                head.extend(view[: min(got, keep - len(head))])
            left -= got
        return n

    size = 0
    if status in (204, 304) or status < 200:
        pass
    elif "content-length" in headers:
        size = consume(int(headers["content-length"]))
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            line = reader.readline()
            chunk = int(line.split(b";")[0].strip() or b"0", 16)
            if chunk == 0:
                while reader.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                break
            size += consume(chunk)
            reader.readline()  # CRLF after the chunk
    else:
        while True:  # body delimited by close
            got = reader.readinto(view)
            if not got:
                break
            size += got
    return Response(status, headers, size, bytes(head))


def request(path_sock, method, path, body=b"", headers=None):
    """One request on a fresh connection, for set-up and clean-up."""
    headers = dict(headers or {})
    with connect(path_sock, timeout=60) as sock:
        if body or method in ("POST", "PUT"):
            headers["Content-Length"] = str(len(body))
        _send_head(sock, method, path, headers)
        if body:
            sock.sendall(body)
        with sock.makefile("rb", buffering=_BUF) as reader:
            return read_response(reader)


def _tar_header(name, size):
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = 1_700_000_000
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def _padding(size):
    return b"\0" * (-size % 512)


def _pattern_bytes(size):
    while size:
        n = min(size, _BUF)
        yield _PATTERN if n == _BUF else _PATTERN[:n]
        size -= n


def tar_stream(members):
    """(length, iterator of chunks) of a tar made on the fly.

    `members` is a list of (name, bytes) or (name, size): a size stands for a
    file of that many pattern bytes, so a 2 GB tar costs no disk and no memory.
    """
    length = 1024
    for _, content in members:
        size = content if isinstance(content, int) else len(content)
        length += 512 + size + (-size % 512)

    def chunks():
        for name, content in members:
            size = content if isinstance(content, int) else len(content)
            yield _tar_header(name, size)
            if isinstance(content, int):
                yield from _pattern_bytes(size)
            else:
                yield content
            yield _padding(size)
        yield b"\0" * 1024

    return length, chunks()


def build_context(big_size, base_image):
    """A build context: the Dockerfile first (cheap for a policy to find), then a big file."""
    dockerfile = f"FROM {base_image}\n".encode()
    return tar_stream([("Dockerfile", dockerfile), ("big.bin", big_size)])


def timed_upload(path_sock, method, path, length, chunks, content_type):
    """Stream a body, read the whole response; returns (seconds, Response)."""
    with connect(path_sock) as sock:
        t0 = time.perf_counter()
        _send_head(sock, method, path,
                   {"Content-Type": content_type, "Content-Length": str(length)})
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the target answered early (an error): read what it said
        with sock.makefile("rb", buffering=_BUF) as reader:
            resp = read_response(reader)
        return time.perf_counter() - t0, resp


def timed_download(path_sock, path):
    """GET a (large) body; returns (seconds, Response)."""
    with connect(path_sock) as sock:
        t0 = time.perf_counter()
        _send_head(sock, "GET", path, {})
        with sock.makefile("rb", buffering=_BUF) as reader:
            resp = read_response(reader, keep=1024)
        return time.perf_counter() - t0, resp
