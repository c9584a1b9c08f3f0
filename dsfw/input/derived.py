"""Facts a policy would otherwise have to reconstruct from several places.

"Does this request put a host path into a container?" has more answers than
``HostConfig.Binds``: ``HostConfig.Mounts`` of type bind, volume mounts or
volume creations that ask the ``local`` driver to mount a host ``device``,
the pre-1.24 start body, and swarm services' ``ContainerSpec.Mounts``.  A
policy that misses one place is a bypass, so dsfw derives these facts once,
from the canonical body (the same document dockerd receives, its paths
already cleaned and its capabilities in one spelling by
:mod:`dsfw.input.values`), and puts them in the input document.

Host paths are cleaned and their symlinks resolved on this host, as
opa-docker-authz does for its ``BindMounts``: a policy denying ``/etc`` must
also deny ``/tmp/link-to-etc``.  Sources reached through a link are also
listed as such (``SymlinkMounts``): dockerd follows the link again when it
mounts, and the link may point elsewhere by then.  Local volumes with options
are described in ``LocalVolumes`` (see :mod:`dsfw.input.volumes`).  A volume
of any other driver (a plugin) mounts whatever its driver makes of its
options -- host paths, for some that admins install -- which dsfw cannot
read: ``VolumeDrivers`` names every driver a request would mount through.
"""
from __future__ import annotations

import os
from typing import Any, Callable

from dsfw import routes
from dsfw.errors import BadRequest
from dsfw.input import confinement
from dsfw.input.path import go_clean_path
from dsfw.input.values import go_clean, go_upper
from dsfw.input.volumes import local_volume


def capability_fact(name: str) -> str:
    """A capability as ``input.CapAdd`` shows it: moby's ``NormalizeLegacyCapabilities`` form.

    The canonical body spells capabilities as Docker's documentation does
    (``SYS_ADMIN``); the derived fact keeps the kernel's name
    (``CAP_SYS_ADMIN``), as it always has, and ``ALL``.
    """
    up = go_upper(name)
    if up == "ALL" or up.startswith("CAP_"):
        return up
    return "CAP_" + up


# Distinct host paths one request may mount.  Each is resolved (several lstat
# calls); far more than any container mounts, far less than a body can list.
MAX_MOUNT_SOURCES = 4096


def _host_path(path: str, resolve: Callable[[str], str]) -> str:
    # Go's Clean, not normpath: normpath keeps a leading "//".
    return resolve(go_clean(path))


class _Mounts:
    """Collects ``BindMounts``, ``SymlinkMounts``, ``LocalVolumes`` and ``VolumeDrivers`` of one request."""

    def __init__(self, resolve: Callable[[str], str]):
        self.resolve = resolve
        self.paths: list[str] = []
        self.links: list[dict[str, str]] = []
        self.volumes: list[dict[str, Any]] = []
        self.drivers: list[str] = []
        self._seen: set[str] = set()
        self._seen_links: set[str] = set()
        self._resolved: dict[str, str] = {}  # each source resolved once, however often listed

    def add(self, path: Any) -> None:
        if not (isinstance(path, str) and path.startswith("/")):
            return
        p = self._resolved.get(path)
        if p is None:
            if len(self._resolved) >= MAX_MOUNT_SOURCES:
                raise BadRequest(f"the request mounts more than {MAX_MOUNT_SOURCES} distinct "
                                 "host paths; refused")
            p = self._resolved[path] = _host_path(path, self.resolve)
        if p not in self._seen:
            self._seen.add(p)
            self.paths.append(p)
        # dockerd follows links when it mounts, maybe long after this check:
        # a source reached through one is reported as such.
        clean = go_clean_path(path).rstrip("/") or "/"
        if p != clean and clean not in self._seen_links:
            self._seen_links.add(clean)
            self.links.append({"Path": clean, "Resolved": p})

    def add_driver(self, driver: Any) -> None:
        # "" is dockerd's default driver, local
        if isinstance(driver, str) and driver and driver not in self.drivers:
            self.drivers.append(driver)

    def add_volume(self, name: Any, driver: Any, options: Any) -> None:
        self.add_driver(driver)
        volume = local_volume(name, driver, options)
        if volume is not None:
            self.volumes.append(volume)
            for path in volume["Paths"]:
                self.add(path)

    def add_host_config(self, host_config: dict[str, Any]) -> None:
        """Every host path a HostConfig (or a service's ContainerSpec) would mount."""
        # the driver of every named and anonymous volume that names none itself
        self.add_driver(host_config.get("VolumeDriver"))
        for spec in host_config.get("Binds") or ():
            # volume/mounts/linux_parser.go splits on every ':'; a source that is
            # an absolute path is a bind, anything else a named volume.
            if isinstance(spec, str) and ":" in spec:
                self.add(spec.split(":", 1)[0])
        for mount in host_config.get("Mounts") or ():
            if not isinstance(mount, dict):
                continue
            kind = str(mount.get("Type", "")).lower()
            if kind == "bind":
                self.add(mount.get("Source"))
            elif kind == "volume":
                vo = mount.get("VolumeOptions") or {}
                dc = (vo.get("DriverConfig") or {}) if isinstance(vo, dict) else {}
                if isinstance(dc, dict):
                    self.add_volume(mount.get("Source"), dc.get("Name"), dc.get("Options"))

    def facts(self) -> dict[str, Any]:
        return {"BindMounts": self.paths, "SymlinkMounts": self.links,
                "LocalVolumes": self.volumes, "VolumeDrivers": self.drivers}


def stored_mount_facts(mounts: Any, volumes: dict[str, Any],
                       resolve: Callable[[str], str] = os.path.realpath) -> dict[str, Any]:
    """``BindMounts``, ``SymlinkMounts``, ``LocalVolumes``, ``VolumeDrivers`` of what a stored container mounts.

    ``mounts`` is the ``Mounts`` list of dockerd's container inspect answer
    (binds, named volumes, and what ``--volumes-from`` copied), ``volumes``
    each named volume's inspect answer (``Driver``, ``Options``) or None.
    Resolved now: dockerd resolves bind sources when it mounts, not at create.
    """
    out = _Mounts(resolve)
    for mount in mounts if isinstance(mounts, list) else ():
        if not isinstance(mount, dict):
            continue
        if mount.get("Type") == "bind":
            out.add(mount.get("Source"))
        elif mount.get("Type") == "volume":
            out.add_driver(mount.get("Driver"))
            volume = volumes.get(mount.get("Name"))
            if isinstance(volume, dict):
                out.add_volume(mount.get("Name"), volume.get("Driver"), volume.get("Options"))
    return out.facts()


def _caps(value: Any) -> list[str]:
    return [capability_fact(c) for c in value or () if isinstance(c, str)]


def derived_facts(req: Any, resolve: Callable[[str], str] = os.path.realpath) -> dict[str, Any]:
    """``BindMounts`` ... ``HostNamespaces``, and the confinement facts (:mod:`dsfw.input.confinement`).

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
    facts: dict[str, Any] = {"CapAdd": [], "CapDrop": [], "Privileged": False,
                             "HostNamespaces": [], **confinement.no_process()}
    mounts = _Mounts(resolve)
    kind = route.facts
    if kind == routes.PLUGIN_SET_FACTS and isinstance(body, list):
        return _plugin_set_facts(body, mounts)
    if kind is None or not isinstance(body, dict) or route.json_schema(version) is None:
        return {**mounts.facts(), **facts}
    if kind == routes.CONTAINER_FACTS:
        hc = body.get("HostConfig")
        if isinstance(hc, dict):
            mounts.add_host_config(hc)
            facts["CapAdd"] = _caps(hc.get("CapAdd"))
            facts["CapDrop"] = _caps(hc.get("CapDrop"))
            facts["Privileged"] = hc.get("Privileged") is True
            facts["HostNamespaces"] = [ns for ns, field in _NAMESPACE_MODES
                                       if hc.get(field) == "host"]
        endpoints = (body.get("NetworkingConfig") or {}).get("EndpointsConfig")
        if isinstance(endpoints, dict) and "host" in endpoints:
            facts["HostNamespaces"] = _with(facts["HostNamespaces"], "network")
        if route.template == "/containers/create":
            facts.update(confinement.container_facts(body, hc if isinstance(hc, dict) else {}))
        elif route.template == "/containers/{id}/start" and isinstance(hc, dict):
            # a legacy start body replaces the HostConfig; the user stays the container's
            facts.update(confinement.container_facts({}, hc), RunAs=None)
    elif kind == routes.SERVICE_FACTS:
        task = body.get("TaskTemplate") or {}
        spec = task.get("ContainerSpec")
        if isinstance(spec, dict):
            mounts.add_host_config(spec)
            facts["CapAdd"] = _caps(spec.get("CapabilityAdd"))
            facts["CapDrop"] = _caps(spec.get("CapabilityDrop"))
            facts.update(confinement.service_facts(spec))
        # a service on the host network (swarm also finds it by ID prefix:
        # that a policy can only refuse, see policies/library/namespaces.rego)
        for attachment in (task.get("Networks") or []) + (body.get("Networks") or []):
            if isinstance(attachment, dict) and attachment.get("Target") == "host":
                facts["HostNamespaces"] = _with(facts["HostNamespaces"], "network")
    elif kind == routes.EXEC_FACTS:
        facts["Privileged"] = body.get("Privileged") is True
        facts.update(confinement.exec_facts(body))
    elif kind == routes.VOLUME_FACTS:
        mounts.add_volume(body.get("Name"), body.get("Driver"), body.get("DriverOpts"))
    return {**mounts.facts(), **facts}


# (namespace, HostConfig field): dockerd's IsHost() compares the value with "host" exactly.
_NAMESPACE_MODES = (("pid", "PidMode"), ("ipc", "IpcMode"), ("network", "NetworkMode"),
                    ("uts", "UTSMode"), ("userns", "UsernsMode"), ("cgroupns", "CgroupnsMode"))


def _with(names: list[str], name: str) -> list[str]:
    return names if name in names else names + [name]


def _plugin_set_facts(args: list, mounts: _Mounts) -> dict[str, Any]:
    """``docker plugin set NAME k=v``: a mount's ``source`` or a device's ``path`` is a host path.

    Which keys name mounts or devices only the plugin's config knows (a key
    without ``.source``/``.path`` sets the only settable field), so every
    absolute value counts as a host path the plugin would mount.
    """
    for arg in args:
        if isinstance(arg, str):
            mounts.add(arg.partition("=")[2])
    return {**mounts.facts(), "CapAdd": [], "CapDrop": [], "Privileged": False,
            "HostNamespaces": [], **confinement.no_process()}
