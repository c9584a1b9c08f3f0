"""Which top-level fields of ``input`` a compiled policy set can read.

Some input fields cost dsfw work beyond the request itself: ``input.Target``
is a lookup in dockerd (a request, its JSON) for every request naming an
object.  A policy set that cannot read a field needs no one to fetch it.

The answer comes from regorus' syntax tree of every module, and errs towards
"everything": a field counts as read wherever ``input`` is followed by it
(``input.Target``, ``input["Target"]``, ``import input.Target``,
``object.get(input, "Target", ...)``); any other use of ``input`` -- passed
whole to a function, iterated, compared, imported bare, indexed by a
variable -- means any field may be read, and the answer is None.  A ``with
input as ...`` replaces the input rather than reading it (a test's mock).
"""
from __future__ import annotations

import json
from typing import Any

__all__ = ["fields_read", "input_fields"]


def _var_input(node: Any) -> bool:
    return isinstance(node, dict) and isinstance(node.get("Var"), dict) and \
        node["Var"].get("value") == "input"


def _string(node: Any) -> str | None:
    if isinstance(node, dict) and isinstance(node.get("String"), dict):
        value = node["String"].get("value")
        return value if isinstance(value, str) else None
    return None


def _field_of(node: dict) -> tuple[dict, str] | None:
    """``(the input Var node, field)`` when ``node`` reads one named field of ``input``."""
    dot = node.get("RefDot")
    if isinstance(dot, dict) and _var_input(dot.get("refr")):
        field = dot.get("field")
        if isinstance(field, list) and len(field) == 2 and isinstance(field[1], str):
            return dot["refr"], field[1]
    brack = node.get("RefBrack")
    if isinstance(brack, dict) and _var_input(brack.get("refr")):
        name = _string(brack.get("index"))
        if name is not None:
            return brack["refr"], name
    call = node.get("Call")
    if isinstance(call, dict):
        fcn, params = call.get("fcn"), call.get("params")
        if (isinstance(params, list) and len(params) >= 2 and _var_input(params[0])
                and _string(params[1]) is not None and _is_object_get(fcn)):
            return params[0], _string(params[1])
    return None


def _is_object_get(fcn: Any) -> bool:
    dot = fcn.get("RefDot") if isinstance(fcn, dict) else None
    if not isinstance(dot, dict):
        return False
    refr, field = dot.get("refr"), dot.get("field")
    return (isinstance(refr, dict) and isinstance(refr.get("Var"), dict)
            and refr["Var"].get("value") == "object"
            and isinstance(field, list) and len(field) == 2 and field[1] == "get")


def fields_read(modules: list[Any]) -> frozenset[str] | None:
    """The fields the modules' syntax trees read from ``input``; None when any may be read."""
    fields: set[str] = set()
    inputs: list[int] = []  # id() of every Var "input" node
    accounted: set[int] = set()
    stack: list[Any] = [modules]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        if _var_input(node):
            inputs.append(id(node))
            continue
        read = _field_of(node)
        if read is not None:
            accounted.add(id(read[0]))
            fields.add(read[1])
        mods = node.get("with_mods")
        if isinstance(mods, list):
            for mod in mods:
                if isinstance(mod, dict) and _var_input(mod.get("refr")):
                    accounted.add(id(mod["refr"]))  # replaced, not read
        stack.extend(node.values())
    if any(i not in accounted for i in inputs):
        return None
    return frozenset(fields)


def input_fields(engine: Any) -> frozenset[str] | None:
    """:func:`fields_read` for every module of a regorus engine; None if its tree is unreadable."""
    try:
        modules = json.loads(engine.get_ast_as_json())
    except Exception:  # an engine that cannot show its tree may read anything
        return None
    if not isinstance(modules, list) or not all(
            isinstance(m, dict) and isinstance(m.get("ast"), dict) for m in modules):
        return None
    return fields_read([m["ast"] for m in modules])
