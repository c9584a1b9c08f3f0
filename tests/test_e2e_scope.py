"""End to end: ``input.Target`` through a real ``twistd dsfw`` in front of the real dockerd.

The policy below echoes what it saw of the target in its deny messages, so a
test reads the identity dsfw resolved from what the docker CLI prints.
Objects are created on the direct socket with unique names and removed at
teardown.
"""
from __future__ import annotations

import json
import subprocess

import pytest

from dsfw.testing.e2e import (DOCKER_SOCKET, TEST_IMAGE, docker_cli, policy_dir, raw_request,
                         requires_docker, unique_name)

pytestmark = requires_docker

TARGET_POLICY = r'''package docker.authz
import rego.v1

default allow := true

# echo what dsfw resolved, for containers labelled probe=echo
deny contains msg if {
	input.Target.Labels.probe == "echo"
	t := input.Target
	msg := sprintf("saw %s %s %s name=%s image=%s binds=%v owner=%v", [t.Kind, t.ID, input.Method, t.Name, t.Image, t.HostConfig.Binds, t.Owner])
}

deny contains msg if {
	input.Target.Kind == "exec"
	input.Target.Container.Labels.probe == "exec-echo"
	msg := sprintf("saw exec of %s", [input.Target.Container.Name])
}

deny contains "protected" if input.Target.Labels.protected == "yes"

deny contains "target is null" if {
	input.Query.probe_null[0] == "1"
	input.Target == null
}
'''


def direct(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = docker_cli(DOCKER_SOCKET, *args)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def containers():
    names: list[str] = []

    def make(*labels: str, name: str | None = None) -> str:
        name = name or unique_name("dsfw-scope")
        args = ["create", "--name", name]
        for label in labels:
            args += ["--label", label]
        created = direct(*args, "-v", "/tmp:/hosttmp", TEST_IMAGE, "sleep", "300")
        names.append(created.stdout.strip())  # removed by ID: tests rename them
        return name

    yield make
    for container_id in names:
        docker_cli(DOCKER_SOCKET, "rm", "-f", container_id)


@pytest.fixture
def proxy(dsfw_factory, tmp_path):
    return dsfw_factory(policy_dir(tmp_path, {"authz.rego": TARGET_POLICY}))


def container_id(name: str) -> str:
    return direct("inspect", "--format", "{{.Id}}", name).stdout.strip()


def test_policy_sees_the_container_a_request_names(proxy, containers):
    name = containers("probe=echo", "dsfw.owner.uid=4242", "dsfw.owner.user=ghost")
    cid = container_id(name)
    out = docker_cli(proxy.socket, "start", name)
    assert out.returncode != 0
    assert f"saw container {cid} POST name={name} image={TEST_IMAGE}" in out.stderr
    assert 'binds=["/tmp:/hosttmp"]' in out.stderr
    assert 'owner={"Uid": 4242, "User": "ghost"}' in out.stderr
    # the ID prefix and the full ID name the same object
    for ref in (cid[:12], cid):
        assert f"saw container {cid} GET" in docker_cli(proxy.socket, "inspect", ref).stderr


def test_exec_instance_target_carries_its_container(proxy, containers):
    name = containers("probe=exec-echo")
    direct("start", name)
    exec_id = json.loads(raw_request(
        DOCKER_SOCKET, b"POST /containers/%s/exec HTTP/1.1\r\nHost: d\r\n"
        b"Content-Type: application/json\r\nContent-Length: 18\r\n\r\n{\"Cmd\":[\"true\"]}  "
        % name.encode(), responses=1).partition(b"\r\n\r\n")[2])["Id"]
    answer = raw_request(proxy.socket, b"GET /exec/%s/json HTTP/1.1\r\nHost: d\r\n\r\n"
                         % exec_id.encode(), responses=1)
    assert b" 403 " in answer.split(b"\r\n", 1)[0]
    assert f"saw exec of {name}".encode() in answer


def test_missing_object_is_null_and_answered_as_dockerd_does(proxy):
    missing = unique_name("dsfw-none")
    answer = raw_request(proxy.socket, b"GET /containers/%s/json?probe_null=1 HTTP/1.1\r\n"
                         b"Host: d\r\n\r\n" % missing.encode(), responses=1)
    assert b"target is null" in answer
    answer = raw_request(proxy.socket, b"GET /containers/%s/json HTTP/1.1\r\nHost: d\r\n\r\n"
                         % missing.encode(), responses=1)
    assert answer.startswith(b"HTTP/1.1 404 ")
    assert f'{{"message":"No such container: {missing}"}}'.encode() in answer


def test_renamed_names_are_decided_on_the_object_they_name_now(proxy, containers):
    """A cached identity never outlives a rename: the second request is decided on the new holder."""
    web = unique_name("dsfw-web")
    plain = containers(name=web)
    protected = containers("protected=yes")
    assert docker_cli(proxy.socket, "inspect", web).returncode == 0  # identity now cached
    direct("rename", plain, unique_name("dsfw-old"))
    direct("rename", protected, web)
    out = docker_cli(proxy.socket, "inspect", web)
    assert out.returncode != 0 and "protected" in out.stderr
