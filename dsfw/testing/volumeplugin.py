"""A volume plugin stand-in for tests: a legacy (v1) plugin on a UNIX socket, as an admin installs one.

dockerd finds ``/run/docker/plugins/NAME.sock`` when a request names the
volume driver ``NAME`` and speaks the VolumeDriver protocol (JSON over HTTP)
to it. This one behaves like the host-path plugins people install
(local-persist and its kin): a volume's ``mountpoint`` option is the host
directory dockerd binds into containers. Used to show that a volume driver
other than ``local`` mounts what its options say, which dsfw cannot read.

dockerd keeps a legacy volume driver it has used for as long as it runs, and
asks every such driver about each volume name it does not know (``GET
/volumes/x``, ``docker run -v new:/x``, ``docker volume ls``), retrying an
unreachable one for 30 s -- for every such request, for good. So when the
plugin stops, its socket is replaced by a link to dockerd's own socket: the
driver dockerd kept then gets a quick 404 ("page not found") instead. (A
name cannot be reused by a later run: dockerd keeps its connection through
the link alive.) Each run leaves one such link in ``/run/docker/plugins``.

``with running_volume_plugin() as name:`` serves until the block ends.
Remove the volumes made with it inside the block.
"""
from __future__ import annotations

import contextlib
import json
import os
import socketserver
import threading
import uuid
from http.server import BaseHTTPRequestHandler
from typing import Iterator

PLUGIN_DIR = "/run/docker/plugins"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    volumes: dict[str, str]  # set per server

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}") or {}
        except ValueError:
            body = {}
        answer = self._answer(self.path, body)
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.docker.plugins.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _answer(self, path: str, body: dict) -> dict:
        volumes = self.server.volumes  # type: ignore[attr-defined]
        name = body.get("Name", "")
        if path == "/Plugin.Activate":
            return {"Implements": ["VolumeDriver"]}
        if path == "/VolumeDriver.Capabilities":
            return {"Capabilities": {"Scope": "local"}}
        if path == "/VolumeDriver.Create":
            volumes[name] = (body.get("Opts") or {}).get("mountpoint", "/nonexistent")
            return {"Err": ""}
        if path == "/VolumeDriver.Remove":
            volumes.pop(name, None)
            return {"Err": ""}
        if path in ("/VolumeDriver.Mount", "/VolumeDriver.Path"):
            return {"Mountpoint": volumes.get(name, ""), "Err": ""}
        if path == "/VolumeDriver.Unmount":
            return {"Err": ""}
        if path == "/VolumeDriver.Get":
            if name in volumes:
                return {"Volume": {"Name": name, "Mountpoint": volumes[name]}, "Err": ""}
            return {"Err": f"no such volume {name}"}
        if path == "/VolumeDriver.List":
            return {"Volumes": [{"Name": n, "Mountpoint": m} for n, m in volumes.items()],
                    "Err": ""}
        return {"Err": f"unknown call {path}"}


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self):  # BaseHTTPRequestHandler wants a (host, port) client address
        request, _ = super().get_request()
        return request, ("plugin", 0)


@contextlib.contextmanager
def running_volume_plugin(docker_socket: str = "/var/run/docker.sock",
                          prefix: str = "dsfw-e2e-hostpath") -> Iterator[str]:
    """Serve a host-path volume plugin under a new name; yields the driver name."""
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    os.makedirs(PLUGIN_DIR, exist_ok=True)
    path = os.path.join(PLUGIN_DIR, f"{name}.sock")
    server = _Server(path, _Handler)
    server.volumes = {}  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    try:
        yield name
    finally:
        server.shutdown()
        server.server_close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.symlink(docker_socket, path)  # see the module's docstring
