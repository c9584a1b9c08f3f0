"""What a ``local`` volume with options really mounts.

dockerd's ``local`` driver mounts a volume that has options with one
``mount(2)``: ``mount(device, <volume dir>, type, o)`` (moby
``volume/local/local_unix.go``).  Its options are therefore a host mount in
disguise: ``o=bind`` makes ``device`` a bind of any host path (a relative one
resolved against dockerd's working directory), ``type=proc`` or ``sysfs``
mounts dockerd's view of the kernel, ``type=ext4,device=/dev/sda1`` a host
disk, ``type=overlay`` host directories named inside ``o``.  A policy that
knows only ``BindMounts`` would miss all but the first, so each such volume
is described once, here, for the policy (``input.LocalVolumes``).
"""
from __future__ import annotations

from typing import Any

LOCAL_DRIVERS = ("", "local")
# moby/sys/mount's option table: these words of ``o`` set MS_BIND.
_BIND_FLAGS = frozenset({"bind", "rbind"})
# overlayfs options whose values are host directories (":"-separated lists).
_DIR_OPTIONS = frozenset({"lowerdir", "upperdir", "workdir", "datadir", "lowerdir+", "datadir+"})


def local_volume(name: Any, driver: Any, options: Any) -> dict[str, Any] | None:
    """The ``input.LocalVolumes`` entry of one volume, or None if it mounts nothing of its own.

    ``Paths`` are the host paths the mount names, as written (relative ones
    included, so a policy can refuse them); ``Bind`` is true when ``o`` makes
    the mount a bind of ``Device``, whatever ``Type`` says.
    """
    if (driver or "") not in LOCAL_DRIVERS or not isinstance(options, dict):
        return None
    kind, device, opts = (options.get(k, "") for k in ("type", "device", "o"))
    if not all(isinstance(v, str) for v in (kind, device, opts)):
        return None
    if not kind and not device:  # dockerd's needsMount(): nothing is mounted
        return None
    words = opts.split(",")
    bind = any(w in _BIND_FLAGS for w in words)
    paths: list[str] = []
    if device and (bind or device.startswith("/")):
        paths.append(device)
    for word in words:
        key, sep, value = word.partition("=")
        if sep and key in _DIR_OPTIONS:
            paths.extend(p for p in value.split(":") if p)
    return {"Name": name if isinstance(name, str) else "", "Type": kind, "Device": device,
            "Options": opts, "Bind": bind, "Paths": paths}
