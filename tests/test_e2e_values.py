"""Canonical values judged by dockerd's real state, not by dsfw's reply.

1. Each spelling is run by dockerd twice -- as the client wrote it and as dsfw
   forwards it -- and the two processes must be alike (uid, groups,
   capabilities, seccomp, no_new_privs, mounts, what the bind shows).
2. Through dsfw with a natural policy written in Docker's documented spelling,
   every other spelling is refused and dockerd has no such container.
3. Through dsfw allowing everything, the CLI's other spellings are stored by
   dockerd in the one spelling (``docker inspect``).
"""
from __future__ import annotations

import contextlib
import json
import socket
from typing import Iterator

import pytest

from e2e_support import DOCKER_SOCKET, TEST_IMAGE, docker_cli, policy_dir, unique_name
from test_canonical_dockerd import docker, send
from test_canonical_values import NATURAL_POLICY

from dsfw.errors import BadRequest
from dsfw.input.body import canonicalize_body

pytestmark = pytest.mark.requires_docker

PROBE = ("grep -E '^(Uid|Gid|Groups|CapEff|CapBnd|Seccomp|NoNewPrivs):' /proc/self/status; "
         "echo mounts; cut -d' ' -f5 /proc/self/mountinfo; echo h; ls /h 2>&1 | head -5; "
         "ls -ln /dev/n 2>&1 | cut -c1-10")


def _normalized(output: str) -> list[str]:
    """The probe's lines, mount points and group ids sorted (dockerd orders them freely)."""
    out = []
    for line in output.splitlines():
        if line.startswith("Groups:"):
            line = "Groups: " + " ".join(sorted(line.split()[1:]))
        out.append(line.strip())
    head, _, rest = "\n".join(out).partition("\nmounts\n")
    mounts, _, tail = rest.partition("\nh\n")
    return head.splitlines() + sorted(mounts.splitlines()) + tail.splitlines()


@contextlib.contextmanager
def started(body: dict) -> Iterator[str]:
    """A container created and started straight on dockerd; removed on exit."""
    status, data = docker("POST", "/v1.41/containers/create",
                          json.dumps({**body, "Image": TEST_IMAGE}).encode())
    assert status == 201, data
    cid = json.loads(data)["Id"]
    try:
        status, data = docker("POST", f"/v1.41/containers/{cid}/start")
        assert status == 204, data
        yield cid
    finally:
        docker("DELETE", f"/v1.41/containers/{cid}?force=1")


def run_direct(body: dict) -> list[str]:
    """The probe's output from a container run straight on dockerd."""
    with started({**body, "Cmd": ["sh", "-c", PROBE], "Tty": True}) as cid:
        status, data = docker("POST", f"/v1.41/containers/{cid}/wait")
        assert status == 200 and json.loads(data)["StatusCode"] == 0, data
        status, data = docker("GET", f"/v1.41/containers/{cid}/logs?stdout=1&stderr=1")
        return _normalized(data.decode())


@pytest.mark.parametrize("hc,user", [
    ({"Binds": ["/etc/:/h/:z,ro"]}, None),
    ({"Binds": ["//etc:/h"]}, None),
    ({"Binds": ["/./etc/.:/h:ro"]}, None),
    ({"Binds": ["/etc/apt/..:/h:ro"]}, None),
    ({"Mounts": [{"Type": "bind", "Source": "//etc/", "Target": "/h/./"}]}, None),
    ({"Tmpfs": {"/h/": "size=1m"}}, None),
    ({"CapAdd": ["sys_admin"]}, None),
    ({"CapAdd": "\u017fys_ptrace", "CapDrop": ["all"]}, None),
    ({"CapAdd": ["cap_net_admin"], "CapDrop": ["Cap_Chown"]}, None),
    ({"SecurityOpt": ["seccomp:unconfined"]}, None),
    ({"SecurityOpt": ["no-new-privileges"]}, None),
    ({"SecurityOpt": ["no-new-privileges:1", "no-new-privileges:F"]}, None),
    ({"SecurityOpt": ["apparmor:unconfined"]}, None),
    ({"GroupAdd": ["00", "+010"]}, "0001:+0002"),
    ({}, "00"),
    ({}, ":0"),
    ({}, "0:0:whatever"),
    ({"Devices": [{"PathOnHost": "/dev/null", "PathInContainer": "/dev/n",
                   "CgroupPermissions": "mwr"}],
      "DeviceCgroupRules": ["c 01:03 mwr"]}, None),
])
def test_forwarded_spelling_runs_like_the_clients(hc, user):
    body = {"HostConfig": hc, **({"User": user} if user is not None else {})}
    raw = json.dumps({"Image": TEST_IMAGE, **body}).encode()
    canonical, _ = canonicalize_body("POST", "/containers/create", "1.41", raw)
    assert canonical != json.loads(raw)  # the case is a rewrite, not a no-op
    forwarded = {k: v for k, v in canonical.items() if k != "Image"}
    assert run_direct(forwarded) == run_direct(body)


def test_a_bind_device_volume_mounts_the_same_when_cleaned():
    names = [unique_name("dsfw-val-vol"), unique_name("dsfw-val-vol")]
    raw = {"DriverOpts": {"type": "none", "o": "bind", "device": "//etc/"}}
    canonical, _ = canonicalize_body("POST", "/volumes/create", "1.41", json.dumps(raw).encode())
    outputs = []
    try:
        for name, body in zip(names, (raw, canonical)):
            assert docker("POST", "/v1.41/volumes/create",
                          json.dumps({**body, "Name": name}).encode())[0] == 201
            outputs.append(run_direct({"HostConfig": {"Binds": [f"{name}:/h:ro"]}}))
    finally:
        for name in names:
            docker("DELETE", f"/v1.41/volumes/{name}")
    assert canonical["DriverOpts"]["device"] == "/etc"
    assert outputs[0] == outputs[1] and any("passwd" in line or "hostname" in line
                                            for line in outputs[0])


def _published(body: dict) -> dict:
    """What dockerd really published for a started container (NetworkSettings.Ports)."""
    with started({**body, "Cmd": ["sleep", "30"], "ExposedPorts": {"80/tcp": {}}}) as cid:
        return json.loads(docker("GET", f"/v1.41/containers/{cid}/json")[1])["NetworkSettings"]["Ports"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_published_ports_are_the_same_when_forwarded():
    port = _free_port()
    for binding in ({"HostIp": "::ffff:127.0.0.1", "HostPort": f"0{port}"},
                    {"HostIp": "0:0:0:0:0:ffff:7f00:1", "HostPort": f"{port}-{port}/udp"}):
        body = {"HostConfig": {"PortBindings": {"80/tcp": [binding]}}}
        canonical, _ = canonicalize_body("POST", "/containers/create", "1.41",
                                         json.dumps({"Image": TEST_IMAGE, **body}).encode())
        assert canonical["HostConfig"]["PortBindings"] == {
            "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
        raw_effect = _published(body)
        assert raw_effect == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
        assert _published({"HostConfig": canonical["HostConfig"]}) == raw_effect


def test_an_unparsable_host_ip_publishes_everywhere_so_it_is_refused():
    body = {"HostConfig": {"PortBindings": {"80/tcp": [{"HostIp": "127.000.000.001",
                                                        "HostPort": str(_free_port())}]}}}
    ips = {b["HostIp"] for b in _published(body)["80/tcp"]}
    assert ips <= {"0.0.0.0", "::"} and "0.0.0.0" in ips  # not loopback at all
    with pytest.raises(BadRequest, match="every interface"):
        canonicalize_body("POST", "/containers/create", "1.41",
                          json.dumps({"Image": TEST_IMAGE, **body}).encode())


# --- through dsfw -----------------------------------------------------------------------

@pytest.fixture
def created():
    """Names of containers a test may have made; removed straight on dockerd afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        docker_cli(DOCKER_SOCKET, "rm", "-f", name)


def _exists(name: str) -> bool:
    return docker_cli(DOCKER_SOCKET, "inspect", "--type", "container", name).returncode == 0


def _inspect(name: str) -> dict:
    done = docker_cli(DOCKER_SOCKET, "inspect", "--type", "container", name)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)[0]


CLI_SPELLINGS = [  # documented first, then what the docker CLI also lets a user type
    ["-v", "/etc:/e"], ["-v", "/:/host"], ["-v", "/etc/:/e"], ["-v", "//etc:/e"],
    ["-v", "/./etc:/e"], ["-v", "/tmp/..:/host"], ["-v", "/etc/ssl/..:/e:ro"],
    ["--mount", "type=bind,src=/etc/,dst=/e"], ["--mount", "type=bind,src=//,dst=/host"],
    ["--cap-add", "SYS_ADMIN"], ["--cap-add", "sys_admin"], ["--cap-add", "CAP_SYS_ADMIN"],
    ["--cap-add", "cap_sys_admin"], ["--cap-add", "ALL"], ["--cap-add", "all"],
    ["--security-opt", "seccomp=unconfined"], ["--security-opt", "seccomp:unconfined"],
    ["--user", "0"], ["--user", "00"], ["--user", "0:00"], ["--user", "000:0"],
    ["--user", "+0"], ["--user", ":0"],
    ["-p", "127.0.0.1:22:80"], ["-p", "127.0.0.1:022:80"], ["-p", "8080:80"],
]


def test_natural_policy_refuses_every_cli_spelling(tmp_path, dsfw_factory, created):
    proc = dsfw_factory(policy_dir(tmp_path, {"authz.rego": NATURAL_POLICY}))
    for args in CLI_SPELLINGS:
        name = unique_name("dsfw-val")
        created.append(name)
        done = docker_cli(proc.socket, "create", "--name", name, *args, TEST_IMAGE, "true")
        assert done.returncode != 0 and "dsfw" in done.stderr, (args, done.stdout, done.stderr)
        assert not _exists(name), args
    for args in (["-v", "/tmp:/t"], ["-v", "/etc/hostname:/h:ro"], ["--cap-add", "NET_ADMIN"],
                 ["--user", "1000"], ["--security-opt", "no-new-privileges"],
                 ["-p", "127.0.0.1:8022:80"]):
        name = unique_name("dsfw-val")
        created.append(name)
        done = docker_cli(proc.socket, "create", "--name", name, *args, TEST_IMAGE, "true")
        assert done.returncode == 0, (args, done.stderr)
        assert _exists(name)


RAW_SPELLINGS = [  # what no CLI flag produces, but the API accepts
    {"HostConfig": {"CapAdd": "\u017fys_admin"}},
    {"HostConfig": {"CapAdd": ["\u017fY\u017f_ADM\u0131N"]}},
    {"HostConfig": {"Binds": ["/etc//:/e:ro,z"]}},
    {"Binds": ["/etc/:/e"]},  # legacy top-level HostConfig field
    {"HostConfig": {"Mounts": [{"Type": "bind", "Source": "/tmp/../etc", "Target": "/e"}]}},
    {"HostConfig": {"SecurityOpt": ["no-new-privileges:true", "seccomp:unconfined"]}},
    {"User": "-0"},
    {"User": "0:0:x"},
    {"ExposedPorts": {"80/tcp": {}},
     "HostConfig": {"PortBindings": {"80/tcp": [{"HostIp": "127.000.000.001", "HostPort": "8080"}]}}},
    {"ExposedPorts": {"80/tcp": {}},
     "HostConfig": {"PortBindings": {"80/tcp": [{"HostIp": "::ffff:127.0.0.1", "HostPort": "22/udp"}]}}},
]


def _raw_create(sock: str, name: str, body: dict) -> int:
    data = json.dumps({"Image": TEST_IMAGE, "Cmd": ["true"], **body}).encode()
    return send(sock, "POST", f"/v1.41/containers/create?name={name}", data)[0]


def test_natural_policy_refuses_every_raw_spelling(tmp_path, dsfw_factory, created):
    proc = dsfw_factory(policy_dir(tmp_path, {"authz.rego": NATURAL_POLICY}))
    for body in RAW_SPELLINGS:
        name = unique_name("dsfw-val")
        created.append(name)
        # straight to dockerd this spelling is a container with that meaning ...
        assert _raw_create(DOCKER_SOCKET, name, body) == 201, body
        assert docker_cli(DOCKER_SOCKET, "rm", "-f", name).returncode == 0
        # ... through dsfw it is refused, and dockerd made nothing
        assert _raw_create(proc.socket, name, body) in (400, 403), body
        assert not _exists(name), body


def test_allow_all_stores_the_one_spelling(tmp_path, dsfw_factory, created):
    proc = dsfw_factory(policy_dir(tmp_path, {"authz.rego": "package docker.authz\nallow := true\n"}))
    name = unique_name("dsfw-val")
    created.append(name)
    done = docker_cli(proc.socket, "create", "--name", name, "-v", "//etc/:/e/:z,ro",
                      "--mount", "type=bind,src=/tmp/.,dst=/t/", "--tmpfs", "/run/",
                      "--cap-add", "sys_admin", "--cap-drop", "cap_chown",
                      "--security-opt", "seccomp:unconfined", "--security-opt", "no-new-privileges",
                      "--user", "00:000", "--group-add", "010", TEST_IMAGE, "true")
    assert done.returncode == 0, done.stderr
    info = _inspect(name)
    hc = info["HostConfig"]
    assert hc["Binds"] == ["/etc:/e:ro,z"]
    assert [(m["Source"], m["Target"]) for m in hc["Mounts"]] == [("/tmp", "/t")]
    assert hc["Tmpfs"] == {"/run": ""}
    assert (hc["CapAdd"], hc["CapDrop"]) == (["SYS_ADMIN"], ["CHOWN"])
    assert hc["SecurityOpt"] == ["seccomp=unconfined", "no-new-privileges=true"]
    assert (info["Config"]["User"], hc["GroupAdd"]) == ("0:0", ["10"])


def test_exec_user_is_stored_in_the_one_spelling(tmp_path, dsfw_factory, created):
    proc = dsfw_factory(policy_dir(tmp_path, {"authz.rego": "package docker.authz\nallow := true\n"}))
    name = unique_name("dsfw-val")
    created.append(name)
    done = docker_cli(DOCKER_SOCKET, "run", "-d", "--name", name, TEST_IMAGE, "sleep", "60")
    assert done.returncode == 0, done.stderr
    for user, stored in (("00", "0"), (":0", "0:0"), ("0001:+02", "1:2")):
        status, reply = send(proc.socket, "POST", f"/v1.41/containers/{name}/exec",
                             json.dumps({"User": user, "Cmd": ["true"]}).encode())
        assert status == 201, reply
        exec_id = json.loads(reply)["Id"]
        status, info = docker("GET", f"/v1.41/exec/{exec_id}/json")
        assert status == 200 and json.loads(info)["ProcessConfig"]["user"] == stored


def test_volume_bind_devices_through_dsfw(tmp_path, dsfw_factory):
    proc = dsfw_factory(policy_dir(tmp_path, {"authz.rego": "package docker.authz\nallow := true\n"}))
    good, bad = unique_name("dsfw-val-vol"), unique_name("dsfw-val-vol")
    try:
        done = docker_cli(proc.socket, "volume", "create", "-o", "type=none", "-o", "o=bind",
                          "-o", "device=//tmp/", good)
        assert done.returncode == 0, done.stderr
        info = json.loads(docker_cli(DOCKER_SOCKET, "volume", "inspect", good).stdout)[0]
        assert info["Options"]["device"] == "/tmp"
        done = docker_cli(proc.socket, "volume", "create", "-o", "type=none", "-o", "o=bind",
                          "-o", "device=tmp", bad)
        assert done.returncode != 0 and "not an absolute path" in done.stderr
        assert docker_cli(DOCKER_SOCKET, "volume", "inspect", bad).returncode != 0
    finally:
        docker_cli(DOCKER_SOCKET, "volume", "rm", "-f", good, bad)
