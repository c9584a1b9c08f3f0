"""dockerd's answer for a request naming an object that does not exist, given by dsfw.

Two kinds of request get it without reaching dockerd: one naming an object
the caller may not see (a 403 would say it exists), and one naming an object
that did not exist when dsfw looked it up (``input.Target: null``).  The second
is never forwarded by the client's name, which an object made in the meantime
-- by another caller, on dsfw's socket or beside it -- could take: the policy
judged "no such object", so no object is acted on.  Both get the same bytes,
dockerd 20.10's, per kind and route (``tests/test_e2e_scope_missing.py``
compares them with dockerd's own answers).
"""
from __future__ import annotations

import json

from dsfw.errors import DsfwError
from dsfw.scope.named import DOCKER_IO, NamedObject, familiar_repository
from dsfw.scope.target import Absent


class HiddenObject(DsfwError):
    """Answered exactly as dockerd answers a request naming a missing object."""

    status = 404
    prefix = ""

    def __init__(self, message: str | None, status: int = 404):
        super().__init__(message or "")
        self.status = status
        self.empty = message is None

    def body(self) -> bytes:
        """dockerd's own bytes (Go's compact JSON), or none (a 204)."""
        if self.empty:
            return b""
        return json.dumps({"message": self.message}, separators=(",", ":")).encode() + b"\n"


def familiar_image(ref: str) -> str:
    """How dockerd names a missing image reference: ``busybox`` -> ``busybox:latest``."""
    if ref.startswith("sha256:"):
        return ref
    for prefix in DOCKER_IO:
        if ref.startswith(prefix):
            ref = ref[len(prefix):]
            break
    if "@" in ref or ":" in ref.rsplit("/", 1)[-1]:
        return ref
    return ref + ":latest"


def missing_message(named: NamedObject) -> str:
    """dockerd 20.10's message for a missing object of this kind, on this route."""
    kind, ref, template = named.kind, named.ref, named.route.template
    if kind == "container":
        if template == "/containers/{id}/kill":
            return f"Cannot kill container: {ref}: No such container: {ref}"
        return f"No such container: {ref}"
    if kind == "exec":
        return f"No such exec instance: {ref}"
    if kind == "image":
        if template == "/images/{name}/json":
            return f"no such image: {ref}: No such image: {familiar_image(ref)}"
        if template == "/images/{name}/get":
            return f"No such image: {ref}"
        if template == "/images/{name}/push":
            # dockerd streams it after a 200 and "The push refers to repository"
            return f"An image does not exist locally with the tag: {familiar_repository(ref)}"
        return f"No such image: {familiar_image(ref)}"
    if kind == "volume":
        return f"get {ref}: no such volume"
    if kind == "plugin":
        return f'plugin "{ref}" not found'
    return f"{kind} {ref} not found"  # network, service, task, node, secret, config


def _go_bool(value: str | None) -> bool:
    """httputils.BoolValue: anything but empty, 0, no, false, none is true."""
    return (value or "").strip().lower() not in ("", "0", "no", "false", "none")


def missing_answer(named: NamedObject, req, absent: Absent | None = None) -> HiddenObject:
    """What dockerd answers ``req``, which names ``named``, when no such object exists.

    ``absent`` is dockerd's answer to dsfw's lookup, when there was one: a
    status other than 404 (a swarm route on a node that is no swarm manager,
    an image name that is no reference at all) is dockerd's answer on every
    route of the kind, in its route's wording.
    """
    template = named.route.template
    if absent is not None and absent.status != 404:
        message = absent.message
        if named.kind == "image":
            inspect = f"no such image: {named.ref}: "
            if template != "/images/{name}/json" and message.startswith(inspect):
                message = message[len(inspect):]
            if template == "/images/{name}/get":
                return HiddenObject(message, 500)
        return HiddenObject(message, absent.status)
    if (req.method, template) == ("DELETE", "/volumes/{name}") and _go_bool(req.target.param("force")):
        return HiddenObject(None, 204)  # volume rm -f: a missing volume is no error
    return HiddenObject(missing_message(named))


def related_missing(req, ref: str) -> HiddenObject:
    """dockerd's answer when the container a network connect/disconnect body names is missing.

    A forced disconnect of a missing container removes an endpoint of that
    name instead (ForceEndpointDelete); with no such endpoint dockerd says so.
    """
    if req.route.template == "/networks/{id}/disconnect" and isinstance(req.body, dict) \
            and req.body.get("Force") is True:
        return HiddenObject(f"endpoint {ref} not found")
    return HiddenObject(f"No such container: {ref}")


def save_missing(name: str, absent: Absent | None) -> HiddenObject:
    """dockerd's answer to ``GET /images/get?names=name`` when ``name`` names no image.

    A tag or digest reference is looked up in the reference store ("reference
    does not exist"); a repository without tags and an ID prefix by ID search.
    """
    if absent is not None and absent.status != 404:  # no reference at all
        inspect = f"no such image: {name}: "
        message = absent.message
        return HiddenObject(message[len(inspect):] if message.startswith(inspect) else message, 500)
    last = name.rsplit("/", 1)[-1]
    if not name.startswith("sha256:") and (":" in last or "@" in last):
        return HiddenObject("reference does not exist")
    return HiddenObject(f"No such image: {name}")
