"""The policy library end to end: docker CLI -> dsfw (twistd) with library policies -> dockerd.

Each test runs a real dsfw over a temporary policy directory composed as
docs/library.md tells operators to: the library's policy files (no tests)
plus a data.yaml at the top. A refused request must come back with the
library's message *and* leave no trace in dockerd (checked on the direct
socket); a harmless request must go through.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from e2e_support import DOCKER_SOCKET, REPO_ROOT, TEST_IMAGE, docker_cli, requires_docker, unique_name

pytestmark = requires_docker

LIBRARY = REPO_ROOT / "policies" / "library"
POLICIES = ["common.rego", "collect.rego", "collect_build.rego", "images.rego", "privileged.rego",
            "mounts.rego", "namespaces.rego", "network.rego", "callers.rego"]


def compose(tmp_path: Path, base: str, settings: dict) -> Path:
    d = tmp_path / f"policy-{base}"
    d.mkdir()
    for name in POLICIES + [base]:
        shutil.copy(LIBRARY / name, d / name)
    (d / "data.yaml").write_text(yaml.safe_dump({"library": {"enabled": True, **settings}}))
    return d


def direct(*args: str, **kw):
    return docker_cli(DOCKER_SOCKET, *args, **kw)


def refused(result, message: str) -> None:
    assert result.returncode != 0, f"{result.args} was not refused: {result.stdout}"
    assert "Error response from daemon: dsfw: " in result.stderr, result.stderr
    assert message in result.stderr, result.stderr


def ok(result) -> str:
    assert result.returncode == 0, f"{result.args}: {result.stderr}"
    return result.stdout


@pytest.fixture
def cleanup():
    made: list[tuple[str, str]] = []
    yield lambda kind, name: made.append((kind, name)) or name
    for kind, name in reversed(made):
        rm = {"container": ["rm", "-f", "-v"], "network": ["network", "rm"], "image": ["rmi", "-f"]}[kind]
        direct(*rm, name, timeout=60)


@pytest.fixture
def allowed_dir(tmp_path) -> Path:
    d = tmp_path / "shared"
    d.mkdir()
    (d / "hello").write_text("from the host\n")
    return Path(os.path.realpath(d))


@pytest.fixture
def fw(dsfw_factory, tmp_path, allowed_dir):
    settings = {
        "images": {"allowed": [TEST_IMAGE.split(":")[0]]},
        "privileged": {"allowed_capabilities": ["NET_ADMIN"]},
        "mounts": {"allowed_host_paths": [str(allowed_dir)]},
        "network": {"allowed_drivers": ["bridge"], "name_patterns": ["dsfw-e2e-.*"]},
        "callers": {"exec": {"uids": [99999]}},
    }
    return dsfw_factory(compose(tmp_path, "allow_all.rego", settings))


def assert_no_container(name: str) -> None:
    assert direct("container", "inspect", name).returncode != 0, f"dockerd has a container {name}"


@pytest.mark.parametrize("flags, message", [
    (["--privileged"], "privileged containers are not allowed: drop --privileged"),
    (["-v", "/etc:/x"], "host path /etc cannot be mounted into a container"),
    (["--cap-add", "SYS_ADMIN"], "capability CAP_SYS_ADMIN is not allowed (--cap-add SYS_ADMIN)"),
    (["--pid", "host"], "the host's pid namespace is not allowed: drop --pid host"),
    (["--network", "host"], "the host's network namespace is not allowed"),
    (["--device", "/dev/null"], "host device /dev/null is not allowed"),
])
def test_forbidden_run_is_refused_and_nothing_created(fw, cleanup, flags, message):
    name = cleanup("container", unique_name())
    refused(docker_cli(fw.socket, "run", "--name", name, *flags, TEST_IMAGE, "true"), message)
    assert_no_container(name)


def test_image_from_another_registry_is_refused(fw, cleanup):
    name = cleanup("container", unique_name())
    r = docker_cli(fw.socket, "run", "--name", name, "registry.invalid/evil/tool:1", "true")
    refused(r, 'image "registry.invalid/evil/tool:1" (container image, read as '
               'registry.invalid/evil/tool:1) is not from an allowed registry')
    assert_no_container(name)
    refused(docker_cli(fw.socket, "pull", "registry.invalid/evil/tool:1"), "pulled image")


def test_harmless_run_passes(fw, cleanup, allowed_dir):
    name = cleanup("container", unique_name())
    out = ok(docker_cli(fw.socket, "run", "--name", name, "--cap-add", "NET_ADMIN",
                        "-v", f"{allowed_dir}:/data:ro", TEST_IMAGE, "cat", "/data/hello"))
    assert out == "from the host\n"
    assert ok(direct("container", "inspect", "--format", "{{.HostConfig.CapAdd}}", name)).strip() \
        in ("[NET_ADMIN]", "[CAP_NET_ADMIN]")


def test_network_rules(fw, cleanup):
    forbidden = cleanup("network", unique_name())
    refused(docker_cli(fw.socket, "network", "create", "--driver", "macvlan", forbidden),
            "network driver macvlan is not allowed")
    assert direct("network", "inspect", forbidden).returncode != 0
    badname = cleanup("network", unique_name("other"))
    refused(docker_cli(fw.socket, "network", "create", badname), f"network name {badname} is not allowed")
    good = cleanup("network", unique_name())
    ok(docker_cli(fw.socket, "network", "create", good))
    assert ok(direct("network", "inspect", "--format", "{{.Driver}}", good)).strip() == "bridge"


def test_exec_reserved_to_another_caller(fw, cleanup):
    name = cleanup("container", unique_name())
    ok(docker_cli(fw.socket, "run", "-d", "--name", name, TEST_IMAGE, "sleep", "60"))
    refused(docker_cli(fw.socket, "exec", name, "echo", "hi"),
            "docker exec is reserved to uids 99999; you are user")


def test_build_from_a_forbidden_image_is_refused(fw, cleanup, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM registry.invalid/evil/base:1\nRUN true\n")
    tag = cleanup("image", unique_name("dsfw-e2e-img"))
    refused(docker_cli(fw.socket, "build", "-t", tag, str(ctx)),
            'image "registry.invalid/evil/base:1" (Dockerfile, read as registry.invalid/evil/base:1)')
    assert direct("image", "inspect", tag).returncode != 0
    (ctx / "Dockerfile").write_text(f"FROM {TEST_IMAGE}\nRUN echo built > /built\n")
    ok(docker_cli(fw.socket, "build", "-t", tag, str(ctx), timeout=120))


def test_read_only_profile(dsfw_factory, tmp_path, cleanup):
    ro = dsfw_factory(compose(tmp_path, "readonly.rego", {}))
    assert TEST_IMAGE in ok(docker_cli(ro.socket, "images", "--format", "{{.Repository}}:{{.Tag}}")).split()
    ok(docker_cli(ro.socket, "ps", "-a"))
    ok(docker_cli(ro.socket, "version"))
    name = cleanup("container", unique_name())
    refused(docker_cli(ro.socket, "create", "--name", name, TEST_IMAGE, "true"),
            "read-only profile: POST /containers/create is not allowed")
    assert_no_container(name)
    net = cleanup("network", unique_name())
    refused(docker_cli(ro.socket, "network", "create", net), "read-only profile: POST /networks/create")
    assert direct("network", "inspect", net).returncode != 0
