"""Which object a request names, read from its route (:mod:`dsfw.routes`).

The route table says which kind of object each path parameter names; this
module adds what scoping needs on top: whether dsfw can resolve that kind in
the local daemon, and whether dockerd acts on the same object when the
parameter is the object's full ID.  That holds for almost every route; not
where the name itself is the argument (``docker rmi name`` untags rather than
deletes, ``docker push`` and ``docker save`` need a name, a plugin push or
upgrade its reference), nor for ``/distribution/{name}/json``, which asks a
registry about an image rather than naming a local one.
"""
from __future__ import annotations

from dataclasses import dataclass

from dsfw.routes import Route

# Kinds dsfw resolves through dockerd (dsfw.scope.target).
KINDS = frozenset({"container", "exec", "image", "volume", "network", "service", "task",
                   "node", "secret", "config", "plugin"})

# Routes whose object must stay named as the client named it.
_BY_NAME = frozenset({
    ("DELETE", "/images/{name}"), ("POST", "/images/{name}/push"), ("GET", "/images/{name}/get"),
    ("POST", "/plugins/{name}/push"), ("POST", "/plugins/{name}/upgrade"),
})
_NOT_LOCAL = frozenset({"/distribution/{name}/json"})


@dataclass(frozen=True)
class NamedObject:
    """The object parameter of one route: ``/containers/web/start`` names container ``web``."""

    kind: str
    ref: str
    param: str
    rewrite: bool
    route: Route

    def path_with(self, object_id: str) -> str:
        """The plain path naming the object by ``object_id`` instead of ``ref``."""
        path = self.route.template
        for name, value in self.route.params:
            path = path.replace("{" + name + "}", object_id if name == self.param else value, 1)
        return path


def named_object(method: str, route: Route) -> NamedObject | None:
    """The object ``route`` names, or None (lists, creates, system routes, unknown paths)."""
    if not route.known or route.template in _NOT_LOCAL:
        return None
    kinds = dict(route.endpoint.param_kinds)
    for name, value in route.params:
        kind = kinds.get(name)
        if kind in KINDS:
            return NamedObject(kind, value, name, (method, route.template) not in _BY_NAME, route)
    return None
