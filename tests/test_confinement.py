"""dsfw.input.confinement: EffectiveCapabilities, ExtraCapabilities, Unconfined, RunAs.

What the process gets is checked against dockerd itself in test_e2e_confinement.py;
here the rules, every route that carries them, and that no spelling changes them.
"""
from __future__ import annotations

import json

from hypothesis import given, strategies as st

from dsfw.input.body import canonicalize_body
from dsfw.input.confinement import (ALL_CAPABILITIES, DEFAULT_CAPABILITIES, DEFAULT_MASKED_PATHS,
                                    DEFAULT_READONLY_PATHS, container_unconfined,
                                    effective_capabilities, run_as)
from dsfw.input.derived import facts_for

FACTS = ("EffectiveCapabilities", "ExtraCapabilities", "Unconfined", "RunAs")


def facts(path: str, body: dict, version: str = "1.41") -> dict:
    canonical, _ = canonicalize_body("POST", path, version, json.dumps(body).encode())
    out = facts_for("POST", path, version, canonical)
    return {k: out[k] for k in FACTS}


def test_capabilities_as_tweak_capabilities_computes_them():
    assert effective_capabilities([], [], False) == sorted(DEFAULT_CAPABILITIES)
    assert effective_capabilities([], [], True) == list(ALL_CAPABILITIES)
    assert effective_capabilities(["SYS_ADMIN"], ["CHOWN"], False) == sorted(
        set(DEFAULT_CAPABILITIES) - {"CAP_CHOWN"} | {"CAP_SYS_ADMIN"})
    assert effective_capabilities(["ALL"], ["CHOWN"], False) == [
        c for c in ALL_CAPABILITIES if c != "CAP_CHOWN"]
    assert effective_capabilities(["NET_ADMIN"], ["ALL"], False) == ["CAP_NET_ADMIN"]
    # --cap-drop ALL does not undo --cap-add ALL
    assert effective_capabilities(["ALL"], ["ALL"], False) == list(ALL_CAPABILITIES)
    assert "CAP_SYS_ADMIN" in ALL_CAPABILITIES


_NEWER = ["CAP_BPF", "CAP_CHECKPOINT_RESTORE", "CAP_PERFMON"]


def test_all_is_every_capability_any_dockerd_grants():
    """dockerd 20.10 stops at AUDIT_READ; a newer one also grants the three newer
    capabilities for ALL and --privileged. A rule allowing 20.10's whole list must not
    pass ALL on such a daemon, so every way to ask for all of them says all of them."""
    old = [c for c in ALL_CAPABILITIES if c not in _NEWER]
    assert len(old) == 38 and len(ALL_CAPABILITIES) == 41
    every = [
        effective_capabilities(["ALL"], [], False), effective_capabilities([], [], True),
        effective_capabilities(["ALL"], ["ALL"], False),
        facts("/containers/create", {"HostConfig": {"CapAdd": ["all"]}})["EffectiveCapabilities"],
        facts("/containers/create", {"HostConfig": {"Privileged": True}})["ExtraCapabilities"],
        facts("/containers/c/exec", {"Cmd": ["true"], "Privileged": True})["ExtraCapabilities"],
        facts("/services/create", {"TaskTemplate": {"ContainerSpec": {
            "Image": "busybox", "CapabilityAdd": ["ALL"]}}})["ExtraCapabilities"],
    ]
    for caps in every:
        assert [c for c in _NEWER if c not in caps] == []
        allowlist_rule_passes = all(c in old for c in caps)
        assert not allowlist_rule_passes
    # Dropping one leaves it out (dockerd 20.10 refuses the name itself).
    assert "CAP_BPF" not in effective_capabilities(["ALL"], ["BPF"], False)
    assert "CAP_PERFMON" in effective_capabilities(["ALL"], ["BPF"], False)


_SPELLINGS = {"SYS_ADMIN": ["SYS_ADMIN", "sys_admin", "CAP_SYS_ADMIN", "cap_Sys_Admin", "ſys_admin"],
              "ALL": ["ALL", "all", "All"], "CHOWN": ["CHOWN", "chown", "CAP_CHOWN"],
              "NET_RAW": ["NET_RAW", "cap_net_raw"]}


@given(st.lists(st.sampled_from(sorted(_SPELLINGS)), max_size=3),
       st.lists(st.sampled_from(sorted(_SPELLINGS)), max_size=3), st.data())
def test_no_spelling_changes_the_capabilities(add, drop, data):
    spelled = [[data.draw(st.sampled_from(_SPELLINGS[c])) for c in names] for names in (add, drop)]
    plain = facts("/containers/create", {"Image": "x", "HostConfig": {"CapAdd": add, "CapDrop": drop}})
    other = facts("/containers/create", {"Image": "x", "HostConfig": {"CapAdd": spelled[0],
                                                                      "CapDrop": spelled[1]}})
    assert plain == other
    assert set(plain["ExtraCapabilities"]) == set(plain["EffectiveCapabilities"]) - set(
        DEFAULT_CAPABILITIES)


def test_unconfined():
    assert container_unconfined({}) == []
    assert container_unconfined({"Privileged": True}) == [
        "privileged", "seccomp", "apparmor", "selinux", "systempaths", "devices"]
    profile = json.dumps({"defaultAction": "SCMP_ACT_ALLOW"})
    assert container_unconfined({"SecurityOpt": [f"seccomp={profile}"]}) == ["seccomp"]
    assert container_unconfined({"SecurityOpt": ["seccomp=unconfined", "apparmor=docker-default",
                                                 "no-new-privileges=true"]}) == ["seccomp"]
    assert container_unconfined({"SecurityOpt": ["apparmor=my-profile", "label=level:s0:c1"]}) == [
        "apparmor", "selinux"]
    assert container_unconfined({"PidMode": "host"}) == ["selinux"]
    full = {"MaskedPaths": list(DEFAULT_MASKED_PATHS) + ["/x"],
            "ReadonlyPaths": list(DEFAULT_READONLY_PATHS)}
    assert container_unconfined(full) == []
    assert container_unconfined({**full, "MaskedPaths": []}) == ["systempaths"]
    assert container_unconfined({"DeviceCgroupRules": ["c 1:3 rwm"]}) == ["devices"]
    # spellings dockerd reads alike give one answer (dsfw.input.values rewrites them first)
    assert facts("/containers/create", {"Image": "x", "HostConfig": {
        "SecurityOpt": ["seccomp:unconfined"]}})["Unconfined"] == ["seccomp"]


def test_run_as():
    assert run_as("", ()) == {"User": "", "Uid": None, "Gid": None, "Groups": [], "Root": None}
    for spec in ("0", "root", "0:0", "root:root", "1000:0", "1000:root"):
        assert run_as(spec, ())["Root"] is True, spec
    assert run_as("1000:1000", ()) == {"User": "1000:1000", "Uid": 1000, "Gid": 1000, "Groups": [],
                                      "Root": False}
    assert run_as("app", ())["Root"] is False and run_as("app", ())["Uid"] is None
    assert run_as("1000", ["0"])["Root"] is True
    assert run_as("", ["root"])["Root"] is True
    # the body's spellings first go through canonical_user: 00, +0, :0 are uid 0
    for spec in ("00", "+0", "-0", ":0", "0:00", "1000:+0"):
        assert facts("/containers/create", {"Image": "x", "User": spec})["RunAs"]["Root"] is True


def test_every_route_that_runs_a_process():
    exec_ = facts("/containers/c/exec", {"Cmd": ["sh"], "User": "0", "Privileged": True})
    assert exec_["EffectiveCapabilities"] == list(ALL_CAPABILITIES)
    assert exec_["Unconfined"] == ["privileged", "apparmor"] and exec_["RunAs"]["Root"] is True
    plain_exec = facts("/containers/c/exec", {"Cmd": ["sh"], "User": "1000"})
    assert plain_exec["ExtraCapabilities"] == [] and plain_exec["RunAs"]["Root"] is False
    service = facts("/services/create", {"TaskTemplate": {"ContainerSpec": {
        "Image": "x", "User": "1000", "Groups": ["0"], "CapabilityAdd": ["sys_admin"],
        "Privileges": {"SELinuxContext": {"Disable": True}}}}})
    assert service["ExtraCapabilities"] == ["CAP_SYS_ADMIN"]
    assert service["Unconfined"] == ["selinux"] and service["RunAs"]["Root"] is True
    legacy = facts("/containers/c/start", {"CapAdd": ["ALL"]}, version="1.23")
    assert "CAP_SYS_ADMIN" in legacy["ExtraCapabilities"] and legacy["RunAs"] is None
    # no HostConfig at all: dockerd's defaults, and the user as given
    bare = facts("/containers/create", {"Image": "x", "User": "root"})
    assert bare["EffectiveCapabilities"] == sorted(DEFAULT_CAPABILITIES)
    assert bare["RunAs"]["Root"] is True
    # a commit's body is an image config: no process
    assert facts("/commit", {"User": "0"}) == {"EffectiveCapabilities": [],
                                               "ExtraCapabilities": [], "Unconfined": [],
                                               "RunAs": None}
    assert facts_for("GET", "/containers/json", None, None)["RunAs"] is None
