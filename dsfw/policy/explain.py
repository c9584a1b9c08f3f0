"""Why ``allow`` was not true: the rule bodies that were tried and where each stopped.

A denial that only says ``data.docker.authz.allow (undefined)`` leaves an
author guessing. regorus gives every statement of a rule body a source span
(``get_ast_as_json``), and evaluates any rule we add; so for each body of the
package's ``allow`` rule, dsfw adds *probe* rules holding the body's first 1,
2, ... statements (same package, same imports, copied from the source) and
asks which prefix first stops producing a value. That statement is the first
condition that failed, named with its file and line. No evaluator of dsfw's
own is involved: regorus decides every probe exactly as it decided ``allow``.

Probes are compiled once per policy set, lazily, on a clone of its engine, and
run only for denials without deny messages. Anything unusual (a body regorus
cannot give spans for, a probe that does not compile) leaves that body
unexplained rather than failing the request.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

FAILED = "failed"
PASSED = "true"
NOT_REACHED = "not reached"

# Bounds on what a denial message carries (the full trace is dsfw eval --explain's).
SUMMARY_BODIES = 3
SUMMARY_TEXT = 120


@dataclass(frozen=True)
class Step:
    """One statement of a rule body and what became of it for this input."""

    text: str
    line: int
    outcome: str


@dataclass(frozen=True)
class BodyTrace:
    """One body of the explained rule, with each statement's outcome."""

    rule: str
    file: str
    line: int
    steps: tuple[Step, ...]
    # True when every statement held: the body matched and gave the rule its value.
    matched: bool = False

    def failed_step(self) -> Step | None:
        return next((s for s in self.steps if s.outcome == FAILED), None)

    def where(self) -> str:
        return f"{os.path.basename(self.file)}:{self.line}"


@dataclass(frozen=True)
class Explanation:
    """Why ``data.<package>.<rule>`` was not ``true`` for one input."""

    package: str
    rule: str
    bodies: tuple[BodyTrace, ...] = ()
    note: str = ""

    def summary(self) -> str:
        """One bounded sentence for the denial message and the decision log."""
        if self.note and not self.bodies:
            return self.note
        parts = []
        for body in self.bodies[:SUMMARY_BODIES]:
            step = body.failed_step()
            if step is not None:
                text = f": {_shorten(step.text)}" if step.text else ""
                parts.append(f"{body.rule} at {body.where()} failed at line {step.line}{text}")
            elif body.matched:
                parts.append(f"{body.rule} at {body.where()} matched but its value is not true")
            else:
                parts.append(f"{body.rule} at {body.where()} could not be traced")
        if len(self.bodies) > SUMMARY_BODIES:
            parts.append(f"{len(self.bodies) - SUMMARY_BODIES} more rule bodies failed")
        return "; ".join(parts) if parts else (self.note or "no rule body to explain")

    def lines(self) -> list[str]:
        """The full trace, one line per statement, for ``dsfw eval --explain``."""
        out = [f"data.{self.package}.{self.rule}:"]
        if self.note:
            out.append(f"  {self.note}")
        mark = {PASSED: "ok  ", FAILED: "FAIL", NOT_REACHED: "--  "}
        for body in self.bodies:
            verdict = "matched" if body.matched else "did not match"
            out.append(f"  {body.rule} at {body.file}:{body.line} ({verdict})")
            for step in body.steps:
                text = " ".join(step.text.split())
                out.append(f"    {mark[step.outcome]} line {step.line}: {text}")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"package": self.package, "rule": self.rule, "note": self.note,
                "bodies": [{"rule": b.rule, "file": b.file, "line": b.line, "matched": b.matched,
                            "steps": [{"line": s.line, "text": s.text, "outcome": s.outcome}
                                      for s in b.steps]}
                           for b in self.bodies]}


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SUMMARY_TEXT else text[:SUMMARY_TEXT - 3] + "..."


def _ref_name(refr: Any) -> str | None:
    """A dotted name from regorus's ``Var``/``RefDot`` AST nodes (None for anything else)."""
    if not isinstance(refr, dict):
        return None
    if "Var" in refr:
        return refr["Var"].get("value")
    if "RefDot" in refr:
        node = refr["RefDot"]
        base = _ref_name(node.get("refr"))
        fld = node.get("field")
        name = fld[1] if isinstance(fld, list) and len(fld) == 2 else None
        if base is None or not isinstance(name, str):
            return None
        return f"{base}.{name}"
    return None


def _statement_text(source: bytes, span: dict[str, Any]) -> str:
    """The source of one statement; regorus's span stops short of a final closing quote."""
    start, end = span["start"], span["end"]
    text = source[start:end]
    for quote in (b'"', b"`"):
        count = text.count(quote) - (text.count(b'\\"') if quote == b'"' else 0)
        if count % 2 == 1:
            close = source.find(quote, end)
            if close != -1:
                end = close + 1
                text = source[start:end]
    return text.decode("utf-8", "replace")


@dataclass
class _Probe:
    rule: str
    file: str
    line: int
    steps: list[tuple[str, int]]
    names: list[str]  # probe rule paths, one per prefix length


@dataclass
class _Probes:
    engine: Any = None
    bodies: list[_Probe] = field(default_factory=list)
    note: str = ""


def _rule_nodes(modules: list[dict[str, Any]]):
    """(package, module path, source bytes, version, import lines, head kind, head, spec) per rule."""
    for module in modules:
        source_info = module.get("source", {})
        path = source_info.get("file", "?")
        source = source_info.get("contents", "").encode("utf-8")
        ast = module.get("ast", {})
        package = _ref_name(ast.get("package", {}).get("refr"))
        if package is None:
            continue
        imports = [source[i["span"]["start"]:i["span"]["end"]].decode("utf-8", "replace")
                   for i in ast.get("imports", []) if i.get("span")]
        for node in ast.get("rules", []):
            spec = node.get("Spec") if isinstance(node, dict) else None
            head = spec.get("head") if spec else None
            if not isinstance(head, dict) or len(head) != 1:
                continue
            kind, value = next(iter(head.items()))
            yield package, path, source, module.get("version", 1), imports, kind, value, spec


class Explainer:
    """Explains denials of one compiled policy set (see the module docstring)."""

    def __init__(self, engine: Any):
        self._engine = engine
        self._probes: dict[tuple[str, str], _Probes] = {}
        self._deny_probes: tuple[Any, list[tuple[str, str, int]]] | None = None

    def deny_origins(self, input_json: str) -> dict[str, list[str]]:
        """Which ``deny`` rule (``file:line``) produced each deny message, in every package.

        Messages gathered from another package (the library's ``collect.rego``)
        name the rule that made them first, then the one that collected them.
        """
        if self._deny_probes is None:
            self._deny_probes = self._build_deny()
        engine, probes = self._deny_probes
        origins: dict[str, list[str]] = {}
        if engine is None:
            return origins
        try:
            engine.set_input_json(input_json)
        except Exception:
            return origins
        for name, where, depth in probes:
            try:
                values = engine.eval_rule(name)
            except Exception:
                continue
            for message in values if isinstance(values, (list, set, frozenset)) else ():
                if isinstance(message, str):
                    origins.setdefault(message, []).append((depth, where))
        return {m: [w for _, w in sorted(places)] for m, places in origins.items()}

    def _build_deny(self) -> tuple[Any, list[tuple[str, str, int]]]:
        try:
            modules = json.loads(self._engine.get_ast_as_json())
        except Exception:  # pragma: no cover
            return None, []
        texts: dict[tuple[str, str, int], list[str]] = {}
        probes = []
        for n, (package, path, source, version, imports, kind, head, spec) in enumerate(
                _rule_nodes(modules)):
            if kind != "Set" or _ref_name(head.get("refr")) != "deny" or "key" not in head:
                continue
            key = next(iter(head["key"].values()), {}).get("span")
            if not key:
                continue
            key_text = _statement_text(source, key)
            bodies = spec.get("bodies") or [{"query": {"stmts": []}}]
            for b, body in enumerate(bodies):
                stmts = body.get("query", {}).get("stmts", [])
                text = "\n  ".join(_statement_text(source, st["span"]) for st in stmts) or "true"
                name = f"__dsfw_deny_{n}_{b}"
                rule = (f"{name}[{key_text}] {{\n  {text}\n}}" if version == 0
                        else f"{name} contains {key_text} if {{\n  {text}\n}}")
                texts.setdefault((package, path, version), ["package " + package, *imports]).append(rule)
                # messages a collecting package merely copies rank after their origin
                depth = 1 if "data." in text and " in data." in text else 0
                probes.append((f"data.{package}.{name}",
                               f"{os.path.basename(path)}:{spec.get('span', {}).get('line', 0)}",
                               depth, (package, path, version)))
        if not probes:
            return None, []
        engine = self._engine.clone()
        usable = set()
        for i, ((package, path, version), lines) in enumerate(texts.items()):
            try:
                engine.set_rego_v0(version == 0)
                engine.add_policy(f"<dsfw-explain-deny>/{i}/{os.path.basename(path)}",
                                  "\n".join(lines) + "\n")
            except Exception:
                continue
            usable.add((package, path, version))
        return engine, [(name, where, depth) for name, where, depth, key in probes if key in usable]

    def explain(self, package: str, rule: str, input_json: str) -> Explanation:
        """Why ``data.<package>.<rule>`` did not give ``true`` for this input."""
        probes = self._probes.get((package, rule))
        if probes is None:
            probes = self._probes[(package, rule)] = self._build(package, rule)
        if probes.engine is None:
            return Explanation(package, rule, note=probes.note)
        try:
            probes.engine.set_input_json(input_json)
        except Exception:
            return Explanation(package, rule, note="the input could not be handed to the explainer")
        bodies = [self._trace(probes.engine, body) for body in probes.bodies]
        # the bodies that got furthest are the likeliest intent: list them first
        bodies.sort(key=lambda b: -sum(s.outcome == PASSED for s in b.steps))
        return Explanation(package, rule, tuple(bodies), probes.note)

    @staticmethod
    def _trace(engine: Any, probe: _Probe) -> BodyTrace:
        steps = []
        failed_at = None
        for i, (name, (text, line)) in enumerate(zip(probe.names, probe.steps)):
            try:
                value = engine.eval_rule(name)
            except Exception:
                value = None
            if value is None:
                failed_at = i
                break
        for i, (text, line) in enumerate(probe.steps):
            if failed_at is None or i < failed_at:
                outcome = PASSED
            elif i == failed_at:
                outcome = FAILED
            else:
                outcome = NOT_REACHED
            steps.append(Step(text, line, outcome))
        return BodyTrace(probe.rule, probe.file, probe.line, tuple(steps), failed_at is None)

    def _build(self, package: str, rule: str) -> _Probes:
        try:
            modules = json.loads(self._engine.get_ast_as_json())
        except Exception as e:  # pragma: no cover - regorus always renders its AST
            return _Probes(note=f"no explanation: the policy's syntax tree is unavailable ({e})")
        found: list[_Probe] = []
        probe_sources: list[tuple[str, str, int]] = []
        counter = 0
        for module in modules:
            source_info = module.get("source", {})
            path = source_info.get("file", "?")
            source = source_info.get("contents", "").encode("utf-8")
            ast = module.get("ast", {})
            if _ref_name(ast.get("package", {}).get("refr")) != package:
                continue
            lines = [f"package {package}"]
            for imp in ast.get("imports", []):
                span = imp.get("span")
                if span:
                    lines.append(source[span["start"]:span["end"]].decode("utf-8", "replace"))
            version = module.get("version", 1)
            rules_here = []
            for node in ast.get("rules", []):
                spec = node.get("Spec") if isinstance(node, dict) else None
                if not spec:
                    continue
                head = spec.get("head", {})
                head_ref = next(iter(head.values()), {}) if isinstance(head, dict) else {}
                if _ref_name(head_ref.get("refr")) != rule:
                    continue
                for body in spec.get("bodies", []):
                    stmts = body.get("query", {}).get("stmts", [])
                    if not stmts:
                        continue
                    steps = [(_statement_text(source, s["span"]), s["span"]["line"]) for s in stmts]
                    counter += 1
                    names = []
                    for k in range(1, len(steps) + 1):
                        name = f"__dsfw_explain_{counter}_{k}"
                        names.append(f"data.{package}.{name}")
                        text = "\n  ".join(t for t, _ in steps[:k])
                        if version == 0:
                            rules_here.append(f"{name} = true {{\n  {text}\n}}")
                        else:
                            rules_here.append(f"{name} := true if {{\n  {text}\n}}")
                    line = spec.get("span", {}).get("line", 0)
                    found.append(_Probe(f"data.{package}.{rule}", path, line, steps, names))
            if rules_here:
                probe_sources.append(("\n".join(lines + rules_here) + "\n", path, version))
        if not found:
            return _Probes(note=f"no rule data.{package}.{rule} with a body is defined")
        engine = self._engine.clone()
        usable = []
        for i, (text, path, version) in enumerate(probe_sources):
            try:
                engine.set_rego_v0(version == 0)
                engine.add_policy(f"<dsfw-explain>/{i}/{os.path.basename(path)}", text)
            except Exception:
                continue
            usable.append(path)
        bodies = [p for p in found if p.file in usable]
        note = "" if len(bodies) == len(found) else "some rule bodies could not be traced"
        return _Probes(engine, bodies, note)
