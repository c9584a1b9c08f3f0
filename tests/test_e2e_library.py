"""The policy library end to end: docker CLI -> dsfw (twistd) with library policies -> dockerd.

Each test runs a real dsfw over a temporary policy directory composed as
docs/library.md tells operators to: the library's policy files (no tests)
plus a data.yaml at the top. A refused request must come back with the
library's message *and* leave no trace in dockerd (checked on the direct
socket); a harmless request must go through.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from dsfw.testing.e2e import (DOCKER_SOCKET, REPO_ROOT, TEST_IMAGE, docker_cli, raw_request,
                         requires_docker, unique_name)

pytestmark = requires_docker

LIBRARY = REPO_ROOT / "policies" / "library"
POLICIES = ["common.rego", "collect.rego", "collect_build.rego", "images.rego", "privileged.rego",
            "mounts.rego", "namespaces.rego", "network.rego", "users.rego", "plugins.rego",
            "swarm.rego", "stored.rego", "callers.rego"]


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
        rm = {"container": ["rm", "-f", "-v"], "network": ["network", "rm"], "image": ["rmi", "-f"],
              "volume": ["volume", "rm", "-f"], "plugin": ["plugin", "rm", "-f"]}[kind]
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


# --- the roads to host root that a natural policy never names -------------------------------

@pytest.fixture
def defaults(dsfw_factory, tmp_path):
    """The library with its shipped data.yaml, the local test image allowed."""
    settings = yaml.safe_load((LIBRARY / "data.yaml").read_text())["library"]
    settings.pop("enabled")
    settings["images"]["allowed"].append(TEST_IMAGE.split(":")[0])
    return dsfw_factory(compose(tmp_path, "allow_all.rego", settings))


def test_plugin_from_a_local_directory_is_refused(defaults, cleanup, tmp_path):
    """docker plugin create of a plugin asking for host mounts, host network and all devices."""
    plugin = tmp_path / "plugin"
    shutil.copytree(Path("/bin"), plugin / "rootfs" / "bin", symlinks=True,
                    ignore=lambda d, names: [n for n in names if n not in ("busybox", "sh")])
    (plugin / "config.json").write_text(json.dumps({
        "description": "host root", "documentation": "-", "entrypoint": ["/bin/sh"],
        "interface": {"types": ["docker.volumedriver/1.0"], "socket": "p.sock"},
        "network": {"type": "host"}, "linux": {"capabilities": ["CAP_SYS_ADMIN"],
                                               "allowAllDevices": True},
        "mounts": [{"source": "/", "destination": "/host", "type": "bind",
                    "options": ["rbind"]}]}))
    name = cleanup("plugin", unique_name("dsfw-e2e-plugin"))
    refused(docker_cli(defaults.socket, "plugin", "create", name, str(plugin)),
            "docker plugin create is not allowed")
    assert direct("plugin", "inspect", name).returncode != 0
    for path, body, message in [
        ("/plugins/pull?remote=vieux/sshfs", b"[]",
         b'plugin \\"vieux/sshfs\\" is not allowed (docker plugin install)'),
        (f"/plugins/{name}/enable", b"", b"(docker plugin enable)"),
        (f"/plugins/{name}/set", b'["mnt.source=/etc"]', b"(docker plugin set)"),
        # (set values may be secrets: the message quotes the path redacted)
        (f"/plugins/{name}/set", b'["mnt.source=/etc"]', b"cannot be mounted into a container"),
    ]:
        request = (f"POST /v1.41{path} HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        answer = raw_request(defaults.socket, request, responses=1)
        assert answer.startswith(b"HTTP/1.1 403 "), answer
        assert message in answer, answer


def test_swarm_management_is_refused(defaults):
    refused(docker_cli(defaults.socket, "swarm", "init", "--advertise-addr", "127.0.0.1"),
            "swarm management is not allowed: docker swarm init")
    assert ok(direct("info", "--format", "{{.Swarm.LocalNodeState}}")).strip() == "inactive"
    refused(docker_cli(defaults.socket, "swarm", "join-token", "worker"),
            "reading the swarm and its join tokens")
    # The CLI looks the network up first (it is not a swarm network here): raw HTTP.
    spec = {"Name": unique_name(), "TaskTemplate": {"Networks": [{"Target": "host"}], "ContainerSpec": {
        "Image": TEST_IMAGE, "User": "0", "CapabilityAdd": ["sys_admin"],
        "Mounts": [{"Type": "bind", "Source": "/etc", "Target": "/e"}],
        "Privileges": {"SELinuxContext": {"Disable": True}}}}}
    body = json.dumps(spec).encode()
    answer = raw_request(defaults.socket, (
        "POST /v1.41/services/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n").encode() + body, responses=1)
    assert answer.startswith(b"HTTP/1.1 403 "), answer
    for message in [b"drop --network host from the service", b"host path /etc cannot be mounted",
                    b"capability CAP_SYS_ADMIN is not allowed",
                    b"drop ContainerSpec.Privileges.SELinuxContext", b"running a service as root"]:
        assert message in answer, answer


def test_build_in_another_containers_network_is_refused(defaults, cleanup, tmp_path):
    other = cleanup("container", unique_name())
    ok(docker_cli(defaults.socket, "create", "--name", other, TEST_IMAGE, "true"))
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {TEST_IMAGE}\nRUN true\n")
    tag = cleanup("image", unique_name("dsfw-e2e-img"))
    refused(docker_cli(defaults.socket, "build", "--network", f"container:{other}", "-t", tag,
                       str(ctx)),
            f"building in another container's network namespace is not allowed: drop --network container:{other}")
    assert direct("image", "inspect", tag).returncode != 0
    ok(docker_cli(defaults.socket, "build", "-t", tag, str(ctx),
                  timeout=120))


@pytest.mark.parametrize("opts, message", [
    (["type=proc", "device=proc"], 'local volume {name} of type "proc" is not allowed'),
    (["type=sysfs", "device=sysfs"], 'of type "sysfs" is not allowed'),
    (["type=none", "o=bind", "device=/etc"], "host path /etc cannot be mounted"),
    # a relative bind device is refused before any policy (dsfw/input/values.py)
    (["type=none", "o=bind", "device=etc"], "the bind device 'etc' is not an absolute path"),
    (["type=overlay", "device=overlay", "o=lowerdir=/etc,upperdir=/tmp/u,workdir=/tmp/w"],
     "host path /etc cannot be mounted"),
])
def test_local_volumes_naming_host_paths_are_refused(defaults, cleanup, opts, message):
    name = cleanup("volume", unique_name("dsfw-e2e-vol"))
    args = [a for o in opts for a in ("--opt", o)]
    refused(docker_cli(defaults.socket, "volume", "create", *args, name), message.format(name=name))
    assert direct("volume", "inspect", name).returncode != 0
    container = cleanup("container", unique_name())
    mount = "type=volume,source={},target=/v,{}".format(
        name, ",".join(f'"volume-opt={o}"' for o in opts))
    refused(docker_cli(defaults.socket, "create", "--name", container, "--mount", mount,
                       TEST_IMAGE, "true"), message.format(name=name))
    assert_no_container(container)


def test_tmpfs_volume_passes(defaults, cleanup):
    name = cleanup("volume", unique_name("dsfw-e2e-vol"))
    ok(docker_cli(defaults.socket, "volume", "create", "--opt", "type=tmpfs", "--opt",
                  "device=tmpfs", "--opt", "o=size=1m", name))
    assert ok(direct("volume", "inspect", "--format", "{{.Options.type}}", name)).strip() == "tmpfs"


@pytest.mark.parametrize("flags, message", [
    (["--security-opt", "systempaths=unconfined"], "unconfined system paths are not allowed"),
    (["--security-opt", "seccomp:unconfined"], "security option seccomp=unconfined is not allowed"),
    (["--cgroupns", "host"], "the host's cgroupns namespace is not allowed"),
    (["--volumes-from", "anything"], "--volumes-from anything is not allowed"),
    (["-u", "00"], 'running a container as root is not allowed: user "0" is uid 0'),
    (["-u", "root:root"], "running a container as root is not allowed"),
    (["-u", "1000:0"], "running a container with the root group is not allowed"),
    (["--group-add", "0"], "the root group is not allowed: drop --group-add 0"),
])
def test_confinement_and_root_are_refused(defaults, cleanup, flags, message):
    name = cleanup("container", unique_name())
    refused(docker_cli(defaults.socket, "run", "--name", name, *flags, TEST_IMAGE, "true"), message)
    assert_no_container(name)


def test_exec_as_root_is_refused(defaults, cleanup):
    name = cleanup("container", unique_name())
    ok(docker_cli(defaults.socket, "run", "-d", "--name", name, "-u", "1000", TEST_IMAGE,
                  "sleep", "60"))
    refused(docker_cli(defaults.socket, "exec", "-u", "0", name, "id", "-u"),
            "running a exec as root is not allowed")
    assert ok(docker_cli(defaults.socket, "exec", name, "id", "-u")).strip() == "1000"
    assert ok(docker_cli(defaults.socket, "run", "--rm", TEST_IMAGE, "id", "-u")).strip() == "0"


# --- host paths judged again when dockerd mounts them --------------------------------------

def never_started(name: str) -> None:
    state = ok(direct("container", "inspect", "--format", "{{.State.Running}} {{.State.StartedAt}}",
                      name)).split()
    assert state[0] == "false" and state[1].startswith("0001-01-01"), state


def test_bind_swapped_for_a_symlink_is_refused_at_start(fw, cleanup, allowed_dir):
    """The issue's scenario: /allowed/x is a directory at create, a link to /etc at start."""
    (allowed_dir / "x").mkdir()
    victim = cleanup("container", unique_name())
    ok(docker_cli(fw.socket, "create", "--name", victim, "-v", f"{allowed_dir}/x:/data",
                  TEST_IMAGE, "cat", "/data/passwd"))
    # another allowed container, which mounts the allowed directory, swaps x for a link
    swapper = cleanup("container", unique_name())
    ok(docker_cli(fw.socket, "run", "--name", swapper, "-v", f"{allowed_dir}:/a", TEST_IMAGE,
                  "sh", "-c", "rmdir /a/x && ln -s /etc /a/x"))
    assert os.path.islink(allowed_dir / "x")
    # (not start -a: its attach is judged too, and the CLI hides an upgrade's refusal message)
    refused(docker_cli(fw.socket, "start", victim), "host path /etc cannot be mounted")
    assert docker_cli(fw.socket, "start", "-a", victim).returncode != 0
    never_started(victim)
    r = docker_cli(fw.socket, "cp", f"{victim}:/data/passwd", "-")
    refused(r, f"host path {allowed_dir}/x is a symbolic link or passes through one (to /etc)")
    # the same container once x is a directory again
    (allowed_dir / "x").unlink()
    (allowed_dir / "x").mkdir()
    (allowed_dir / "x" / "passwd").write_text("not the host's\n")
    assert ok(docker_cli(fw.socket, "start", "-a", victim)) == "not the host's\n"


def test_link_inside_the_allowed_path_is_refused_at_create(fw, cleanup, allowed_dir):
    (allowed_dir / "real").mkdir()
    os.symlink(allowed_dir / "real", allowed_dir / "link")
    name = cleanup("container", unique_name())
    refused(docker_cli(fw.socket, "create", "--name", name, "-v", f"{allowed_dir}/link:/data",
                       TEST_IMAGE, "true"),
            f"host path {allowed_dir}/link is a symbolic link or passes through one")
    assert_no_container(name)


def test_mounts_made_outside_dsfw_are_judged_at_start(dsfw_factory, tmp_path, cleanup):
    """--volumes-from (when allowed) and named volumes with host options, stored before."""
    lenient = dsfw_factory(compose(tmp_path, "allow_all.rego", {
        "images": {"allowed": [TEST_IMAGE.split(":")[0]]}, "mounts": {"allow_volumes_from": True}}))
    source = cleanup("container", unique_name())
    ok(direct("create", "--name", source, "-v", "/etc:/host-etc:ro", TEST_IMAGE, "true"))
    inherits = cleanup("container", unique_name())
    ok(docker_cli(lenient.socket, "create", "--name", inherits, "--volumes-from", source,
                  TEST_IMAGE, "cat", "/host-etc/hostname"))
    refused(docker_cli(lenient.socket, "start", inherits), "host path /etc cannot be mounted")
    never_started(inherits)

    volume = cleanup("volume", unique_name("dsfw-e2e-vol"))
    ok(direct("volume", "create", "--opt", "type=none", "--opt", "o=bind", "--opt", "device=/etc",
              volume))
    user = cleanup("container", unique_name())
    ok(docker_cli(lenient.socket, "create", "--name", user, "-v", f"{volume}:/v", TEST_IMAGE,
                  "true"))
    refused(docker_cli(lenient.socket, "restart", user), "host path /etc cannot be mounted")
    never_started(user)


def test_containers_made_beside_dsfw_are_judged_when_used(fw, cleanup):
    """Created on dockerd's own socket with privileges: dsfw's callers may not start or enter them."""
    pid_host = cleanup("container", unique_name())
    ok(direct("create", "--name", pid_host, "--pid", "host", TEST_IMAGE, "true"))
    refused(docker_cli(fw.socket, "start", pid_host),
            f"container {pid_host} was created with settings you may not use, so you may not "
            "start it: the host's pid namespace is not allowed")
    never_started(pid_host)
    admin = cleanup("container", unique_name())
    ok(direct("run", "-d", "--name", admin, "--cap-add", "SYS_ADMIN", TEST_IMAGE, "sleep", "60"))
    refused(docker_cli(fw.socket, "exec", admin, "true"),
            "so you may not run processes in it: capability CAP_SYS_ADMIN is not allowed")
    plain = cleanup("container", unique_name())
    ok(direct("create", "--name", plain, TEST_IMAGE, "echo", "plain"))
    assert ok(docker_cli(fw.socket, "start", "-a", plain)) == "plain\n"


def _api(sock: str, method: str, path: str, body: dict) -> tuple[int, bytes]:
    data = json.dumps(body).encode()
    reply = raw_request(sock, f"{method} {path} HTTP/1.1\r\nHost: d\r\nConnection: close\r\n"
                        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
                        .encode() + data, responses=1)
    head, _, rest = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), rest


def test_exec_instances_made_beside_dsfw_are_judged_when_started(defaults, cleanup):
    """An exec instance is created by one request and started by another, by anyone knowing
    its ID (the container's ExecIDs): starting one made elsewhere (privileged, as root, or in a
    container with privileges) is judged like creating it."""
    plain = cleanup("container", unique_name())
    ok(direct("run", "-d", "--name", plain, "-u", "1000", TEST_IMAGE, "sleep", "60"))
    admin = cleanup("container", unique_name())
    ok(direct("run", "-d", "--name", admin, "--cap-add", "SYS_ADMIN", TEST_IMAGE, "sleep", "60"))
    cases = [(plain, {"Privileged": True}, "privileged exec is not allowed"),
             (plain, {"User": "00"}, "running a exec as root is not allowed"),
             (admin, {"User": "1000"}, "capability CAP_SYS_ADMIN is not allowed")]
    for container, extra, message in cases:
        status, answer = _api(DOCKER_SOCKET, "POST", f"/v1.41/containers/{container}/exec",
                              {"Cmd": ["id", "-u"], "AttachStdout": True, **extra})
        assert status == 201, answer
        exec_id = json.loads(answer)["Id"]
        status, answer = _api(defaults.socket, "POST", f"/v1.41/exec/{exec_id}/start",
                              {"Detach": False, "Tty": True})
        assert status == 403 and message.encode() in answer, (extra, status, answer)
        status, answer = _api(DOCKER_SOCKET, "GET", f"/v1.41/exec/{exec_id}/json", {})
        assert json.loads(answer)["Running"] is False and json.loads(answer)["Pid"] == 0
    status, answer = _api(DOCKER_SOCKET, "POST", f"/v1.41/containers/{plain}/exec",
                          {"Cmd": ["id", "-u"], "AttachStdout": True})
    status, answer = _api(defaults.socket, "POST", f"/v1.41/exec/{json.loads(answer)['Id']}/start",
                          {"Detach": False, "Tty": True})
    assert status == 200 and answer.strip().endswith(b"1000"), (status, answer)


def test_host_paths_of_a_running_container_made_beside_dsfw_are_judged_when_entered(defaults,
                                                                                    cleanup):
    """A running container made on dockerd's socket with a host path mounted: exec and attach
    reach that path (a shell beside the host's /etc is the host's root), so they are judged
    like a start."""
    name = cleanup("container", unique_name())
    ok(direct("run", "-d", "--name", name, "-u", "1000", "-v", "/etc:/hostetc:ro", TEST_IMAGE,
              "sleep", "60"))
    refused(docker_cli(defaults.socket, "exec", name, "cat", "/hostetc/hostname"),
            "host path /etc cannot be mounted")
    status, answer = _api(DOCKER_SOCKET, "POST", f"/v1.41/containers/{name}/exec",
                          {"Cmd": ["cat", "/hostetc/hostname"], "AttachStdout": True})
    exec_id = json.loads(answer)["Id"]
    status, answer = _api(defaults.socket, "POST", f"/v1.41/exec/{exec_id}/start", {"Tty": True})
    assert status == 403 and b"host path /etc cannot be mounted" in answer, (status, answer)
    status, answer = _api(defaults.socket, "POST",
                          f"/v1.41/containers/{name}/attach?stream=0&stdout=1", {})
    assert status == 403 and b"host path /etc cannot be mounted" in answer, (status, answer)
    plain = cleanup("container", unique_name())
    ok(direct("run", "-d", "--name", plain, "-u", "1000", TEST_IMAGE, "sleep", "60"))
    assert ok(docker_cli(defaults.socket, "exec", plain, "id", "-u")).strip() == "1000"


def test_stored_spellings_are_judged_in_the_one_spelling(fw, cleanup):
    """Created on dockerd's socket with spellings dockerd accepts: judged as the documented ones."""
    loose = cleanup("container", unique_name())
    ok(direct("create", "--name", loose, "--security-opt", "seccomp:unconfined", TEST_IMAGE, "true"))
    refused(docker_cli(fw.socket, "start", loose),
            "security option seccomp=unconfined is not allowed")
    never_started(loose)
    tight = cleanup("container", unique_name())
    ok(direct("create", "--name", tight, "--security-opt", "no-new-privileges:1", TEST_IMAGE,
              "echo", "tight"))
    assert ok(docker_cli(fw.socket, "start", "-a", tight)) == "tight\n"


def test_restart_policy_with_host_paths_is_refused(fw, cleanup, allowed_dir):
    """dockerd would restart the container, and mount its binds again, without dsfw."""
    name = cleanup("container", unique_name())
    refused(docker_cli(fw.socket, "run", "-d", "--name", name, "--restart", "always", "-v",
                       f"{allowed_dir}:/data", TEST_IMAGE, "true"),
            f"restart policy always is not allowed with host paths ({allowed_dir})")
    assert_no_container(name)
    ok(docker_cli(fw.socket, "create", "--name", name, "-v", f"{allowed_dir}:/data", TEST_IMAGE,
                  "true"))
    refused(docker_cli(fw.socket, "update", "--restart", "on-failure", name),
            "restart policy on-failure is not allowed with host paths")
    assert ok(direct("inspect", "--format", "{{.HostConfig.RestartPolicy.Name}}", name)).strip() \
        in ("", "no")
    other = cleanup("container", unique_name())
    ok(docker_cli(fw.socket, "create", "--name", other, "--restart", "unless-stopped", TEST_IMAGE,
                  "true"))
