#!/usr/bin/env python3
"""How much large JSON bodies delay other clients: /_ping latency while they arrive.

    python3 bench/bench_large_bodies.py [--seconds 20] [--big-clients 6]

Starts dsfw (allow-all policy) in front of the real dockerd on a temporary
socket; ``--big-clients`` clients send ~16 MB container-create bodies in a loop
(image "dsfw-bench-no-such-image": dockerd answers 404 and creates nothing),
one sends a create body with 300,000 Binds in a loop, and one more sends
``GET /_ping`` one after another.  Prints the ping latencies (p50, p99, max)
with and without the big clients.  See docs/benchmarks.md.
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALLOW_ALL = "package docker.authz\n\nallow := true\n"


def request(path, method, target, body=b"", timeout=120):
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(path)
        head = (f"{method} {target} HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        s.sendall(head + body)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk


def big_body():
    env = [f"V{i}=" + "x" * 1000 for i in range(16_000)]
    return json.dumps({"Image": "dsfw-bench-no-such-image", "Env": env}).encode()


def binds_body():
    binds = [f"/srv/b{i}:/m/{i}" for i in range(300_000)]
    return json.dumps({"Image": "dsfw-bench-no-such-image",
                       "HostConfig": {"Binds": binds}}).encode()


def pings(path, seconds):
    latencies = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.perf_counter()
        answer = request(path, "GET", "/_ping")
        latencies.append(time.perf_counter() - t)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:100]
    return sorted(latencies)


def summary(lat):
    def q(p):
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000
    return f"n={len(lat)} p50={q(0.5):.1f} ms p99={q(0.99):.1f} ms max={lat[-1] * 1000:.1f} ms"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--big-clients", type=int, default=6)
    p.add_argument("--docker-socket", default="/var/run/docker.sock")
    args = p.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="dsfw-bench-large-")
    with open(os.path.join(tmp, "allow.rego"), "w") as f:
        f.write(ALLOW_ALL)
    sock = os.path.join(tmp, "dsfw.sock")
    proc = subprocess.Popen([sys.executable, "-m", "twisted", "dsfw", "--host", sock,
                             "--target", args.docker_socket, "--policyDir", tmp,
                             "--max-json-body", str(32 << 20), "--log-file", os.devnull],
                            cwd=REPO, env={**os.environ, "PYTHONPATH": REPO},
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        for _ in range(200):
            if os.path.exists(sock):
                break
            time.sleep(0.05)
        time.sleep(0.5)
        print("idle:        ", summary(pings(sock, min(5, args.seconds))))
        stop = threading.Event()
        big, binds = big_body(), binds_body()
        answers = []

        def send(body):
            while not stop.is_set():
                answers.append(request(sock, "POST", "/v1.41/containers/create", body)[:12])
        workers = [threading.Thread(target=send, args=(big,), daemon=True)
                   for _ in range(args.big_clients)]
        workers.append(threading.Thread(target=send, args=(binds,), daemon=True))
        for w in workers:
            w.start()
        time.sleep(1)
        print(f"{args.big_clients} x {len(big) >> 20} MB + 300,000 Binds ({len(binds) >> 20} MB):",
              summary(pings(sock, args.seconds)))
        stop.set()
        for w in workers:
            w.join(120)
        print("big requests answered:", len(answers), sorted(set(a[9:12] for a in answers)))
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
