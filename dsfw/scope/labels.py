"""Stamping the labels a policy returns (``data.docker.authz.labels``) on what a request creates.

The labels are merged into the request dsfw forwards, over whatever the
client sent for the same keys, so a client cannot forge an owner label.
Go's JSON decoder matches keys without regard to case (``labels`` fills
``Labels``), so every spelling of the key is merged into one ``Labels``.

The same labels restrict prunes: ``POST /containers/prune`` (images,
volumes, networks) is forwarded with a ``label=key=value`` filter for each,
which dockerd ANDs with the client's own filters, so a caller prunes only
objects stamped as its creations are.
"""
from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Mapping

from dsfw.errors import BadRequest
from dsfw.input.body import serialize_json_body

# Route template -> where the labels go in the JSON body.
_BODY_PLACES: dict[tuple[str, str], tuple[tuple[str, ...], ...]] = {
    ("POST", "/containers/create"): (("Labels",),),
    ("POST", "/commit"): (("Labels",),),
    ("POST", "/volumes/create"): (("Labels",),),
    ("POST", "/networks/create"): (("Labels",),),
    ("POST", "/services/create"): (("Labels",), ("TaskTemplate", "ContainerSpec", "Labels")),
    ("POST", "/services/{id}/update"): (("Labels",), ("TaskTemplate", "ContainerSpec", "Labels")),
    ("POST", "/secrets/create"): (("Labels",),),
    ("POST", "/configs/create"): (("Labels",),),
}
_BUILD = ("POST", "/build")
# Prunes whose filters take label= (moby 20.10 daemon/prune.go, volume/service).
_PRUNES = frozenset({("POST", "/containers/prune"), ("POST", "/images/prune"),
                     ("POST", "/volumes/prune"), ("POST", "/networks/prune")})


def creates_labelled(method: str, template: str) -> bool:
    """True when the labels a policy returns apply to a request on this route."""
    key = (method, template)
    return key in _BODY_PLACES or key == _BUILD or key in _PRUNES


def read_filters(given: str | None) -> dict[str, dict[str, bool]]:
    """A ``filters`` query as dockerd reads it (filters.FromJSON): the map of maps, else the legacy map of lists."""
    if not given:
        return {}
    try:
        value = json.loads(given)
    except ValueError:
        value = None
    if isinstance(value, dict):
        if all(v is None or isinstance(v, dict) and all(isinstance(b, bool) or b is None
                                                        for b in v.values())
               for v in value.values()):
            return {k: dict(v or {}) for k, v in value.items()}
        if all(v is None or isinstance(v, list) and all(isinstance(x, str) for x in v)
               for v in value.values()):
            return {k: {x: True for x in v or ()} for k, v in value.items()}
    raise BadRequest("the filters parameter is not a filter object dockerd reads")


def _restrict_prune(req, labels: Mapping[str, str]):
    target = req.target
    fields = read_filters(target.param("filters"))
    fields.setdefault("label", {}).update({f"{k}={v}": True for k, v in labels.items()})
    query = tuple((k, v) for k, v in target.query if k != "filters")
    query += (("filters", json.dumps(fields, separators=(",", ":"), sort_keys=True)),)
    return replace(req, target=replace(target, query=query))


def _key(node: dict, name: str) -> str | None:
    return next((k for k in node if k.lower() == name.lower()), None)


def _merge_at(node: Any, path: tuple[str, ...], labels: Mapping[str, str]) -> None:
    for name in path[:-1]:
        key = _key(node, name) if isinstance(node, dict) else None
        if key is None or not isinstance(node[key], dict):
            return  # no such object to label (a service spec without a ContainerSpec)
        node = node[key]
    if not isinstance(node, dict):
        return
    merged: dict[str, Any] = {}
    for key in [k for k in node if k.lower() == path[-1].lower()]:
        value = node.pop(key)
        if isinstance(value, dict):
            merged.update(value)
        elif value is not None:
            raise BadRequest(f"{key} must be an object of labels")
    merged.update(labels)
    node[path[-1]] = merged


def stamp(req, labels: Mapping[str, str]):
    """``req`` with ``labels`` merged into what it creates (unchanged for other routes)."""
    key = (req.method, req.route.template)
    if key == _BUILD:
        return _stamp_build(req, labels)
    if key in _PRUNES:
        return _restrict_prune(req, labels)
    places = _BODY_PLACES.get(key)
    if not places:
        return req
    body = json.loads(req.json_body) if req.json_body else {}
    if not isinstance(body, dict):
        raise BadRequest(f"{req.route.template} expects a JSON object")
    for path in places:
        _merge_at(body, path, labels)
    headers = req.headers if req.json_body else tuple(sorted(
        [(k, v) for k, v in req.headers if k != "Content-Type"] + [("Content-Type", "application/json")]))
    return replace(req, body=body, json_body=serialize_json_body(body), headers=headers)


def _stamp_build(req, labels: Mapping[str, str]):
    """The ``labels=`` query of a build (a JSON object, read by Go as its first value)."""
    target = req.target
    merged: dict[str, Any] = {}
    given = target.param("labels")
    if given:
        try:
            value = json.loads(given)
        except ValueError:
            raise BadRequest("the labels parameter of a build is not JSON") from None
        if not isinstance(value, dict):
            raise BadRequest("the labels parameter of a build must be a JSON object")
        merged.update(value)
    merged.update(labels)
    query = tuple((k, v) for k, v in target.query if k != "labels")
    query += (("labels", json.dumps(merged, separators=(",", ":"))),)
    return replace(req, target=replace(target, query=query))
