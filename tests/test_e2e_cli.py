"""End to end with the real docker CLI: ``docker`` -> dsfw (twistd) -> dockerd.

Unless a test says otherwise dsfw runs the repo's shipped ``policies/``
(allow everything but network creation; builds from ``node`` refused).  What
dsfw lets through is checked against the output the CLI shows; what it
refuses is checked on the direct socket, where it must have left no trace.
"""
from __future__ import annotations

import os
import subprocess
import time

import pytest

from dsfw.testing.e2e import (DOCKER_SOCKET, TEST_IMAGE, docker_cli, policy_dir, requires_docker,
                         subprocess_env, unique_name)

pytestmark = requires_docker

# Builds are decided by data.docker.build.allow as well; undefined would refuse them.
ALLOW_ALL = {"allow.rego": "package docker.authz\n\nallow := true\n",
             "build.rego": "package docker.build\n\nallow := true\n"}


def ok(result: subprocess.CompletedProcess) -> str:
    """The stdout of a CLI run that must have succeeded."""
    assert result.returncode == 0, (
        f"{result.args} exited {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}")
    return result.stdout


def direct(*args: str, **kw) -> subprocess.CompletedProcess:
    """The docker CLI on dockerd's own socket: the ground truth."""
    return docker_cli(DOCKER_SOCKET, *args, **kw)


def assert_refused(result: subprocess.CompletedProcess) -> None:
    assert result.returncode != 0, f"{result.args} was not refused: {result.stdout}"
    assert "Error response from daemon: dsfw: " in result.stderr, result.stderr


@pytest.fixture
def cleanup():
    """Collects ``(kind, name)`` pairs and removes them through the direct socket afterwards."""
    made: list[tuple[str, str]] = []
    yield lambda kind, name: made.append((kind, name)) or name
    for kind, name in reversed(made):
        rm = {"container": ["rm", "-f", "-v"], "volume": ["volume", "rm", "-f"],
              "network": ["network", "rm"], "image": ["rmi", "-f"]}[kind]
        direct(*rm, name, timeout=60)


@pytest.fixture
def sleeper(dsfw, cleanup) -> str:
    """A running container (made through dsfw) that prints 'started' then sleeps."""
    name = cleanup("container", unique_name())
    ok(docker_cli(dsfw.socket, "run", "-d", "--name", name, TEST_IMAGE,
                  "sh", "-c", "echo started; exec sleep 120"))
    return name


def test_version_is_dockerds(dsfw):
    through = ok(docker_cli(dsfw.socket, "version", "--format", "{{.Server.Version}}")).strip()
    assert through and through == ok(direct("version", "--format", "{{.Server.Version}}")).strip()


def test_info(dsfw):
    out = ok(docker_cli(dsfw.socket, "info", "--format", "{{.ServerVersion}} {{.Driver}}"))
    assert out.strip() == ok(direct("info", "--format", "{{.ServerVersion}} {{.Driver}}")).strip()


def test_ps_lists_a_container(dsfw, sleeper):
    out = ok(docker_cli(dsfw.socket, "ps", "-a", "--format", "{{.Names}}"))
    assert sleeper in out.split()


def test_images_lists_the_test_image(dsfw):
    out = ok(docker_cli(dsfw.socket, "images", "--format", "{{.Repository}}:{{.Tag}}"))
    assert TEST_IMAGE in out.split()


def test_run_rm_prints_output(dsfw):
    assert ok(docker_cli(dsfw.socket, "run", "--rm", TEST_IMAGE, "echo", "hello")) == "hello\n"


def test_run_propagates_exit_code(dsfw):
    result = docker_cli(dsfw.socket, "run", "--rm", TEST_IMAGE, "sh", "-c", "exit 3")
    assert result.returncode == 3, result.stderr


def test_run_interactive_pipes_stdin(dsfw):
    out = ok(docker_cli(dsfw.socket, "run", "-i", "--rm", TEST_IMAGE, "cat", input="piped\n"))
    assert out == "piped\n"


def test_run_detached_logs_follow_stop_rm(dsfw, sleeper):
    # logs -f on a running container streams: read until 'started', then stop following.
    env = subprocess_env(DOCKER_HOST=f"unix://{dsfw.socket}")
    follower = subprocess.Popen(["docker", "logs", "-f", sleeper], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    try:
        os.set_blocking(follower.stdout.fileno(), False)
        seen, deadline = b"", time.monotonic() + 20
        while b"started" not in seen and time.monotonic() < deadline:
            seen += follower.stdout.read() or b""
            time.sleep(0.05)
        assert b"started" in seen, seen
        assert follower.poll() is None, "logs -f ended while the container still runs"
    finally:
        follower.kill()
        follower.wait(10)
    assert "started" in ok(docker_cli(dsfw.socket, "logs", sleeper))
    ok(docker_cli(dsfw.socket, "stop", "-t", "1", sleeper))
    assert ok(direct("inspect", "-f", "{{.State.Running}}", sleeper)).strip() == "false"
    ok(docker_cli(dsfw.socket, "rm", sleeper))
    assert direct("inspect", sleeper).returncode != 0


def test_logs_follow_ends_with_the_container(dsfw, cleanup):
    name = cleanup("container", unique_name())
    ok(docker_cli(dsfw.socket, "run", "-d", "--name", name, TEST_IMAGE,
                  "sh", "-c", "echo one; sleep 2; echo two"))
    out = ok(docker_cli(dsfw.socket, "logs", "-f", name, timeout=30))
    assert out == "one\ntwo\n"


def test_exec_non_interactive(dsfw, sleeper):
    assert ok(docker_cli(dsfw.socket, "exec", sleeper, "echo", "hi")) == "hi\n"
    assert docker_cli(dsfw.socket, "exec", sleeper, "false").returncode == 1


def test_exec_interactive_half_close(dsfw, sleeper):
    # cat only exits when it sees EOF: dsfw must pass the CLI's half-close on.
    assert ok(docker_cli(dsfw.socket, "exec", "-i", sleeper, "cat", input="hi\n", timeout=30)) == "hi\n"


def test_exec_interactive_large_stdin(dsfw, sleeper):
    data = os.urandom(256 * 1024).hex()  # 512 kB each way through the hijacked connection
    out = ok(docker_cli(dsfw.socket, "exec", "-i", sleeper, "cat", input=data, timeout=60))
    assert out == data


def test_attach_to_a_running_container(dsfw, cleanup):
    # create -i sets StdinOnce: closing the attached stdin ends cat, and the output still
    # arrives. (With run -d -i dockerd ends the output stream when stdin closes.)
    name = cleanup("container", unique_name())
    ok(docker_cli(dsfw.socket, "create", "-i", "--name", name, TEST_IMAGE, "cat"))
    ok(docker_cli(dsfw.socket, "start", name))
    out = ok(docker_cli(dsfw.socket, "attach", name, input="attached\n", timeout=30))
    assert out == "attached\n"
    assert ok(direct("inspect", "-f", "{{.State.Running}}", name)).strip() == "false"


def test_start_attach_interactive(dsfw, cleanup):
    name = cleanup("container", unique_name())
    ok(docker_cli(dsfw.socket, "create", "-i", "--name", name, TEST_IMAGE, "cat"))
    out = ok(docker_cli(dsfw.socket, "start", "-a", "-i", name, input="via start\n", timeout=30))
    assert out == "via start\n"


def test_cp_both_directions(dsfw, sleeper, tmp_path):
    payload = os.urandom(1 << 20)
    src, back = tmp_path / "in.bin", tmp_path / "out.bin"
    src.write_bytes(payload)
    ok(docker_cli(dsfw.socket, "cp", str(src), f"{sleeper}:/payload.bin"))
    listing = ok(docker_cli(dsfw.socket, "exec", sleeper, "ls", "-ln", "/payload.bin"))
    assert listing.split()[4] == str(len(payload)), listing
    ok(docker_cli(dsfw.socket, "cp", f"{sleeper}:/payload.bin", str(back)))
    assert back.read_bytes() == payload


def test_save_load_round_trip(dsfw, cleanup, tmp_path):
    tag = cleanup("image", unique_name("dsfw-e2e-img") + ":rt")
    ok(docker_cli(dsfw.socket, "tag", TEST_IMAGE, tag))
    archive = tmp_path / "image.tar"
    ok(docker_cli(dsfw.socket, "save", "-o", str(archive), tag))
    assert archive.stat().st_size > 100_000
    ok(docker_cli(dsfw.socket, "rmi", tag))
    assert direct("image", "inspect", tag).returncode != 0
    out = ok(docker_cli(dsfw.socket, "load", "-i", str(archive)))
    assert f"Loaded image: {tag}" in out
    assert ok(direct("image", "inspect", "-f", "{{.Id}}", tag)) == \
        ok(direct("image", "inspect", "-f", "{{.Id}}", TEST_IMAGE))


def test_events_stream_until(dsfw, cleanup):
    name = cleanup("volume", unique_name())
    since = int(time.time()) - 1
    ok(docker_cli(dsfw.socket, "volume", "create", name))
    ok(docker_cli(dsfw.socket, "volume", "rm", name))
    # --until in the future: the CLI streams and dockerd ends the stream at that time.
    started = time.monotonic()
    out = ok(docker_cli(dsfw.socket, "events", "--since", str(since), "--until",
                        str(int(time.time()) + 3), "--filter", "type=volume",
                        "--format", "{{.Actor.ID}} {{.Action}}", timeout=30))
    assert time.monotonic() - started >= 1, "events returned before --until"
    assert f"{name} create" in out and f"{name} destroy" in out, out


def test_volume_create_rm(dsfw, cleanup):
    name = cleanup("volume", unique_name())
    assert ok(docker_cli(dsfw.socket, "volume", "create", name)).strip() == name
    assert ok(direct("volume", "inspect", "-f", "{{.Name}}", name)).strip() == name
    ok(docker_cli(dsfw.socket, "volume", "rm", name))
    assert direct("volume", "inspect", name).returncode != 0


def test_network_create_refused_by_shipped_policy(dsfw, cleanup):
    name = cleanup("network", unique_name())
    result = docker_cli(dsfw.socket, "network", "create", name)
    assert_refused(result)
    assert "data.docker.authz.allow" in result.stderr
    assert direct("network", "inspect", name).returncode != 0, "refused network exists in dockerd"
    refusals = [line for line in dsfw.log_text().splitlines()
                if "networks/create" in line and "403" in line]
    assert refusals, f"dsfw did not log the refusal:\n{dsfw.log_text()}"
    # the refusal is per request: listing networks still works
    assert "bridge" in ok(docker_cli(dsfw.socket, "network", "ls", "--format", "{{.Name}}")).split()


def test_undefined_allow_denies(dsfw_factory, tmp_path, sleeper):
    # allow is undefined (not false) for container listings: that must be a denial too.
    policies = policy_dir(tmp_path, {"authz.rego": (
        "package docker.authz\n\n"
        "allow if {\n    not contains(input.Path, \"/containers/json\")\n}\n")})
    proc = dsfw_factory(policies)
    result = docker_cli(proc.socket, "ps")
    assert_refused(result)
    assert "undefined" in result.stderr
    assert ok(docker_cli(proc.socket, "version", "--format", "{{.Server.Version}}")).strip()


def test_build_with_shipped_policy(dsfw, cleanup, tmp_path):
    tag = cleanup("image", unique_name("dsfw-e2e-build") + ":t")
    (tmp_path / "Dockerfile").write_text(f"FROM {TEST_IMAGE}\nRUN echo built > /built\n")
    ok(docker_cli(dsfw.socket, "build", "-q", "-t", tag, str(tmp_path), timeout=120))
    assert ok(direct("run", "--rm", tag, "cat", "/built")) == "built\n"
    ok(docker_cli(dsfw.socket, "rmi", tag))


def test_build_from_node_refused(dsfw, cleanup, tmp_path):
    tag = cleanup("image", unique_name("dsfw-e2e-node") + ":t")
    (tmp_path / "Dockerfile").write_text("FROM node:18\nRUN echo never\n")
    result = docker_cli(dsfw.socket, "build", "-q", "-t", tag, str(tmp_path), timeout=120)
    assert_refused(result)
    assert direct("image", "inspect", tag).returncode != 0


def test_smoke_workflows_with_allow_all(dsfw_factory, tmp_path, cleanup):
    """The shared smoke script's workflows, as pytest sees them, with an allow-all policy."""
    proc = dsfw_factory(policy_dir(tmp_path, ALLOW_ALL))
    s = proc.socket
    c = cleanup("container", unique_name("smoke"))
    net = cleanup("network", c + "-net")
    vol = cleanup("volume", c + "-vol")
    img = cleanup("image", c + "-img")
    assert ok(docker_cli(s, "version", "--format", "{{.Server.Version}}")).strip()
    ok(docker_cli(s, "ps", "-a"))
    assert ok(docker_cli(s, "run", "--rm", TEST_IMAGE, "echo", "hello")) == "hello\n"
    assert ok(docker_cli(s, "run", "-i", "--rm", TEST_IMAGE, "cat", input="piped\n")) == "piped\n"
    ok(docker_cli(s, "run", "-d", "--name", c, TEST_IMAGE, "sh", "-c", "echo started; sleep 60"))
    assert ok(docker_cli(s, "exec", c, "echo", "hi")) == "hi\n"
    assert ok(docker_cli(s, "exec", "-i", c, "cat", input="halfclose\n")) == "halfclose\n"
    (tmp_path / "cp").write_text("payload\n")
    ok(docker_cli(s, "cp", str(tmp_path / "cp"), f"{c}:/x"))
    ok(docker_cli(s, "cp", f"{c}:/x", str(tmp_path / "cp-out")))
    assert (tmp_path / "cp-out").read_text() == "payload\n"
    assert "started" in ok(docker_cli(s, "logs", c))
    ok(docker_cli(s, "stop", "-t", "1", c))
    ok(docker_cli(s, "rm", c))
    ok(docker_cli(s, "network", "create", net))
    assert ok(direct("network", "inspect", "-f", "{{.Name}}", net)).strip() == net
    ok(docker_cli(s, "network", "rm", net))
    ok(docker_cli(s, "volume", "create", vol))
    ok(docker_cli(s, "volume", "rm", vol))
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text(f"FROM {TEST_IMAGE}\nRUN echo built\n")
    ok(docker_cli(s, "build", "-q", "-t", img, str(tmp_path / "ctx"), timeout=120))
    ok(docker_cli(s, "rmi", img))
