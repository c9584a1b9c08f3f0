"""dsfw's pruned input decides exactly as regorus does with the whole input.

dsfw hands regorus only the input fields :mod:`dsfw.policy.input_reads` says
a policy set can read (and skips looking up objects when it reads none of
scoping's).  A read the analysis misses would make a deny rule stop firing
without a sound.  Each policy below reads a field through a shape an analysis
could miss; for a benign and an evil input that differ in that field, the
decision of :class:`EmbeddedEngine` (pruned) must equal the one regorus makes
with the whole input -- and the two inputs must be decided differently, so a
missed read shows as a failure.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsfw.errors import PolicyEngineError
from dsfw.policy import AUTHZ
from dsfw.policy._regorus import regorus
from dsfw.policy.embedded import EmbeddedEngine
from dsfw.policy.verdict import deny_messages, make_decision

BENIGN = {"Method": "POST", "Path": "/containers/create",
          "Body": {"x": "fine", "HostConfig": {"Privileged": False}},
          "Target": {"Name": "fine"}}
# every field a shape below may reach differs, and more fields are there: regorus
# looks an escaped key up by its spelling (input["\u0042ody"] reads "\u0042ody")
EVIL = {"Method": "POST", "Path": "/containers/create",
        "Body": {"x": "evil", "HostConfig": {"Privileged": True}},
        "Target": {"Name": "evil"}, "Extra": "evil",
        "\\u0042ody": {"x": "evil"}, "\\u0054arget": {"Name": "evil"}}

V1 = "package docker.authz\nimport rego.v1\nallow if input.Method\n"
V0 = "package docker.authz\nallow { input.Method }\n"
OTHER_V1 = "package other\nimport rego.v1\nevil if input.Body.x == \"evil\"\n"
OTHER_V0 = "package other\nevil { input.Body.x == \"evil\" }\n"

# name -> (authz rules after V1's or V0's head, other modules, rego v0)
CASES = {
    # imports
    "import input": ('import input\ndeny contains "bad" if input.Body.x == "evil"', {}, False),
    "import input as i": ('import input as i\ndeny contains "bad" if i.Body.x == "evil"', {}, False),
    "import input.Body as b": ('import input.Body as b\ndeny contains "bad" if b.x == "evil"', {}, False),
    "import input.Body.HostConfig": ('import input.Body.HostConfig\n'
                                     'deny contains "bad" if HostConfig.Privileged', {}, False),
    "import input.Target as t": ('import input.Target as t\ndeny contains "bad" if t.Name == "evil"',
                                 {}, False),
    "v0 import input": ('import input\ndeny["bad"] { input.Body.x == "evil" }', {}, True),
    "v0 import input as i": ('import input as i\ndeny["bad"] { i.Body.x == "evil" }', {}, True),
    "v0 import input.Body as b": ('import input.Body as b\ndeny["bad"] { b.x == "evil" }', {}, True),
    "v0 import input.Body.HostConfig": ('import input.Body.HostConfig\n'
                                        'deny["bad"] { HostConfig.Privileged }', {}, True),
    # keys the analysis cannot read as one name, and names it must decode
    "variable key": ('deny contains "bad" if { some k; k == "Body"; input[k].x == "evil" }', {}, False),
    "computed key": ('deny contains "bad" if input[concat("", ["Bo", "dy"])].x == "evil"', {}, False),
    "unicode escape": ('deny contains "bad" if input["\\u0042ody"].x == "evil"', {}, False),
    "escaped target": ('deny contains "bad" if input["\\u0054arget"].Name == "evil"', {}, False),
    "raw string key": ('deny contains "bad" if input[`Body`].x == "evil"', {}, False),
    "v0 variable key": ('deny["bad"] { k := "Body"; input[k].x == "evil" }', {}, True),
    "v0 unicode escape": ('deny["bad"] { input["\\u0042ody"].x == "evil" }', {}, True),
    # input whole
    "some k, v in input": ('deny contains "bad" if { some k, v in input; k == "Body"; v.x == "evil" }',
                           {}, False),
    "walk": ('deny contains "bad" if { walk(input, [_, v]); v == "evil" }', {}, False),
    "json.marshal": ('deny contains "bad" if contains(json.marshal(input), "evil")', {}, False),
    "object.keys": ('deny contains "bad" if "Extra" in object.keys(input)', {}, False),
    "count": ('deny contains "bad" if count(input) > 4', {}, False),
    "object.remove": ('deny contains "bad" if object.remove(input, ["Method"]).Body.x == "evil"',
                      {}, False),
    "object.filter": ('deny contains "bad" if object.filter(input, ["Body"]).Body.x == "evil"', {}, False),
    "object.union": ('deny contains "bad" if object.union(input, {}).Body.x == "evil"', {}, False),
    "object.get path": ('deny contains "bad" if object.get(input, ["Body", "x"], "") == "evil"', {}, False),
    "object.get variable key": ('deny contains "bad" if { k := "Body"; '
                                'object.get(input, k, {}).x == "evil" }', {}, False),
    "object.get shadowed": ('object.get(o, _, _) := o.Body.x\n'
                            'deny contains "bad" if object.get(input, "Method", "") == "evil"', {}, False),
    "x := input": ('deny contains "bad" if { x := input; x.Body.x == "evil" }', {}, False),
    "v0 x := input": ('deny["bad"] { x := input; x.Body.x == "evil" }', {}, True),
    # functions
    "f(input)": ('f(o) := o.Body.x\ndeny contains "bad" if f(input) == "evil"', {}, False),
    "function reads input": ('f(_) := input.Body.x\ndeny contains "bad" if f(1) == "evil"', {}, False),
    "function default": ('default f(_) := "fine"\nf(x) := "evil" if { x; input.Body.x == "evil" }\n'
                         'deny contains "bad" if f(true) == "evil"', {}, False),
    "v0 f(input)": ('f(o) = o.Body.x\ndeny["bad"] { f(input) == "evil" }', {}, True),
    # comprehensions, every
    "array comprehension": ('deny contains "bad" if count([1 | input.Body.x == "evil"]) > 0', {}, False),
    "comprehension over input": ('deny contains "bad" if count({k | some k, v in input; v == "evil"}) > 0',
                                 {}, False),
    "every": ('deny contains "bad" if every k in ["x"] { input.Body[k] == "evil" }', {}, False),
    "every over input": ('ok if every k, _ in input { k != "Extra" }\ndeny contains "bad" if not ok',
                         {}, False),
    # with
    "with input as": ('chk if input.B.x == "evil"\n'
                      'deny contains "bad" if chk with input as {"B": input.Body}', {}, False),
    "with input as whole": ('chk if input.Body.x == "evil"\n'
                            'deny contains "bad" if chk with input as input', {}, False),
    "with input.Method as": ('chk if input.Method == "evil"\n'
                             'deny contains "bad" if chk with input.Method as input.Body.x', {}, False),
    "with input.Body as": ('chk if input.Body.Name == "evil"\n'
                           'deny contains "bad" if chk with input.Body as input.Target', {}, False),
    "with input.Body.y as": ('chk if input.Body.x == "evil"\n'
                             'deny contains "bad" if chk with input.Body.y as 1', {}, False),
    "v0 with input as": ('chk { input.B.x == "evil" }\n'
                         'deny["bad"] { chk with input as {"B": input.Body} }', {}, True),
    # other packages, dynamic references
    "other package": ('deny contains "bad" if data.other.evil', {"other.rego": OTHER_V1}, False),
    "data[pkg][rule]": ('deny contains "bad" if { p := "other"; data[p].evil }',
                        {"other.rego": OTHER_V1}, False),
    "data.pkg[rule]": ('deny contains "bad" if { r := concat("", ["ev", "il"]); data.other[r] }',
                       {"other.rego": OTHER_V1}, False),
    "v0 other package": ('deny["bad"] { data.other.evil }', {"other.rego": OTHER_V0}, True),
    "v0 package reads input whole": ('deny["bad"] { data.other.evil }',
                                     {"other.rego": 'package other\nevil { input[_].x == "evil" }\n'}, True),
    # where a rule reads
    "else": ('d := 1 if false else := 2 if input.Body.x == "evil"\ndeny contains "bad" if d == 2', {}, False),
    "v0 else": ('d = 1 { false } else = 2 { input.Body.x == "evil" }\ndeny["bad"] { d == 2 }', {}, True),
    "partial set": ('s contains v if v := input.Body.x\ndeny contains "bad" if "evil" in s', {}, False),
    "partial object": ('o[k] := v if { k := "a"; v := input.Body.x }\ndeny contains "bad" if o.a == "evil"',
                       {}, False),
    "v0 partial set": ('s[v] { v := input.Body.x }\ndeny["bad"] { s["evil"] }', {}, True),
    "deny contains input.Body.x": ('deny contains input.Body.x if true', {}, False),
    "v0 deny[input.Body.x]": ('deny[input.Body.x] { true }', {}, True),
    "ref head": ('p[input.Body.x] := true\ndeny contains "bad" if p.evil', {}, False),
    "deny reads Target": ('deny contains "bad" if input.Target.Name != "fine"', {}, False),
    "object.get Target": ('deny contains "bad" if object.get(input, "Target", {}).Name == "evil"', {}, False),
}


def _reference(sources: dict[str, tuple[str, bool]], doc: dict):
    """regorus' decision on the whole input: (allowed, deny messages) or "error"."""
    engine = regorus.Engine()
    for name, (text, v0) in sources.items():
        engine.set_rego_v0(v0)
        engine.add_policy(name, text)
    engine.set_input_json(json.dumps(doc))
    values = []
    for rule in ("allow", "deny"):
        try:
            value = engine.eval_rule(f"data.{AUTHZ}.{rule}")
        except RuntimeError as e:
            if "not a valid rule path" not in str(e):
                return "error"
            value = None
        values.append(value)
    decision = make_decision(AUTHZ, *values, "regorus")
    return decision.allowed, tuple(sorted(deny_messages(AUTHZ, values[1])))


def _pruned(engine: EmbeddedEngine, doc: dict):
    """dsfw's decision: (allowed, deny messages) or "error"."""
    try:
        decision = engine.evaluate(AUTHZ, doc)
    except PolicyEngineError:
        return "error"
    messages = tuple(sorted(r for r in decision.reasons if not r.startswith("request denied by policy")))
    return decision.allowed, messages


class Policies:
    def __init__(self, sources: dict[str, tuple[str, bool]]):
        self.sources = sources
        self.dir = tempfile.mkdtemp(prefix="dsfw-reads-")
        for name, (text, _) in sources.items():
            with open(os.path.join(self.dir, name), "w") as f:
                f.write(text)
        self.engine = EmbeddedEngine(self.dir)

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def _sources(name: str) -> dict[str, tuple[str, bool]]:
    rules, others, v0 = CASES[name]
    head = V0 if v0 else V1
    if rules.startswith("import "):  # imports come before any rule
        line, _, rules = rules.partition("\n")
        head = head.replace("\nallow", f"\n{line}\nallow", 1)
    return {"authz.rego": (head + rules + "\n", v0),
            **{n: (text, v0) for n, text in others.items()}}


@pytest.mark.parametrize("name", sorted(CASES))
def test_pruned_input_decides_as_the_whole_input(name):
    sources = _sources(name)
    policies = Policies(sources)
    try:
        benign, evil = _reference(sources, BENIGN), _reference(sources, EVIL)
        assert benign != evil, f"{name}: the case does not depend on the field ({benign})"
        assert "error" not in (benign, evil)
        for doc, expected in ((BENIGN, benign), (EVIL, evil)):
            # twice: the second answer comes from the decision cache
            assert _pruned(policies.engine, doc) == expected, (name, policies.engine.input_fields())
            assert _pruned(policies.engine, doc) == expected
    finally:
        policies.close()


def test_a_cached_decision_is_not_reused_after_a_reload_that_reads_more():
    """The reads set is computed again for every policy revision."""
    sources = {"authz.rego": (V1 + 'deny contains "bad" if input.Path == "/x"\n', False)}
    policies = Policies(sources)
    try:
        engine = policies.engine
        assert _pruned(engine, EVIL) == (True, ())
        with open(os.path.join(policies.dir, "authz.rego"), "w") as f:
            f.write("package docker.authz\nimport rego.v1\nimport input as i\n"
                    "allow if i.Method\ndeny contains \"bad\" if i.Body.x == \"evil\"\n")
        assert engine.reload()
        assert engine.input_fields() is None
        assert _pruned(engine, EVIL) == (False, ("bad",))
        assert _pruned(engine, BENIGN) == (True, ())
    finally:
        policies.close()


# Field names a policy may spell, escaped or not; nestings of them.
_names = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FF, exclude_characters='"\\'),
                 min_size=1, max_size=6)


def _literal(name: str, ascii_only: bool) -> str:
    return json.dumps(name, ensure_ascii=ascii_only)


_KEYWORDS = frozenset({"as", "contains", "default", "else", "every", "false", "if", "import", "in",
                       "not", "null", "package", "some", "true", "with"})


def _ref(path: list[str], spelled: list[int]) -> str:
    text = "input"
    for field, how in zip(path, spelled):
        if how == 0 and field.isidentifier() and field.isascii() and field not in _KEYWORDS:
            text += "." + field
        else:
            text += f"[{_literal(field, ascii_only=how == 1)}]"
    return text


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.lists(_names, min_size=1, max_size=3), spelled=st.lists(st.integers(0, 2), min_size=3,
                                                                          max_size=3),
       others=st.lists(_names, max_size=3))
def test_generated_field_names_and_nestings(path, spelled, others):
    ref = _ref(path, spelled)
    sources = {"authz.rego": (V1 + f'deny contains "bad" if {ref} == "evil"\n', False)}
    policies = Policies(sources)
    try:
        def doc(leaf):
            # under the name and under its spelling (regorus reads escaped keys so)
            value: object = leaf
            for field, how in reversed(list(zip(path, spelled))[1:]):
                value = {field: value, _literal(field, how == 1)[1:-1]: value}
            top = {other: "evil" for other in others}
            top.update({"Method": "GET", path[0]: value, _literal(path[0], spelled[0] == 1)[1:-1]: value})
            return top
        benign, evil = _reference(sources, doc("fine")), _reference(sources, doc("evil"))
        assert benign != evil
        assert _pruned(policies.engine, doc("fine")) == benign
        assert _pruned(policies.engine, doc("evil")) == evil
        if path[0] != "Method":
            assert policies.engine.input_fields() in (None, frozenset({"Method", path[0]}))
    finally:
        policies.close()
