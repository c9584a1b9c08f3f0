"""``dsfw test``: run the ``test_`` rules of a policy directory, as ``opa test`` does.

The directory is loaded by dsfw's own loader (:func:`dsfw.policy.loader.load_policy_dir`),
so the tests see exactly what a running dsfw would: every ``*.rego`` (test
files included), data files at their directory's path, Rego v0/v1 per file,
deprecated built-ins mapped. A test passes only when its rule is exactly
``true``; ``false`` or undefined is a failure, an evaluation error an error --
the same strictness dsfw applies to ``allow``.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any, Iterator, TextIO

from dsfw.policy.loader import LoadedPolicy
from dsfw.policy.rego_source import describe_regorus_error

PASS, FAIL, ERROR = "PASS", "FAIL", "ERROR"
_RULE = re.compile(r"^test_")
RULE_LINE = "-" * 80


@dataclass(frozen=True)
class TestRule:
    """One ``test_`` rule: its full path (``data.pkg.test_x``), file and line."""

    path: str
    file: str
    line: int


@dataclass(frozen=True)
class TestResult:
    rule: TestRule
    outcome: str  # PASS, FAIL or ERROR
    detail: str   # the value a failing rule had, or the error
    seconds: float


def _ref_path(ref: dict[str, Any]) -> list[str] | None:
    """``a.b.c`` from regorus' AST of a reference; None for anything with brackets."""
    if "Var" in ref:
        return [ref["Var"]["value"]]
    if "RefDot" in ref:
        inner = _ref_path(ref["RefDot"]["refr"])
        return None if inner is None else inner + [ref["RefDot"]["field"][1]]
    return None


def _head_ref(rule: dict[str, Any]) -> tuple[dict[str, Any], int] | None:
    if "Default" in rule:
        return rule["Default"]["refr"], rule["Default"]["span"]["line"]
    spec = rule.get("Spec")
    if not spec:
        return None
    head = spec["head"]
    if "Compr" not in head:  # functions, partial sets and objects are never tests
        return None
    return head["Compr"]["refr"], spec["span"]["line"]


def find_tests(policy: LoadedPolicy) -> list[TestRule]:
    """Every rule named ``test_*`` in every loaded module, in file and line order."""
    found: dict[str, TestRule] = {}
    for module in json.loads(policy.engine.get_ast_as_json()):
        package = _ref_path(module["ast"]["package"]["refr"])
        for rule in module["ast"]["rules"]:
            head = _head_ref(rule)
            if head is None or package is None:
                continue
            name = _ref_path(head[0])
            if name is None or not _RULE.match(name[-1]):
                continue
            path = "data." + ".".join(package + name)
            found.setdefault(path, TestRule(path, module["source"]["file"], head[1]))
    return sorted(found.values(), key=lambda t: (t.file, t.line, t.path))


def run_test(policy: LoadedPolicy, rule: TestRule) -> TestResult:
    started = time.perf_counter()
    try:
        value = policy.engine.eval_rule(rule.path)
    except Exception as e:  # regorus raises RuntimeError for every evaluation failure
        return TestResult(rule, ERROR, describe_regorus_error(e), time.perf_counter() - started)
    elapsed = time.perf_counter() - started
    if value is True:
        return TestResult(rule, PASS, "", elapsed)
    return TestResult(rule, FAIL, "undefined" if value is None else json.dumps(value, default=sorted),
                      elapsed)


def run_tests(policy: LoadedPolicy, run: str | None = None) -> Iterator[TestResult]:
    """Run every test (or those whose path matches the regular expression ``run``)."""
    pattern = re.compile(run) if run else None
    for rule in find_tests(policy):
        if pattern is None or pattern.search(rule.path):
            yield run_test(policy, rule)


def _duration(seconds: float) -> str:
    micro = seconds * 1e6
    return f"{micro:.0f}µs" if micro < 1000 else f"{micro / 1000:.2f}ms"


def report(results: list[TestResult], out: TextIO, verbose: bool = False) -> int:
    """Print an ``opa test``-style report; return the exit status (0 only if all passed)."""
    bad = [r for r in results if r.outcome != PASS]
    if bad:
        out.write("FAILURES\n" + RULE_LINE + "\n")
        for r in bad:
            out.write(f"{r.rule.path}: {r.outcome} ({_duration(r.seconds)})\n")
            out.write(f"  {r.rule.file}:{r.rule.line}: {r.detail}\n")
        out.write("\n")
    if verbose:
        out.write("SUMMARY\n" + RULE_LINE + "\n")
        current = None
        for r in results:
            if r.rule.file != current:
                if current is not None:
                    out.write("\n")
                current = r.rule.file
                out.write(f"{current}:\n")
            out.write(f"{r.rule.path}: {r.outcome} ({_duration(r.seconds)})\n")
    out.write(RULE_LINE + "\n")
    total = len(results)
    if not total:
        out.write("no test_ rules found\n")
        return 1
    passed = total - len(bad)
    if passed:
        out.write(f"PASS: {passed}/{total}\n")
    for outcome in (FAIL, ERROR):
        n = sum(1 for r in bad if r.outcome == outcome)
        if n:
            out.write(f"{outcome}: {n}/{total}\n")
    return 0 if not bad else 1
