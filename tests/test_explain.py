"""Explain: a denial names the rule body and the first condition that kept ``allow`` from being true."""
from __future__ import annotations

import io
import json
from pathlib import Path

from dsfw.cli import app
from dsfw.cli.eval import request_input
from dsfw.policy import AUTHZ, BUILD
from dsfw.policy.embedded import EmbeddedEngine
from dsfw.policy.explain import FAILED, NOT_REACHED, PASSED, Explainer
from dsfw.policy.loader import load_policy_dir

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "policies"
LIBRARY = SHIPPED / "library"

TWO_BODIES = """package docker.authz
import rego.v1

default allow := false

allow if {
    input.Method == "GET"
    startswith(input.PathPlain, "/containers")
}

allow if {
    input.Method == "POST"
    some bind in object.get(input, "Binds", [])
    bind == "/srv:/srv"
    input.PathPlain == "/containers/create"
}
"""


def engine_for(tmp_path: Path, files: dict[str, str]) -> EmbeddedEngine:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return EmbeddedEngine(str(tmp_path))


def test_each_body_stops_at_its_first_failed_statement(tmp_path):
    policy = load_policy_dir(str(engine_for(tmp_path, {"authz.rego": TWO_BODIES}).policy_dir))
    doc = {"Method": "POST", "PathPlain": "/containers/create", "Binds": ["/etc:/etc"]}
    explanation = Explainer(policy.engine).explain(AUTHZ, "allow", json.dumps(doc))
    first, second = explanation.bodies
    # the body that got furthest comes first
    assert (first.line, [s.outcome for s in first.steps]) == (11, [PASSED, PASSED, FAILED, NOT_REACHED])
    assert first.failed_step().text == 'bind == "/srv:/srv"'  # the closing quote is kept
    assert (second.line, [s.outcome for s in second.steps]) == (6, [FAILED, NOT_REACHED])
    assert second.failed_step().text == 'input.Method == "GET"'
    assert explanation.summary().startswith(
        'data.docker.authz.allow at authz.rego:11 failed at line 14: bind == "/srv:/srv"; '
        'data.docker.authz.allow at authz.rego:6 failed at line 7: input.Method == "GET"')


def test_denial_message_names_rule_file_line_and_condition(tmp_path):
    engine = engine_for(tmp_path, {"authz.rego": TWO_BODIES})
    decision = engine.evaluate(AUTHZ, {"Method": "DELETE", "PathPlain": "/containers/x"})
    assert not decision.allowed
    assert decision.message().startswith("request denied by policy data.docker.authz.allow (false): "
                                         "data.docker.authz.allow at authz.rego:")
    assert "failed at line 7: input.Method == \"GET\"" in decision.message()
    assert "failed at line 12: input.Method == \"POST\"" in decision.message()


def test_allowed_decisions_carry_no_explanation(tmp_path):
    engine = engine_for(tmp_path, {"authz.rego": TWO_BODIES})
    decision = engine.evaluate(AUTHZ, {"Method": "GET", "PathPlain": "/containers/json"})
    assert decision.allowed and decision.reasons == ()


def test_a_matched_body_whose_value_is_not_true(tmp_path):
    engine = engine_for(tmp_path, {"authz.rego": (
        "package docker.authz\nimport rego.v1\n\nallow := input.flag if {\n    input.Method == \"GET\"\n}\n")})
    decision = engine.evaluate(AUTHZ, {"Method": "GET", "flag": False})
    assert decision.message().endswith("authz.rego:4 matched but its value is not true")


def test_v0_statements_with_modifiers_and_iteration(tmp_path):
    engine = engine_for(tmp_path, {"authz.rego": (
        "package docker.authz\n\nallow {\n  input.Method == \"GET\"\n"
        "  startswith(input.Path, \"/x\") with input.Path as \"/y\"\n}\n")})
    explanation = engine.explanation(AUTHZ, {"Method": "GET"})
    (body,) = explanation.bodies
    assert [s.outcome for s in body.steps] == [PASSED, FAILED]
    assert body.steps[1].text == 'startswith(input.Path, "/x") with input.Path as "/y"'


def test_no_allow_rule_is_said(tmp_path):
    engine = engine_for(tmp_path, {"other.rego": "package docker.other\nallow := true\n"})
    assert engine.evaluate(AUTHZ, {}).message().endswith(
        "(undefined): no rule data.docker.authz.allow with a body is defined")


def test_summary_is_bounded(tmp_path):
    bodies = "".join(f'allow if {{\n    input.Path == "{"/p" * 200}{i}"\n}}\n' for i in range(10))
    engine = engine_for(tmp_path, {"authz.rego": "package docker.authz\nimport rego.v1\n" + bodies})
    message = engine.evaluate(AUTHZ, {"Path": "/"}).message()
    assert "7 more rule bodies failed" in message
    assert len(message) < 700


def test_shipped_example_names_its_rule_and_line():
    engine = EmbeddedEngine(str(SHIPPED))
    doc, _ = request_input("POST", "/v1.41/networks/create", b'{"Name": "n"}')
    assert engine.evaluate(AUTHZ, doc).message() == (
        "request denied by policy data.docker.authz.allow (undefined): "
        "data.docker.authz.allow at authz.rego:7 failed at line 8: not createNetwork")


def test_shipped_build_example_names_its_rule_and_line():
    from dsfw.cli.eval import build_fields
    engine = EmbeddedEngine(str(SHIPPED))
    doc, req = request_input("POST", "/v1.41/build")
    fields = build_fields(req, b"FROM node:18\nRUN true\n")
    message = engine.evaluate(BUILD, {**doc, **fields}).message()
    assert message.startswith("request denied by policy data.docker.build.allow (undefined): "
                              "data.docker.build.allow at build.rego:")
    assert message.endswith("not nodeImage")


def run_cli(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code = app.main(list(argv), out=out, err=err)
    return code, out.getvalue() + err.getvalue()


def test_eval_explain_traces_into_named_rules(tmp_path):
    body = tmp_path / "net.json"
    body.write_text('{"Name": "n"}')
    code, output = run_cli("eval", "--policyDir", str(SHIPPED), "--method", "POST",
                           "--path", "/v1.41/networks/create", "--body", str(body), "-q", "--explain")
    assert code == 1
    assert "FAIL line 8: not createNetwork" in output
    assert "because line 8 names createNetwork:" in output
    assert 'ok   line 12: startswith(path, "/networks/create")' in output


def test_eval_explain_on_the_library_names_each_deny_rule(tmp_path):
    body = tmp_path / "create.json"
    body.write_text('{"Image": "evil.io/x", "HostConfig": {"Privileged": true}}')
    code, output = run_cli("eval", "--policyDir", str(LIBRARY), "--method", "POST",
                           "--path", "/v1.41/containers/create", "--body", str(body), "-q",
                           "--explain", "--peer", "1000:1000")
    assert code == 1
    assert "privileged containers are not allowed" in output
    assert "made by privileged.rego:" in output and "via collect.rego:" in output
    assert "made by images.rego:" in output
