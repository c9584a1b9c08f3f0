"""dsfw's own CPU per request, without sockets: the hot path alone.

The socket benchmarks (``bench/run.py``) measure what users see, but on a
2-core machine shared with dockerd and the load generator their numbers move
with everything else running.  This drives the real ``FirewallResource``
(twisted.web channel, canonicalization, the embedded engine with the shipped
``authz.rego``, the relay and the dockerd client) in one process: request
bytes in on an in-memory transport, a canned dockerd answer fed back, so the
time per request is dsfw's CPU cost and nothing else.

    python3 bench/bench_hotpath.py [--requests N] [--profile]

Not a test: it prints numbers, it asserts nothing.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from twisted.internet.defer import succeed  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402
from twisted.internet.testing import StringTransport  # noqa: E402

from dsfw.ops import logsetup  # noqa: E402
from dsfw.build.gate import BuildGate  # noqa: E402
from dsfw.edge.peer import peer_identity  # noqa: E402
from dsfw.policy.embedded import EmbeddedEngine  # noqa: E402
from dsfw.edge.relay import Relay  # noqa: E402
from dsfw.edge.resource import FirewallResource  # noqa: E402
from dsfw.tap import make_site  # noqa: E402
from dsfw.edge.upstream import DockerConnection  # noqa: E402

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

PING = b"GET /_ping HTTP/1.1\r\nHost: docker\r\nUser-Agent: bench\r\n\r\n"
PING_ANSWER = (b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nCache-Control: no-cache, no-store, "
               b"must-revalidate\r\nContent-Length: 2\r\nContent-Type: text/plain; charset=utf-8"
               b"\r\nDocker-Experimental: false\r\nOstype: linux\r\nPragma: no-cache\r\n"
               b"Server: Docker/20.10.24+dfsg1 (linux)\r\nDate: Sun, 29 Nov 2026 04:00:00 GMT"
               b"\r\n\r\nOK")
CREATE_BODY = (b'{"Image":"localbusybox","Cmd":["true"],"HostConfig":{"Binds":null,'
               b'"Privileged":false,"CapAdd":null,"NetworkMode":"default"}}')
CREATE = (b"POST /v1.41/containers/create HTTP/1.1\r\nHost: docker\r\nContent-Type: "
          b"application/json\r\nContent-Length: %d\r\n\r\n" % len(CREATE_BODY)) + CREATE_BODY
CREATE_ANSWER = (b"HTTP/1.1 201 Created\r\nApi-Version: 1.41\r\nContent-Type: application/json"
                 b"\r\nContent-Length: 88\r\n\r\n" + b'{"Id":"' + b"a" * 64 + b'","Warnings":[]}\n')


class OneConnectionPool:
    """A DockerPool stand-in: one keep-alive DockerConnection on an in-memory transport."""

    socket_path = "<memory>"

    def __init__(self):
        self.conn = DockerConnection()
        self.conn.makeConnection(StringTransport())
        self.conn.on_release = lambda conn: None

    def acquire(self, fresh=False):
        return succeed(self.conn)


def build(policy_dir: str):
    clock = Clock()
    pool = OneConnectionPool()
    resource = FirewallResource(EmbeddedEngine(policy_dir), Relay(clock, pool),
                                BuildGate(clock, None), peer_identity=peer_identity,
                                clock=clock, verbose=False)
    site = make_site(resource, clock)
    channel = site.buildProtocol(None)
    client = StringTransport()
    channel.makeConnection(client)
    return channel, client, pool


def run(policy_dir: str, request: bytes, answer: bytes, n: int) -> float:
    channel, client, pool = build(policy_dir)
    upstream = pool.conn.transport
    for _ in range(min(200, n)):  # warm up: first evaluation, lazy imports
        channel.dataReceived(request)
        pool.conn.dataReceived(answer)
    client.clear()
    start = time.process_time()
    for _ in range(n):
        channel.dataReceived(request)
        pool.conn.dataReceived(answer)
        client.clear()
        upstream.clear()
    return (time.process_time() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--profile", action="store_true", help="print the top functions")
    args = parser.parse_args()
    policy_dir = tempfile.mkdtemp(prefix="dsfw-bench-")
    for name in ("authz.rego", "build.rego"):
        shutil.copy(os.path.join(REPO, "policies", name), policy_dir)
    real_stdout = sys.stdout
    sys.stdout = io.StringIO()  # the decision log is written, then thrown away
    logsetup.configure(verbose=False, direct=False)
    try:
        results = {}
        for name, request, answer in (("GET /_ping", PING, PING_ANSWER),
                                      ("POST /containers/create", CREATE, CREATE_ANSWER)):
            if args.profile:
                prof = cProfile.Profile()
                prof.enable()
            results[name] = run(policy_dir, request, answer, args.requests)
            if args.profile:
                prof.disable()
                out = io.StringIO()
                pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(20)
                results[name + " profile"] = out.getvalue()
            sys.stdout.seek(0)
            sys.stdout.truncate()
    finally:
        sys.stdout = real_stdout
        shutil.rmtree(policy_dir, ignore_errors=True)
    for name, value in results.items():
        if isinstance(value, float):
            print(f"{name:28s} {value:8.1f} µs of dsfw CPU per request (in-memory, no sockets)")
        else:
            print(value)


if __name__ == "__main__":
    main()
