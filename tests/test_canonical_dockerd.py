"""The canonical form against the real dockerd: what the policy saw is what dockerd does.

Create bodies are generated with case variants, nulls, unknown keys and
legacy top-level HostConfig fields.  Each is sent to dockerd twice -- as the
client wrote it and as dsfw forwards it -- and the two containers must be
configured identically (``inspect``), and identically to what the canonical
body shows the policy.  Targets are checked the same way.  ``--privileged``
containers cannot start in these VMs, so everything is compared at create time.
"""
from __future__ import annotations

import http.client
import json
import os
import socket

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from dsfw.input.body import canonicalize_body
from dsfw.input.path import canonical_target
from dsfw.input.values import canonical_host_config
from dsfw.errors import BadRequest

DOCKER_SOCK = "/var/run/docker.sock"
IMAGE = "localbusybox:latest"

pytestmark = pytest.mark.requires_docker


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self._path)


def send(sock_path: str, method: str, target: str | bytes, body: bytes | None = None,
         chunked: bool = False, content_type: str = "application/json") -> tuple[int, bytes]:
    """One request over a UNIX socket, the target and body sent byte for byte."""
    conn = _UnixHTTPConnection(sock_path)
    try:
        conn.putrequest(method, target.decode("latin-1") if isinstance(target, bytes) else target,
                        skip_accept_encoding=True)
        conn.putheader("Content-Type", content_type)
        if chunked:
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            if body:
                conn.send(b"%x\r\n%s\r\n" % (len(body), body))
            conn.send(b"0\r\n\r\n")
        else:
            conn.putheader("Content-Length", str(len(body or b"")))
            conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def docker(method: str, target: str | bytes, body: bytes | None = None) -> tuple[int, bytes]:
    """One raw request straight to dockerd."""
    return send(DOCKER_SOCK, method, target, body)


def create_and_inspect(version: str | None, body: bytes) -> tuple[int, object]:
    prefix = f"/v{version}" if version else ""
    status, data = docker("POST", f"{prefix}/containers/create", body)
    if status != 201:
        return status, json.loads(data).get("message")
    cid = json.loads(data)["Id"]
    try:
        status, data = docker("GET", f"/containers/{cid}/json")
        assert status == 200
        info = json.loads(data)
    finally:
        docker("DELETE", f"/containers/{cid}?force=1")
    info["Config"].pop("Hostname")  # the container id
    return 201, {"Config": info["Config"], "HostConfig": info["HostConfig"]}


# ---------------------------------------------------------------- targets

@pytest.mark.parametrize("raw", [
    b"/v1.41/version", b"/v01.41/version", b"/v1.41.0/version", b"/v1.041/version",
    b"/v1.41/%76ersion", b"/version", b"/v1.12/version", b"/v1.99/version", b"/v1.11/version",
    b"/v1.41/containers/json?all=1&limit=%31", b"/v1.41/containers/json?limit=1&&all=1",
    b"/v1.41/containers/abc%2Fdef/json", b"/v1.41/version/", b"/v1.41/containers/json?limit=+1",
])
def test_accepted_targets_act_the_same_when_forwarded(raw):
    t = canonical_target(raw)
    got_raw, got_fwd = docker("GET", raw), docker("GET", t.forward_target())
    assert got_raw[0] == got_fwd[0]
    if got_raw[0] == 200:
        assert type(json.loads(got_raw[1])) is type(json.loads(got_fwd[1]))


@pytest.mark.parametrize("raw", [
    b"/v1..41/version", b"/v.41/version", b"/v1./version", b"/v1/version",
    b"/v1.41/containers/../version", b"/v1.41//version", b"/v1.41/containers/%2e%2e/version",
    b"/v1.41/containers/json?all=1;limit=1", b"/v1.41/containers/json?limit=%zz",
    b"/v1.41/containers/json?limit=1&limit=%zz",
])
def test_refused_targets_are_ones_dockerd_does_not_act_on(raw):
    with pytest.raises(BadRequest):
        canonical_target(raw)
    status, _ = docker("GET", raw)
    assert status in (301, 400, 404)


def test_refused_by_choice_three_part_versions_dockerd_would_read():
    """``1.40.5`` compares unlike any major.minor; dockerd accepts it, dsfw will not guess."""
    with pytest.raises(BadRequest):
        canonical_target(b"/v1.40.5/version")
    assert docker("GET", b"/v1.40.5/version")[0] == 200


# ---------------------------------------------------------------- bodies

def _variants(key: str) -> st.SearchStrategy[str]:
    """Spellings Go's decoder accepts for ``key``."""
    options = [key, key.lower(), key.upper(), key.swapcase()]
    if "s" in key.lower():
        options.append("".join("\u017f" if c in "sS" else c for c in key))
    if "k" in key.lower():
        options.append("".join("\u212a" if c in "kK" else c for c in key))
    return st.sampled_from(options)


_CONFIG_FIELDS = {
    "Cmd": st.sampled_from([["true"], "true", ["sh", "-c", "echo hi"]]),
    "Env": st.lists(st.sampled_from(["A=1", "B=two", "PATH=/bin"]), max_size=2),
    "Labels": st.dictionaries(st.sampled_from(["a", "A", "privileged"]), st.just("v"), max_size=2),
    "User": st.sampled_from(["root", "1000"]),
    "WorkingDir": st.sampled_from(["/tmp", "/"]),
    "Tty": st.booleans(),
}
_HOST_FIELDS = {
    "Privileged": st.booleans(),
    "Binds": st.lists(st.sampled_from(["/tmp:/mnt/b1", "/etc:/mnt/b2:ro"]), max_size=2, unique=True),
    "CapAdd": st.one_of(st.sampled_from(["sys_admin", "NET_ADMIN"]),
                        st.lists(st.sampled_from(["sys_admin", "CAP_CHOWN", "net_raw"]),
                                 max_size=2, unique=True)),
    "Memory": st.sampled_from([0, 64 * 1024 * 1024]),
    "CpuShares": st.sampled_from([0, 512]),
    "ReadonlyRootfs": st.booleans(),
    "Dns": st.lists(st.sampled_from(["1.1.1.1", "8.8.8.8"]), max_size=2, unique=True),
    "CpusetCpus": st.just("0"),
    "AutoRemove": st.booleans(),
    "PidsLimit": st.sampled_from([None, 100]),
    "SecurityOpt": st.just(["no-new-privileges"]),
    "Mounts": st.just([{"Type": "bind", "Source": "/tmp", "Target": "/mnt/m"}]),
    "RestartPolicy": st.just({"Name": "no"}),
}
# What a policy checks, with the zero value inspect shows when it is absent.
_POLICY_FIELDS = {"Privileged": False, "Binds": None, "CapAdd": None, "Mounts": None,
                  "Memory": 0, "ReadonlyRootfs": False}


def _render(draw, fields: dict) -> dict:
    out = {}
    for key, value in fields.items():
        if isinstance(value, dict):
            value = {draw(_variants(k)): v for k, v in value.items()}
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            value = [{draw(_variants(k)): v for k, v in item.items()} for item in value]
        out[draw(_variants(key))] = value
    return out


@st.composite
def create_bodies(draw):
    # busybox has no default command: without Cmd every create would fail alike
    config = {k: draw(s) for k, s in _CONFIG_FIELDS.items() if k == "Cmd" or draw(st.booleans())}
    host = {k: draw(s) for k, s in _HOST_FIELDS.items() if draw(st.booleans())}
    body = {draw(_variants("Image")): IMAGE}
    body.update(_render(draw, config))
    legacy = draw(st.booleans())
    if legacy:
        inner = body
        body.update(_render(draw, host))
    else:
        inner = body[draw(_variants("HostConfig"))] = _render(draw, host)
        # decoys at the top level: dockerd ignores all but five of them now
        decoys = {k: draw(s) for k, s in _HOST_FIELDS.items()
                  if draw(st.integers(0, 5)) == 0}
        body.update(_render(draw, decoys))
    absent = sorted(set(_HOST_FIELDS) - set(host))
    for key in draw(st.lists(st.sampled_from(absent), unique=True, max_size=3)) if absent else ():
        inner.setdefault(draw(_variants(key)), None)
    if draw(st.booleans()):
        body["Bogus"] = {"Privileged": True}
    if draw(st.booleans()):
        body[draw(_variants("Cpuset"))] = "0"
    version = draw(st.sampled_from(["1.41", "1.40", "1.24", None]))
    return version, body


@settings(max_examples=int(os.environ.get("DSFW_DOCKERD_EXAMPLES", "15")), deadline=None, suppress_health_check=list(HealthCheck))
@given(create_bodies())
def test_canonical_create_body_configures_what_the_raw_one_does_and_what_the_policy_saw(case):
    version, body = case
    raw = json.dumps(body).encode()
    try:
        canonical, forwarded = canonicalize_body("POST", "/containers/create", version, raw)
    except BadRequest:
        pytest.fail(f"refused a body without ambiguity: {raw!r}")
    from_raw = create_and_inspect(version, raw)
    from_canonical = create_and_inspect(version, forwarded)
    if from_raw[0] == 201:
        # dockerd stores values as sent: the raw body's are in other spellings
        # (sys_admin, no-new-privileges), which run alike (test_e2e_values.py).
        from_raw[1]["HostConfig"] = canonical_host_config(from_raw[1]["HostConfig"])
    assert from_canonical == from_raw, (raw, forwarded)
    if from_canonical[0] == 201:
        seen = canonical.get("HostConfig", {})
        stored = from_canonical[1]["HostConfig"]
        for key, zero in _POLICY_FIELDS.items():
            assert stored.get(key, zero) == seen.get(key, zero), (key, raw, forwarded)


def test_schema_fields_are_dockerds():
    """Every Config/HostConfig field dockerd stores is in dsfw's tables (else it would be dropped)."""
    from dsfw.input import types as T
    raw = json.dumps({"Image": IMAGE, "Cmd": ["true"], "ExposedPorts": {"80/tcp": {}},
                      "StopSignal": "SIGTERM", "Shell": ["sh"], "MacAddress": "02:42:ac:11:00:09",
                      "HostConfig": {"Init": True, "Tmpfs": {"/run": ""},
                                     "Sysctls": {"net.ipv4.ip_forward": "1"},
                                     "Capabilities": ["CAP_CHOWN"]}}).encode()  # gone in 1.41
    status, info = create_and_inspect("1.41", raw)
    assert status == 201
    hc_fields = {f.key for f in T.HOST_CONFIG.flat}
    config_fields = {f.key for f in T.CONFIG.flat}
    assert set(info["HostConfig"]) <= hc_fields
    assert set(info["Config"]) | {"Hostname"} <= config_fields
    # what inspect leaves out here is omitempty and unset, not unknown to dockerd
    assert hc_fields - set(info["HostConfig"]) <= {"StorageOpt", "Mounts"}
    assert config_fields - set(info["Config"]) - {"Hostname"} <= {
        "ArgsEscaped", "StopTimeout", "Healthcheck", "NetworkDisabled"}


def test_key_folding_is_dockerds():
    """Kelvin sign and long s fold like k and s; a Cyrillic look-alike does not."""
    raw = json.dumps({"Image": IMAGE, "Cmd": ["true"], "HostConfig": {
        "\u212aernelMemory": 8000000, "ReadonlyRootf\u017f": True,
        "Privileg\u0435d": True}}).encode()
    seen, forwarded = canonicalize_body("POST", "/containers/create", "1.41", raw)
    assert seen["HostConfig"] == {"ReadonlyRootfs": True, "KernelMemory": 8000000}
    for body in (raw, forwarded):
        status, info = create_and_inspect("1.41", body)
        hc = info["HostConfig"]
        assert (hc["KernelMemory"], hc["ReadonlyRootfs"], hc["Privileged"]) == (8000000, True, False)


def test_merged_objects_are_real_so_refusing_them_is_needed():
    """dockerd merges ``HostConfig`` and ``hostconfig``: a policy reading one would be wrong."""
    raw = json.dumps({"Image": IMAGE, "Cmd": ["true"], "HostConfig": {"Privileged": False},
                      "hostconfig": {"Binds": ["/etc:/mnt/e"]}}).encode()
    status, info = create_and_inspect("1.41", raw)
    assert status == 201 and info["HostConfig"]["Binds"] == ["/etc:/mnt/e"]
    with pytest.raises(BadRequest, match="ambiguous"):
        canonicalize_body("POST", "/containers/create", "1.41", raw)


def test_legacy_start_body_applies_below_1_24_and_is_shown_as_host_config():
    status, data = docker("POST", "/v1.23/containers/create",
                          json.dumps({"Image": IMAGE, "Cmd": ["sleep", "30"]}).encode())
    assert status == 201
    cid = json.loads(data)["Id"]
    try:
        raw = b'{"binds":["/etc/:/mnt/hostetc"],"capadd":"sys_admin","Image":"ignored"}'
        seen, forwarded = canonicalize_body("POST", f"/containers/{cid}/start", "1.23", raw)
        assert seen == {"HostConfig": {"Binds": ["/etc:/mnt/hostetc"], "CapAdd": ["SYS_ADMIN"]}}
        assert docker("POST", f"/v1.23/containers/{cid}/start", forwarded)[0] == 204
        hc = json.loads(docker("GET", f"/containers/{cid}/json")[1])["HostConfig"]
        assert (hc["Binds"], hc["CapAdd"]) == (["/etc:/mnt/hostetc"], ["SYS_ADMIN"])
    finally:
        docker("DELETE", f"/containers/{cid}?force=1")


def _same_effect(path: str, raw: bytes, inspect, cleanup) -> object:
    """Send ``raw`` and dsfw's canonical form of it; both must give the same inspect result."""
    seen, forwarded = canonicalize_body("POST", path, "1.41", raw)
    results = []
    for body in (raw, forwarded):
        status, data = docker("POST", f"/v1.41{path}", body)
        assert status in (200, 201), data
        try:
            results.append(inspect(json.loads(data)))
        finally:
            cleanup(json.loads(data))
    assert results[0] == results[1]
    return seen, results[0]


def test_volume_create_spellings():
    def inspect(created):
        info = json.loads(docker("GET", f"/volumes/{created['Name']}")[1])
        return {k: info[k] for k in ("Driver", "Labels", "Options")}
    raw = json.dumps({"driver": "local", "DRIVEROPTS": {"type": "none", "o": "bind", "device": "/tmp"},
                      "labels": {"Privileged": "x"}, "Junk": 1}).encode()
    seen, effect = _same_effect("/volumes/create", raw, inspect,
                                lambda created: docker("DELETE", f"/volumes/{created['Name']}"))
    assert effect == {"Driver": "local", "Labels": {"Privileged": "x"},
                      "Options": {"type": "none", "o": "bind", "device": "/tmp"}}
    assert seen["DriverOpts"] == effect["Options"]


def test_network_create_spellings():
    names = iter(["dsfw-canon-a", "dsfw-canon-b"])

    def inspect(created):
        info = json.loads(docker("GET", f"/networks/{created['Id']}")[1])
        return {k: info[k] for k in ("Driver", "Internal", "Options", "Labels")} | {
            "Subnets": [c["Subnet"] for c in info["IPAM"]["Config"]]}
    body = {"driver": "bridge", "internal": True, "options": {"com.docker.network.bridge.enable_icc": "false"},
            "IPAM": {"config": [{"subnet": "10.231.0.0/24"}]}, "Labels": {"a": "b"}}
    seen, effect = _same_effect_named(json.dumps({**body, "name": next(names)}).encode(),
                                      names, inspect)
    assert effect["Internal"] is True and seen["Internal"] is True
    assert effect["Subnets"] == ["10.231.0.0/24"]


def _same_effect_named(raw: bytes, names, inspect):
    """Networks need distinct names (and subnets): create, inspect, remove, one at a time."""
    seen, forwarded = canonicalize_body("POST", "/networks/create", "1.41", raw)
    results = []
    for body in (raw, json.dumps({**json.loads(forwarded), "Name": next(names)}).encode()):
        status, data = docker("POST", "/v1.41/networks/create", body)
        assert status == 201, data
        created = json.loads(data)
        try:
            results.append(inspect(created))
        finally:
            docker("DELETE", f"/networks/{created['Id']}")
    assert results[0] == results[1]
    return seen, results[0]


def test_exec_create_spellings():
    status, data = docker("POST", "/v1.41/containers/create",
                          json.dumps({"Image": IMAGE, "Cmd": ["sleep", "30"]}).encode())
    cid = json.loads(data)["Id"]
    try:
        assert docker("POST", f"/v1.41/containers/{cid}/start")[0] == 204

        def inspect(created):
            info = json.loads(docker("GET", f"/exec/{created['Id']}/json")[1])
            return info["ProcessConfig"]
        raw = json.dumps({"cmd": ["id"], "PRIVILEGED": True, "user": "nobody", "Junk": 1}).encode()
        seen, effect = _same_effect(f"/containers/{cid}/exec", raw, inspect, lambda created: None)
        assert seen == {"User": "nobody", "Privileged": True, "Cmd": ["id"]}
        assert (effect["privileged"], effect["user"]) == (True, "nobody")
    finally:
        docker("DELETE", f"/containers/{cid}?force=1")
