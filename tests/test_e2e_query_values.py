"""Query values in the one spelling, end to end: docker CLI -> dsfw -> dockerd.

A policy written with the name dockerd stores (``guarded``) holds against
``--name /guarded``, and what dockerd stored is the name the policy saw.
"""
from __future__ import annotations

import subprocess

from dsfw.testing.e2e import DOCKER_SOCKET, TEST_IMAGE, docker_cli, requires_docker, unique_name

pytestmark = requires_docker

POLICY = """package docker.authz

import rego.v1

default allow := false

allow if not guarded

guarded if {
	input.Route == "/containers/create"
	startswith(input.Query.name[0], "guarded-")
}
"""


def test_container_names_are_judged_and_stored_in_one_spelling(dsfw_factory, tmp_path):
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "authz.rego").write_text(POLICY)
    fw = dsfw_factory(policies)
    guarded, plain = "guarded-" + unique_name(), unique_name()
    try:
        refused = docker_cli(fw.socket, "create", "--name", "/" + guarded, TEST_IMAGE, "true")
        assert refused.returncode != 0 and "dsfw: " in refused.stderr, refused.stderr
        assert docker_cli(DOCKER_SOCKET, "inspect", guarded).returncode != 0
        bad = docker_cli(fw.socket, "create", "--name", "//" + plain, TEST_IMAGE, "true")
        assert "dsfw: " in bad.stderr and "invalid container name" in bad.stderr, bad.stderr
        made = docker_cli(fw.socket, "create", "--name", "/" + plain, TEST_IMAGE, "true")
        assert made.returncode == 0, made.stderr
        stored = docker_cli(DOCKER_SOCKET, "inspect", "--format", "{{.Name}}", plain)
        assert stored.stdout.strip() == "/" + plain
    finally:
        for name in (guarded, plain):
            subprocess.run(["docker", "-H", f"unix://{DOCKER_SOCKET}", "rm", "-f", name],
                           capture_output=True, timeout=60)
