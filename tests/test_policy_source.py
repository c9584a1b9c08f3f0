"""Rego version detection and the rewrite of deprecated built-ins, file by file."""
from __future__ import annotations

import re

import pytest
import regorus
from hypothesis import given, strategies as st

from dsfw.policy.rego_source import (
    COMPAT_MODULE,
    RegoSyntaxError,
    code_only,
    defined_functions,
    modernize_builtins,
    prepare_module,
    rego_version,
    split_code,
)

V0 = """package t
allow { input.a == 1 }
allow { input.b == 1 }
deny[msg] { input.c; msg := "c is set" }
"""

V1 = """package t
allow if input.a == 1
deny contains "c is set" if input.c
"""


def test_v0_file_is_v0():
    assert rego_version("t.rego", V0) == 0


def test_v1_file_is_v1():
    assert rego_version("t.rego", V1) == 1


def test_import_rego_v1_decides_without_parsing():
    assert rego_version("t.rego", "package t\nimport rego.v1\nallow if true\n") == 1


def test_import_rego_v1_in_a_comment_does_not_count():
    source = "package t\n# import rego.v1\nallow { true }\n"
    assert rego_version("t.rego", source) == 0


def test_v0_file_with_future_keywords_parses():
    source = "package t\nimport future.keywords.if\nimport future.keywords.in\nallow if { 1 in [1] }\n"
    assert rego_version("t.rego", source) in (0, 1)


def test_broken_file_names_file_line_and_column():
    source = "package t\n\nallow {\n  input.a ==\n}\n"
    with pytest.raises(RegoSyntaxError) as e:
        rego_version("/p/broken.rego", source)
    message = str(e.value)
    assert re.match(r"/p/broken\.rego:3:7: .*\(read as Rego v0; as Rego v1: 3:7: ", message), message


def test_broken_v1_file_is_reported_as_v1():
    source = "package t\n\nallow if {\n  input.a ==\n}\n"
    with pytest.raises(RegoSyntaxError) as e:
        rego_version("/p/broken.rego", source)
    assert re.match(r"/p/broken\.rego:5:1: expecting expression \(read as Rego v1; ", str(e.value)), str(e.value)


def test_split_code_separates_strings_raw_strings_and_comments():
    source = 'a := "x\\"y" # c re_match(\nb := `raw`'
    runs = split_code(source)
    assert "".join(text for _, text in runs) == source
    assert [text for is_code, text in runs if not is_code] == ['"x\\"y"', "# c re_match(", "`raw`"]


def test_rewrite_renames_calls_only():
    source = 'x = re_match("re_match(", input.a) # re_match(y)\ny = `re_match(z)`\n'
    assert modernize_builtins(source) == (
        'x = regex.match("re_match(", input.a) # re_match(y)\ny = `re_match(z)`\n'
    )


def test_rewrite_leaves_longer_refs_and_plain_names_alone():
    source = "x = data.lib.re_match(1)\ny = my_re_match(2)\nall := [1]\nz = net.cidr_overlap(a, b)\n"
    assert modernize_builtins(source) == (
        "x = data.lib.re_match(1)\ny = my_re_match(2)\nall := [1]\nz = net.cidr_contains(a, b)\n"
    )


def test_rewrite_keeps_functions_the_policy_defines():
    source = "package t\nany(xs) = true { xs[_] == 1 }\np { any([1]) }\n"
    keep = defined_functions(code_only(source))
    assert keep == {"any"}
    assert modernize_builtins(source, keep) == source


def test_call_on_a_body_line_is_not_a_definition():
    assert defined_functions('re_match("a", input.b)\n') == set()


def test_prepare_module_marks_compat_use():
    module = prepare_module("t.rego", "package t\np { any([true]) }\n")
    assert module.version == 0
    assert module.uses_compat
    assert "data._dsfw_compat.any([true])" in module.source


@given(st.text(alphabet='abre_match("#`\\\n() .', max_size=60))
def test_rewrite_never_changes_strings_or_comments(source):
    before = [text for is_code, text in split_code(source) if not is_code]
    after = [text for is_code, text in split_code(modernize_builtins(source)) if not is_code]
    assert after == before


@given(st.text(max_size=80))
def test_code_only_keeps_length_and_lines(source):
    blanked = code_only(source)
    assert len(blanked) == len(source)
    assert blanked.count("\n") == source.count("\n")


DEPRECATED_CASES = [
    ('re_match("^a", "abc")', True),
    ('net.cidr_overlap("10.0.0.0/8", "10.1.2.3")', True),
    ("any([false, true])", True),
    ("any([false])", False),
    ("all([true, true])", True),
    ("all([true, false])", False),
    ("set_diff({1, 2}, {1})", [2]),
    ("cast_array({2, 1})", [1, 2]),
    ("cast_set([1, 1])", [1]),
    ('cast_string("s")', "s"),
    ("cast_boolean(false)", False),
    ("cast_null(null)", None),
    ('cast_object({"a": 1})', {"a": 1}),
]


@pytest.mark.parametrize("call,expected", DEPRECATED_CASES)
def test_deprecated_builtins_work_after_rewrite(call, expected):
    module = prepare_module("t.rego", f"package t\nx = {call}\n")
    engine = regorus.Engine()
    engine.add_policy("compat.rego", COMPAT_MODULE)
    engine.set_rego_v0(module.version == 0)
    engine.add_policy(module.path, module.source)
    value = engine.eval_rule("data.t.x")
    if isinstance(value, (set, frozenset)):
        value = sorted(value)
    assert value == expected
