"""Large JSON bodies go to the body worker: other clients keep being served, and it fails closed.

A real ``twistd -n dsfw`` in front of the real dockerd.  Bounded: a few hundred
pings, bodies of at most 16 MB, waits of seconds.  Container creates name an
image that does not exist (dockerd answers 404 and creates nothing), except the
label test, which creates one container and removes it.
"""
from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time

import pytest

from dsfw.testing.e2e import docker_cli, policy_dir, raw_request, subprocess_env, unique_name
from tests.test_offload import ALLOW, SECRETIVE

pytestmark = pytest.mark.requires_docker

MISSING = "dsfw-e2e-no-such-image"
CREATE = "/v1.41/containers/create"
DOCKER = "/var/run/docker.sock"


def request(sock: str, method: str, target: str, body: bytes = b"", timeout: float = 120):
    """(status, parsed JSON body or raw bytes) of one request on its own connection."""
    head = (f"{method} {target} HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    answer = raw_request(sock, head + body, responses=1, timeout=timeout)
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.") else 0
    payload = answer.partition(b"\r\n\r\n")[2]
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, payload


def big_create(image: str = MISSING, env: int = 16_000, extra: tuple[str, ...] = (), **fields) -> bytes:
    """A container create of ~16 MB (16,000 Env entries of 1 kB) by default."""
    values = [f"V{i}=" + "x" * 1000 for i in range(env)] + list(extra)
    return json.dumps({"Image": image, "Env": values, **fields}).encode()


def binds_create() -> bytes:
    binds = [f"/srv/b{i}:/m/{i}" for i in range(300_000)]
    return json.dumps({"Image": MISSING, "HostConfig": {"Binds": binds}}).encode()


def worker_pids(dsfw) -> list[int]:
    pids = []
    for task in os.listdir(f"/proc/{dsfw.pid}/task"):
        with open(f"/proc/{dsfw.pid}/task/{task}/children") as f:
            pids += [int(p) for p in f.read().split()]
    return pids


def p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def test_large_bodies_leave_other_clients_pings_fast(dsfw_factory, tmp_path):
    """Issue 11: six clients sending 16 MB bodies and one 300,000 binds; another's /_ping p99 < 50 ms.

    The pings alternate with pings on dockerd's own socket, whose p99 (twice) is added to
    the allowance: on a quiet machine that is a millisecond or two; on one shared with
    other jobs it keeps their load from being counted as dsfw's.  In process (before the
    body worker), dsfw's p99 here was 0.4-1.1 s.
    """
    dsfw = dsfw_factory(policy_dir(tmp_path, {"allow.rego": ALLOW}))
    big, binds = tmp_path / "big.json", tmp_path / "binds.json"
    big.write_bytes(big_create())
    binds.write_bytes(binds_create())
    assert big.stat().st_size > 16_000_000
    outs = [tmp_path / f"answers{i}" for i in range(7)]
    senders = [subprocess.Popen([sys.executable, "-m", "dsfw.testing.loop_client", dsfw.socket,
                                 str(big if i < 6 else binds), str(out), CREATE],
                                env=subprocess_env())
               for i, out in enumerate(outs)]

    def answers() -> list[str]:
        return [line for out in outs if out.exists() for line in out.read_text().split()]
    try:
        deadline = time.monotonic() + 60
        while len(answers()) < 2 and time.monotonic() < deadline:  # the bodies are flowing
            time.sleep(0.05)
        before = len(answers())
        assert before >= 2, "the large bodies were not answered within 60 s"
        latencies = {dsfw.socket: [], DOCKER: []}
        for _ in range(400):  # bounded: about 10 s
            for sock, taken in latencies.items():  # interleaved: the same moments of load
                started = time.perf_counter()
                status, body = request(sock, "GET", "/_ping", timeout=30)
                taken.append(time.perf_counter() - started)
                assert status == 200, body
            time.sleep(0.01)
        during = len(answers()) - before
    finally:
        for sender in senders:
            sender.kill()
            sender.wait(10)
    # the bodies were really being handled while the pings ran, and each was answered
    statuses = answers()
    assert during >= 6, f"only {during} large bodies answered while pinging"
    assert set(statuses) == {"404", "400"}, sorted(set(statuses))
    # Under 50 ms; on a machine other jobs load, plus twice what dockerd's own socket
    # took at its p99 in the same seconds: a relayed ping waits for the scheduler twice
    # more (dsfw woken by the client, then by dockerd's answer) than a direct one.
    ours, direct = latencies[dsfw.socket], latencies[DOCKER]
    assert p99(ours) < 0.050 + 2 * p99(direct), (
        f"/_ping through dsfw: p99 {p99(ours) * 1000:.1f} ms, median "
        f"{statistics.median(ours) * 1000:.1f} ms, max {max(ours) * 1000:.1f} ms; "
        f"dockerd's socket: p99 {p99(direct) * 1000:.1f} ms")
    assert dsfw.alive()


def test_a_worker_killed_mid_request_denies_and_a_new_one_takes_over(dsfw_factory, tmp_path):
    dsfw = dsfw_factory(policy_dir(tmp_path, {"allow.rego": ALLOW}))
    assert worker_pids(dsfw) == []  # started lazily
    result = {}
    sender = threading.Thread(target=lambda: result.update(
        answer=request(dsfw.socket, "POST", CREATE, big_create(env=16_000))))
    sender.start()
    deadline = time.monotonic() + 30
    while not worker_pids(dsfw) and time.monotonic() < deadline:
        time.sleep(0.002)
    (pid,) = worker_pids(dsfw)
    os.kill(pid, signal.SIGKILL)
    sender.join(60)
    status, body = result["answer"]
    assert status == 503, body
    assert body["message"].startswith("dsfw: the body worker stopped"), body
    assert "body_worker.exited" in dsfw.log_text()
    # fail closed, and recover: the next large body is decided by a new worker and relayed
    status, body = request(dsfw.socket, "POST", CREATE, big_create(env=2000))
    assert status == 404 and "No such image" in body["message"], body
    assert worker_pids(dsfw) and worker_pids(dsfw) != [pid]
    assert dsfw.alive()


def test_policy_reloads_reach_the_worker(dsfw_factory, tmp_path):
    policies = policy_dir(tmp_path, {"p.rego": SECRETIVE})
    dsfw = dsfw_factory(policies)
    token = "TOKEN=e2e-secret-8f3a9c"
    status, body = request(dsfw.socket, "POST", CREATE, big_create(env=2000, extra=(token,)))
    assert status == 403, body
    assert body["message"].startswith("dsfw: no tokens: "), body
    assert "e2e-secret-8f3a9c" not in body["message"]  # the deny message is scrubbed as in process
    assert worker_pids(dsfw)  # it was the worker's decision
    (policies / "p.rego").write_text(ALLOW)
    os.kill(dsfw.pid, signal.SIGHUP)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status, body = request(dsfw.socket, "POST", CREATE, big_create(env=2000, extra=(token,)))
        if status != 403:
            break
        time.sleep(0.2)
    assert status == 404 and "No such image" in body["message"], body


def test_labels_are_stamped_on_a_large_create(dsfw_factory, tmp_path):
    owner = unique_name("owner")
    policy = ALLOW + f'labels := {{"dsfw-e2e-owner": "{owner}"}}\n'
    dsfw = dsfw_factory(policy_dir(tmp_path, {"p.rego": policy}))
    name = unique_name("dsfw-e2e-offload")
    status, body = request(dsfw.socket, "POST", f"{CREATE}?name={name}",
                           big_create(image="localbusybox:latest", env=1000,
                                      Cmd=["true"], Labels={"mine": "yes"}))
    try:
        assert status == 201, body
        assert worker_pids(dsfw)
        inspected = docker_cli(DOCKER, "inspect", name)
        labels = json.loads(inspected.stdout)[0]["Config"]["Labels"]
        assert labels == {"mine": "yes", "dsfw-e2e-owner": owner}
        assert len(json.loads(inspected.stdout)[0]["Config"]["Env"]) >= 1000
    finally:
        docker_cli(DOCKER, "rm", "-f", name)


def test_the_waiting_limit_and_the_timeout_refuse(dsfw_factory, tmp_path):
    dsfw = dsfw_factory(policy_dir(tmp_path, {"allow.rego": ALLOW}), "--body-worker-queue",
                        "1000000")
    status, body = request(dsfw.socket, "POST", CREATE, big_create(env=2000))
    assert status == 503 and body["message"].startswith("dsfw: too many large bodies"), body
    status, body = request(dsfw.socket, "POST", CREATE, big_create(env=10))  # in process
    assert status == 404, body

    slow = dsfw_factory(policy_dir(tmp_path, {"allow.rego": ALLOW}, name="slow"),
                        "--body-worker-timeout", "0.001")
    status, body = request(slow.socket, "POST", CREATE, big_create(env=16_000))
    assert status == 503 and "did not answer within" in body["message"], body
    assert request(slow.socket, "GET", "/_ping")[0] == 200
    assert slow.alive()


SCOPED = """package docker.authz
import rego.v1

allow if count(deny) == 0
deny contains msg if {
    input.PathPlain == sprintf("/containers/%s/exec", [input.Target.Name])
    msg := sprintf("exec in %s (%s), mounts %v", [input.Target.Name, input.Target.Labels.probe,
                                                 input.BindMounts])
}
deny contains msg if {
    some name, volume in input.Volumes
    msg := sprintf("volume %s known: %v, binds %v", [name, volume != null, input.BindMounts])
}
"""


def test_scope_facts_are_the_same_for_a_large_body(dsfw_factory, tmp_path):
    """input.Target, the container's mount facts and input.Volumes, decided in the worker."""
    dsfw = dsfw_factory(policy_dir(tmp_path, {"p.rego": SCOPED}))
    name = unique_name("dsfw-e2e-offload")
    made = docker_cli(DOCKER, "create", "--name", name, "--label", "probe=big",
                      "-v", "/tmp:/hosttmp", "localbusybox:latest", "sleep", "300")
    assert made.returncode == 0, made.stderr
    try:
        messages = []
        for count in (10, 2000):  # in process, then in the worker
            exec_body = json.dumps({"Cmd": ["true"], "Env": [f"E{i}=" + "x" * 200
                                                             for i in range(count)]}).encode()
            create_body = big_create(env=count // 5, HostConfig={
                "Binds": ["/srv/a:/a", f"{name}-no-such-volume:/data"]})
            status, exec_answer = request(dsfw.socket, "POST", f"/v1.41/containers/{name}/exec",
                                          exec_body)
            assert status == 403, exec_answer
            status, create_answer = request(dsfw.socket, "POST", CREATE, create_body)
            assert status == 403, create_answer
            messages.append((exec_answer["message"], create_answer["message"]))
        assert messages[0] == messages[1]
        assert f"exec in {name} (big), mounts" in messages[1][0] and "/tmp" in messages[1][0]
        assert "known: false" in messages[1][1] and "/srv/a" in messages[1][1]
        assert worker_pids(dsfw)
    finally:
        docker_cli(DOCKER, "rm", "-f", name)


def test_dry_run_relays_what_the_worker_would_deny(dsfw_factory, tmp_path):
    deny_all = 'package docker.authz\nimport rego.v1\ndeny contains "closed" if true\n'
    dsfw = dsfw_factory(policy_dir(tmp_path, {"p.rego": deny_all}), "--dry-run")
    status, body = request(dsfw.socket, "POST", CREATE, big_create(env=2000))
    assert status == 404 and "No such image" in body["message"], body
    assert worker_pids(dsfw)
    assert "policy.dry_run_would_deny" in dsfw.log_text()


def test_a_recorder_keeps_large_bodies_in_process(dsfw_factory, tmp_path):
    records = tmp_path / "records"
    dsfw = dsfw_factory(policy_dir(tmp_path, {"allow.rego": ALLOW}), "--record-dir", str(records))
    status, body = request(dsfw.socket, "POST", CREATE, big_create(env=2000))
    assert status == 404, body
    (recorded,) = [r for r in (json.loads(p.read_text()) for p in records.iterdir())
                   if r["input"]["Method"] == "POST"]
    assert len(recorded["input"]["Body"]["Env"]) == 2000  # the whole input, as for any body
    assert worker_pids(dsfw) == []
