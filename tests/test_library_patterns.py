"""The library's string tests match exactly what the regular expressions they replace matched.

regorus compiles a regular expression on every call (about 100 µs, most of a
decision), so the library tests its fixed patterns with string built-ins
(policies/library/common.rego).  Each pair below is evaluated side by side in
one regorus engine, on words made to hit the edges: empty middles, "/" and
newlines inside, prefixes and suffixes that overlap, signs, multi-byte
characters, non-strings.
"""
from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings, strategies as st

from dsfw.policy._regorus import regorus

LIBRARY = Path(__file__).resolve().parents[1] / "policies" / "library"
COMMON = LIBRARY / "common.rego"

# (rule in the test module using the library's helper, the regular expression it replaces)
PAIRS = {
    "exec": ('data.dsfw.library.common.one_segment(input.w, "/containers/", "/exec")',
             r"^/containers/[^/]+/exec$"),
    "update": ('data.dsfw.library.common.one_segment(input.w, "/containers/", "/update")',
               r"^/containers/[^/]+/update$"),
    "connect": ('data.dsfw.library.common.one_segment(input.w, "/networks/", "/connect")',
                r"^/networks/[^/]+/connect$"),
    "service": ("data.dsfw.library.common.service_path(input.w)",
                r"^/services/(create|[^/]+/update)$"),
    "tag": ('data.dsfw.library.common.between(input.w, "/images/", "/tag", "\\n")',
            r"^/images/.+/tag$"),
    "upgrade": ('data.dsfw.library.common.between(input.w, "/plugins/", "/upgrade", "\\n")',
                r"^/plugins/(.+)/upgrade$"),
    "image_id": ("data.dsfw.library.common.image_id(input.w)", r"^(sha256:)?[0-9a-f]+$"),
    "hex": ('data.dsfw.library.common.only_of(input.w, "0123456789abcdefABCDEF")',
            r"^[0-9a-fA-F]+$"),
    "root": ("data.dsfw.library.users._root(input.w)", r"^[+-]?0+$|^root$"),
    "tightening": ("data.dsfw.library.privileged._tightening(input.w)",
                   r"^no-new-privileges([=:]true)?$"),
}
CAPTURES = {  # the text a helper returns, against the regular expression's group
    "tag": ('data.dsfw.library.common.between(input.w, "/images/", "/tag", "\\n")',
            r"^/images/(.+)/tag$"),
    "upgrade": ('data.dsfw.library.common.between(input.w, "/plugins/", "/upgrade", "\\n")',
                r"^/plugins/(.+)/upgrade$"),
}


def _engine():
    rules = ["package t", "import rego.v1"]
    for name, (helper, pattern) in PAIRS.items():
        rules.append(f"helper_{name} := true if {helper} else := false")
        rules.append(f"regex_{name} := regex.match({json.dumps(pattern)}, input.w)")
    for name, (helper, pattern) in CAPTURES.items():
        rules.append(f"got_{name} := {helper}")
        rules.append(f"want_{name} := m[0][1] if {{ m := regex.find_all_string_submatch_n("
                     f"{json.dumps(pattern)}, input.w, 1); count(m) == 1 }}")
    engine = regorus.Engine()
    for path in sorted(LIBRARY.glob("*.rego")):
        if not path.name.endswith("_test.rego"):
            engine.add_policy(str(path), path.read_text())
    engine.add_policy("t.rego", "\n".join(rules) + "\n")
    return engine


ENGINE = _engine()
PIECES = ["/containers/", "/networks/", "/services/", "/images/", "/plugins/", "/exec", "/update",
          "/connect", "/tag", "/upgrade", "create", "sha256:", "/", "\n", "web", "ab12", "F0",
          "é", "日", "x", "", "0", "g", "sha256", "+", "-", "00", "root", "no-new-privileges",
          "=true", ":true", "=false", "true"]


def check(word: str) -> None:
    ENGINE.set_input_json(json.dumps({"w": word}))
    for name in PAIRS:
        assert ENGINE.eval_rule(f"data.t.helper_{name}") == ENGINE.eval_rule(f"data.t.regex_{name}"), \
            (name, word)
    for name in CAPTURES:
        assert ENGINE.eval_rule(f"data.t.got_{name}") == ENGINE.eval_rule(f"data.t.want_{name}"), \
            (name, word)


def test_the_edges():
    for word in ["/containers/web/exec", "/containers//exec", "/containers/exec", "/containers/a/b/exec",
                 "/containers/a\nb/exec", "/containers/é/exec", "/services/create",
                 "/services/create/update", "/services//update", "/images/a/b:1/tag", "/images//tag",
                 "/images/tag", "/images/a\n/tag", "/plugins/vieux/sshfs/upgrade",
                 "sha256:", "sha256:ab", "sha256:sha256:ab", "abc", "ABC", "", "0", "/x/exec/exec",
                 "+0", "-00", "+-0", "+", "root", "0root", "no-new-privileges",
                 "no-new-privileges:true", "no-new-privileges=false", "no-new-privileges=true\n"]:
        check(word)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=5).map("".join))
def test_any_word(word):
    check(word)


def test_a_check_that_could_fail():
    """The comparison sees a difference: a helper with the wrong suffix disagrees."""
    engine = regorus.Engine()
    engine.add_policy(str(COMMON), COMMON.read_text())
    engine.add_policy("t.rego", "package t\nimport rego.v1\n"
                      'h := true if data.dsfw.library.common.one_segment(input.w, "/containers/", "/exe") '
                      "else := false\n"
                      'r := regex.match("^/containers/[^/]+/exec$", input.w)\n')
    engine.set_input_json(json.dumps({"w": "/containers/web/exec"}))
    assert engine.eval_rule("data.t.h") != engine.eval_rule("data.t.r")
