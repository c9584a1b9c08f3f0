#!/usr/bin/env python3
"""What filtered answers cost: dockerd direct, dsfw unfiltered, dsfw filtering half of them.

Scenario (issue 12): ``GET /containers/json?all=1`` listing 100 containers of
which the filtering policy shows 50 (by label), and an ``/events`` stream.
Three targets side by side in one interleaved run: dockerd's own socket,
dsfw with an allow-all policy (answers relayed unchanged), and dsfw with the
same policy plus ``visible`` (every item decided, the visible ones kept).
The number that matters is each dsfw's *added* latency over direct; the
goal is filtered <= 2x unfiltered.  Events: each event's arrival on the
dsfw streams, minus its arrival on the direct stream (all three streams open
at once), for the events both show.

    python3 bench/bench_scope.py [--rounds 5] [--n 200] [--events 200] [--json FILE]
    python3 bench/bench_scope.py --in-memory [--n 2000]

``--in-memory`` drives the real FirewallResource (channel, policy, scope,
relay, filters) without sockets, with a canned 100-container answer shaped
like dockerd's: dsfw's own CPU per request, unfiltered and filtered, which on
a shared machine is a steadier number than socket latencies.  The
measurements take turns in ``--rounds`` rounds (the median is reported).
Cold: every answer differs from the one before (a changed Status each time,
the same containers); warm: the same answer again (a dashboard polling an
unchanged list); new: every container in the answer is new (nothing to
remember: the policy decides all 100).

Run on a quiet machine: it is a measurement, not a test (it asserts nothing).
"""
from __future__ import annotations

import argparse
import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import rawhttp  # noqa: E402

DOCKER = "/var/run/docker.sock"
IMAGE = "localbusybox:latest"
LABEL = "dsfw-bench-scope"  # not "dsfw-bench": bench/run.py removes those
SHOWN = "dsfw-bench-visible"

ALLOW = "package docker.authz\nimport rego.v1\ndefault allow := true\n"
FILTER = ALLOW + f'''
default visible := false
visible if input.Item.Labels["{SHOWN}"] == "yes"
'''


def start_dsfw(workdir: str, name: str, policy: str):
    pdir = os.path.join(workdir, name)
    os.makedirs(pdir)
    with open(os.path.join(pdir, "authz.rego"), "w") as f:
        f.write(policy)
    sock = os.path.join(workdir, name + ".sock")
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.argv[0]='twistd'; "
         "from twisted.scripts.twistd import run; run()",
         "-n", "--pidfile=", "dsfw", "--host", sock, "--target", DOCKER, "--policyDir", pdir,
         "--log-format", "json", "--log-file", os.path.join(workdir, name + ".log")],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if rawhttp.request(sock, "GET", "/_ping").status == 200:
                return proc, sock
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"dsfw {name} did not start")


def docker_api(method: str, path: str, body=None):
    data = json.dumps(body).encode() if body is not None else b""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    return rawhttp.request(DOCKER, method, path, data, headers)


def make_containers(n: int) -> list[str]:
    ids = []
    for i in range(n):
        labels = {LABEL: "scope", SHOWN: "yes" if i % 2 == 0 else "no"}
        resp = docker_api("POST", "/containers/create",
                          {"Image": IMAGE, "Cmd": ["sleep", "600"], "Labels": labels})
        if resp.status != 201:
            raise RuntimeError(f"create failed: {resp.status} {resp.head[:200]!r}")
        ids.append(json.loads(resp.head)["Id"])
    return ids


def cleanup() -> None:
    """Remove this benchmark's containers (found by label, also after an interrupted run)."""
    ids = subprocess.run(["docker", "-H", f"unix://{DOCKER}", "ps", "-aq", "--filter",
                          f"label={LABEL}=scope"], capture_output=True, text=True).stdout.split()
    if ids:
        subprocess.run(["docker", "-H", f"unix://{DOCKER}", "rm", "-f", *ids],
                       capture_output=True)


def list_latencies(sock: str, n: int) -> tuple[list[float], int]:
    """``n`` sequential list requests on one keep-alive connection; per-request seconds."""
    out = []
    items = 0
    with rawhttp.connect(sock, timeout=60) as s, s.makefile("rb", buffering=1 << 20) as reader:
        for _ in range(n):
            t0 = time.perf_counter()
            s.sendall(b"GET /v1.41/containers/json?all=1 HTTP/1.1\r\nHost: d\r\n\r\n")
            resp = rawhttp.read_response(reader, keep=1 << 22)
            out.append(time.perf_counter() - t0)
            if resp.status != 200:
                raise RuntimeError(f"list answered {resp.status}")
            items = resp.head.count(b'"Id"')
    return out, items


class EventStream:
    """One open ``GET /events`` whose lines are timestamped on arrival."""

    def __init__(self, sock: str):
        self.sock = rawhttp.connect(sock, timeout=60)
        self.sock.sendall(b"GET /v1.41/events?filters=%7B%22type%22%3A%5B%22container%22%5D%7D "
                          b"HTTP/1.1\r\nHost: d\r\n\r\n")
        self.buf = b""
        self.head_done = False
        self.arrivals: dict[str, float] = {}

    def pump(self) -> None:
        data = self.sock.recv(1 << 20)
        now = time.perf_counter()
        self.buf += data
        if not self.head_done:
            if b"\r\n\r\n" not in self.buf:
                return
            self.buf = self.buf.split(b"\r\n\r\n", 1)[1]
            self.head_done = True
        # chunked framing: the JSON lines are what matter; drop size lines
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            line = line.strip()
            if line.startswith(b"{"):
                event = json.loads(line)
                key = f"{event.get('id')}:{event.get('timeNano')}:{event.get('Action')}"
                self.arrivals.setdefault(key, now)


def events_run(socks: dict[str, str], ids: list[str], count: int) -> dict[str, list[float]]:
    streams = {name: EventStream(path) for name, path in socks.items()}
    time.sleep(0.5)
    for stream in streams.values():
        while select.select([stream.sock], [], [], 0.05)[0]:
            stream.pump()
    by_fd = {s.sock.fileno(): s for s in streams.values()}
    for i in range(count):
        cid = ids[i % len(ids)]
        docker_api("POST", f"/containers/{cid}/kill?signal=SIGWINCH")  # ignored by sleep
        deadline = time.time() + 0.02
        while time.time() < deadline:
            for fd in select.select(list(by_fd), [], [], 0.005)[0]:
                by_fd[fd].pump()
    deadline = time.time() + 2
    while time.time() < deadline:
        for fd in select.select(list(by_fd), [], [], 0.05)[0]:
            by_fd[fd].pump()
    direct = streams.pop("direct").arrivals
    added = {}
    for name, stream in streams.items():
        added[name] = [stream.arrivals[k] - direct[k] for k in stream.arrivals if k in direct]
        stream.sock.close()
    added["direct_events"] = [float(len(direct))]
    return added


def summary(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {"mean_us": statistics.fmean(values) * 1e6, "p50_us": values[len(values) // 2] * 1e6,
            "p90_us": values[int(len(values) * 0.9)] * 1e6, "n": len(values)}


def _entry(i: int, status: str) -> dict:
    """One container as dockerd 20.10 lists it."""
    return {"Id": f"{i:064x}", "Names": [f"/bench-{i}"], "Image": IMAGE,
            "ImageID": "sha256:" + "9" * 64, "Command": "sleep 600", "Created": 1795983008 + i,
            "Ports": [], "Labels": {LABEL: "scope", SHOWN: "yes" if i % 2 == 0 else "no"},
            "State": "running", "Status": status, "HostConfig": {"NetworkMode": "default"},
            "NetworkSettings": {"Networks": {"bridge": {
                "IPAMConfig": None, "Links": None, "Aliases": None, "NetworkID": "n" * 64,
                "EndpointID": "e" * 64, "Gateway": "172.17.0.1", "IPAddress": f"172.17.0.{i % 250}",
                "IPPrefixLen": 16, "IPv6Gateway": "", "GlobalIPv6Address": "",
                "GlobalIPv6PrefixLen": 0, "MacAddress": "02:42:ac:11:00:02", "DriverOpts": None}}},
            "Mounts": []}


def _chunked_answer(body: bytes) -> bytes:
    head = (b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Type: application/json\r\n"
            b"Docker-Experimental: false\r\nOstype: linux\r\nServer: Docker/20.10.24+dfsg1 (linux)"
            b"\r\nDate: Sun, 29 Nov 2026 04:00:00 GMT\r\nTransfer-Encoding: chunked\r\n\r\n")
    pieces = [body[i:i + 4096] for i in range(0, len(body), 4096)]
    return head + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def in_memory(n: int, containers: int, rounds: int = 10) -> dict:
    """dsfw's CPU per filtered and unfiltered list request, and per event line."""
    import io
    from twisted.internet.task import Clock
    sys.path.insert(0, HERE)
    from bench_hotpath import OneConnectionPool
    from dsfw.build.gate import BuildGate
    from dsfw.edge.relay import Relay
    from dsfw.edge.resource import FirewallResource
    from dsfw.ops import logsetup
    from dsfw.policy.embedded import EmbeddedEngine
    from dsfw.scope.scoping import Scope
    from dsfw.scope.target import TargetResolver
    from dsfw.tap import make_site
    from twisted.internet.testing import StringTransport

    request = b"GET /v1.41/containers/json?all=1 HTTP/1.1\r\nHost: docker\r\nUser-Agent: bench\r\n\r\n"
    events_request = b"GET /v1.41/events HTTP/1.1\r\nHost: docker\r\n\r\n"
    def answer(k: int, first: int = 0) -> bytes:
        return _chunked_answer(json.dumps([_entry(first + i, f"Up {k} seconds")
                                           for i in range(containers)],
                                          separators=(",", ":")).encode() + b"\n")
    variants = min(n, 200)
    answers = [answer(k) for k in range(variants)]
    # every container new each time: nothing to remember, the policy decides all
    fresh = [answer(k, containers * (k + 1)) for k in range(variants)]

    def build(policy: str):
        workdir = tempfile.mkdtemp(prefix="dsfw-bench-scope-")
        with open(os.path.join(workdir, "authz.rego"), "w") as f:
            f.write(policy)
        clock = Clock()
        pool = OneConnectionPool()
        engine = EmbeddedEngine(workdir)
        scope = Scope(TargetResolver(pool, clock), engine)
        resource = FirewallResource(engine, Relay(clock, pool), BuildGate(clock, None),
                                    clock=clock, verbose=False, scope=scope)
        channel = make_site(resource, clock).buildProtocol(None)
        client = StringTransport()
        channel.makeConnection(client)
        return channel, client, pool

    def lists(policy: str, which: str):
        """A runner: ``run(count)`` answers ``count`` list requests, returns CPU µs per request."""
        channel, client, pool = build(policy)
        k = 0

        def run(count: int) -> float:
            nonlocal k
            start = time.process_time()
            for _ in range(count):
                channel.dataReceived(request)
                pool.conn.dataReceived(answers[0] if which == "same" else
                                       (fresh if which == "new" else answers)[k % variants])
                client.clear()
                pool.conn.transport.clear()
                k += 1
            return (time.process_time() - start) / count * 1e6
        run(50)
        return run

    def events(policy: str):
        channel, client, pool = build(policy)
        channel.dataReceived(events_request)
        pool.conn.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                               b"Transfer-Encoding: chunked\r\n\r\n")
        lines = []
        for k in range(n):
            event = {"status": "kill", "id": f"{k % containers:064x}", "from": IMAGE,
                     "Type": "container", "Action": "kill", "Actor": {
                         "ID": f"{k % containers:064x}", "Attributes": {
                             "image": IMAGE, "name": f"bench-{k % containers}", "signal": "28",
                             LABEL: "scope", SHOWN: "yes" if k % 2 == 0 else "no"}},
                     "scope": "local", "time": 1795983008 + k, "timeNano": 1795983008000000000 + k}
            line = json.dumps(event, separators=(",", ":")).encode() + b"\n"
            lines.append(b"%x\r\n%s\r\n" % (len(line), line))
        k = 0

        def run(count: int) -> float:
            nonlocal k
            start = time.process_time()
            for _ in range(count):
                pool.conn.dataReceived(lines[k % len(lines)])
                client.clear()
                k += 1
            return (time.process_time() - start) / count * 1e6
        return run

    real_stdout = sys.stdout
    sys.stdout = io.StringIO()
    logsetup.configure(verbose=False, direct=False)
    try:
        runners = {"list_unfiltered_us": (lists(ALLOW, "changed"), n),
                   "list_filtered_cold_us": (lists(FILTER, "changed"), n),
                   "list_filtered_warm_us": (lists(FILTER, "same"), n),
                   "list_filtered_new_us": (lists(FILTER, "new"), n // 4),
                   "event_unfiltered_us": (events(ALLOW), n * 10),
                   "event_filtered_us": (events(FILTER), n * 10)}
        samples: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(rounds):  # interleaved: a load that comes and goes hits all alike
            for name, (run, count) in runners.items():
                samples[name].append(run(max(1, count // rounds)))
        result = {name: statistics.median(values) for name, values in samples.items()}
    finally:
        sys.stdout = real_stdout
    result["ratio_new"] = result["list_filtered_new_us"] / result["list_unfiltered_us"]
    result["ratio_cold"] = result["list_filtered_cold_us"] / result["list_unfiltered_us"]
    result["ratio_warm"] = result["list_filtered_warm_us"] / result["list_unfiltered_us"]
    result["ratio_events"] = result["event_filtered_us"] / result["event_unfiltered_us"]
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--n", type=int, default=200, help="list requests per target and round")
    p.add_argument("--events", type=int, default=200, help="events generated per round")
    p.add_argument("--containers", type=int, default=100)
    p.add_argument("--json", default=None)
    p.add_argument("--in-memory", action="store_true",
                   help="dsfw's CPU per request without sockets (see above)")
    args = p.parse_args(argv)
    if args.in_memory:
        sys.path.insert(0, REPO)
        result = in_memory(args.n, args.containers, args.rounds)
        print(json.dumps(result, indent=2))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=2)
        return 0
    workdir = tempfile.mkdtemp(prefix="dsfw-bench-scope-")
    cleanup()
    procs = []
    try:
        ids = make_containers(args.containers)
        running = ids[:4]
        for cid in running:
            docker_api("POST", f"/containers/{cid}/start")
        plain_proc, plain = start_dsfw(workdir, "unfiltered", ALLOW)
        filt_proc, filt = start_dsfw(workdir, "filtered", FILTER)
        procs = [plain_proc, filt_proc]
        socks = {"direct": DOCKER, "unfiltered": plain, "filtered": filt}
        lat = {name: [] for name in socks}
        items = {}
        for name, sock in socks.items():  # warm-up (caches, connections)
            list_latencies(sock, 20)
        for _ in range(args.rounds):
            for name, sock in socks.items():
                values, items[name] = list_latencies(sock, args.n)
                lat[name] += values
        ev = {"unfiltered": [], "filtered": []}
        shown_ids = running[0::2]  # even indices carry SHOWN=yes
        for _ in range(args.rounds):
            added = events_run(socks, running, args.events)
            ev["unfiltered"] += added["unfiltered"]
            ev["filtered"] += added["filtered"]
        result = {"list": {name: summary(v) for name, v in lat.items()}, "items": items,
                  "events_added": {name: summary(v) for name, v in ev.items() if v}}
        d = result["list"]["direct"]["p50_us"]
        for name in ("unfiltered", "filtered"):
            result["list"][name]["added_p50_us"] = result["list"][name]["p50_us"] - d
            result["list"][name]["added_mean_us"] = (result["list"][name]["mean_us"]
                                                     - result["list"]["direct"]["mean_us"])
        result["ratio_p50"] = (result["list"]["filtered"]["added_p50_us"]
                               / result["list"]["unfiltered"]["added_p50_us"])
        result["ratio_mean"] = (result["list"]["filtered"]["added_mean_us"]
                                / result["list"]["unfiltered"]["added_mean_us"])
        if ev["filtered"] and ev["unfiltered"]:
            result["events_ratio_p50"] = (result["events_added"]["filtered"]["p50_us"]
                                          / result["events_added"]["unfiltered"]["p50_us"])
        result["shown_running"] = len(shown_ids)
        print(json.dumps(result, indent=2))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=2)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
