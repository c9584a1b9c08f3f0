"""Rewrite a parsed JSON body into the document dockerd will actually decode.

Go's ``encoding/json`` reads ``{"hostconfig": {"privileged": true}}`` exactly
like ``{"HostConfig": {"Privileged": true}}``, ignores keys that match no
field, treats ``null`` as "leave the field alone", and the create endpoint
still honours HostConfig fields placed at the top level of the body (any API
version: ``runconfig.ContainerConfigWrapper``).  A policy written against the
documented shape would miss all of those.  So for the endpoints whose bodies
policies inspect, dsfw rebuilds the body in the documented shape:

* keys are renamed to the Go field's JSON name; map keys (``Labels``,
  ``Sysctls``, ``EndpointsConfig`` ...) are data and stay as sent;
* two keys that land in one field (``Privileged`` and ``privileged``) are
  refused: Go would keep the last one, or merge two objects, and a policy
  reading either one alone would be wrong;
* keys Go ignores are dropped, so the policy never sees a field dockerd
  never acts on, and dockerd never receives one the policy did not see;
* ``null`` for a field is dropped (Go leaves the zero value); ``null`` inside
  a list or map becomes the element's zero value, as Go stores it;
* a value of the wrong JSON type is refused (dockerd would refuse it too);
* legacy top-level HostConfig fields are moved into ``HostConfig`` following
  ``getHostConfig``; version-gated fields dockerd discards are dropped.

The result is what dsfw forwards, so the policy's view and dockerd's are one.
"""
from __future__ import annotations

from typing import Any

from dsfw.input import types as T
from dsfw.input import values as V
from dsfw.errors import BadRequest

# dockerd's answer when a request carries no /vX.Y prefix.
DEFAULT_API_VERSION = "1.41"


def _version_tuple(version: str | None) -> tuple[int, ...]:
    return tuple(int(p) for p in (version or DEFAULT_API_VERSION).split("."))


def version_less(version: str | None, than: str) -> bool:
    """moby's ``versions.LessThan`` on canonical versions (None = dockerd's default)."""
    a, b = _version_tuple(version), _version_tuple(than)
    n = max(len(a), len(b))
    return a + (0,) * (n - len(a)) < b + (0,) * (n - len(b))


def _zero(t: T.GoType) -> Any:
    """What Go stores for a JSON null inside a list or map."""
    if isinstance(t, T.Scalar):
        return {"string": "", "bool": False, "int": 0, "number": 0}[t.kind]
    if isinstance(t, T.Struct):
        return {}
    return None


def _type_error(where: str, expected: str) -> BadRequest:
    return BadRequest(f"{where}: expected {expected}; dockerd would refuse this body")


def canonical_value(value: Any, t: T.GoType, where: str) -> Any:
    """One non-null JSON value in the shape Go decodes it into."""
    if isinstance(t, T.Ptr):
        return canonical_value(value, t.elem, where)
    if isinstance(t, T.Scalar):
        if t.kind == "string" and isinstance(value, str):
            return value
        if t.kind == "bool" and isinstance(value, bool):
            return value
        if t.kind == "int" and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t.kind == "number" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        raise _type_error(where, {"int": "an integer", "number": "a number"}.get(t.kind, f"a {t.kind}"))
    if isinstance(t, T.StrSlice):
        # strslice.StrSlice.UnmarshalJSON: a lone string is a one-element list.
        if isinstance(value, str):
            return [value]
        return canonical_value(value, T.STRS, where)
    if isinstance(t, T.ListOf):
        if not isinstance(value, list):
            raise _type_error(where, "a list")
        return [_zero(t.elem) if v is None else canonical_value(v, t.elem, f"{where}[{i}]")
                for i, v in enumerate(value)]
    if isinstance(t, T.MapOf):
        if not isinstance(value, dict):
            raise _type_error(where, "an object")
        return {k: _zero(t.value) if v is None else canonical_value(v, t.value, f"{where}.{k}")
                for k, v in value.items()}
    if isinstance(t, T.Struct):
        return canonical_struct(value, t, where)[0]
    raise AssertionError(t)


def canonical_struct(value: Any, st: T.Struct, where: str) -> tuple[dict[str, Any], dict[str, str]]:
    """A JSON object as the Go struct ``st`` decodes it.

    Returns the canonical object, in Go's field order, and for every field a
    key was given for (even ``null``) the embedded field it came through --
    the create body needs that to tell legacy top-level fields apart.
    """
    if not isinstance(value, dict):
        raise _type_error(where or "body", "an object")
    chosen: dict[str, tuple[str, Any]] = {}
    present: dict[str, str] = {}
    for key, item in value.items():
        ff = st.lookup(key)
        if ff is None:
            continue
        if ff.key in chosen:
            other = chosen[ff.key][0]
            raise BadRequest(f"{where or 'body'}: keys {other!r} and {key!r} both set "
                             f"{ff.key}; refusing an ambiguous request")
        chosen[ff.key] = (key, item)
        present[ff.key] = ff.via
    out: dict[str, Any] = {}
    for ff in st.flat:
        if ff.key in chosen:
            item = chosen[ff.key][1]
            if item is not None:
                out[ff.key] = canonical_value(item, ff.type, f"{where}.{ff.key}" if where else ff.key)
    return out, present


# Top-level fields getHostConfig copies into an explicit HostConfig when that
# one leaves them at zero; every other top-level HostConfig field is ignored then.
_LEGACY_MERGED = ("Memory", "MemorySwap", "CpuShares", "CpusetCpus", "VolumeDriver")


def canonical_container_config(value: Any, version: str | None,
                               create: bool = True) -> dict[str, Any]:
    """The create body: Config fields at the top, one ``HostConfig``, ``NetworkingConfig``.

    Follows ``ContainerConfigWrapper.getHostConfig`` (runconfig/config_unix.go),
    checked against dockerd 20.10: with no ``HostConfig`` key, top-level
    HostConfig fields *are* the host config; with one, only five of them are
    merged in, where it left them zero; ``Cpuset`` fills an empty CpusetCpus.
    ``create`` applies what the create handler then discards for old versions.
    """
    body, present = canonical_struct(value, T.CONTAINER_CONFIG_WRAPPER, "")
    config = {k: v for k, v in body.items() if present.get(k) == "Config"}
    legacy = {k: v for k, v in body.items() if present.get(k) == "LegacyHostConfig"}
    any_legacy = any(via == "LegacyHostConfig" for via in present.values())
    inner = body.get("HostConfig")
    if inner is None and any_legacy:
        hc: dict[str, Any] | None = dict(legacy)
    elif inner is not None:
        hc = dict(inner)
        for key in _LEGACY_MERGED:
            if legacy.get(key) and not hc.get(key):
                hc[key] = legacy[key]
        hc = {ff.key: hc[ff.key] for ff in T.HOST_CONFIG.flat if ff.key in hc}
    else:
        hc = None
    if hc is not None and body.get("Cpuset") and not hc.get("CpusetCpus"):
        hc["CpusetCpus"] = body["Cpuset"]
        hc = {ff.key: hc[ff.key] for ff in T.HOST_CONFIG.flat if ff.key in hc}
    if hc is not None and create:
        _apply_version_gates(hc, version)
    out = dict(config)
    if hc is not None:
        out["HostConfig"] = hc
    if "NetworkingConfig" in body:
        out["NetworkingConfig"] = body["NetworkingConfig"]
    return out


def _apply_version_gates(hc: dict[str, Any], version: str | None) -> None:
    """Drop what postContainersCreate discards for old API versions (checked: 1.24)."""
    if version_less(version, "1.25"):
        hc.pop("AutoRemove", None)
    if version_less(version, "1.40"):
        hc.pop("KernelMemoryTCP", None)
        for mount in hc.get("Mounts") or ():
            if isinstance(mount, dict) and isinstance(mount.get("BindOptions"), dict):
                mount["BindOptions"].pop("NonRecursive", None)


def canonical_start_body(value: Any, version: str | None) -> dict[str, Any]:
    """The pre-1.24 start body: a whole new HostConfig, decoded like a create body.

    dockerd (``postContainersStart`` → ``DecodeHostConfig``) still applies it
    for API < 1.24, replacing the container's HostConfig -- binds and
    privileges included.  Only the HostConfig part matters, so only it is kept.
    """
    full = canonical_container_config(value, version, create=False)
    return {"HostConfig": full["HostConfig"]} if "HostConfig" in full else {}


def canonical_document(schema: Any, version: str | None, value: Any) -> Any:
    """The body as dockerd will decode it into ``schema`` (a route's, see :mod:`dsfw.routes`).

    First the shape Go's decoder gives it, then the values in the one spelling
    dockerd normalizes them to (:mod:`dsfw.input.values`).
    """
    if schema is None:
        return value
    if schema == "container":
        return V.canonical_container_values(canonical_container_config(value, version))
    if schema == "start":
        return V.canonical_container_values(canonical_start_body(value, version))
    if isinstance(schema, T.Struct):
        doc = canonical_struct(value, schema, "")[0]
        rewrite = _VALUES.get(schema.name)
        return rewrite(doc) if rewrite is not None else doc
    return canonical_value(value, schema, "body")


_VALUES = {
    T.EXEC_CONFIG.name: V.canonical_exec_values,
    T.VOLUME_CREATE_BODY.name: V.canonical_volume_values,
    T.SERVICE_SPEC.name: V.canonical_service_values,
}
