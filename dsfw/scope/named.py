"""Which object a request names, read from its route (:mod:`dsfw.routes`).

The route table says which kind of object each path parameter names; this
module adds what scoping needs on top: whether dsfw can resolve that kind in
the local daemon, and whether dockerd acts on the same object when the
parameter is the object's full ID.  That holds for almost every route; not
where the name itself is the argument (``docker rmi name`` untags rather than
deletes, ``docker push`` and ``docker save`` need a name, a plugin push or
upgrade its reference), nor for ``/distribution/{name}/json``, which asks a
registry about an image rather than naming a local one.  Where such a route
is given an ID prefix, dockerd reads it as the ID, and so does dsfw
(:func:`forwarded_by_id`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from dsfw.errors import DsfwError
from dsfw.input.queryvalues import image_reference
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
# By-name image routes that read an ID prefix as the ID (isImageIDPrefix, tarexport's Search).
_IMAGE_ID_PREFIX = frozenset({("DELETE", "/images/{name}"), ("GET", "/images/{name}/get")})
_HEX = re.compile(r"(sha256:)?[0-9a-f]+\Z")
PUSH = ("POST", "/images/{name}/push")
SAVE = ("GET", "/images/{name}/get")
SAVE_ALL = ("GET", "/images/get")


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


# Objects a request names outside its path, by (method, route template):
# a query parameter (read as Go's FormValue reads it, the first) ...
_QUERY_NAMED = {("POST", "/commit"): ("container", "container")}
# ... or a field of the JSON body, named besides the path's object (input.Container).
BODY_NAMED = {("POST", "/networks/{id}/connect"): ("container", "Container"),
              ("POST", "/networks/{id}/disconnect"): ("container", "Container")}


def named_object(method: str, route: Route, target=None) -> NamedObject | None:
    """The object ``route`` names, or None (lists, creates, system routes, unknown paths).

    ``target`` (the request's :class:`~dsfw.input.path.CanonicalTarget`)
    gives objects named in the query, such as ``docker commit``'s container.
    """
    if not route.known or route.template in _NOT_LOCAL:
        return None
    by_query = _QUERY_NAMED.get((method, route.template))
    if by_query is not None:
        ref = target.param(by_query[1]) if target is not None else None
        return NamedObject(by_query[0], ref, "?" + by_query[1], True, route) if ref else None
    kinds = dict(route.endpoint.param_kinds)
    for name, value in route.params:
        kind = kinds.get(name)
        if kind in KINDS:
            return NamedObject(kind, value, name, (method, route.template) not in _BY_NAME, route)
    return None


DOCKER_IO = ("docker.io/library/", "docker.io/", "index.docker.io/library/", "index.docker.io/")


def familiar_repository(ref: str) -> str:
    """``docker.io/library/x:1`` -> ``x``: an image reference's repository as dockerd shows it."""
    for prefix in DOCKER_IO:
        if ref.startswith(prefix):
            ref = ref[len(prefix):]
            break
    head, _, last = ref.split("@", 1)[0].rpartition("/")
    return (head + "/" if head else "") + last.split(":", 1)[0]


def forwarded_by_id(named: NamedObject, target: dict) -> bool:
    """True when dockerd, given ``target``'s ID in place of ``named.ref``, does the same.

    On ``docker rmi`` dockerd reads a reference that is a prefix of the image
    ID it resolves to as that ID (daemon/images/image_delete.go
    isImageIDPrefix), and ``GET /images/{name}/get`` an ID prefix that is no
    repository name; there the full ID is what dsfw forwards.
    """
    if named.rewrite:
        return True
    if (named.route.endpoint.method, named.route.template) not in _IMAGE_ID_PREFIX:
        return False
    ref, ident = named.ref, str(target.get("ID") or "")
    if not _HEX.match(ref) or not (ident.startswith(ref) or ident.split(":", 1)[-1].startswith(ref)):
        return False
    if named.route.endpoint.method == "DELETE":
        return True
    # save: a name that is also a repository saves that repository's tags
    return not any(familiar_repository(tag) == ref for tag in target.get("Names") or ())


def push_reference(name: str, tag: str | None) -> str | None:
    """The one reference ``POST /images/{name}/push?tag=`` pushes, or None for all of a repository's tags.

    dockerd applies ``tag`` over any tag in ``name`` (reference.WithTag); a
    name without a tag or digest, and no ``tag``, pushes every tag of the repository.
    """
    head, _, last = name.rpartition("/")
    if "@" in last:
        return name
    if tag:
        return (head + "/" if head else "") + last.split(":", 1)[0] + ":" + tag
    return name if ":" in last else None


# Requests that give an image a name (tag, commit's repo/tag, build's t=): where the names are.
_NAMING = {("POST", "/images/{name}/tag"): ("repo", "tag"), ("POST", "/commit"): ("repo", "tag"),
           ("POST", "/build"): ("t", None)}


def destinations(method: str, template: str, target) -> list[str]:
    """The references a request makes name its image, as dockerd's TagImage forms them.

    ``repo`` with ``tag`` applied over any tag in it, ``latest`` when there
    is none (reference.TagNameOnly); a build's every ``t``; an import's
    ``repo``/``tag`` alike; a pull's one tagged reference (a pull by digest
    moves no tag; one of every tag of a repository names tags dsfw cannot
    know beforehand).
    """
    if (method, template) == ("POST", "/images/create"):
        if target.param("fromSrc"):
            spec = ("repo", "tag")
        else:
            try:
                ref = image_reference(target.param("fromImage") or "", target.param("tag") or "")
            except DsfwError:
                return []  # dockerd refuses it
            last = ref.rsplit("/", 1)[-1]
            return [ref] if ":" in last and "@" not in last else []
    else:
        spec = _NAMING.get((method, template))
    if spec is None:
        return []
    repo_key, tag_key = spec
    tag = target.param(tag_key) if tag_key else None
    repos = [v for k, v in target.query if k == repo_key] if tag_key is None else \
        [target.param(repo_key)] if target.param(repo_key) else []
    out = []
    for repo in repos:
        ref = push_reference(repo, tag) or repo + ":latest"
        if ref not in out:
            out.append(ref)
    return out
