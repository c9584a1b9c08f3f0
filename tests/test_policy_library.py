"""The policy library (policies/library/): its test_ rules pass, and they exercise every rule.

"Exercised" is measured with regorus' coverage: a rule's head line is
covered only when the rule produced a value, so every deny/allow rule of
every library file must have produced one in some test_ rule.
"""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

from dsfw.cli import app as cli

from dsfw.cli import policytest as cli_test
from dsfw.policy.loader import load_policy_dir

LIBRARY = Path(__file__).resolve().parents[1] / "policies" / "library"
SHIPPED = LIBRARY.parent
# Rules whose firing the library promises: what dsfw asks, and what feeds it.
_DECIDING = re.compile(r"^(deny contains|build_deny contains|allow if|allow :=|default allow|"
                       r"readonly_request if)\b")


def test_dsfw_test_passes_on_the_library():
    out = io.StringIO()
    status = cli.main(["test", "--policyDir", str(LIBRARY)], out=out)
    text = out.getvalue()
    assert status == 0, text
    m = re.search(r"^PASS: (\d+)/(\d+)$", text, re.M)
    assert m and m.group(1) == m.group(2) and int(m.group(2)) >= 60, text


def _rule_heads(path: Path) -> list[int]:
    """The line to find covered for each deciding rule.

    regorus marks a head line covered when the rule produced a value, except
    for boolean rules without a value (``x if {...}``): for those, the last
    condition of the body must have been reached.
    """
    lines = path.read_text().splitlines()
    out = []
    for n, line in enumerate(lines, 1):
        if not _DECIDING.match(line):
            continue
        if line.endswith(" if {") and " contains " not in line and ":=" not in line:
            close = next(i for i in range(n, len(lines)) if lines[i] == "}")
            out.append(close)  # 1-based number of the line before the closing brace
        else:
            out.append(n)
    return out


def test_every_library_rule_is_exercised_by_a_test():
    policy = load_policy_dir(str(LIBRARY))
    policy.engine.set_enable_coverage(True)
    results = list(cli_test.run_tests(policy))
    assert results and all(r.outcome == cli_test.PASS for r in results)
    report = json.loads(policy.engine.get_coverage_report_as_json())
    covered = {Path(f["path"]).name: set(f["covered"]) for f in report["files"]}
    missing = []
    for path in sorted(LIBRARY.glob("*.rego")):
        if path.name.endswith("_test.rego"):
            continue
        heads = _rule_heads(path)
        missing += [f"{path.name}:{n}" for n in heads if n not in covered.get(path.name, set())]
    assert not missing, f"rules no test_ rule made fire: {missing}"


def test_every_library_policy_has_tests():
    policies = {p.stem for p in LIBRARY.glob("*.rego") if not p.stem.endswith("_test")}
    tested = {p.stem[:-len("_test")] for p in LIBRARY.glob("*_test.rego")}
    bases = {"allow_all", "collect", "collect_build", "readonly"}  # all in bases_test.rego
    assert "bases" in tested
    assert policies - bases <= tested, policies - bases - tested


def test_library_below_the_shipped_policies_changes_nothing():
    """policies/ loads policies/library/ too: its decisions must stay the original examples'."""
    from dsfw.policy.embedded import EmbeddedEngine
    from dsfw.cli.eval import request_input
    engine = EmbeddedEngine(str(SHIPPED))
    create, _ = request_input("POST", "/v1.41/containers/create",
                              b'{"Image": "evil.io/x", "HostConfig": {"Privileged": true}}')
    assert engine.evaluate("docker.authz", create).allowed
    network, _ = request_input("POST", "/v1.41/networks/create", b'{"Name": "n"}')
    decision = engine.evaluate("docker.authz", network)
    assert not decision.allowed
    assert decision.reasons == ("request denied by policy data.docker.authz.allow (undefined): "
                                "data.docker.authz.allow at authz.rego:7 failed at line 8: "
                                "not createNetwork",)


def test_a_failing_library_test_is_reported(tmp_path):
    """The check above can fail: break one message and dsfw test says FAIL."""
    broken = tmp_path / "lib"
    broken.mkdir()
    for path in LIBRARY.iterdir():
        text = path.read_text()
        if path.name == "mounts.rego":
            text = text.replace("cannot be mounted into a container", "may not be mounted")
        (broken / path.name).write_text(text)
    out = io.StringIO()
    assert cli.main(["test", "--policyDir", str(broken)], out=out) == 1
    assert "data.dsfw.library.mounts_test.test_other_host_paths_refused: FAIL" in out.getvalue()
    assert re.search(r"^FAIL: \d+/\d+$", out.getvalue(), re.M)
