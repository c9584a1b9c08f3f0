"""Stamping the labels a policy returns (``data.docker.authz.labels``) on what a request creates.

The labels are merged into the request dsfw forwards, over whatever the
client sent for the same keys, so a client cannot forge an owner label.
Go's JSON decoder matches keys without regard to case (``labels`` fills
``Labels``), so every spelling of the key is merged into one ``Labels``.
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


def creates_labelled(method: str, template: str) -> bool:
    """True when a request on this route creates something that carries labels."""
    return (method, template) in _BODY_PLACES or (method, template) == _BUILD


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
