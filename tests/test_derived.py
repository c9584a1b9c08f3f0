"""Derived facts: every host path a request mounts, capabilities in one spelling."""
from __future__ import annotations

import json
import os

import pytest
from hypothesis import given, strategies as st

from dsfw.input.body import canonicalize_body
from dsfw.input.path import canonical_target
from dsfw.input.derived import capability_fact, derived_facts, facts_for, stored_mount_facts
from dsfw.input.request import CanonicalRequest, input_document
from dsfw.input.values import go_clean


def request(method, raw_target, body):
    target = canonical_target(raw_target)
    value, forwarded = canonicalize_body(method, target.plain_path, target.version,
                                         json.dumps(body).encode())
    return CanonicalRequest(method, target, (), value, forwarded)


def same(path):
    return path


def test_binds_mounts_and_local_volume_devices_from_every_place():
    req = request("POST", b"/v1.41/containers/create", {
        "Image": "x",
        "HostConfig": {
            "Binds": ["/etc/../etc:/e:ro", "named:/n", "/var/run/docker.sock:/s", "/anon"],
            "Mounts": [{"Type": "bind", "Source": "/srv//data", "Target": "/d"},
                       {"Type": "volume", "Source": "v", "Target": "/v",
                        "VolumeOptions": {"DriverConfig": {"Name": "local", "Options": {
                            "type": "none", "o": "bind", "device": "/root"}}}},
                       {"Type": "volume", "Target": "/w", "VolumeOptions": {
                           "DriverConfig": {"Name": "nfs", "Options": {"device": "/x"}}}},
                       {"Type": "tmpfs", "Target": "/t"}]}})
    assert derived_facts(req, resolve=same)["BindMounts"] == [
        "/etc", "/var/run/docker.sock", "/srv/data", "/root"]


def test_legacy_top_level_binds_count():
    req = request("POST", b"/containers/create", {"Image": "x", "binds": ["/:/host"]})
    assert derived_facts(req, resolve=same)["BindMounts"] == ["/"]


def test_legacy_start_body_counts_below_1_24_only():
    body = {"Binds": ["/etc:/e"], "Privileged": True}
    old = derived_facts(request("POST", b"/v1.23/containers/c/start", body), resolve=same)
    assert old["BindMounts"] == ["/etc"] and old["Privileged"] is True
    new = derived_facts(request("POST", b"/v1.24/containers/c/start", body), resolve=same)
    assert new["BindMounts"] == [] and new["Privileged"] is False


def test_volume_create_with_a_local_device():
    req = request("POST", b"/volumes/create", {"Name": "v", "DriverOpts": {
        "type": "none", "o": "bind", "device": "/etc"}})
    assert derived_facts(req, resolve=same)["BindMounts"] == ["/etc"]
    req = request("POST", b"/volumes/create", {"Name": "v", "Driver": "other",
                                               "DriverOpts": {"device": "/etc"}})
    assert derived_facts(req, resolve=same)["BindMounts"] == []


def test_symlinks_are_resolved_on_this_host(tmp_path):
    link = tmp_path / "link"
    os.symlink("/etc", link)
    (tmp_path / "dir").mkdir()
    req = request("POST", b"/containers/create", {"Image": "x", "HostConfig": {
        "Binds": [f"{link}:/e", f"{link}/passwd:/p", f"{tmp_path}/dir/:/d"]}})
    facts = derived_facts(req)
    assert facts["BindMounts"] == ["/etc", "/etc/passwd", os.path.realpath(tmp_path / "dir")]
    real = os.path.realpath(tmp_path)
    expected = [{"Path": f"{link}", "Resolved": "/etc"},
                {"Path": f"{link}/passwd", "Resolved": "/etc/passwd"}]
    if real != str(tmp_path):  # the test's own temporary directory is reached through a link
        expected.append({"Path": f"{tmp_path}/dir", "Resolved": f"{real}/dir"})
    assert facts["SymlinkMounts"] == expected


@pytest.mark.parametrize("options,entry,bind_mounts", [
    ({"type": "none", "o": "bind", "device": "/srv"},
     {"Type": "none", "Device": "/srv", "Options": "bind", "Bind": True, "Paths": ["/srv"]},
     ["/srv"]),
    ({"type": "ext4", "o": "rw,rbind", "device": "//srv/./"},  # rbind: a bind, cleaned
     {"Type": "ext4", "Device": "/srv", "Options": "rw,rbind", "Bind": True, "Paths": ["/srv"]},
     ["/srv"]),
    ({"type": "ext4", "device": "dev/sda1"},  # not a bind: left as sent, for the policy
     {"Type": "ext4", "Device": "dev/sda1", "Options": "", "Bind": False, "Paths": []}, []),
    ({"type": "proc", "device": "proc"},
     {"Type": "proc", "Device": "proc", "Options": "", "Bind": False, "Paths": []}, []),
    ({"type": "ext4", "device": "/dev/sda1"},
     {"Type": "ext4", "Device": "/dev/sda1", "Options": "", "Bind": False, "Paths": ["/dev/sda1"]},
     ["/dev/sda1"]),
    ({"type": "overlay", "device": "overlay",
      "o": "lowerdir=/etc:/usr,upperdir=/srv/u,workdir=w,index=on"},
     {"Type": "overlay", "Device": "overlay",
      "Options": "lowerdir=/etc:/usr,upperdir=/srv/u,workdir=w,index=on", "Bind": False,
      "Paths": ["/etc", "/usr", "/srv/u", "w"]}, ["/etc", "/usr", "/srv/u"]),
    ({"type": "tmpfs", "device": "tmpfs", "o": "size=1m"},
     {"Type": "tmpfs", "Device": "tmpfs", "Options": "size=1m", "Bind": False, "Paths": []}, []),
])
def test_local_volumes_at_create_and_in_mounts(options, entry, bind_mounts):
    created = derived_facts(request("POST", b"/volumes/create",
                                    {"Name": "v", "DriverOpts": options}), resolve=same)
    assert created["LocalVolumes"] == [{"Name": "v", **entry}]
    assert created["BindMounts"] == bind_mounts
    mounted = derived_facts(request("POST", b"/containers/create", {"Image": "x", "HostConfig": {
        "Mounts": [{"Type": "volume", "Source": "v", "Target": "/v", "VolumeOptions": {
            "DriverConfig": {"Options": options}}}]}}), resolve=same)
    assert mounted["LocalVolumes"] == [{"Name": "v", **entry}]
    assert mounted["BindMounts"] == bind_mounts


def test_volumes_without_options_or_of_other_drivers_mount_nothing_of_their_own():
    for body in ({"Name": "v"}, {"Name": "v", "DriverOpts": {"o": "size=1"}},
                 {"Name": "v", "Driver": "nfs-plugin", "DriverOpts": {"type": "proc", "device": "p"}}):
        facts = derived_facts(request("POST", b"/volumes/create", body), resolve=same)
        assert (facts["LocalVolumes"], facts["BindMounts"]) == ([], [])


@pytest.mark.parametrize("name,canonical", [
    ("sys_admin", "CAP_SYS_ADMIN"), ("SYS_ADMIN", "CAP_SYS_ADMIN"), ("cap_sys_admin", "CAP_SYS_ADMIN"),
    ("CAP_SYS_ADMIN", "CAP_SYS_ADMIN"), ("all", "ALL"), ("All", "ALL"),
    ("\u017fys_admin", "CAP_SYS_ADMIN"),  # Go's ToUpper maps the long s to S, as Python does
    ("ne\u00dft", "CAP_NE\u00dfT"),        # but ß has no one-letter upper case in Go
])
def test_capability_spellings(name, canonical):
    assert capability_fact(name) == canonical


def test_caps_and_privileged_in_the_input_document():
    req = request("POST", b"/v1.41/containers/create", {"Image": "x", "HostConfig": {
        "CapAdd": "sys_admin", "capdrop": ["all"], "privileged": True}})
    doc = input_document(req)
    assert (doc["CapAdd"], doc["CapDrop"], doc["Privileged"]) == (["CAP_SYS_ADMIN"], ["ALL"], True)
    assert doc["Body"]["HostConfig"]["CapAdd"] == ["SYS_ADMIN"]  # forwarded in this spelling


def test_exec_privileged():
    req = request("POST", b"/containers/c/exec", {"Cmd": ["sh"], "privileged": True})
    assert derived_facts(req)["Privileged"] is True


def test_facts_are_always_present():
    assert facts_for("GET", "/containers/json", None, None) == {
        "BindMounts": [], "SymlinkMounts": [], "LocalVolumes": [], "VolumeDrivers": [],
        "CapAdd": [], "CapDrop": [], "Privileged": False, "HostNamespaces": [],
        "EffectiveCapabilities": [], "ExtraCapabilities": [], "Unconfined": [], "RunAs": None}


@given(st.lists(st.text(alphabet="/ab.:", max_size=12), max_size=4))
def test_every_absolute_bind_source_is_reported(binds):
    facts = facts_for("POST", "/containers/create", "1.41",
                      {"HostConfig": {"Binds": binds}}, resolve=same)
    for spec in binds:
        if ":" in spec and spec.startswith("/"):
            src = spec.split(":", 1)[0]
            assert go_clean(src) in facts["BindMounts"]  # not normpath: "//etc" is /etc


def test_service_mounts_and_capabilities():
    for target in (b"/v1.41/services/create", b"/v1.41/services/s1/update?version=3"):
        req = request("POST", target, {"Name": "s", "tasktemplate": {"containerspec": {
            "Image": "x", "mounts": [{"type": "bind", "source": "/etc", "target": "/e"}],
            "capabilityadd": ["sys_admin"], "CapabilityDrop": ["all"]}}})
        facts = derived_facts(req, resolve=same)
        assert facts["BindMounts"] == ["/etc"]
        assert (facts["CapAdd"], facts["CapDrop"]) == (["CAP_SYS_ADMIN"], ["ALL"])


def test_plugin_settings_naming_host_paths():
    """A plugin's mount source or device path set to a host path is a host path it mounts."""
    facts = facts_for("POST", "/plugins/vieux/sshfs:latest/set", "1.41",
                      ["DEBUG=1", "mnt.source=/etc/../etc", "dev=/dev/sda", "args=-v", "x=rel/p"],
                      resolve=same)
    assert facts["BindMounts"] == ["/etc", "/dev/sda"]


def test_host_namespaces_of_containers_and_services():
    create = request("POST", b"/v1.41/containers/create", {"Image": "x", "HostConfig": {
        "PidMode": "host", "NetworkMode": "default", "IpcMode": "HOST", "UTSMode": "host",
        "UsernsMode": "host", "CgroupnsMode": "host"},
        "NetworkingConfig": {"EndpointsConfig": {"host": {}}}})
    assert derived_facts(create)["HostNamespaces"] == ["pid", "uts", "userns", "cgroupns", "network"]
    for body in ({"TaskTemplate": {"Networks": [{"Target": "host"}]}},
                 {"TaskTemplate": {}, "Networks": [{"Target": "backend"}, {"Target": "host"}]}):
        service = request("POST", b"/v1.41/services/create", {"Name": "s", **body})
        assert derived_facts(service)["HostNamespaces"] == ["network"]
    plain = request("POST", b"/v1.41/containers/create", {"Image": "x", "HostConfig": {
        "NetworkMode": "host"}})
    assert derived_facts(plain)["HostNamespaces"] == ["network"]


def test_volume_drivers_every_way_a_request_names_one():
    """A plugin's volume mounts what the plugin makes of its options: every driver is named."""
    body = {"HostConfig": {"VolumeDriver": "vd", "Binds": ["n:/n"], "Mounts": [
        {"Type": "volume", "Source": "a", "Target": "/a",
         "VolumeOptions": {"DriverConfig": {"Name": "hostpath", "Options": {"mountpoint": "/"}}}},
        {"Type": "volume", "Source": "b", "Target": "/b",
         "VolumeOptions": {"DriverConfig": {"Name": "vd"}}},
        {"Type": "volume", "Source": "c", "Target": "/c"}]}}
    assert facts_for("POST", "/containers/create", "1.41", body, resolve=same)["VolumeDrivers"] \
        == ["vd", "hostpath"]
    assert facts_for("POST", "/volumes/create", "1.41", {"Name": "v", "Driver": "hostpath"},
                     resolve=same)["VolumeDrivers"] == ["hostpath"]
    assert facts_for("POST", "/volumes/create", "1.41", {"Name": "v"},
                     resolve=same)["VolumeDrivers"] == []
    spec = {"TaskTemplate": {"ContainerSpec": {"Image": "x", "Mounts": [
        {"Type": "volume", "Source": "a", "Target": "/a",
         "VolumeOptions": {"DriverConfig": {"Name": "hostpath"}}}]}}}
    assert facts_for("POST", "/services/create", "1.41", spec, resolve=same)["VolumeDrivers"] \
        == ["hostpath"]


def test_stored_volume_drivers():
    mounts = [{"Type": "volume", "Name": "v", "Driver": "hostpath", "Destination": "/v"},
              {"Type": "volume", "Name": "w", "Driver": "local", "Destination": "/w"},
              {"Type": "bind", "Source": "/srv", "Destination": "/s"}]
    assert stored_mount_facts(mounts, {}, resolve=same)["VolumeDrivers"] == ["hostpath", "local"]
