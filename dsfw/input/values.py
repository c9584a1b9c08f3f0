"""Values in the one spelling dockerd acts on.

dockerd normalizes many values before acting on them: it cleans mount paths
with Go's ``path.Clean`` (``/etc/``, ``//etc``, ``/./etc`` and ``/tmp/..`` name
``/etc`` and ``/``), upper-cases capabilities and adds ``CAP_``, splits
security options on ``=`` or ``:``, and reads ``00`` as uid 0.  A policy
written with the documented spelling would miss every other one, so dsfw
rewrites these values into one spelling in the canonical body: the policy
sees it, and dsfw forwards it, so dockerd acts on exactly what was judged.
Each rewrite keeps dockerd's behaviour (checked against moby 20.10's code and
the real dockerd); where no single spelling exists, the request is refused.
docs/input.md lists every rewrite with its reason.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Any

from dsfw.errors import BadRequest
from dsfw.input.volumes import LOCAL_DRIVERS

# --- paths ------------------------------------------------------------------


def go_clean(path: str) -> str:
    """Go's ``path.Clean``: lexical, so ``/tmp/link/..`` is ``/tmp`` whatever the link is.

    Unlike ``posixpath.normpath`` it keeps no leading ``//``.
    """
    if not path:
        return "."
    if path[0] == "/" and "//" not in path and "/." not in path and (
            len(path) == 1 or path[-1] != "/"):
        return path  # already clean: the common case, answered without splitting
    rooted = path.startswith("/")
    parts: list[str] = []
    for element in path.split("/"):
        if element in ("", "."):
            continue
        if element == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(element)
    cleaned = "/".join(parts)
    if rooted:
        return "/" + cleaned
    return cleaned or "."


def _clean_abs(path: str) -> str:
    """An absolute path cleaned; anything else left for dockerd to judge."""
    return go_clean(path) if path.startswith("/") else path


# Bind mount modes (volume/mounts/linux_parser.go): at most one of each class,
# in any order; dsfw writes them in this class order.
_MODE_CLASSES = (
    frozenset({"rw", "ro"}),
    frozenset({"z", "Z"}),
    frozenset({"private", "rprivate", "slave", "rslave", "shared", "rshared"}),
    frozenset({"nocopy"}),
    frozenset({"consistent", "cached", "delegated"}),
)


def bind_mode(mode: str) -> str | None:
    """The mode of a ``Binds`` entry in class order, or None if dockerd refuses it."""
    if mode == "":
        return ""
    slots: list[str | None] = [None] * len(_MODE_CLASSES)
    for option in mode.split(","):
        for i, cls in enumerate(_MODE_CLASSES):
            if option in cls:
                if slots[i] is not None:
                    return None
                slots[i] = option
                break
        else:
            return None
    return ",".join(s for s in slots if s)


def canonical_bind(spec: str, where: str) -> str:
    """One ``HostConfig.Binds`` entry as ``linuxParser.ParseMountRaw`` reads it.

    Host and container paths are cleaned (dockerd mounts ``path.Clean`` of
    both), a named volume stays as named, the mode is written in one order.
    Specs dockerd refuses are refused here.
    """
    if spec.count(":") > 2:
        raise BadRequest(f"{where}: {spec!r} has more than two ':'; dockerd would refuse it")
    parts = spec.split(":")
    if parts[0] == "":
        raise BadRequest(f"{where}: {spec!r} has no source or target; dockerd would refuse it")
    if len(parts) == 1:
        return _clean_abs(parts[0])
    if len(parts) == 2:
        if bind_mode(parts[1]) is not None:
            raise BadRequest(f"{where}: {spec!r} is a target with a mode but no source; "
                             "dockerd would refuse it")
        mode = ""
    else:
        canonical = bind_mode(parts[2])
        if canonical is None:
            raise BadRequest(f"{where}: invalid mode {parts[2]!r}; dockerd would refuse it")
        mode = canonical
    out = f"{_clean_abs(parts[0])}:{_clean_abs(parts[1])}"
    return f"{out}:{mode}" if mode else out


_BIND_OPTIONS = frozenset({"bind", "rbind"})


def is_bind_device(driver: Any, opts: Any) -> bool:
    """True when a ``local`` volume's options make ``device`` a host path to bind.

    moby/sys/mount reads ``o`` as comma-separated flags: ``bind`` or ``rbind``
    among them is ``MS_BIND``, and the kernel then ignores ``type``.
    """
    if (driver or "") not in LOCAL_DRIVERS or not isinstance(opts, dict):
        return False
    return any(o in _BIND_OPTIONS for o in str(opts.get("o", "")).split(","))


def canonical_volume_options(driver: Any, opts: Any, where: str) -> Any:
    """``DriverOpts`` (or a mount's ``DriverConfig.Options``) with a bind device cleaned.

    The local driver hands ``device`` to mount(2) unchanged, so the kernel
    resolves it: a relative device is resolved against dockerd's working
    directory (refused), and ``..`` is resolved after symlinks (refused, as
    no lexical spelling is certain to mean the same).  ``//``, ``/./`` and a
    trailing ``/`` mean what their clean form means.
    """
    if not is_bind_device(driver, opts) or "device" not in opts:
        return opts
    device = opts["device"]
    if not device.startswith("/"):
        raise BadRequest(f"{where}.device: the bind device {device!r} is not an absolute path; "
                         "dockerd would resolve it against its own working directory")
    if ".." in device.split("/"):
        raise BadRequest(f"{where}.device: the bind device {device!r} contains '..', which the "
                         "kernel resolves after symlinks; write the path without it")
    return {**opts, "device": go_clean(device)}


def _clean_keys(mapping: dict[str, Any], where: str) -> dict[str, Any]:
    """A map keyed by container paths, keys cleaned; two keys for one path must agree."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        clean = _clean_abs(key)
        if clean in out and out[clean] != value:
            raise BadRequest(f"{where}: two entries for {clean} with different values; "
                             "refusing an ambiguous request")
        out[clean] = value
    return out


def canonical_mount(mount: dict[str, Any], where: str) -> dict[str, Any]:
    """One ``Mounts`` entry: ``Target`` (and a bind's ``Source``) cleaned as parseMountSpec does."""
    out = dict(mount)
    if isinstance(out.get("Target"), str):
        out["Target"] = _clean_abs(out["Target"])
    kind = out.get("Type")
    if kind == "bind" and isinstance(out.get("Source"), str):
        out["Source"] = _clean_abs(out["Source"])
    elif kind == "volume":
        dc = (out.get("VolumeOptions") or {}).get("DriverConfig")
        if isinstance(dc, dict) and isinstance(dc.get("Options"), dict):
            opts = canonical_volume_options(dc.get("Name"), dc["Options"],
                                            f"{where}.VolumeOptions.DriverConfig.Options")
            if opts is not dc["Options"]:
                out["VolumeOptions"] = {**out["VolumeOptions"],
                                        "DriverConfig": {**dc, "Options": opts}}
    return out


def _check_device_path(path: str, where: str) -> None:
    """A device's host path must already be clean: dockerd walks it as given.

    For a directory of devices, the container paths come from replacing the
    host path as written inside the walked (clean) paths, so ``/dev//snd``
    and ``/dev/snd`` give different containers; a relative path is resolved
    against dockerd's working directory.  One spelling only, then.
    """
    if path and (not path.startswith("/") or go_clean(path) != path):
        raise BadRequest(f"{where}: device path {path!r} must be absolute and clean "
                         f"(write {go_clean(path)!r} if that is what you mean)"
                         if path.startswith("/") else
                         f"{where}: device path {path!r} must be absolute")


# --- capabilities ---------------------------------------------------------------

# gocapability's names as dockerd 20.10 knows them (it stops at audit_read),
# plus the three later kernels added, which newer dockerd accepts.
_CAPABILITIES = frozenset(
    "CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP "
    "LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER "
    "SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE "
    "SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP "
    "MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF "
    "CHECKPOINT_RESTORE".split())


KNOWN_CAPABILITIES = _CAPABILITIES

# The spellings clients send most (SYS_ADMIN, CAP_SYS_ADMIN, ALL), answered at once.
_SPELLED = {**{c: c for c in _CAPABILITIES}, **{"CAP_" + c: c for c in _CAPABILITIES}, "ALL": "ALL"}


def go_upper(s: str) -> str:
    """Go's ``strings.ToUpper``: per-character simple mapping (``ß`` stays ``ß``)."""
    out = []
    for ch in s:
        up = ch.upper()
        out.append(up if len(up) == 1 else ch)
    return "".join(out)


def canonical_capability(name: str, where: str = "capability") -> str:
    """The spelling Docker's documentation uses: ``SYS_ADMIN``, ``ALL``.

    moby's ``NormalizeLegacyCapabilities`` upper-cases with Go's rules (so
    ``ſys_admin`` is ``SYS_ADMIN``), adds ``CAP_`` unless present, and refuses
    names it does not know; it accepts ``SYS_ADMIN`` as ``CAP_SYS_ADMIN``.
    ``CAP_ALL`` is not ``ALL`` to dockerd (it is unknown), so it is refused.
    """
    known = _SPELLED.get(name)
    if known is not None:
        return known
    up = go_upper(name)
    if up == "ALL":
        return up
    short = up[4:] if up.startswith("CAP_") else up
    if short not in _CAPABILITIES:
        raise BadRequest(f"{where}: unknown capability {name!r}; dockerd would refuse it")
    return short


def canonical_capabilities(names: list[str], where: str) -> list[str]:
    """Each capability in one spelling, each once (dockerd treats the list as a set)."""
    out: list[str] = []
    for i, name in enumerate(names):
        cap = canonical_capability(name, f"{where}[{i}]")
        if cap not in out:
            out.append(cap)
    return out


# --- users, groups --------------------------------------------------------------

_DECIMAL = re.compile(r"[+-]?[0-9]+\Z")
_INT64 = 1 << 63


def go_atoi(s: str) -> int | None:
    """Go's ``strconv.Atoi`` on a 64-bit build, or None where it fails."""
    if not _DECIMAL.match(s):
        return None
    n = int(s)
    return n if -_INT64 <= n < _INT64 else None


def _numeric(s: str) -> str:
    n = go_atoi(s)
    return s if n is None else str(n)


def canonical_user(spec: str) -> str:
    """``User`` as runc's ``GetExecUser`` reads it, numbers without leading zeros.

    ``user[:group]``: a part that is a decimal number is always an id (``00``,
    ``+0`` are uid 0); a third part is ignored; an empty user with a group
    means uid 0's entry (``:0`` is ``0:0``); an empty group is no group.
    An empty spec stays empty: it means the image's user.
    """
    if spec == "":
        return spec
    parts = spec.split(":")
    user = _numeric(parts[0]) if parts[0] else "0"
    group = _numeric(parts[1]) if len(parts) > 1 else ""
    return f"{user}:{group}" if group else user


def canonical_groups(groups: list[str]) -> list[str]:
    """``GroupAdd``: numeric ids without leading zeros (see docs/input.md for the caveat)."""
    return [_numeric(g) for g in groups]


# --- security options -----------------------------------------------------------

_SECURITY_KEYS = ("label", "apparmor", "seccomp", "no-new-privileges")
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def _labels_generated(hc: dict[str, Any]) -> bool:
    """Would ``generateSecurityOpt`` add labels unless a ``label=`` option is present?"""
    modes = (str(hc.get("IpcMode", "")), str(hc.get("PidMode", "")))
    return hc.get("Privileged") is True or any(
        m == "host" or m.startswith("container:") for m in modes)


def canonical_security_opts(opts: list[str], hc: dict[str, Any], where: str) -> list[str]:
    """``SecurityOpt`` with the ``=`` separator, as ``parseSecurityOpt`` reads each.

    ``seccomp:x``, ``apparmor:x`` become ``seccomp=x``, ``apparmor=x``;
    ``no-new-privileges`` in any form becomes ``no-new-privileges=true`` or
    ``=false``.  ``label:x`` and the bare ``disable`` are rewritten only where
    that changes nothing: ``generateSecurityOpt`` looks for ``label=`` only, so
    for privileged containers or shared ipc/pid namespaces the colon form gets
    extra labels appended; there the request is refused.  Options dockerd
    refuses are refused.
    """
    has_label_eq = any(o.split("=")[0] == "label" for o in opts)
    out: list[str] = []
    for i, opt in enumerate(opts):
        here = f"{where}[{i}]"
        if opt == "no-new-privileges":
            out.append("no-new-privileges=true")
            continue
        if opt == "disable":
            key, value = "label", "disable"
            colon = True
        elif "=" in opt:
            key, value = opt.split("=", 1)
            colon = False
        elif ":" in opt:
            key, value = opt.split(":", 1)
            colon = True
        else:
            raise BadRequest(f"{here}: invalid security option {opt!r}; dockerd would refuse it")
        if key not in _SECURITY_KEYS:
            raise BadRequest(f"{here}: invalid security option {opt!r}; dockerd would refuse it")
        if key == "no-new-privileges":
            if value in _TRUE:
                value = "true"
            elif value in _FALSE:
                value = "false"
            else:
                raise BadRequest(f"{here}: invalid security option {opt!r}; "
                                 "dockerd would refuse it")
        elif key == "label" and colon and not has_label_eq and _labels_generated(hc):
            raise BadRequest(f"{here}: write {'label=' + value!r} instead of {opt!r}: for this "
                             "container dockerd treats the two differently")
        out.append(f"{key}={value}")
    return out


# --- device cgroup rules ----------------------------------------------------------

_CGROUP_RULE = re.compile(r"([acb]) ([0-9]+|\*):([0-9]+|\*) ([rwm]{1,3})\Z")


def _access(perms: str) -> str:
    return "".join(p for p in "rwm" if p in perms)


def canonical_cgroup_rule(rule: str) -> str:
    """``DeviceCgroupRules``: numbers as ``ParseInt`` reads them, access as ``rwm`` order.

    A rule dockerd would refuse (at start) is left as sent.
    """
    m = _CGROUP_RULE.match(rule)
    if not m:
        return rule
    kind, major, minor, access = m.groups()
    nums = []
    for n in (major, minor):
        if n != "*":
            value = go_atoi(n)
            if value is None:
                return rule
            n = str(value)
        nums.append(n)
    return f"{kind} {nums[0]}:{nums[1]} {_access(access)}"


def canonical_device(device: dict[str, Any], where: str) -> dict[str, Any]:
    """A ``Devices`` entry: host path checked, cgroup permissions in ``rwm`` order."""
    path = device.get("PathOnHost", "")
    _check_device_path(path, f"{where}.PathOnHost")
    perms = device.get("CgroupPermissions", "")
    if perms and set(perms) <= set("rwm"):
        return {**device, "CgroupPermissions": _access(perms)}
    return device


# --- published ports -------------------------------------------------------------

_PORT = re.compile(r"[0-9]+\Z")


def go_ip(text: str) -> str | None:
    """Go's ``net.ParseIP(text).String()``, or None where ParseIP gives nil.

    Go 1.17+ refuses IPv4 octets with leading zeros and IPv6 zones; an
    IPv4-mapped IPv6 address is the IPv4 address (the same 16 bytes).
    """
    if "%" in text:
        return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _port_number(text: str) -> int | None:
    """``strconv.ParseUint(text, 10, 16)``."""
    if not _PORT.match(text):
        return None
    n = int(text)
    return n if n <= 0xFFFF else None


def canonical_host_port(text: str) -> str:
    """``HostPort`` as ``nat.NewPort(nat.SplitProtoPort(x)).Range()`` reads it.

    A protocol suffix is ignored, numbers lose leading zeros, ``80-80`` is
    ``80``, a third ``-`` part is ignored, and anything that reads as port 0
    (``""``, ``0``, ``/80``) is ``""``: dockerd picks a free port.  A value
    dockerd refuses is left for it to refuse.
    """
    parts = text.split("/")
    port = parts[0]
    if port == "":
        return ""
    if "-" in port:
        pieces = port.split("-")
        start, end = _port_number(pieces[0]), _port_number(pieces[1])
    else:
        start = end = _port_number(port)
    if start is None or end is None or end < start:
        return text
    if start == end:
        return str(start) if start else ""
    return f"{start}-{end}"


def canonical_port_bindings(bindings: dict[str, Any], where: str) -> dict[str, Any]:
    """``PortBindings``: each ``HostIp`` as Go prints it, each ``HostPort`` as dockerd reads it.

    ``HostIp`` goes through ``net.ParseIP``: a value it cannot parse gives
    nil, which binds *every* interface -- ``127.000.000.001`` looks like
    loopback to a policy and listens on ``0.0.0.0`` and ``::``.  Such values
    are refused.  The keys (container ports) are left as sent: dockerd matches
    them to ``ExposedPorts`` keys by their exact text.
    """
    out: dict[str, Any] = {}
    for key, items in bindings.items():
        if not isinstance(items, list):
            out[key] = items
            continue
        rewritten = []
        for i, binding in enumerate(items):
            if not isinstance(binding, dict):
                rewritten.append(binding)
                continue
            b = dict(binding)
            if isinstance(b.get("HostIp"), str) and b["HostIp"] != "":
                ip = go_ip(b["HostIp"])
                if ip is None:
                    raise BadRequest(f"{where}[{key!r}][{i}].HostIp: {b['HostIp']!r} is not an IP "
                                     "address; dockerd would publish the port on every "
                                     "interface (write \"\" if that is what you mean)")
                b["HostIp"] = ip
            if isinstance(b.get("HostPort"), str):
                b["HostPort"] = canonical_host_port(b["HostPort"])
            rewritten.append(b)
        out[key] = rewritten
    return out


# --- documents ------------------------------------------------------------------


def _list(doc: dict[str, Any], key: str) -> list[Any] | None:
    value = doc.get(key)
    return value if isinstance(value, list) and value else None


def canonical_host_config(hc: dict[str, Any], where: str = "HostConfig") -> dict[str, Any]:
    """The values of a HostConfig in dockerd's one spelling."""
    out = dict(hc)
    if (binds := _list(hc, "Binds")) is not None:
        out["Binds"] = [canonical_bind(b, f"{where}.Binds[{i}]") for i, b in enumerate(binds)]
    if (mounts := _list(hc, "Mounts")) is not None:
        out["Mounts"] = [canonical_mount(m, f"{where}.Mounts[{i}]") for i, m in enumerate(mounts)]
    if isinstance(hc.get("Tmpfs"), dict):
        out["Tmpfs"] = _clean_keys(hc["Tmpfs"], f"{where}.Tmpfs")
    for key in ("CapAdd", "CapDrop"):
        if (caps := _list(hc, key)) is not None:
            out[key] = canonical_capabilities(caps, f"{where}.{key}")
    if (opts := _list(hc, "SecurityOpt")) is not None:
        out["SecurityOpt"] = canonical_security_opts(opts, hc, f"{where}.SecurityOpt")
    if (groups := _list(hc, "GroupAdd")) is not None:
        out["GroupAdd"] = canonical_groups(groups)
    if (devices := _list(hc, "Devices")) is not None:
        out["Devices"] = [canonical_device(d, f"{where}.Devices[{i}]")
                          for i, d in enumerate(devices)]
    if (rules := _list(hc, "DeviceCgroupRules")) is not None:
        out["DeviceCgroupRules"] = [canonical_cgroup_rule(r) for r in rules]
    if isinstance(hc.get("PortBindings"), dict):
        out["PortBindings"] = canonical_port_bindings(hc["PortBindings"], f"{where}.PortBindings")
    return out


def stored_host_config(hc: Any) -> tuple[dict[str, Any], str | None]:
    """A HostConfig dockerd stored, in the one spelling, and why not when it cannot be.

    A container created directly on dockerd's socket (or before dsfw) is
    stored with its client's spellings; ``input.Target.HostConfig`` shows it
    through :func:`canonical_host_config` like a create body.  This never
    raises: what cannot be given one spelling is returned as stored, with the
    reason (``input.Target.HostConfigError``), which policies refuse.
    """
    if not isinstance(hc, dict):
        return {}, None if hc is None else "dockerd's stored HostConfig is not an object"
    try:
        return canonical_host_config(hc), None
    except (BadRequest, TypeError, ValueError, AttributeError) as exc:
        return hc, str(exc)


def canonical_container_values(body: dict[str, Any]) -> dict[str, Any]:
    """A create (or commit, or legacy start) body's values in one spelling."""
    out = dict(body)
    if isinstance(body.get("User"), str):
        out["User"] = canonical_user(body["User"])
    if isinstance(body.get("Volumes"), dict):
        out["Volumes"] = _clean_keys(body["Volumes"], "Volumes")
    if isinstance(body.get("HostConfig"), dict):
        out["HostConfig"] = canonical_host_config(body["HostConfig"])
    return out


def canonical_exec_values(body: dict[str, Any]) -> dict[str, Any]:
    """An exec body: ``User`` as getUser reads it."""
    if isinstance(body.get("User"), str):
        return {**body, "User": canonical_user(body["User"])}
    return body


def canonical_volume_values(body: dict[str, Any]) -> dict[str, Any]:
    """A volume create body: a bind ``device`` cleaned (or refused)."""
    if isinstance(body.get("DriverOpts"), dict):
        opts = canonical_volume_options(body.get("Driver"), body["DriverOpts"], "DriverOpts")
        return {**body, "DriverOpts": opts}
    return body


def canonical_service_values(body: dict[str, Any]) -> dict[str, Any]:
    """A service spec: its ContainerSpec's mounts, user, groups and capabilities.

    dockerd's swarm executor copies them into the task's container config and
    HostConfig (``Mounts``, ``User``, ``GroupAdd``, ``CapAdd``, ``CapDrop``),
    where they are read as for ``docker run``.
    """
    task = body.get("TaskTemplate")
    spec = task.get("ContainerSpec") if isinstance(task, dict) else None
    if not isinstance(spec, dict):
        return body
    where = "TaskTemplate.ContainerSpec"
    out = dict(spec)
    if (mounts := _list(spec, "Mounts")) is not None:
        out["Mounts"] = [canonical_mount(m, f"{where}.Mounts[{i}]") for i, m in enumerate(mounts)]
    if isinstance(spec.get("User"), str):
        out["User"] = canonical_user(spec["User"])
    if (groups := _list(spec, "Groups")) is not None:
        out["Groups"] = canonical_groups(groups)
    for key in ("CapabilityAdd", "CapabilityDrop"):
        if (caps := _list(spec, key)) is not None:
            out[key] = canonical_capabilities(caps, f"{where}.{key}")
    return {**body, "TaskTemplate": {**task, "ContainerSpec": out}}
