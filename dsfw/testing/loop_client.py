"""A load client: ``python -m dsfw.testing.loop_client SOCKET BODY_FILE OUT_FILE TARGET``.

POSTs the JSON body in BODY_FILE to TARGET on the UNIX socket SOCKET again and
again (one connection each, until killed), appending each answer's status code
to OUT_FILE.  A process of its own, so the client measuring latency beside it
does not share its interpreter (tests/test_e2e_offload.py,
bench/bench_large_bodies.py).
"""
import socket
import sys


def main(sock: str, body_file: str, out: str, target: str) -> None:
    with open(body_file, "rb") as f:
        body = f.read()
    head = (f"POST {target} HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    while True:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(300)
            s.connect(sock)
            s.sendall(head + body)
            answer = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                answer += chunk
        with open(out, "a") as f:
            f.write(answer[9:12].decode() + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:5])
