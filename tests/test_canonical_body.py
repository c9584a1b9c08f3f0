"""Bodies rewritten into the shape dockerd's Go decoder gives them.

What Go does with each shape (case-folded keys, ``ſ``, top-level HostConfig
fields, merges of repeated objects, the pre-1.24 start body) was checked on
the real dockerd 20.10; test_canonical_dockerd.py keeps checking it.
"""
from __future__ import annotations

import json

import pytest
from hypothesis import given, strategies as st

from dsfw.input import types as T
from dsfw.input.body import canonicalize_body, check_content_type, parse_json_body
from dsfw import routes
from dsfw.input.schema import version_less
from dsfw.errors import BadRequest, PayloadTooLarge


def create(body, version="1.41"):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    value, forwarded = canonicalize_body("POST", "/containers/create", version, raw)
    assert json.loads(forwarded) == value
    return value


def test_cli_shaped_body_keeps_its_shape_and_loses_its_nulls():
    body = {"Image": "localbusybox", "Cmd": ["sh"], "Env": None, "Labels": {},
            "HostConfig": {"Binds": None, "CapAdd": None, "Privileged": False,
                           "NetworkMode": "default", "Mounts": None},
            "NetworkingConfig": {"EndpointsConfig": {}}}
    assert create(body) == {
        "Image": "localbusybox", "Cmd": ["sh"], "Labels": {},
        "HostConfig": {"NetworkMode": "default", "Privileged": False},
        "NetworkingConfig": {"EndpointsConfig": {}}}


def test_keys_are_renamed_as_go_matches_them():
    body = {"image": "x", "hostconfig": {"privileged": True, "BINDS": ["/etc:/e"],
                                         "Bind\u017f": None} }
    with pytest.raises(BadRequest, match="ambiguous"):
        create(body)
    del body["hostconfig"]["Bind\u017f"]
    assert create(body) == {"Image": "x", "HostConfig": {"Binds": ["/etc:/e"], "Privileged": True}}


@pytest.mark.parametrize("key", ["Bind\u017f", "bind\u017f", "\u017fecurityOpt"])
def test_long_s_folds_to_s_as_in_go(key):
    body = create({"Image": "x", "HostConfig": {key: ["no-new-privileges"]}})
    assert list(body["HostConfig"]) == [T.HOST_CONFIG.lookup(key).key]


def test_kelvin_sign_folds_to_k():
    assert T.RESOURCES.lookup("\u212aernelMemory").key == "KernelMemory"
    assert T.HOST_CONFIG.lookup("Privileg\u0435d") is None  # Cyrillic e is not e


def test_map_keys_are_data_and_stay():
    body = create({"Image": "x", "Labels": {"privileged": "1", "Privileged": "2"},
                   "HostConfig": {"Sysctls": {"net.ipv4.ip_forward": "1"},
                                  "LogConfig": {"type": "json-file", "config": {"max-size": "1m"}}},
                   "NetworkingConfig": {"endpointsconfig": {"MyNet": {"aliases": ["a"]}}}})
    assert body["Labels"] == {"privileged": "1", "Privileged": "2"}
    assert body["HostConfig"]["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "1m"}}
    assert body["NetworkingConfig"] == {"EndpointsConfig": {"MyNet": {"Aliases": ["a"]}}}


def test_unknown_keys_are_dropped_everywhere():
    body = create({"Image": "x", "Config": {"Privileged": True}, "Resources": {"Memory": 1},
                   "HostConfig": {"Privileged ": True, "Mounts": [{"Type": "bind", "Bogus": 1}]}})
    assert body == {"Image": "x", "HostConfig": {"Mounts": [{"Type": "bind"}]}}


def test_two_keys_for_one_field_are_refused():
    for body in ({"Image": "x", "HostConfig": {"Privileged": True}, "hostconfig": {}},
                 {"Image": "x", "HostConfig": {"Privileged": True, "privileged": False}},
                 {"Image": "x", "cmd": "a", "Cmd": None}):
        with pytest.raises(BadRequest, match="ambiguous"):
            create(body)


def test_exact_duplicate_keys_are_refused_by_the_parser():
    with pytest.raises(BadRequest, match="repeats"):
        create(b'{"Image":"x","Image":"y"}')


def test_top_level_host_config_fields_are_the_host_config_without_one():
    assert create({"Image": "x", "Privileged": True, "Binds": ["/:/host"], "Memory": 5}) == {
        "Image": "x", "HostConfig": {"Binds": ["/:/host"], "Privileged": True, "Memory": 5}}
    # "HostConfig": null leaves the inner pointer nil, so the top level still counts
    assert create({"Image": "x", "HostConfig": None, "Privileged": True}) == {
        "Image": "x", "HostConfig": {"Privileged": True}}


def test_with_a_host_config_only_five_top_level_fields_merge():
    body = create({"Image": "x", "Privileged": True, "Memory": 7, "CpuShares": 3,
                   "VolumeDriver": "v", "CpusetCpus": "1",
                   "HostConfig": {"Memory": 0, "CpuShares": 9}})
    assert body["HostConfig"] == {"VolumeDriver": "v", "CpuShares": 9, "Memory": 7,
                                  "CpusetCpus": "1"}


def test_cpuset_fills_an_empty_cpuset_cpus_only_when_there_is_a_host_config():
    assert create({"Image": "x", "Cpuset": "0"}) == {"Image": "x"}
    assert create({"Image": "x", "Cpuset": "0", "HostConfig": {}})["HostConfig"] == {
        "CpusetCpus": "0"}
    assert create({"Image": "x", "Cpuset": "0", "HostConfig": {"CpusetCpus": "1"}})[
        "HostConfig"] == {"CpusetCpus": "1"}


def test_a_null_only_top_level_field_still_makes_an_empty_host_config():
    assert create({"Image": "x", "Privileged": None}) == {"Image": "x", "HostConfig": {}}


def test_version_gates_of_the_create_handler():
    old = create({"Image": "x", "HostConfig": {"AutoRemove": True, "KernelMemoryTCP": 5,
                                                "Mounts": [{"BindOptions": {"NonRecursive": True}}]}},
                 version="1.24")
    assert old["HostConfig"] == {"Mounts": [{"BindOptions": {}}]}
    new = create({"Image": "x", "HostConfig": {"AutoRemove": True}}, version=None)
    assert new["HostConfig"] == {"AutoRemove": True}


def test_strslice_fields_become_lists():
    body = create({"Image": "x", "Cmd": "echo hi", "Entrypoint": ["sh", None],
                   "HostConfig": {"CapAdd": "NET_ADMIN"}})
    assert body["Cmd"] == ["echo hi"]
    assert body["Entrypoint"] == ["sh", ""]
    assert body["HostConfig"]["CapAdd"] == ["NET_ADMIN"]


def test_nulls_inside_lists_and_maps_become_go_zero_values():
    body = create({"Image": "x", "Env": ["A=1", None], "Labels": {"a": None},
                   "Volumes": {"/data": None},
                   "HostConfig": {"Mounts": [None], "Ulimits": [None],
                                  "PortBindings": {"80/tcp": None}}})
    assert body["Env"] == ["A=1", ""]
    assert body["Labels"] == {"a": ""}
    assert body["Volumes"] == {"/data": {}}
    assert body["HostConfig"] == {"PortBindings": {"80/tcp": None}, "Ulimits": [None],
                                  "Mounts": [{}]}


@pytest.mark.parametrize("hc", [{"Privileged": "true"}, {"Privileged": 1}, {"Binds": "/a:/b"},
                                {"Memory": 1.5}, {"Memory": True}, {"Mounts": {}},
                                {"LogConfig": []}, {"CapAdd": 5}])
def test_values_of_the_wrong_type_are_refused(hc):
    with pytest.raises(BadRequest, match="expected"):
        create({"Image": "x", "HostConfig": hc})


def test_schema_endpoints_need_an_object():
    for raw in (b"null", b"[]", b'"x"', b"1"):
        with pytest.raises(BadRequest):
            create(raw)


def test_legacy_start_body_is_a_host_config_below_1_24():
    v, fwd = canonicalize_body("POST", "/containers/abc/start", "1.23",
                               b'{"binds":["/etc:/e"],"Image":"q","privileged":true}')
    assert v == {"HostConfig": {"Binds": ["/etc:/e"], "Privileged": True}}
    assert fwd == b'{"HostConfig":{"Binds":["/etc:/e"],"Privileged":true}}'
    assert canonicalize_body("POST", "/containers/abc/start", "1.23", b'{"x":1}')[0] == {}
    # the create handler's version gates are not the start handler's
    assert canonicalize_body("POST", "/containers/abc/start", "1.23", b'{"AutoRemove":true}')[0] == {
        "HostConfig": {"AutoRemove": True}}
    # from 1.24 dockerd refuses any such body: it is only parsed strictly
    assert canonicalize_body("POST", "/containers/abc/start", "1.24", b'{"binds":[]}')[0] == {
        "binds": []}
    assert routes.match("POST", "/containers/abc/start").json_schema(None) is None


def test_other_schemas():
    def canon(path, body):
        return canonicalize_body("POST", path, "1.41", json.dumps(body).encode())[0]
    assert canon("/containers/c/exec", {"cmd": ["sh"], "privileged": True, "user": None}) == {
        "Privileged": True, "Cmd": ["sh"]}
    assert canon("/exec/e/start", {"detach": True, "Tty": None, "ConsoleSize": [1, 2]}) == {
        "Detach": True}
    assert canon("/containers/c/update", {"memory": 5, "restartpolicy": {"name": "always"},
                                          "Privileged": True}) == {
        "Memory": 5, "RestartPolicy": {"Name": "always"}}
    assert canon("/networks/create", {"name": "n", "ipam": {"config": [{"subnet": "10.0.0.0/8",
                                                                        "auxiliaryaddresses": {"A": "1"}}]}}) == {
        "IPAM": {"Config": [{"Subnet": "10.0.0.0/8", "AuxiliaryAddresses": {"A": "1"}}]}, "Name": "n"}
    assert canon("/networks/n/connect", {"container": "c", "endpointconfig": {"ipamconfig": {
        "ipv4address": "10.0.0.2"}}}) == {
        "Container": "c", "EndpointConfig": {"IPAMConfig": {"IPv4Address": "10.0.0.2"}}}
    assert canon("/volumes/create", {"driveropts": {"Device": "/etc", "o": "bind"}, "name": "v"}) == {
        "DriverOpts": {"Device": "/etc", "o": "bind"}, "Name": "v"}
    assert canon("/plugins/pull", [{"name": "mount", "value": ["/var"]}]) == [
        {"Name": "mount", "Value": ["/var"]}]


def test_service_spec():
    v, _ = canonicalize_body("POST", "/services/create", "1.41", json.dumps({
        "name": "s", "labels": {"A": "b"}, "Junk": 1,
        "tasktemplate": {"containerspec": {"image": "x", "tty": True, "mounts": [
            {"type": "bind", "source": "/etc", "target": "/e"}], "capabilityadd": ["sys_admin"]},
            "pluginspec": {"Name": "p"}},
        "mode": {"replicated": {"replicas": 2}}, "updateconfig": {"maxfailureratio": 0.5}}).encode())
    assert v == {"Name": "s", "Labels": {"A": "b"}, "TaskTemplate": {
        "ContainerSpec": {"Image": "x", "TTY": True, "Mounts": [
            {"Type": "bind", "Source": "/etc", "Target": "/e"}], "CapabilityAdd": ["SYS_ADMIN"]},
        "PluginSpec": {"name": "p"}},  # protobuf json tags are lower case
        "Mode": {"Replicated": {"Replicas": 2}}, "UpdateConfig": {"MaxFailureRatio": 0.5}}
    with pytest.raises(BadRequest, match="ambiguous"):
        canonicalize_body("POST", "/services/s/update", "1.41",
                          b'{"TaskTemplate":{"ContainerSpec":{"Mounts":[],"mounts":[]}}}')


def test_endpoints_without_schema_keep_their_json():
    v, fwd = canonicalize_body("POST", "/swarm/init", "1.41", b'{"listenaddr": "0.0.0.0", "x": null}')
    assert v == {"listenaddr": "0.0.0.0", "x": None}


def test_empty_and_whitespace_bodies():
    assert canonicalize_body("POST", "/containers/create", "1.41", b"") == (None, None)
    with pytest.raises(BadRequest):
        canonicalize_body("POST", "/containers/create", "1.41", b"  ")


@pytest.mark.parametrize("raw", [b'{"a":NaN}', b'{"a":1e400}', b'[-1E999]', b'{"a":1} {}', b'\xef\xbb\xbf{}', b'{"a":"\xff"}',
                                 b'{"a":"\\ud800"}', b'{"\\udc00":1}', b'{"a":1' + b"0" * 5000 + b"}"])
def test_strict_parse_refuses_what_go_reads_differently(raw):
    with pytest.raises(BadRequest):
        parse_json_body(raw)


def test_limits():
    with pytest.raises(PayloadTooLarge):
        canonicalize_body("POST", "/containers/create", "1.41", b"{}", max_bytes=1)
    deep = b"[" * 65 + b"]" * 65
    with pytest.raises(BadRequest, match="nested"):
        canonicalize_body("POST", "/x", "1.41", deep)
    canonicalize_body("POST", "/x", "1.41", b"[" * 64 + b"]" * 64)


@pytest.mark.parametrize("ct", ["application/x-www-form-urlencoded",
                                "Multipart/Form-Data; boundary=x"])
def test_form_content_types_are_refused(ct):
    with pytest.raises(BadRequest, match="Content-Type"):
        check_content_type(ct)
    with pytest.raises(BadRequest):
        canonicalize_body("POST", "/containers/x/kill", "1.41", b"", content_type=ct)
    check_content_type("application/json")
    check_content_type(None)


def test_version_less_matches_moby():
    assert version_less("1.23", "1.24") and not version_less("1.24", "1.24")
    assert not version_less(None, "1.41") and version_less(None, "1.42")


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                     lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                     max_leaves=12)


@given(st.dictionaries(st.sampled_from(["Image", "image", "HostConfig", "hostconfig", "Privileged",
                                        "Binds", "Cmd", "Labels", "Cpuset", "Memory", "junk"]),
                       _json, max_size=5))
def test_canonicalization_is_idempotent_or_refuses(body):
    try:
        first = create(body)
    except BadRequest:
        return
    assert create(first) == first
