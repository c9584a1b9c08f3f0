"""Facts a policy would otherwise have to reconstruct from several places.

"Does this request put a host path into a container?" has more answers than
``HostConfig.Binds``: ``HostConfig.Mounts`` of type bind, volume mounts or
volume creations that ask the ``local`` driver to mount a host ``device``,
the pre-1.24 start body, and swarm services' ``ContainerSpec.Mounts``.  Capability names come in many spellings
(``sys_admin``, ``SYS_ADMIN``, ``CAP_SYS_ADMIN``) that dockerd normalizes
only when it starts the container.  A policy that misses one spelling or one
place is a bypass, so dsfw derives these facts once, from the canonical body
(the same document dockerd receives), and puts them in the input document.

Host paths are cleaned and their symlinks resolved on this host, as
opa-docker-authz does for its ``BindMounts``: a policy denying ``/etc`` must
also deny ``/tmp/link-to-etc``.
"""
from __future__ import annotations

import os
import posixpath
from typing import Any, Callable

from dsfw import routes

_LOCAL_DRIVERS = ("", "local")


def go_upper(s: str) -> str:
    """Go's ``strings.ToUpper``: per-character simple mapping (``ß`` stays ``ß``)."""
    out = []
    for ch in s:
        up = ch.upper()
        out.append(up if len(up) == 1 else ch)
    return "".join(out)


def canonical_capability(name: str) -> str:
    """One spelling per capability, as moby's ``caps.NormalizeLegacyCapabilities``.

    Upper-cased (Go's rules, so ``ſys_admin`` is ``SYS_ADMIN`` as dockerd reads
    it), ``CAP_`` prefixed, except ``ALL``.  Unknown names are left in that
    form; dockerd refuses them when the container starts.
    """
    up = go_upper(name)
    if up == "ALL" or up.startswith("CAP_"):
        return up
    return "CAP_" + up


def _host_path(path: str, resolve: Callable[[str], str]) -> str:
    return resolve(posixpath.normpath(path))


def _add(out: list[str], path: Any, resolve: Callable[[str], str]) -> None:
    if isinstance(path, str) and path.startswith("/"):
        p = _host_path(path, resolve)
        if p not in out:
            out.append(p)


def _local_device(driver: Any, opts: Any) -> Any:
    """The host path a ``local`` volume would mount, if its options name one."""
    if (driver or "") in _LOCAL_DRIVERS and isinstance(opts, dict):
        return opts.get("device")
    return None


def bind_sources(host_config: dict[str, Any], resolve: Callable[[str], str]) -> list[str]:
    """Every host path a HostConfig (or a service's ContainerSpec) would mount."""
    out: list[str] = []
    for spec in host_config.get("Binds") or ():
        # volume/mounts/linux_parser.go splits on every ':'; a source that is
        # an absolute path is a bind, anything else a named volume.
        if isinstance(spec, str) and ":" in spec:
            _add(out, spec.split(":", 1)[0], resolve)
    for mount in host_config.get("Mounts") or ():
        if not isinstance(mount, dict):
            continue
        kind = str(mount.get("Type", "")).lower()
        if kind == "bind":
            _add(out, mount.get("Source"), resolve)
        elif kind == "volume":
            vo = mount.get("VolumeOptions") or {}
            dc = (vo.get("DriverConfig") or {}) if isinstance(vo, dict) else {}
            if isinstance(dc, dict):
                _add(out, _local_device(dc.get("Name"), dc.get("Options")), resolve)
    return out


def _caps(value: Any) -> list[str]:
    return [canonical_capability(c) for c in value or () if isinstance(c, str)]


def derived_facts(req: Any, resolve: Callable[[str], str] = os.path.realpath) -> dict[str, Any]:
    """``BindMounts``, ``CapAdd``, ``CapDrop`` and ``Privileged`` for one request.

    ``req`` is a :class:`dsfw.input.request.CanonicalRequest`; its route says
    which facts its body gives.  The facts are always present (empty or false
    when the request has none), so policies can iterate them without guarding
    against undefined or null.
    """
    return route_facts(req.route, req.target.version, req.body, resolve)


def facts_for(method: str, plain_path: str, version: str | None, body: Any,
              resolve: Callable[[str], str] = os.path.realpath) -> dict[str, Any]:
    """:func:`derived_facts` from the request's parts."""
    return route_facts(routes.match(method, plain_path, version is not None), version, body,
                       resolve)


def route_facts(route: routes.Route, version: str | None, body: Any,
                resolve: Callable[[str], str] = os.path.realpath) -> dict[str, Any]:
    """The facts ``body`` gives on ``route`` at API ``version``."""
    facts: dict[str, Any] = {"BindMounts": [], "CapAdd": [], "CapDrop": [], "Privileged": False}
    kind = route.facts
    if kind is None or not isinstance(body, dict) or route.json_schema(version) is None:
        return facts
    if kind == routes.CONTAINER_FACTS:
        hc = body.get("HostConfig")
        if isinstance(hc, dict):
            facts["BindMounts"] = bind_sources(hc, resolve)
            facts["CapAdd"] = _caps(hc.get("CapAdd"))
            facts["CapDrop"] = _caps(hc.get("CapDrop"))
            facts["Privileged"] = hc.get("Privileged") is True
    elif kind == routes.SERVICE_FACTS:
        spec = (body.get("TaskTemplate") or {}).get("ContainerSpec")
        if isinstance(spec, dict):
            facts["BindMounts"] = bind_sources(spec, resolve)
            facts["CapAdd"] = _caps(spec.get("CapabilityAdd"))
            facts["CapDrop"] = _caps(spec.get("CapabilityDrop"))
    elif kind == routes.EXEC_FACTS:
        facts["Privileged"] = body.get("Privileged") is True
    elif kind == routes.VOLUME_FACTS:
        out: list[str] = []
        _add(out, _local_device(body.get("Driver"), body.get("DriverOpts")), resolve)
        facts["BindMounts"] = out
    return facts
