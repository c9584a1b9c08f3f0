#!/usr/bin/env python3
"""How much large JSON bodies delay other clients: /_ping latency while they arrive.

    python3 bench/bench_large_bodies.py [--seconds 20] [--big-clients 6] [--modes worker,in-process]

For each mode, starts dsfw (allow-all policy) in front of the real dockerd on a
temporary socket: ``worker`` as configured by default (large bodies go to the
body worker process), ``in-process`` with ``--body-worker-threshold 0`` (the
reactor parses and decides every body itself).  ``--big-clients`` client
processes send ~16 MB container-create bodies in a loop (image
"dsfw-bench-no-such-image": dockerd answers 404 and creates nothing), one sends
a create body with 300,000 Binds in a loop, and ``GET /_ping`` is sent one after
another, alternating between dsfw and dockerd's own socket (the control: what
the machine's load costs any client).  Prints the ping latencies (p50, p99, max)
idle and under that load, the large bodies answered, and the resident memory of
dsfw and its body worker.  See docs/benchmarks.md.
"""
import argparse
import collections
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALLOW_ALL = "package docker.authz\n\nallow := true\n"
CREATE = "/v1.41/containers/create"
MODES = {"worker": [], "in-process": ["--body-worker-threshold", "0"]}

def ping(path):
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(60)
        s.connect(path)
        s.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    assert out.startswith(b"HTTP/1.1 200"), out[:100]


def pings(targets, seconds):
    """Alternating pings on each socket for ``seconds``; the sorted latencies of each."""
    latencies = {t: [] for t in targets}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for target, taken in latencies.items():
            t = time.perf_counter()
            ping(target)
            taken.append(time.perf_counter() - t)
        time.sleep(0.005)
    return {t: sorted(v) for t, v in latencies.items()}


def summary(lat):
    def q(p):
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000
    return f"n={len(lat)} p50={q(0.5):.1f} ms p99={q(0.99):.1f} ms max={lat[-1] * 1000:.1f} ms"


def rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS", "VmHWM")):
                    yield line.split(":")[0], int(line.split()[1]) >> 10
    except OSError:
        return


def children(pid):
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found += [int(p) for p in f.read().split()]
    return found


def run_mode(mode, args, tmp, bodies):
    sock = os.path.join(tmp, f"dsfw-{mode}.sock")
    proc = subprocess.Popen([sys.executable, "-m", "twisted", "dsfw", "--host", sock,
                             "--target", args.docker_socket, "--policyDir", tmp,
                             "--max-json-body", str(32 << 20), "--log-file", os.devnull,
                             *MODES[mode]],
                            cwd=REPO, env={**os.environ, "PYTHONPATH": REPO},
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    senders = []
    try:
        for _ in range(200):
            if os.path.exists(sock):
                break
            time.sleep(0.05)
        time.sleep(0.5)
        print(f"[{mode}] RSS at rest: dsfw {dict(rss_mb(proc.pid))} MB")
        idle = pings([sock, args.docker_socket], min(5, args.seconds))
        print(f"[{mode}] idle:   dsfw   ", summary(idle[sock]))
        print(f"[{mode}] idle:   dockerd", summary(idle[args.docker_socket]))
        outs = [os.path.join(tmp, f"{mode}-answers-{i}") for i in range(args.big_clients + 1)]
        for i, out in enumerate(outs):
            body = bodies[0] if i < args.big_clients else bodies[1]
            senders.append(subprocess.Popen(
                [sys.executable, "-m", "dsfw.testing.loop_client", sock, body, out, CREATE],
                cwd=REPO, env={**os.environ, "PYTHONPATH": REPO}))
        time.sleep(2)
        loaded = pings([sock, args.docker_socket], args.seconds)
        print(f"[{mode}] loaded: dsfw   ", summary(loaded[sock]))
        print(f"[{mode}] loaded: dockerd", summary(loaded[args.docker_socket]))
        print(f"[{mode}] RSS under load: dsfw {dict(rss_mb(proc.pid))} MB, body worker "
              f"{[dict(rss_mb(c)) for c in children(proc.pid)]} MB")
    finally:
        for s in senders:
            s.kill()
            s.wait()
        proc.terminate()
        proc.wait(30)
    answers = collections.Counter(
        line for out in outs if os.path.exists(out) for line in open(out).read().split())
    print(f"[{mode}] large bodies answered: {dict(answers)}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--big-clients", type=int, default=6)
    p.add_argument("--modes", default="worker,in-process")
    p.add_argument("--docker-socket", default="/var/run/docker.sock")
    args = p.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="dsfw-bench-large-")
    with open(os.path.join(tmp, "allow.rego"), "w") as f:
        f.write(ALLOW_ALL)
    env = [f"V{i}=" + "x" * 1000 for i in range(16_000)]
    bodies_dir = tempfile.mkdtemp(prefix="dsfw-bench-bodies-")  # not data in the policy directory
    bodies = (os.path.join(bodies_dir, "big.json"), os.path.join(bodies_dir, "binds.json"))
    with open(bodies[0], "w") as f:
        json.dump({"Image": "dsfw-bench-no-such-image", "Env": env}, f)
    with open(bodies[1], "w") as f:
        json.dump({"Image": "dsfw-bench-no-such-image",
                   "HostConfig": {"Binds": [f"/srv/b{i}:/m/{i}" for i in range(300_000)]}}, f)
    print(f"{args.big_clients} x {os.path.getsize(bodies[0]) >> 20} MB + 300,000 Binds "
          f"({os.path.getsize(bodies[1]) >> 20} MB); load average {os.getloadavg()[0]:.1f}")
    for mode in args.modes.split(","):
        run_mode(mode, args, tmp, bodies)


if __name__ == "__main__":
    main()
