"""The rollout workflow of docs/policies.md, end to end against dockerd and the real CLI.

dsfw --dry-run --record-dir while ordinary workflows run; dsfw learn; dsfw test;
dsfw enforcing the learned policy: the same workflows pass, and what was never
done (a privileged container, a host bind mount, an unused image, an unused
endpoint) is refused with a message that says why.
"""
from __future__ import annotations

import io
import subprocess

from dsfw.testing.e2e import (DOCKER_SOCKET, TEST_IMAGE, docker_cli, policy_dir, requires_docker,
                         unique_name)

from dsfw.cli import app

pytestmark = requires_docker

ALLOW_ALL = {"allow.rego": "package docker.authz\n\nallow := true\n"}


def cli(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code = app.main(list(argv), out=out, err=err)
    return code, out.getvalue() + err.getvalue()


def ok(sock, *args: str, input: str | None = None) -> str:
    done = docker_cli(sock, *args, input=input, timeout=120)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


MARKER = unique_name("learn-secret-marker")


def workflows(sock, names: dict[str, str]) -> None:
    """ps, run, exec, logs, build, volume, network: what a CI job does."""
    ok(sock, "ps", "-a")
    assert ok(sock, "run", "--rm", "--name", names["once"], "-e", f"TOKEN={MARKER}", TEST_IMAGE,
              "echo", "hello").strip() == "hello"
    ok(sock, "run", "-d", "--name", names["svc"], TEST_IMAGE, "sleep", "60")
    assert ok(sock, "exec", names["svc"], "echo", "inside").strip() == "inside"
    ok(sock, "logs", names["svc"])
    ok(sock, "inspect", names["svc"])
    ok(sock, "rm", "-f", names["svc"])
    ok(sock, "build", "-q", "-t", names["image"], "-",
       input=f"FROM {TEST_IMAGE}\nRUN echo built > /built\n")
    # dockerd 20.10 sometimes answers "unrecognized image ID" while other builds run: retry
    for _ in range(3):
        if docker_cli(sock, "rmi", names["image"]).returncode == 0:
            break
    else:
        ok(sock, "rmi", names["image"])
    ok(sock, "volume", "create", names["volume"])
    ok(sock, "volume", "ls")
    ok(sock, "volume", "rm", names["volume"])
    ok(sock, "network", "create", names["network"])
    ok(sock, "network", "ls")
    ok(sock, "network", "rm", names["network"])


def refused(sock, *args: str) -> str:
    done = docker_cli(sock, *args, timeout=60)
    assert done.returncode != 0, (args, done.stdout)
    assert "dsfw: " in done.stderr, done.stderr
    return done.stderr


def cleanup(names: dict[str, str]) -> None:
    for args in (["rm", "-f", names["svc"], names["once"]], ["rmi", "-f", names["image"]],
                 ["volume", "rm", "-f", names["volume"]], ["network", "rm", names["network"]]):
        docker_cli(DOCKER_SOCKET, *args)


def test_learn_then_enforce(dsfw_factory, tmp_path):
    names = {k: unique_name(f"learn-{k}") for k in ("once", "svc", "image", "volume", "network")}
    records = tmp_path / "records"
    learned = tmp_path / "learned"
    unused = f"{unique_name('learn-unused')}:1"
    try:
        recording = dsfw_factory(policy_dir(tmp_path, ALLOW_ALL), "--dry-run",
                                 "--record-dir", str(records))
        workflows(recording.socket, names)
        recording.stop()
        assert len(list(records.glob("*.json"))) > 20

        code, output = cli("learn", str(records), "--output", str(learned))
        assert code == 0, output
        data = (learned / "data.yaml").read_text()
        assert "/containers/{id}/exec" in data and "/build" in data
        code, output = cli("test", "--policyDir", str(learned))
        assert code == 0, output
        assert "PASS" in output
        for path in learned.iterdir():  # a recorded secret never reaches the generated files
            assert MARKER not in path.read_text(), path

        enforcing = dsfw_factory(learned)
        workflows(enforcing.socket, names)  # the same work passes

        message = refused(enforcing.socket, "run", "--rm", "--privileged", TEST_IMAGE, "true")
        assert "privileged containers are not allowed" in message
        message = refused(enforcing.socket, "run", "--rm", "-v", "/etc:/host-etc", TEST_IMAGE, "true")
        assert "host path /etc cannot be mounted" in message
        assert docker_cli(DOCKER_SOCKET, "tag", TEST_IMAGE, unused).returncode == 0
        message = refused(enforcing.socket, "run", "--rm", unused, "true")
        assert "is not from an allowed registry or repository" in message
        message = refused(enforcing.socket, "pause", names["svc"])
        assert ("POST /containers/{id}/pause by uid:0 was not seen while learning this policy"
                in message)
    finally:
        cleanup(names)
        subprocess.run(["docker", "rmi", "-f", unused], capture_output=True, timeout=60)
