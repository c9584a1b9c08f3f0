"""How long reading a Dockerfile as canonical steps takes, in milliseconds.

Measures :func:`dsfw.build.steps.canonical_dockerfile` (parse, derive, render,
read the rendering back) on an ordinary Dockerfile, on one at the instruction
limit and on the worst shapes inside the 1 MiB Dockerfile bound, next to the
official Go parser (PyPI ``dockerfile``, parsing only) when it is installed.
It runs on a worker thread per build. A measurement, not a test.

    python3 bench/bench_dockerfile.py [--n 50]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dsfw.build.steps import MAX_INSTRUCTIONS, canonical_dockerfile  # noqa: E402

ORDINARY = b"""# syntax=docker/dockerfile:1
ARG BASE=alpine:3.19
FROM ${BASE} AS build
ARG VERSION=1.0
ENV OUT=/out \\
    MODE=release
WORKDIR $OUT
RUN apk add --no-cache make gcc musl-dev \\
    # build tools
    && make -j4 VERSION=$VERSION
COPY --chown=1000:1000 src/ /src/
RUN ["/bin/sh", "-c", "make install DESTDIR=$OUT"]
FROM $BASE
LABEL org.opencontainers.image.version=$VERSION
COPY --from=build /out /usr/local
USER 1000
EXPOSE 8080
HEALTHCHECK --interval=30s CMD ["wget", "-q", "-O-", "http://localhost:8080/health"]
ENTRYPOINT ["/usr/local/bin/app"]
CMD ["--serve"]
"""
CASES = [
    ("ordinary (20 lines)", ORDINARY),
    (f"{MAX_INSTRUCTIONS} RUN lines (the limit)",
     b"FROM a\n" + b"RUN echo step $X && true\n" * (MAX_INSTRUCTIONS - 1)),
    ("1 MiB: one RUN continued over 116k lines", b"FROM a\nRUN " + b"echo x \\\n" * 116_000),
]


def measure(data: bytes, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        canonical_dockerfile(data, {"VERSION": "2.0"})
    return (time.perf_counter() - start) / n * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50)
    args = parser.parse_args()
    try:
        import dockerfile as goparser
    except ImportError:
        goparser = None
    for name, data in CASES:
        n = args.n if len(data) < 10_000 else 1
        line = f"{name:45s} {len(data):8d} B  dsfw {measure(data, n):9.2f} ms"
        if goparser is not None:
            start = time.perf_counter()
            for _ in range(n):
                goparser.parse_string(data.decode())
            line += f"   Go parser {(time.perf_counter() - start) / n * 1000:8.2f} ms"
        print(line)


if __name__ == "__main__":
    main()
