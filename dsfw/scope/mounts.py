"""Host paths judged again when dockerd really mounts them.

dockerd resolves a bind source when it mounts it -- at ``start`` and
``restart``, and for ``docker cp`` (the archive endpoints mount the
container's volumes) -- not when the container is created.  A directory
that was harmless at create may by then be a symbolic link to ``/etc``.  For
those requests the policy sees, in ``BindMounts``, ``SymlinkMounts`` and
``LocalVolumes``, what the stored container mounts (its ``Mounts`` as dockerd
reports them, including what ``--volumes-from`` copied, and the options of
each named local volume), resolved on this host at the moment of the request.
``docker exec`` (create and ``/exec/{id}/start``) and ``attach`` reach what a
running container already mounts -- made on dockerd's socket, say, with the
host's ``/`` -- so they are judged the same way.
"""
from __future__ import annotations

from typing import Any

from dsfw.input.derived import derived_facts, stored_mount_facts
from dsfw.input.volumes import LOCAL_DRIVERS

# (method, route template) of the requests that make dockerd mount a container's volumes,
# or that reach into what a running container mounts.
MOUNTING = frozenset({
    ("POST", "/containers/{id}/start"), ("POST", "/containers/{id}/restart"),
    ("GET", "/containers/{id}/archive"), ("HEAD", "/containers/{id}/archive"),
    ("PUT", "/containers/{id}/archive"),
    ("POST", "/containers/{id}/exec"), ("POST", "/exec/{id}/start"),
    ("POST", "/containers/{id}/attach"), ("GET", "/containers/{id}/attach/ws"),
})
MOUNT_FACTS = ("BindMounts", "SymlinkMounts", "LocalVolumes", "VolumeDrivers")


async def mount_facts(resolver, target: dict[str, Any]) -> dict[str, Any]:
    """The mount facts of the container ``target`` (an ``input.Target``; an exec's container),
    looked up now."""
    if target.get("Kind") == "exec":
        target = target.get("Container") if isinstance(target.get("Container"), dict) else {}
    mounts = target.get("Mounts") if isinstance(target.get("Mounts"), list) else []
    volumes: dict[str, Any] = {}
    for mount in mounts:
        if not isinstance(mount, dict) or mount.get("Type") != "volume":
            continue
        name = mount.get("Name")
        if isinstance(name, str) and name and (mount.get("Driver") or "") in LOCAL_DRIVERS:
            volumes[name] = await resolver.resolve("volume", name)
    return stored_mount_facts(mounts, volumes)


def with_request_facts(req, facts: dict[str, Any]) -> dict[str, Any]:
    """``facts`` added to those of ``req``'s own body (a pre-1.24 start body has some too)."""
    own = derived_facts(req)
    return {key: own[key] + [v for v in facts[key] if v not in own[key]] for key in MOUNT_FACTS}
