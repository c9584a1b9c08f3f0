"""``dsfw eval`` and ``dsfw record``: decide one request, or replay recordings, offline.

The input document is built by the same functions the daemon uses
(:func:`dsfw.input.request.canonical_request`, :func:`dsfw.input.request.input_document`,
:func:`dsfw.build.steps.dockerfile_input`), so what ``dsfw eval`` prints is what
the policy would see for that request -- host paths in ``BindMounts`` are
resolved on *this* machine, as the daemon resolves them on its own.
"""
from __future__ import annotations

import glob
import grp
import json
import os
import pwd
import re
from dataclasses import dataclass
from typing import Any, TextIO

from dsfw.build.gate import buildargs_of
from dsfw.build.steps import dockerfile_input
from dsfw.input.request import CanonicalRequest, canonical_request, input_document
from dsfw.policy import AUTHZ, BUILD, PolicyDecision
from dsfw.policy.embedded import EmbeddedEngine
from dsfw.ops.recorder import input_of
from dsfw.input.redact import redacted_input, scrub, scrub_messages, secret_values


class InputError(ValueError):
    """The request or input file given to ``dsfw eval`` cannot be used (exit status 2)."""


def parse_header(text: str) -> tuple[bytes, list[bytes]]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise InputError(f"--header {text!r} is not NAME:VALUE")
    return name.strip().encode("latin-1"), [value.strip().encode("latin-1")]


def peer_of(spec: str) -> dict[str, Any]:
    """``--peer UID[:GID]`` as the daemon's ``Peer`` field (names looked up here)."""
    try:
        uid_text, _, gid_text = spec.partition(":")
        uid = int(uid_text)
        gid = int(gid_text) if gid_text else pwd.getpwuid(uid).pw_gid
    except (ValueError, KeyError):
        raise InputError(f"--peer {spec!r} is not UID[:GID] (numbers; a bare UID must exist)") from None

    def name(lookup, ident):
        try:
            return lookup(ident)[0]
        except (KeyError, OverflowError):
            return None
    return {"Uid": uid, "Gid": gid, "Pid": os.getpid(),
            "User": name(pwd.getpwuid, uid), "Group": name(grp.getgrgid, gid)}


def request_input(method: str, path: str, body: bytes = b"", headers: list[str] = (),
                  peer: dict[str, Any] | None = None) -> tuple[dict[str, Any], CanonicalRequest]:
    """The input document dsfw builds for this request (raises dsfw's BadRequest if it would refuse it)."""
    req = canonical_request(method.upper(), path.encode("utf-8"),
                            [parse_header(h) for h in headers], lambda: body)
    return input_document(req, peer=peer), req


def build_fields(req: CanonicalRequest, dockerfile: bytes) -> dict[str, Any]:
    """The build policy's extra fields for a Dockerfile, with the request's buildargs."""
    return dockerfile_input(dockerfile, buildargs_of(req))


def load_input_file(path: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(input document, the recorded decision if the file is a recording)."""
    try:
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read an input document: {e}") from None
    try:
        doc = input_of(document)
    except ValueError as e:
        raise InputError(f"{path}: {e}") from None
    recorded = document.get("decision") if "input" in document else None
    return doc, recorded if isinstance(recorded, dict) else None


@dataclass
class Verdict:
    decisions: list[PolicyDecision]

    @property
    def allowed(self) -> bool:
        return all(d.allowed for d in self.decisions)


def decide(engine: EmbeddedEngine, doc: dict[str, Any], build: dict[str, Any] | None) -> Verdict:
    """authz, then build (when there are build fields), as the daemon asks them."""
    decisions = [engine.evaluate(AUTHZ, doc)]
    if build is not None:
        decisions.append(engine.evaluate(BUILD, {**doc, **build}))
    return Verdict(decisions)


def print_verdict(verdict: Verdict, out: TextIO) -> None:
    for d in verdict.decisions:
        out.write(f"data.{d.package}: {'allowed' if d.allowed else 'denied'}\n")
        for reason in d.reasons:
            out.write(f"  - {reason}\n")


class ScrubbedOutput:
    """Writes to ``out`` without the secret values of one input (deny reasons, traces quote input)."""

    def __init__(self, out: TextIO, doc: dict[str, Any]):
        self._out = out
        self._secrets = secret_values(doc)

    def write(self, text: str) -> int:
        return self._out.write(scrub(text, self._secrets))


def print_explanations(engine: EmbeddedEngine, doc: dict[str, Any], build: dict[str, Any] | None,
                       out: TextIO) -> None:
    """The full trace of each package's ``allow`` rule bodies (``dsfw eval --explain``)."""
    packages = [(AUTHZ, doc)] + ([(BUILD, {**doc, **build})] if build is not None else [])
    for package, document in packages:
        _print_trace(engine, package, "allow", document, out, "", set())
        origins = engine.deny_origins(document)
        messages = [m for d in verdict_reasons(engine, package, document) for m in [d] if m in origins]
        if messages:
            out.write(f"data.{package}.deny:\n")
            for message in messages:
                out.write(f"  {message}\n    made by {' via '.join(origins[message])}\n")


def verdict_reasons(engine: EmbeddedEngine, package: str, document: dict[str, Any]) -> tuple[str, ...]:
    return engine.evaluate(package, document).reasons


_LOCAL_RULE = re.compile(r"^(?:not\s+)?([A-Za-z_][A-Za-z0-9_]*)$")


def _print_trace(engine: EmbeddedEngine, package: str, rule: str, document: dict[str, Any],
                 out: TextIO, indent: str, seen: set[str]) -> None:
    """A rule's trace; a failed statement that names another rule of the package is traced too."""
    seen.add(rule)
    explanation = engine.explanation(package, document, rule)
    for line in explanation.lines():
        out.write(f"{indent}{line}\n")
    for body in explanation.bodies:
        step = body.failed_step()
        m = _LOCAL_RULE.match(" ".join(step.text.split())) if step is not None else None
        if m and m.group(1) not in seen and len(seen) < 8:
            out.write(f"{indent}    because line {step.line} names {m.group(1)}:\n")
            _print_trace(engine, package, m.group(1), document, out, indent + "      ", seen)


def print_input(doc: dict[str, Any], out: TextIO) -> None:
    out.write("input (credentials redacted):\n")
    out.write(json.dumps(redacted_input(doc), indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def replay_directory(engine: EmbeddedEngine | None, directory: str, out: TextIO) -> int:
    """List recorded decisions; with an engine, decide them again and mark the changes.

    Returns 1 when some decision differs from the recording, else 0.
    """
    files = sorted(glob.glob(os.path.join(directory, "*.json")))
    changed = 0
    for path in files:
        doc, recorded = load_input_file(path)
        was = bool(recorded and recorded.get("allowed"))
        package = (recorded or {}).get("package", AUTHZ)
        line = f"{os.path.basename(path)}: {doc.get('Method')} {doc.get('PathPlain')} " \
               f"{package} {'allowed' if was else 'denied'}"
        if engine is not None:
            now = engine.evaluate(package if package in (AUTHZ, BUILD) else AUTHZ, doc)
            if now.allowed != was:
                changed += 1
                line += f" -> now {'allowed' if now.allowed else 'denied'}"
                line += "".join(f"\n  - {r}" for r in scrub_messages(doc, now.reasons))
        out.write(line + "\n")
    out.write(f"{len(files)} recorded decisions" +
              (f", {changed} decided differently now\n" if engine is not None else "\n"))
    return 1 if changed else 0
