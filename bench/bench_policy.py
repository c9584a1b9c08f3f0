"""How long one embedded policy decision takes, in microseconds.

Measures :meth:`EmbeddedEngine.evaluate` (input hand-over, ``allow`` and
``deny``) on the shipped policies with inputs shaped like the ones the
resource builds, to check that deciding on the reactor thread stays cheap.
A measurement, not a test: it prints numbers and asserts nothing.

    python3 bench/bench_policy.py [--policyDir policies] [--n 20000]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dsfw.policy import AUTHZ, BUILD  # noqa: E402
from dsfw.policy.embedded import EmbeddedEngine  # noqa: E402

CASES = [
    ("authz GET /containers/json", AUTHZ, {
        "Method": "GET", "Path": "/v1.41/containers/json?all=1", "Query": {"all": ["1"]},
        "Headers": {"User-Agent": ["Docker-Client/28.0.0 (linux)"]}, "Body": None,
    }),
    ("authz POST /containers/create", AUTHZ, {
        "Method": "POST", "Path": "/v1.41/containers/create?name=web", "Query": {"name": ["web"]},
        "Headers": {"Content-Type": ["application/json"]},
        "Body": {
            "Image": "busybox", "Cmd": ["sh", "-c", "sleep 1"], "Env": ["A=1", "B=2"],
            "HostConfig": {"Binds": ["/srv:/srv:ro"], "Privileged": False, "CapAdd": ["NET_ADMIN"]},
            "Labels": {"team": "infra"},
        },
    }),
    ("authz POST /networks/create (denied)", AUTHZ, {
        "Method": "POST", "Path": "/v1.41/networks/create", "Body": {"Name": "n"},
    }),
    ("build FROM alpine", BUILD, {
        "Dockerfile": ["FROM alpine:3.19", "RUN apk add curl", "COPY . /app", "CMD [\"/app/run\"]"],
    }),
]


def measure(engine: EmbeddedEngine, package: str, input_doc: dict, n: int) -> float:
    for _ in range(min(n, 500)):  # warm up (regorus compiles lazily)
        engine.evaluate(package, input_doc)
    start = time.perf_counter()
    for _ in range(n):
        engine.evaluate(package, input_doc)
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policyDir", default=os.path.join(os.path.dirname(__file__), "..", "policies"))
    parser.add_argument("--n", type=int, default=20000)
    args = parser.parse_args()
    # Evaluation proper (decision cache off), then what a repeated input costs with it on.
    engines = {"evaluated": EmbeddedEngine(args.policyDir, cache_size=0),
               "cached": EmbeddedEngine(args.policyDir)}
    print(f"policy {os.path.abspath(args.policyDir)} revision {engines['cached'].revision()}, "
          f"{args.n} decisions each")
    for label, package, input_doc in CASES:
        allowed = engines["evaluated"].evaluate(package, input_doc).allowed
        for mode, engine in engines.items():
            us = measure(engine, package, input_doc, args.n)
            print(f"{us:8.1f} µs/decision  {mode:9s} {'allow' if allowed else 'deny '}  {label}")


if __name__ == "__main__":
    main()
