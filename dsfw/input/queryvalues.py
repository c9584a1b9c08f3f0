"""Query-parameter values in the one spelling dockerd acts on.

:mod:`dsfw.input.values` does this for JSON bodies; a few values dockerd
reads from the query are normalized too.  Container names: dockerd strips one
leading ``/`` (``reserveName`` stores every name as ``/x``) and refuses what is
left if it still starts with one, so ``name=/x`` is ``name=x``.  A build's
``networkmode=container:/x`` names container ``x`` by name but no container
by ID prefix, so it has no single spelling and is refused.  The policy sees,
and dockerd receives, the rewritten query.  docs/input.md lists each rewrite.
"""
from __future__ import annotations

import dataclasses

from dsfw.errors import BadRequest
from dsfw.input.path import CanonicalTarget


def canonical_container_name(name: str, where: str) -> str:
    """``/x`` -> ``x``, as dockerd reserves it; ``//x`` refused as dockerd would."""
    if name.startswith("/"):
        name = name[1:]
        if name.startswith("/"):
            raise BadRequest(f"{where}: invalid container name {'/' + name!r}; "
                             "dockerd would refuse it")
    return name


def _build_network_mode(mode: str, where: str) -> str:
    if mode.startswith("container:/"):
        raise BadRequest(f"{where}: write {'container:' + mode[len('container:/'):]!r} instead "
                         f"of {mode!r}: dockerd finds containers by ID only without the '/'")
    return mode


# (method, route template) -> {parameter: rewrite}
_REWRITES = {
    ("POST", "/containers/create"): {"name": canonical_container_name},
    ("POST", "/containers/{id}/rename"): {"name": canonical_container_name},
    ("POST", "/build"): {"networkmode": _build_network_mode},
}


def canonical_query_values(method: str, template: str, target: CanonicalTarget) -> CanonicalTarget:
    """``target`` with the values of its query parameters in dockerd's one spelling."""
    rewrites = _REWRITES.get((method, template))
    if not rewrites or not target.query:
        return target
    query = tuple((k, rewrites[k](v, f"query parameter {k}") if k in rewrites else v)
                  for k, v in target.query)
    if query == target.query:
        return target
    return dataclasses.replace(target, query=query)
