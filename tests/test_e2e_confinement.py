"""The confinement facts (dsfw.input.confinement) against what dockerd really does.

``EffectiveCapabilities`` must be the set the container's process really
holds (read from /proc/self/status of containers run on dockerd's own
socket), and a natural policy written on ``ExtraCapabilities``,
``Unconfined`` and ``RunAs`` must hold, through a real dsfw, against every
spelling that dodges the rules people write by hand (``SYS_ADMIN in
CapAdd``, ``seccomp=unconfined``, ``User == "0"``).
"""
from __future__ import annotations

import json

import pytest

from dsfw.input.body import canonicalize_body
from dsfw.input.derived import facts_for
from dsfw.testing.e2e import (DOCKER_SOCKET, TEST_IMAGE, docker_cli, policy_dir, requires_docker,
                              unique_name)

pytestmark = requires_docker

# Bit numbers of the kernel's capabilities (linux/capability.h).
_BITS = ["CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID",
         "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN",
         "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT",
         "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE",
         "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
         "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ",
         "PERFMON", "BPF", "CHECKPOINT_RESTORE"]


_NEWER = {"CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE"}


def _kernel_caps() -> set[str]:
    last = int(open("/proc/sys/kernel/cap_last_cap").read())
    return {"CAP_" + name for name in _BITS[:last + 1]}


def _held(status: str) -> set[str]:
    line = next(l for l in status.splitlines() if l.startswith("CapEff:"))
    value = int(line.split()[1], 16)
    return {"CAP_" + name for bit, name in enumerate(_BITS) if value >> bit & 1}


# (These machines' dockerd lacks CAP_SYS_RESOURCE, so runc cannot apply a set that has it:
# the ALL cases drop it.)
@pytest.mark.parametrize("add, drop", [
    ([], []), (["SYS_ADMIN"], []), (["cap_net_admin", "sys_ptrace"], ["chown"]),
    (["ALL"], ["SYS_RESOURCE"]), (["all"], ["CAP_SYS_ADMIN", "net_raw", "sys_resource"]),
    (["NET_ADMIN"], ["ALL"]), ([], ["all"]),
    (["ALL"], ["ALL", "SYS_RESOURCE"]),  # dropping ALL does not undo adding ALL
])
def test_effective_capabilities_are_what_the_process_holds(add, drop):
    flags = [f for c in add for f in ("--cap-add", c)] + [f for c in drop for f in ("--cap-drop", c)]
    r = docker_cli(DOCKER_SOCKET, "run", "--rm", *flags, TEST_IMAGE, "cat", "/proc/self/status")
    assert r.returncode == 0, r.stderr
    body, _ = canonicalize_body("POST", "/containers/create", "1.41", json.dumps(
        {"Image": TEST_IMAGE, "HostConfig": {"CapAdd": add, "CapDrop": drop}}).encode())
    facts = facts_for("POST", "/containers/create", "1.41", body)
    said, held = set(facts["EffectiveCapabilities"]) & _kernel_caps(), _held(r.stdout)
    # The facts read ALL as every capability any dockerd grants: dockerd 20.10 leaves out
    # the three newer ones a newer daemon adds, and nothing else may differ.
    assert held <= said and said - held <= _NEWER, (sorted(said - held), sorted(held - said))


# A natural policy on the facts: the three rules people write, answered the way dockerd acts.
NATURAL = """package docker.authz

import rego.v1

default allow := true

deny contains sprintf("capability %s is not allowed", [c]) if {
	some c in input.ExtraCapabilities
	c != "CAP_NET_ADMIN"
}

deny contains sprintf("%s confinement may not be switched off", [u]) if some u in input.Unconfined

deny contains "no root" if input.RunAs.Root == true
"""

ALLOW_ALL_PROFILE = json.dumps({"defaultAction": "SCMP_ACT_ALLOW"})


@pytest.fixture
def natural(dsfw_factory, tmp_path):
    return dsfw_factory(policy_dir(tmp_path, {"natural.rego": NATURAL}))


@pytest.mark.parametrize("flags, message", [
    (["--cap-add", "ALL"], "capability CAP_SYS_ADMIN is not allowed"),
    (["--cap-add", "all", "--cap-drop", "NET_RAW"], "capability CAP_SYS_MODULE is not allowed"),
    (["--cap-add", "cap_sys_admin"], "capability CAP_SYS_ADMIN is not allowed"),
    (["--privileged"], "privileged confinement may not be switched off"),
    (["--security-opt", "seccomp=PROFILE"], "seccomp confinement may not be switched off"),
    (["--security-opt", "seccomp:unconfined"], "seccomp confinement may not be switched off"),
    (["--security-opt", "apparmor=unconfined"], "apparmor confinement may not be switched off"),
    (["--security-opt", "label=disable"], "selinux confinement may not be switched off"),
    (["--security-opt", "systempaths=unconfined"], "systempaths confinement may not be switched off"),
    (["--device", "/dev/null"], "devices confinement may not be switched off"),
    (["-u", "0:0"], "no root"), (["-u", "root"], "no root"), (["-u", "00"], "no root"),
    (["-u", "1000:0"], "no root"), (["-u", "1000", "--group-add", "root"], "no root"),
])
def test_natural_policy_on_the_facts_holds(natural, tmp_path, flags, message):
    profile = tmp_path / "allow-all.json"
    profile.write_text(ALLOW_ALL_PROFILE)
    flags = [f.replace("PROFILE", str(profile)) for f in flags]
    name = unique_name()
    r = docker_cli(natural.socket, "create", "--name", name, *flags, TEST_IMAGE, "true")
    try:
        assert r.returncode != 0 and "dsfw: " in r.stderr and message in r.stderr, r
        assert docker_cli(DOCKER_SOCKET, "container", "inspect", name).returncode != 0
    finally:
        docker_cli(DOCKER_SOCKET, "rm", "-f", name)


def test_natural_policy_lets_ordinary_containers_run(natural):
    for flags in (["-u", "1000"], ["--cap-add", "NET_ADMIN", "-u", "1000:1000"],
                  ["--cap-drop", "ALL", "--cap-add", "net_admin"],
                  ["--security-opt", "no-new-privileges", "-u", "1000:1000"]):
        r = docker_cli(natural.socket, "run", "--rm", *flags, TEST_IMAGE, "echo", "ok")
        assert r.returncode == 0 and r.stdout == "ok\n", (flags, r.stderr)
