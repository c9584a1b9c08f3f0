"""dockerd going away and coming back: 502 while it is down, then service resumes by itself.

dockerd is stood in for by a small HTTP/1.1 server on a UNIX socket (restarting
the real daemon would take the other tests' containers with it); dsfw is the
real ``twistd dsfw`` process.
"""
from __future__ import annotations

import json
import os
import socket
import socketserver
import threading
from http.server import BaseHTTPRequestHandler


from dsfw.testing.e2e import policy_dir, raw_request

ALLOW_ALL = {"authz.rego": "package docker.authz\nimport rego.v1\ndefault allow := true\n"}
PING = b"GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so dsfw pools the connection

    def do_GET(self):
        body = b"OK"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Api-Version", "1.41")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        self.server.open_connections.add(self.request)

    def finish(self):
        super().finish()
        self.server.open_connections.discard(self.request)


class FakeDockerd:
    def __init__(self, path: str):
        self.path = path
        self._server = None

    def start(self):
        if os.path.exists(self.path):
            os.unlink(self.path)
        self._server = socketserver.ThreadingUnixStreamServer(self.path, _Handler)
        self._server.daemon_threads = True
        self._server.open_connections = set()
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self):
        """Die like a daemon: stop listening and drop every open connection."""
        self._server.shutdown()
        self._server.server_close()
        for conn in list(self._server.open_connections):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        os.unlink(self.path)


def _status(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


def test_dead_dockerd_is_a_502_and_its_return_needs_no_restart(dsfw_factory, tmp_path):
    fake = FakeDockerd(str(tmp_path / "fake-docker.sock"))
    fake.start()
    proxy = dsfw_factory(policy_dir(tmp_path, ALLOW_ALL), target=fake.path)
    try:
        assert _status(raw_request(proxy.socket, PING)) == 200  # leaves a pooled connection
        fake.stop()
        down = raw_request(proxy.socket, PING)
        assert _status(down) == 502
        body = down.partition(b"\r\n\r\n")[2]
        assert json.loads(body)["message"].startswith("dsfw: ")
        assert proxy.alive()
        fake.start()
        assert _status(raw_request(proxy.socket, PING)) == 200
        assert _status(raw_request(proxy.socket, PING)) == 200
    finally:
        if fake._server is not None and os.path.exists(fake.path):
            fake.stop()
    assert "Traceback" not in proxy.log_text()
