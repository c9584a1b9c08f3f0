"""Values in one spelling: a policy written with Docker's documented spelling holds.

Spellings are generated the way an attacker would write them (every form
dockerd accepts for the same meaning); the canonical body must show, and
forward, the documented one.  The natural policy at the end is evaluated by
the real embedded engine on dsfw's real input document.
"""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from dsfw.errors import BadRequest
from dsfw.input.body import canonicalize_body
from dsfw.input.path import canonical_target
from dsfw.input.request import CanonicalRequest, input_document
from dsfw.input import values as V
from dsfw.policy.embedded import EmbeddedEngine


def create(body, version="1.41"):
    return canonicalize_body("POST", "/containers/create", version, json.dumps(body).encode())[0]


def host_config(**hc):
    return create({"Image": "x", "HostConfig": hc})["HostConfig"]


# Go's own table (src/path/path_test.go).
@pytest.mark.parametrize("path,clean", [
    ("", "."), ("abc", "abc"), ("abc/def", "abc/def"), (".", "."), ("..", ".."),
    ("../..", "../.."), ("../../abc", "../../abc"), ("/abc", "/abc"), ("/", "/"),
    ("abc/", "abc"), ("abc/def/", "abc/def"), ("./", "."), ("../", ".."), ("/abc/", "/abc"),
    ("abc//def//ghi", "abc/def/ghi"), ("//abc", "/abc"), ("///abc", "/abc"),
    ("//abc//", "/abc"), ("abc//", "abc"), ("abc/./def", "abc/def"), ("/./abc/def", "/abc/def"),
    ("abc/.", "abc"), ("abc/def/ghi/../jkl", "abc/def/jkl"), ("abc/def/../ghi/../jkl", "abc/jkl"),
    ("abc/def/..", "abc"), ("abc/def/../..", "."), ("/abc/def/../..", "/"),
    ("abc/def/../../..", ".."), ("/abc/def/../../..", "/"),
    ("abc/def/../../../ghi/jkl/../../../mno", "../../mno"), ("abc/./../def", "def"),
    ("abc//./../def", "def"), ("abc/../../././../def", "../../def"),
])
def test_go_clean_is_gos(path, clean):
    assert V.go_clean(path) == clean


@given(st.text(alphabet="/.ab", max_size=16))
def test_go_clean_is_idempotent_and_clean(path):
    c = V.go_clean(path)
    assert V.go_clean(c) == c
    assert "//" not in c and "/./" not in c and not (c.endswith("/") and c != "/")


@st.composite
def spellings_of(draw, path):
    """Ways of writing the absolute ``path`` that Go's Clean maps back to it."""
    out = ""
    for element in path.strip("/").split("/") if path != "/" else []:
        out += draw(st.sampled_from(["/", "//", "/./", "/./"])) + element
        if draw(st.booleans()):
            out += draw(st.sampled_from(["/x/..", "/../" + element, "/."]))
    out += draw(st.sampled_from(["", "/", "//", "/.", "/tmp/.."]))
    if not out.startswith("/"):
        out = "/" + out
    if path == "/" and draw(st.booleans()):
        out = draw(st.sampled_from(["/tmp/..", "/..", "//", "/./"]))
    return out


@settings(max_examples=200)
@given(st.sampled_from(["/", "/etc", "/var/run/docker.sock"]).flatmap(
    lambda p: st.tuples(st.just(p), spellings_of(p), spellings_of("/mnt/x"))))
def test_every_spelling_of_a_bind_is_shown_and_forwarded_clean(case):
    path, host, container = case
    assert V.go_clean(host) == path
    hc = host_config(Binds=[f"{host}:{container}:z,ro"], Mounts=[
        {"Type": "bind", "Source": host, "Target": container}])
    assert hc["Binds"] == [f"{path}:/mnt/x:ro,z"]
    assert (hc["Mounts"][0]["Source"], hc["Mounts"][0]["Target"]) == (path, "/mnt/x")


def test_binds_modes_and_named_volumes():
    hc = host_config(Binds=["vol:/data/:nocopy,rw", "/anon/", "/a:/b:", "/a:/b:rslave,Z"])
    assert hc["Binds"] == ["vol:/data:rw,nocopy", "/anon", "/a:/b", "/a:/b:Z,rslave"]


@pytest.mark.parametrize("spec", ["/a:/b:c:d", ":/b", "/b:ro", "/a:/b:ro,rw", "/a:/b:ro,ro",
                                  "/a:/b:bogus", "/a:/b:,"])
def test_binds_dockerd_refuses_are_refused(spec):
    with pytest.raises(BadRequest):
        host_config(Binds=[spec])


def test_tmpfs_and_volume_keys_are_cleaned():
    body = create({"Image": "x", "Volumes": {"/data/": {}, "/data": {}},
                   "HostConfig": {"Tmpfs": {"/run/": "size=1m", "//tmp": ""}}})
    assert body["Volumes"] == {"/data": {}}
    assert body["HostConfig"]["Tmpfs"] == {"/run": "size=1m", "/tmp": ""}
    with pytest.raises(BadRequest, match="two entries"):
        host_config(Tmpfs={"/run": "", "/run/": "exec"})


@pytest.mark.parametrize("opts", [{"type": "none", "o": "bind", "device": "//etc/"},
                                  {"type": "none", "o": "ro,rbind", "device": "/./etc"},
                                  {"o": "bind", "device": "/etc//", "type": "ext4"}])
def test_bind_devices_are_cleaned(opts):
    body = canonicalize_body("POST", "/volumes/create", "1.41",
                             json.dumps({"Driver": "local", "DriverOpts": opts}).encode())[0]
    assert body["DriverOpts"]["device"] == "/etc"
    hc = host_config(Mounts=[{"Type": "volume", "Target": "/v", "VolumeOptions": {
        "DriverConfig": {"Options": opts}}}])
    assert hc["Mounts"][0]["VolumeOptions"]["DriverConfig"]["Options"]["device"] == "/etc"


@pytest.mark.parametrize("device", ["etc", "./etc", "", "/tmp/../etc", "/tmp/link/.."])
def test_relative_or_dotdot_bind_devices_are_refused(device):
    with pytest.raises(BadRequest, match="device"):
        canonicalize_body("POST", "/volumes/create", "1.41", json.dumps(
            {"DriverOpts": {"type": "none", "o": "bind", "device": device}}).encode())


def test_devices_other_than_binds_and_other_drivers_are_left_alone():
    for body in ({"DriverOpts": {"type": "tmpfs", "device": "tmpfs", "o": "size=1m"}},
                 {"Driver": "other", "DriverOpts": {"o": "bind", "device": "x/../y"}},
                 {"DriverOpts": {"type": "nfs", "o": "addr=1.2.3.4", "device": ":/export//x"}}):
        got = canonicalize_body("POST", "/volumes/create", "1.41", json.dumps(body).encode())[0]
        assert got["DriverOpts"] == body["DriverOpts"]


@st.composite
def capability_spellings(draw, name):
    """Upper/lower per letter, the long s and dotless i (Go upper-cases them to S and I), CAP_."""
    prefix = draw(st.sampled_from(["", "CAP_", "cap_", "Cap_", "cAp_"]))
    letters = []
    for ch in name:
        options = [ch, ch.lower()]
        if ch == "S":
            options.append("\u017f")
        if ch == "I":
            options.append("\u0131")
        letters.append(draw(st.sampled_from(options)))
    return prefix + "".join(letters)


@given(st.sampled_from(["SYS_ADMIN", "NET_ADMIN", "SYS_PTRACE", "ALL"]).flatmap(
    lambda n: st.tuples(st.just(n), capability_spellings(n))))
def test_every_capability_spelling_becomes_the_documented_one(case):
    name, spelled = case
    if name == "ALL" and V.go_upper(spelled).startswith("CAP_"):
        with pytest.raises(BadRequest):  # CAP_ALL is unknown to dockerd, not ALL
            host_config(CapAdd=[spelled])
        return
    assert host_config(CapAdd=spelled, CapDrop=[spelled, name]) == {
        "CapAdd": [name], "CapDrop": [name]}


@pytest.mark.parametrize("name", ["CAP_ALL", "SYS_ADMIN ", "SYS-ADMIN", "CAP_CAP_CHOWN", "",
                                  "SYS_ADMİN", "\u212aILL"])
def test_unknown_capabilities_are_refused(name):
    with pytest.raises(BadRequest, match="unknown capability"):
        host_config(CapAdd=[name])


@pytest.mark.parametrize("opt,canonical", [
    ("seccomp:unconfined", "seccomp=unconfined"), ("seccomp=unconfined", "seccomp=unconfined"),
    ("apparmor:unconfined", "apparmor=unconfined"), ("no-new-privileges", "no-new-privileges=true"),
    ("no-new-privileges:true", "no-new-privileges=true"), ("no-new-privileges=1", "no-new-privileges=true"),
    ("no-new-privileges:T", "no-new-privileges=true"), ("no-new-privileges=False", "no-new-privileges=false"),
    ("label:disable", "label=disable"), ("disable", "label=disable"),
    ("label=user:USER", "label=user:USER"), ("label:type:svirt_t", "label=type:svirt_t"),
    ('seccomp={"defaultAction": "SCMP_ACT_ALLOW"}', 'seccomp={"defaultAction": "SCMP_ACT_ALLOW"}'),
])
def test_security_options_use_the_equals_separator(opt, canonical):
    assert host_config(SecurityOpt=[opt])["SecurityOpt"] == [canonical]


@pytest.mark.parametrize("opt", ["", "seccomp", "Seccomp=unconfined", "seccomp:a=b",
                                 "no-new-privileges=yes", "systempaths=unconfined",
                                 "credentialspec=file://x"])
def test_security_options_dockerd_refuses_are_refused(opt):
    with pytest.raises(BadRequest, match="security option"):
        host_config(SecurityOpt=[opt])


def test_colon_labels_where_dockerd_reads_them_differently_are_refused():
    for hc in ({"Privileged": True}, {"IpcMode": "host"}, {"PidMode": "container:c1"}):
        with pytest.raises(BadRequest, match="label=disable"):
            host_config(SecurityOpt=["label:disable"], **hc)
    # with a label= option present dockerd adds nothing either way
    assert host_config(SecurityOpt=["label=level:s0", "label:disable"], Privileged=True)[
        "SecurityOpt"] == ["label=level:s0", "label=disable"]


@pytest.mark.parametrize("user,canonical", [
    ("0", "0"), ("00", "0"), ("+0", "0"), ("-0", "0"), ("000:0000", "0:0"), (":0", "0:0"),
    (":", "0"), ("0:", "0"), ("0:0:junk", "0:0"), ("root", "root"), ("root:00", "root:0"),
    ("01000:wheel", "1000:wheel"), ("", ""), ("99999999999999999999", "99999999999999999999"),
    ("\u0660", "\u0660"),  # Arabic-Indic zero: not a number to Go, so a name
])
def test_numeric_users_without_leading_zeros(user, canonical):
    assert create({"Image": "x", "User": user})["User"] == canonical
    got = canonicalize_body("POST", "/containers/c/exec", "1.41",
                            json.dumps({"Cmd": ["id"], "User": user}).encode())[0]
    assert got["User"] == canonical


def test_group_add_and_device_rules():
    hc = host_config(GroupAdd=["00", "+10", "wheel"],
                     DeviceCgroupRules=["c 01:003 mwr", "b *:07 r", "a 1:2 rwmx"],
                     Devices=[{"PathOnHost": "/dev/null", "PathInContainer": "/dev/n",
                               "CgroupPermissions": "mwr"}])
    assert hc["GroupAdd"] == ["0", "10", "wheel"]
    assert hc["DeviceCgroupRules"] == ["c 1:3 rwm", "b *:7 r", "a 1:2 rwmx"]  # last: dockerd refuses
    assert hc["Devices"][0]["CgroupPermissions"] == "rwm"


@pytest.mark.parametrize("path", ["/dev//null", "/dev/./null", "/dev/snd/", "dev/null",
                                  "/dev/x/../null"])
def test_unclean_device_paths_are_refused(path):
    with pytest.raises(BadRequest, match="device path"):
        host_config(Devices=[{"PathOnHost": path, "PathInContainer": "/dev/x"}])


@pytest.mark.parametrize("binding,canonical", [
    ({"HostIp": "::ffff:127.0.0.1", "HostPort": "08080"}, {"HostIp": "127.0.0.1", "HostPort": "8080"}),
    ({"HostIp": "0:0::1", "HostPort": "8080-8080"}, {"HostIp": "::1", "HostPort": "8080"}),
    ({"HostIp": "", "HostPort": "8080/udp"}, {"HostIp": "", "HostPort": "8080"}),
    ({"HostPort": "0"}, {"HostPort": ""}), ({"HostPort": "/80"}, {"HostPort": ""}),
    ({"HostPort": "8000-08010-x"}, {"HostPort": "8000-8010"}),
    ({"HostPort": "+80"}, {"HostPort": "+80"}),  # dockerd refuses it
])
def test_port_bindings_as_dockerd_reads_them(binding, canonical):
    hc = host_config(PortBindings={"80/tcp": [binding], "080": None})
    assert hc["PortBindings"] == {"80/tcp": [canonical], "080": None}


@pytest.mark.parametrize("ip", ["127.000.000.001", "127.0.0.1 ", "localhost", "fe80::1%eth0",
                                "127.1", "0x7f.0.0.1"])
def test_host_ips_go_cannot_parse_are_refused(ip):
    # net.ParseIP gives nil for them, and nil publishes on every interface
    with pytest.raises(BadRequest, match="every interface"):
        host_config(PortBindings={"80/tcp": [{"HostIp": ip, "HostPort": "8080"}]})


def test_service_container_spec():
    body = canonicalize_body("POST", "/services/create", "1.41", json.dumps({
        "TaskTemplate": {"ContainerSpec": {"Image": "x", "User": "00", "Groups": ["000"],
                                           "CapabilityAdd": ["cap_sys_admin"],
                                           "CapabilityDrop": ["all"],
                                           "Mounts": [{"Type": "bind", "Source": "//etc/",
                                                       "Target": "/e/."}]}}}).encode())[0]
    spec = body["TaskTemplate"]["ContainerSpec"]
    assert (spec["User"], spec["Groups"], spec["CapabilityAdd"], spec["CapabilityDrop"]) == (
        "0", ["0"], ["SYS_ADMIN"], ["ALL"])
    assert spec["Mounts"] == [{"Type": "bind", "Source": "/etc", "Target": "/e"}]


_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.text(alphabet="/.:0a=,z", max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(alphabet="/.a", max_size=4),
                                                        c, max_size=2), max_leaves=8)


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from(["Binds", "Tmpfs", "CapAdd", "SecurityOpt", "GroupAdd",
                                        "Mounts", "DeviceCgroupRules", "Privileged"]),
                       _JSONISH, max_size=4), _JSONISH)
def test_values_are_idempotent_or_refused(hc, user):
    body = {"Image": "x", "HostConfig": hc, "User": user}
    try:
        first = create(body)
    except BadRequest:
        return
    assert create(first) == first


# --- the natural policy, evaluated by the real engine on the real input ---------

NATURAL_POLICY = """package docker.authz
import rego.v1

default allow := false
allow if count(deny) == 0

deny contains "host root or /etc" if {
    some bind in input.Body.HostConfig.Binds
    split(bind, ":")[0] in {"/", "/etc"}
}
deny contains "mount of / or /etc" if {
    some m in input.Body.HostConfig.Mounts
    m.Source in {"/", "/etc"}
}
deny contains "SYS_ADMIN" if "SYS_ADMIN" in input.Body.HostConfig.CapAdd
deny contains "ALL" if "ALL" in input.Body.HostConfig.CapAdd
deny contains "unconfined" if "seccomp=unconfined" in input.Body.HostConfig.SecurityOpt
deny contains "root" if input.Body.User in {"0", "0:0"}
deny contains "not loopback" if {
    some bindings in input.Body.HostConfig.PortBindings
    some b in bindings
    b.HostIp != "127.0.0.1"
}
deny contains "port 22" if {
    some bindings in input.Body.HostConfig.PortBindings
    some b in bindings
    b.HostPort == "22"
}
"""


@pytest.fixture(scope="module")
def natural(tmp_path_factory):
    d = tmp_path_factory.mktemp("natural")
    (d / "authz.rego").write_text(NATURAL_POLICY)
    engine = EmbeddedEngine(str(d), cache_size=0)

    def decide(body):
        target = canonical_target(b"/v1.41/containers/create")
        try:
            value, fwd = canonicalize_body("POST", target.plain_path, target.version,
                                           json.dumps(body).encode())
        except BadRequest:
            return "refused"
        doc = input_document(CanonicalRequest("POST", target, (), value, fwd))
        return "allowed" if engine.evaluate("docker.authz", doc).allowed else "denied"
    return decide


@settings(max_examples=150)
@given(st.one_of(
    st.sampled_from(["/", "/etc"]).flatmap(spellings_of).map(
        lambda p: {"HostConfig": {"Binds": [p + ":/h"]}}),
    st.sampled_from(["/", "/etc"]).flatmap(spellings_of).map(
        lambda p: {"HostConfig": {"Mounts": [{"Type": "bind", "Source": p, "Target": "/h"}]}}),
    capability_spellings("SYS_ADMIN").map(lambda c: {"HostConfig": {"CapAdd": [c]}}),
    capability_spellings("ALL").map(lambda c: {"HostConfig": {"CapAdd": c}}),
    st.sampled_from(["seccomp:unconfined", "seccomp=unconfined"]).map(
        lambda o: {"HostConfig": {"SecurityOpt": ["no-new-privileges", o]}}),
    st.from_regex(r"\A[+-]?0{1,4}(:([+-]?0{1,4})?)?\Z").map(lambda u: {"User": u}),
    st.sampled_from([":0", ":", "0:", "0:0:x", ":00"]).map(lambda u: {"User": u}),
    st.sampled_from(["127.000.000.001", "127.0.0.01", "127.1", "0177.0.0.1"]).map(
        lambda ip: {"HostConfig": {"PortBindings": {"80/tcp": [{"HostIp": ip}]}}}),
    st.sampled_from(["022", "22-22", "22/udp", "0022-22-x"]).map(lambda p: {"HostConfig": {
        "PortBindings": {"80/tcp": [{"HostIp": "::ffff:127.0.0.1", "HostPort": p}]}}}),
))
def test_natural_policy_holds_against_every_spelling(natural, extra):
    body = {"Image": "x", "Cmd": ["true"], **extra}
    assert natural(body) in ("denied", "refused"), body


@pytest.mark.parametrize("extra", [
    {"HostConfig": {"Binds": ["/tmp:/t", "/etc/hostname:/h:ro", "/etcx:/e"]}},
    {"HostConfig": {"CapAdd": ["NET_ADMIN", "cap_chown"], "CapDrop": ["ALL"]}},
    {"HostConfig": {"SecurityOpt": ["no-new-privileges", "apparmor=docker-default"]}},
    {"User": "1000:1000"}, {"User": "root"},  # names are the image's business
    {"HostConfig": {"PortBindings": {"80/tcp": [{"HostIp": "::ffff:127.0.0.1", "HostPort": "8022"}]}}},
])
def test_natural_policy_allows_the_ordinary(natural, extra):
    assert natural({"Image": "x", "Cmd": ["true"], **extra}) == "allowed"
