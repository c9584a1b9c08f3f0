"""What ``input.Peer`` proves, shown on a real dsfw: the process that connected, nothing more.

A connection opened by root and handed (``SCM_RIGHTS``) to a process running
as uid 65534 is still decided as root -- that process could not even open the
socket itself.  The test documents this behaviour rather than hiding it: the
decision, the recording and the ``connection.opened`` log line all name root,
the connecting process, so an auditor can tell who opened what.
"""
from __future__ import annotations

import json
import os
import re
import socket

import pytest

from dsfw.testing.e2e import policy_dir, require_root

pytestmark = pytest.mark.requires_docker

NOBODY = 65534
ROOT_ONLY = """package docker.authz
import rego.v1

default allow := false
allow if input.Peer.Uid == 0
deny contains sprintf("uid %d is not root", [input.Peer.Uid]) if input.Peer.Uid != 0
"""


def _as_nobody(channel: socket.socket, dsfw_socket: str, out: int) -> None:
    """Child process: drop to uid 65534, try the socket, then use the descriptor root passed."""
    try:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        report = {"uid": os.getuid()}
        own = socket.socket(socket.AF_UNIX)
        try:
            own.connect(dsfw_socket)
            report["own_connect"] = "connected"
        except OSError as e:
            report["own_connect"] = type(e).__name__
        own.close()
        _, fds, _, _ = socket.recv_fds(channel, 16, 1)
        conn = socket.socket(fileno=fds[0])
        conn.settimeout(20)
        conn.sendall(b"GET /v1.41/version HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
        report["reply"] = reply.decode("utf-8", "replace")
        os.write(out, json.dumps(report).encode())
    finally:
        os._exit(0)


def test_a_passed_connection_is_decided_as_the_process_that_connected(dsfw_factory, tmp_path):
    require_root("a process as another uid")
    records = tmp_path / "records"
    proc = dsfw_factory(policy_dir(tmp_path, {"authz.rego": ROOT_ONLY}),
                        "--record-dir", str(records))
    parent_end, child_end = socket.socketpair(socket.AF_UNIX)
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        parent_end.close()
        os.close(read_end)
        _as_nobody(child_end, proc.socket, write_end)
    child_end.close()
    os.close(write_end)
    conn = socket.socket(socket.AF_UNIX)
    conn.connect(proc.socket)  # root connects ...
    socket.send_fds(parent_end, [b"x"], [conn.fileno()])
    conn.close()  # ... and only the child holds the connection now
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    assert os.waitpid(child, 0)[1] == 0
    report = json.loads(b"".join(chunks))

    assert report["uid"] == NOBODY
    assert report["own_connect"] == "PermissionError"  # uid 65534 cannot open the socket itself
    assert report["reply"].startswith("HTTP/1.1 200 "), report["reply"][:300]  # decided as root
    recorded = [json.loads(p.read_text()) for p in sorted(records.glob("*.json"))]
    version = [r for r in recorded if r["input"]["PathPlain"] == "/version"]
    assert len(version) == 1 and version[0]["decision"]["allowed"] is True
    assert version[0]["input"]["Peer"]["Uid"] == 0
    assert version[0]["input"]["Peer"]["Pid"] == os.getpid()  # the connecting process
    proc.stop()
    log = (tmp_path / "dsfw0.log").read_text()
    decision = re.search(r"policy\.decision .*path=/v1\.41/version .*", log).group(0)
    conn = re.search(r"\bconn=(\d+)", decision).group(1)
    assert "peer_uid=0" in decision
    opened = re.findall(rf"connection\.opened\s+conn={conn} uid=(\d+) gid=\d+ pid=(\d+) "
                        r"user=(\S+)", log)
    assert opened == [("0", str(os.getpid()), "root")], log
