"""What the edge asks of scoping for one request, in one place.

The resource calls :meth:`Scope.target_of` after parsing a request and
before the policy decides; the answer is the request to forward (naming its
object by ID) and the extra input fields (``Target``, and for requests that
make dockerd mount a container's volumes the mount facts of
:mod:`dsfw.scope.mounts`).
"""
from __future__ import annotations

from typing import Any

from dsfw.scope.mounts import MOUNTING, mount_facts, with_request_facts
from dsfw.scope.named import named_object
from dsfw.scope.target import TargetResolver, with_object_id


class Scope:
    """Resolves the objects requests name, for the policy and for the relay."""

    def __init__(self, resolver: TargetResolver):
        self.resolver = resolver

    async def target_of(self, req) -> tuple[Any, dict[str, Any] | None]:
        """``(request to forward, {"Target": identity or None})``; no extra field
        for requests that name no object.  Raises when the lookup fails."""
        named = named_object(req.method, req.route)
        if named is None:
            return req, None
        target = await self.resolver.resolve(named.kind, named.ref)
        forward = req
        if target is not None and named.rewrite and target.get("ID"):
            forward = with_object_id(req, named, target["ID"])
        extra: dict[str, Any] = {"Target": target}
        if target is not None and (req.method, req.route.template) in MOUNTING:
            # dockerd resolves host paths now, not at create: judge them again
            extra.update(with_request_facts(req, await mount_facts(self.resolver, target)))
        return forward, extra
