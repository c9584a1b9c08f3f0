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

Two guards keep a miss from becoming a deny rule that silently stops firing:
``object.get`` counts as the built-in only when no module can name something
else ``object`` (a rule ``object.get(x, k, d)``, an aliased import, an import
ending in ``object``); and every ``input`` word of the sources, read lexically
(outside strings and comments), must be one the tree shows -- a construct the
tree leaves out or spells otherwise makes the answer None.
"""
from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["fields_read", "input_fields", "input_words"]


def _var_input(node: Any) -> bool:
    return isinstance(node, dict) and isinstance(node.get("Var"), dict) and \
        node["Var"].get("value") == "input"


def _string(node: Any, source: bytes | None) -> str | None:
    """A string literal's value, when it is spelled in the source exactly so.

    regorus decodes escapes in the tree's value but looks a reference's key up
    by its spelling (``input["\\u0042ody"]`` reads a field named ``\\u0042ody``,
    not ``Body``): a key written with an escape is not a name this analysis follows.
    """
    if source is None or not isinstance(node, dict) or not isinstance(node.get("String"), dict):
        return None
    value, span = node["String"].get("value"), node["String"].get("span")
    if not isinstance(value, str) or not isinstance(span, dict):
        return None
    start, end = span.get("start"), span.get("end")
    if not isinstance(start, int) or not isinstance(end, int) or \
            source[start:end] != value.encode("utf-8") or b"\\" in source[start:end]:
        return None
    return value


def _field_of(node: dict, source: bytes | None,
              object_get: bool = True) -> tuple[dict, str] | None:
    """``(the input Var node, field)`` when ``node`` reads one named field of ``input``."""
    dot = node.get("RefDot")
    if isinstance(dot, dict) and _var_input(dot.get("refr")):
        field = dot.get("field")
        if isinstance(field, list) and len(field) == 2 and isinstance(field[1], str):
            return dot["refr"], field[1]
    brack = node.get("RefBrack")
    if isinstance(brack, dict) and _var_input(brack.get("refr")):
        name = _string(brack.get("index"), source)
        if name is not None:
            return brack["refr"], name
    call = node.get("Call")
    if isinstance(call, dict):
        fcn, params = call.get("fcn"), call.get("params")
        if (object_get and isinstance(params, list) and len(params) >= 2 and _var_input(params[0])
                and _string(params[1], source) is not None and _is_object_get(fcn)):
            return params[0], _string(params[1], source)
    return None


def _is_object_get(fcn: Any) -> bool:
    dot = fcn.get("RefDot") if isinstance(fcn, dict) else None
    if not isinstance(dot, dict):
        return False
    refr, field = dot.get("refr"), dot.get("field")
    return (isinstance(refr, dict) and isinstance(refr.get("Var"), dict)
            and refr["Var"].get("value") == "object"
            and isinstance(field, list) and len(field) == 2 and field[1] == "get")


def _leading_var(ref: Any) -> str | None:
    """The variable a reference starts from (``object`` of ``object.get``)."""
    while isinstance(ref, dict):
        if isinstance(ref.get("Var"), dict):
            value = ref["Var"].get("value")
            return value if isinstance(value, str) else None
        inner = ref.get("RefDot") or ref.get("RefBrack")
        ref = inner.get("refr") if isinstance(inner, dict) else None
    return None


def _may_rebind_object(modules: list[Any]) -> bool:
    """Whether ``object.get`` could name something other than the built-in."""
    for module in modules:
        for imp in module.get("imports") or ():
            refr = imp.get("refr") if isinstance(imp, dict) else None
            if not isinstance(refr, dict) or imp.get("as") is not None:
                return True
            dot = refr.get("RefDot")
            if _leading_var(refr) != "rego" and (not isinstance(dot, dict) or
                                                  dot.get("field", [None, None])[-1] == "object"):
                return True
        for rule in module.get("rules") or ():
            spec = rule.get("Spec") if isinstance(rule, dict) else None
            if isinstance(spec, dict):
                head = spec.get("head")
                kinds = list(head.values()) if isinstance(head, dict) else [None]
                refs = [k.get("refr") if isinstance(k, dict) else None for k in kinds]
            else:
                default = rule.get("Default") if isinstance(rule, dict) else None
                refs = [default.get("refr") if isinstance(default, dict) else None]
            if any(_leading_var(r) in (None, "object") for r in refs):
                return True
    return False


_LEXEMES = re.compile(r'#[^\n]*|"(?:[^"\\\n]|\\.)*"|`[^`]*`|[A-Za-z_][A-Za-z0-9_]*|.', re.S)


def input_words(source: str) -> int:
    """How many times the identifier ``input`` occurs in Rego source (strings and
    comments left out)."""
    return sum(1 for m in _LEXEMES.finditer(source) if m.group() == "input")


def _tree_words(node: Any) -> int:
    """How many ``input`` identifiers a syntax tree shows (as a variable or a field)."""
    count, stack = 0, [node]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            if _var_input(node):
                count += 1
            dot = node.get("RefDot")
            if isinstance(dot, dict) and isinstance(dot.get("field"), list) and \
                    dot["field"][-1:] == ["input"]:
                count += 1
            stack.extend(node.values())
    return count


def fields_read(modules: list[Any], sources: list[str] | None = None) -> frozenset[str] | None:
    """The fields the modules' syntax trees read from ``input``; None when any may be read.

    ``sources`` are the modules' texts, which the trees' spans point into; without
    them no string key (``input["F"]``) can be trusted to be the name it shows.
    """
    if not all(isinstance(m, dict) for m in modules):
        return None
    object_get = not _may_rebind_object(modules)
    fields: set[str] = set()
    inputs: list[int] = []  # id() of every Var "input" node
    accounted: set[int] = set()
    texts = [None] * len(modules) if sources is None else [t.encode("utf-8") for t in sources]
    if len(texts) != len(modules):
        return None
    stack: list[tuple[Any, bytes | None]] = list(zip(modules, texts))
    while stack:
        node, text = stack.pop()
        if isinstance(node, list):
            stack.extend((n, text) for n in node)
            continue
        if not isinstance(node, dict):
            continue
        if _var_input(node):
            inputs.append(id(node))
            continue
        read = _field_of(node, text, object_get)
        if read is not None:
            accounted.add(id(read[0]))
            fields.add(read[1])
        mods = node.get("with_mods")
        if isinstance(mods, list):
            for mod in mods:
                if isinstance(mod, dict) and _var_input(mod.get("refr")):
                    accounted.add(id(mod["refr"]))  # replaced, not read
        stack.extend((n, text) for n in node.values())
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
    sources = []
    for m in modules:  # every word the parser saw must be in the tree walked
        source = m.get("source")
        contents = source.get("contents") if isinstance(source, dict) else None
        if not isinstance(contents, str) or input_words(contents) != _tree_words(m["ast"]):
            return None
        sources.append(contents)
    return fields_read([m["ast"] for m in modules], sources)
