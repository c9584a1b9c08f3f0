"""What a container or exec process is left with: the facts hand-written rules get wrong.

A natural policy refuses ``"SYS_ADMIN" in CapAdd``, ``seccomp=unconfined``
and ``User == "0"``. Each is one spelling of a wider question, and dockerd
answers the wider one: ``--cap-add ALL`` (or ``--privileged``) gives
``SYS_ADMIN`` too; ``seccomp={"defaultAction": "SCMP_ACT_ALLOW"}`` filters
nothing, as does any profile dsfw cannot judge; ``0:0``, ``root``, ``1000:0``
and ``--group-add 0`` run with uid or gid 0. So dsfw answers the wider
questions once, from the canonical body (:mod:`dsfw.input.values`), the way
dockerd 20.10 computes them:

* ``EffectiveCapabilities`` -- moby's ``caps.TweakCapabilities`` on its
  default set, ``ALL`` read as every capability any dockerd knows (fail
  closed: newer daemons add three); ``ExtraCapabilities`` -- those beyond
  the default set;
* ``Unconfined`` -- confinement switched off or replaced by something dsfw
  cannot judge (``privileged``, ``seccomp``, ``apparmor``, ``selinux``,
  ``systempaths``, ``devices``);
* ``RunAs`` -- the user and groups the process runs with, and whether any of
  them is root.
"""
from __future__ import annotations

from typing import Any, Iterable

from dsfw.input.values import KNOWN_CAPABILITIES, go_atoi

# moby 20.10 oci/caps/defaults.go
DEFAULT_CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)
# What ALL and --privileged may grant: every capability any supported dockerd knows.
# dockerd 20.10's gocapability list ends at AUDIT_READ, but a newer dockerd on a newer
# kernel also grants PERFMON, BPF and CHECKPOINT_RESTORE; the facts must not let
# --cap-add ALL pass a rule that refuses those, whichever daemon is behind dsfw.
ALL_CAPABILITIES = tuple(sorted("CAP_" + c for c in KNOWN_CAPABILITIES))

# dockerd's defaults for HostConfig.MaskedPaths / ReadonlyPaths (oci/defaults.go);
# a list that leaves one out unmasks it (--security-opt systempaths=unconfined).
DEFAULT_MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
)
DEFAULT_READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

_UNCONFINED_ORDER = ("privileged", "seccomp", "apparmor", "selinux", "systempaths", "devices")


def _kernel_name(cap: str) -> str:
    return cap if cap == "ALL" or cap.startswith("CAP_") else "CAP_" + cap


def effective_capabilities(cap_add: Iterable[str], cap_drop: Iterable[str],
                           privileged: bool) -> list[str]:
    """``caps.TweakCapabilities(DefaultCapabilities(), add, drop, privileged)``, sorted.

    ``ALL`` added gives every capability but those dropped; ``ALL`` dropped
    leaves only those added; otherwise the defaults minus drops plus adds.
    """
    add = [_kernel_name(c) for c in cap_add]
    drop = [_kernel_name(c) for c in cap_drop]
    if privileged:
        return list(ALL_CAPABILITIES)
    if "ALL" in add:
        caps = [c for c in ALL_CAPABILITIES if c not in drop]
    elif "ALL" in drop:
        caps = add
    else:
        caps = [c for c in DEFAULT_CAPABILITIES if c not in drop] + add
    return sorted(set(caps))


def extra_capabilities(effective: list[str]) -> list[str]:
    return [c for c in effective if c not in DEFAULT_CAPABILITIES]


def container_unconfined(hc: dict[str, Any]) -> list[str]:
    """What a container's (canonical) HostConfig switches off, in a fixed order."""
    found: set[str] = set()
    if hc.get("Privileged") is True:
        found.update(_UNCONFINED_ORDER)
    for opt in hc.get("SecurityOpt") or ():
        key, _, value = opt.partition("=") if isinstance(opt, str) else ("", "", "")
        if key == "seccomp":  # "unconfined", or a profile that may allow everything
            found.add("seccomp")
        elif key == "apparmor" and value != "docker-default":
            found.add("apparmor")
        elif key == "label":  # disable, or a type/user/role/level of the caller's choosing
            found.add("selinux")
    # generateSecurityOpt: host IPC or PID namespaces run without SELinux labels
    if hc.get("IpcMode") == "host" or hc.get("PidMode") == "host":
        found.add("selinux")
    for field, defaults in (("MaskedPaths", DEFAULT_MASKED_PATHS),
                            ("ReadonlyPaths", DEFAULT_READONLY_PATHS)):
        paths = hc.get(field)
        if isinstance(paths, list) and any(p not in paths for p in defaults):
            found.add("systempaths")
    if any(hc.get(f) for f in ("Devices", "DeviceCgroupRules", "DeviceRequests")):
        found.add("devices")
    return [u for u in _UNCONFINED_ORDER if u in found]


def _id(word: str) -> int | None:
    """uid/gid 0 for ``root``, the number for a numeric word, None for other names."""
    return 0 if word == "root" else go_atoi(word)


def run_as(user: Any, groups: Any) -> dict[str, Any]:
    """``RunAs`` of a (canonical) ``User`` and supplementary groups.

    ``Root`` is true when the uid, the gid or a supplementary group is 0 (a
    number in any spelling, or the name ``root``), null when the user is
    left to the image (an empty ``User``: often root) and nothing else says
    root, false otherwise. A name other than ``root`` is not resolved (the
    image's ``/etc/passwd`` decides): ``Uid``/``Gid`` are null for it.
    """
    spec = user if isinstance(user, str) else ""
    parts = spec.split(":") if spec else []
    uid = _id(parts[0]) if parts else None
    gid = _id(parts[1]) if len(parts) > 1 and parts[1] else None
    extra = [_id(g) if isinstance(g, str) else None for g in groups or ()]
    if 0 in (uid, gid) or 0 in extra:
        root: bool | None = True
    elif not spec:
        root = None
    else:
        root = False
    return {"User": spec, "Uid": uid, "Gid": gid, "Groups": extra, "Root": root}


def container_facts(config: dict[str, Any], hc: dict[str, Any]) -> dict[str, Any]:
    """The facts of a container create (Config fields at the top of ``config``)."""
    effective = effective_capabilities(hc.get("CapAdd") or (), hc.get("CapDrop") or (),
                                       hc.get("Privileged") is True)
    return {"EffectiveCapabilities": effective, "ExtraCapabilities": extra_capabilities(effective),
            "Unconfined": container_unconfined(hc),
            "RunAs": run_as(config.get("User"), hc.get("GroupAdd"))}


def exec_facts(body: dict[str, Any]) -> dict[str, Any]:
    """An exec: privileged gets every capability and no AppArmor profile (execSetPlatformOpt);
    otherwise the container's own, which the exec request does not change."""
    privileged = body.get("Privileged") is True
    effective = list(ALL_CAPABILITIES) if privileged else []
    return {"EffectiveCapabilities": effective, "ExtraCapabilities": extra_capabilities(effective),
            "Unconfined": ["privileged", "apparmor"] if privileged else [],
            "RunAs": run_as(body.get("User"), ())}


def service_facts(spec: dict[str, Any]) -> dict[str, Any]:
    """A service's task container: capabilities, SELinux privileges, user and groups."""
    effective = effective_capabilities(spec.get("CapabilityAdd") or (),
                                       spec.get("CapabilityDrop") or (), False)
    privileges = spec.get("Privileges") if isinstance(spec.get("Privileges"), dict) else {}
    selinux = privileges.get("SELinuxContext")
    return {"EffectiveCapabilities": effective, "ExtraCapabilities": extra_capabilities(effective),
            "Unconfined": ["selinux"] if isinstance(selinux, dict) and selinux else [],
            "RunAs": run_as(spec.get("User"), spec.get("Groups"))}


def no_process() -> dict[str, Any]:
    """The facts of a request that starts no process of its own."""
    return {"EffectiveCapabilities": [], "ExtraCapabilities": [], "Unconfined": [],
            "RunAs": None}
