"""The benchmark's scenarios: what is sent to each target, and what is read back.

Every scenario is bounded by a request count or a duration.  A scenario runs
once per target per round; run.py interleaves the targets (A B C D A B C D).
"""
import json
import os
import re
import resource
import socket
import subprocess
import sys
import time
import urllib.parse

import rawhttp
from targets import PeakRSS, tree_cpu_seconds, tree_fds, tree_rss_kb

BASE_IMAGE = "localbusybox:latest"
LABEL = "dsfw-bench"
# Each run labels its containers and names its image with its own token, so two
# runs on one dockerd (helpers, CI beside a developer) never remove each other's.
RUN = f"{os.getpid()}-{int(time.time())}"
RUN_LABEL = "dsfw-bench-run"
MB = 1_000_000

# A body like the docker CLI's for `docker create localbusybox:latest true`.
CREATE_BODY = {
    "Hostname": "", "Domainname": "", "User": "", "AttachStdin": False,
    "AttachStdout": True, "AttachStderr": True, "Tty": False, "OpenStdin": False,
    "StdinOnce": False, "Env": ["BENCH=1"], "Cmd": ["true"], "Image": BASE_IMAGE,
    "Volumes": {}, "WorkingDir": "", "Entrypoint": None, "OnBuild": None,
    "Labels": {LABEL: "cycle", RUN_LABEL: RUN},
    "HostConfig": {
        "Binds": None, "ContainerIDFile": "", "LogConfig": {"Type": "", "Config": {}},
        "NetworkMode": "default", "PortBindings": {},
        "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0}, "AutoRemove": False,
        "VolumeDriver": "", "VolumesFrom": None, "CapAdd": None, "CapDrop": None,
        "CgroupnsMode": "", "Dns": [], "DnsOptions": [], "DnsSearch": [], "ExtraHosts": None,
        "GroupAdd": None, "IpcMode": "", "Cgroup": "", "Links": None, "OomScoreAdj": 0,
        "PidMode": "", "Privileged": False, "PublishAllPorts": False, "ReadonlyRootfs": False,
        "SecurityOpt": None, "UTSMode": "", "UsernsMode": "", "ShmSize": 0,
        "ConsoleSize": [0, 0], "Isolation": "", "CpuShares": 0, "Memory": 0,
        "Mounts": None, "MaskedPaths": None, "ReadonlyPaths": None,
    },
    "NetworkingConfig": {"EndpointsConfig": {}},
}


class Context:
    """What every scenario needs: the loadgen binary, sizes, and dockerd's socket."""

    def __init__(self, loadgen, workdir, docker_socket, quick):
        self.loadgen = loadgen
        self.workdir = workdir
        self.docker = docker_socket
        self.quick = quick
        self.bulk_size = (16 if quick else 200) * MB
        self.big_size = 2000 * MB
        self.image = f"dsfw-bench-blob-{RUN}:{self.bulk_size // MB}m"


# --- helpers -----------------------------------------------------------------

def loadgen(ctx, target, mode, conns, count=10**9, seconds=None, warmup=0, body=None):
    """Run loadgen.c once; its JSON plus the CPU used by the client and the target."""
    argv = [ctx.loadgen, "-s", target.socket, "-m", mode, "-c", str(conns),
            "-n", str(count), "-w", str(warmup)]
    if seconds:
        argv += ["-d", str(seconds)]
    if body:
        argv += ["-b", body]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    target_cpu0 = tree_cpu_seconds(target.pid) if target.pid else 0.0
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True,
                          timeout=(seconds or 60) + 120)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"loadgen failed: {done.stderr.strip()}")
    out = json.loads(done.stdout)
    if not out["requests"]:  # nothing past the warm-up: no latency to speak of
        for key in ("mean_us", "p50_us", "p90_us", "p99_us", "max_us"):
            out.pop(key, None)
    client = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    out["client_cpu"] = client / wall
    if target.pid:
        used = tree_cpu_seconds(target.pid) - target_cpu0
        out["target_cpu"] = used / wall
        done_total = out["requests"] + warmup if out["requests"] else 0
        if done_total:  # warm-up requests ran inside the same CPU reading
            out["target_cpu_us"] = used / done_total * 1e6
    if done.stderr.strip():
        out["note"] = done.stderr.strip()[-200:]
    return out


def _docker(ctx, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else b""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    return rawhttp.request(ctx.docker, method, path, data, headers)


def remove_bench_containers(ctx):
    filters = urllib.parse.quote(json.dumps({"label": [f"{RUN_LABEL}={RUN}"]}))
    resp = rawhttp.request(ctx.docker, "GET", f"/containers/json?all=1&filters={filters}",
                           b"", {})
    # read_response keeps only the first 64 kB: enough for the ids of a few hundred
    for c in json.loads(resp.head or b"[]"):
        _docker(ctx, "DELETE", f"/containers/{c['Id']}?force=1")


# --- scenarios ---------------------------------------------------------------

class Scenario:
    """One benchmark: set up once, run per target per round, tear down."""

    name = ""
    title = ""
    bulk = False        # rounds come from --bulk-rounds
    full_only = False   # skipped in --quick

    def setup(self, ctx):
        pass

    def run(self, ctx, target):
        raise NotImplementedError

    def teardown(self, ctx):
        pass


class PingLatency(Scenario):
    name = "ping_c1"
    title = "GET /_ping, 1 connection (latency)"

    def run(self, ctx, target):
        n = 300 if ctx.quick else 5000
        return loadgen(ctx, target, "get:/_ping", 1, count=n, warmup=n // 10)


class PingThroughput(Scenario):
    name = "ping_c16"
    title = "GET /_ping, 16 connections (throughput)"

    def run(self, ctx, target):
        return loadgen(ctx, target, "get:/_ping", 16, seconds=0.5 if ctx.quick else 3.0,
                       warmup=50 if ctx.quick else 500)


class ListContainers(Scenario):
    name = "list_c1"
    title = "GET /containers/json?all=1 with 20 containers, 1 connection"
    containers = 20

    def setup(self, ctx):
        # The API form of `docker create localbusybox:latest true`, labelled
        # so clean-up finds them even after an interrupted run.
        for _ in range(self.containers):
            resp = _docker(ctx, "POST", "/containers/create",
                           {"Image": BASE_IMAGE, "Cmd": ["true"],
                            "Labels": {LABEL: "list", RUN_LABEL: RUN}})
            if resp.status != 201:
                raise RuntimeError(f"container create failed: {resp.status} {resp.head[:200]}")

    def run(self, ctx, target):
        n = 100 if ctx.quick else 1000
        return loadgen(ctx, target, "get:/containers/json?all=1", 1, count=n, warmup=n // 20)

    def teardown(self, ctx):
        remove_bench_containers(ctx)


class CreateDelete(Scenario):
    name = "create_delete_c4"
    title = "POST /containers/create + DELETE cycles, 4 connections"

    def setup(self, ctx):
        self.body = os.path.join(ctx.workdir, "create.json")
        with open(self.body, "w") as f:
            json.dump(CREATE_BODY, f)

    def run(self, ctx, target):
        return loadgen(ctx, target, "create-delete", 4, seconds=1.0 if ctx.quick else 5.0,
                       warmup=4, body=self.body)

    def teardown(self, ctx):
        remove_bench_containers(ctx)


class Upload(Scenario):
    """POST /build of a context made on the fly: the Dockerfile, then one big file.

    The whole request is timed, dockerd's unpacking of the context included.
    """

    bulk = True

    def __init__(self, name, big):
        self.name = name
        self.big = big
        self.full_only = big
        self.title = "POST /build, " + ("2 GB " if big else "") + "build-context upload"

    def run(self, ctx, target):
        size = ctx.big_size if self.big else ctx.bulk_size
        length, chunks = rawhttp.build_context(size, BASE_IMAGE)
        cpu0 = tree_cpu_seconds(target.pid) if target.pid else 0.0
        with PeakRSS(target.pid, target.can_reset_hwm) as peak:
            secs, resp = rawhttp.timed_upload(target.socket, "POST",
                                              "/build?q=1&rm=1&forcerm=1",
                                              length, chunks, "application/x-tar")
        cpu = tree_cpu_seconds(target.pid) - cpu0 if target.pid else 0.0
        if resp.status == 200:
            error = resp.json_lines_error()
        else:
            error = f"HTTP {resp.status}: " + resp.head[:200].decode("utf-8", "replace")
        return {"status": resp.status, "bytes": length, "seconds": secs,
                "mb_s": length / secs / MB, "peak_rss_mb": peak.kb / 1024,
                "cpu_s_per_gb": cpu / (length / 1e9),
                "errors": int(bool(error)), **({"note": error} if error else {})}


class Download(Scenario):
    name = "download"
    title = "GET /images/{name}/get, image save download"
    bulk = True

    def setup(self, ctx):
        repo, tag = ctx.image.split(":")
        length, chunks = rawhttp.tar_stream([("blob.bin", ctx.bulk_size)])
        _, resp = rawhttp.timed_upload(ctx.docker, "POST",
                                       f"/images/create?fromSrc=-&repo={repo}&tag={tag}",
                                       length, chunks, "application/x-tar")
        if resp.status != 200 or resp.json_lines_error():
            raise RuntimeError(f"docker import failed: {resp.status} {resp.head[:200]}")

    def run(self, ctx, target):
        with PeakRSS(target.pid, target.can_reset_hwm) as peak:
            secs, resp = rawhttp.timed_download(target.socket, f"/images/{ctx.image}/get")
        return {"status": resp.status, "bytes": resp.size, "seconds": secs,
                "mb_s": resp.size / secs / MB, "peak_rss_mb": peak.kb / 1024,
                "errors": int(resp.status != 200 or resp.size < ctx.bulk_size)}

    def teardown(self, ctx):
        _docker(ctx, "DELETE", f"/images/{ctx.image}?force=1")


class IdleConnections(Scenario):
    name = "idle"
    title = "idle keep-alive connections held open, then GET /_ping at 1 connection"

    def run(self, ctx, target):
        n = 50 if ctx.quick else 500
        pid = target.pid
        rss0, fds0 = (tree_rss_kb(pid), tree_fds(pid)) if pid else (0, 0)
        held = []
        try:
            for _ in range(n):
                sock = rawhttp.connect(target.socket, timeout=30)
                reader = sock.makefile("rb")
                held.append((sock, reader))
                sock.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n")
                if rawhttp.read_response(reader).status != 200:
                    raise RuntimeError("ping on an idle connection failed")
            time.sleep(0.2)
            rss1, fds1 = (tree_rss_kb(pid), tree_fds(pid)) if pid else (0, 0)
            ping = loadgen(ctx, target, "get:/_ping", 1, count=200 if ctx.quick else 2000,
                           warmup=20)
            alive = sum(_still_open(sock) for sock, _ in held)
        finally:
            for sock, reader in held:
                reader.close()
                sock.close()
        return {"connections": n, "alive_after": alive,
                "rss_before_mb": rss0 / 1024, "rss_mb": rss1 / 1024,
                "rss_added_mb": (rss1 - rss0) / 1024, "fds_before": fds0, "fds": fds1,
                "p50_us": ping["p50_us"], "p99_us": ping["p99_us"],
                "errors": ping["errors"] + (n - alive)}


def _still_open(sock):
    sock.setblocking(False)
    try:
        return 0 if sock.recv(1, socket.MSG_PEEK) == b"" else 1
    except BlockingIOError:
        return 1
    except OSError:
        return 0


SCENARIOS = [PingLatency(), PingThroughput(), ListContainers(), CreateDelete(),
             Upload("upload", big=False), Download(), Upload("upload_2g", big=True),
             IdleConnections()]


def policy_benchmark(repo, quick):
    """Run the colleague's bench/bench_policy.py if it exists; its output verbatim."""
    script = os.path.join(repo, "bench", "bench_policy.py")
    if not os.path.exists(script):
        return {"ran": False, "output": "bench/bench_policy.py does not exist yet"}
    try:
        done = subprocess.run([sys.executable, script], cwd=repo, capture_output=True,
                              text=True, timeout=60 if quick else 300)
    except subprocess.TimeoutExpired:
        return {"ran": True, "returncode": None, "output": "timed out"}
    # Its lines read "   80.2 µs/decision  allow  authz GET /containers/json".
    per_decision = [float(m) for m in re.findall(r"([\d.]+) µs/decision", done.stdout)]
    return {"ran": True, "returncode": done.returncode,
            "output": (done.stdout + done.stderr).strip(),
            "max_us": max(per_decision) if per_decision else None}
