"""The embedded Rego engine: Microsoft's regorus, compiled once per policy set."""
from __future__ import annotations

import json
import os
import re
from typing import Any

import regorus
from twisted.internet.defer import Deferred, fail, succeed

from dsfw.errors import PolicyEngineError
from dsfw.policy import PolicyDecision


class PolicyLoadError(Exception):
    """A policy directory cannot be loaded; names the file that broke it."""


def _rego_files(policy_dir: str) -> list[str]:
    found = []
    for root, dirs, files in os.walk(policy_dir):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".rego"):
                found.append(os.path.join(root, name))
    return found


# Deprecated OPA built-ins that regorus does not know, mapped to their modern names.
_DEPRECATED_BUILTINS = {"re_match": "regex.match"}
_DEPRECATED_RE = re.compile(r"\b(" + "|".join(_DEPRECATED_BUILTINS) + r")\s*\(")


def modernize_builtins(source: str) -> str:
    """Rename calls of deprecated built-ins so old policies load unmodified."""
    return _DEPRECATED_RE.sub(lambda m: _DEPRECATED_BUILTINS[m.group(1)] + "(", source)


def compile_policy_dir(policy_dir: str) -> regorus.Engine:
    """Parse every ``*.rego`` under ``policy_dir`` into one engine."""
    if not os.path.isdir(policy_dir):
        raise PolicyLoadError(f"policy directory {policy_dir!r} does not exist")
    engine = regorus.Engine()
    engine.set_rego_v0(True)
    for path in _rego_files(policy_dir):
        try:
            with open(path, encoding="utf-8") as f:
                engine.add_policy(path, modernize_builtins(f.read()))
        except (OSError, RuntimeError, ValueError) as e:
            raise PolicyLoadError(f"{path}: {str(e).splitlines()[0]}") from e
    return engine


class EmbeddedEngine:
    """Decides inputs with an in-process regorus engine."""

    name = "embedded"

    def __init__(self, policy_dir: str):
        self._policy_dir = policy_dir
        self._engine = compile_policy_dir(policy_dir)
        self._packages = set(self._engine.get_packages())

    def revision(self) -> str:
        return "embedded"

    def evaluate(self, package: str, input_doc: dict[str, Any]) -> PolicyDecision:
        """Decide synchronously; raises PolicyEngineError on evaluation errors."""
        if f"data.{package}" not in self._packages:
            return PolicyDecision(False, package, (f"no policy defines data.{package}.allow",))
        try:
            self._engine.set_input_json(json.dumps(input_doc))
            allowed = self._engine.eval_rule(f"data.{package}.allow")
        except RuntimeError as e:
            raise PolicyEngineError(
                f"policy evaluation of data.{package}.allow failed: {str(e).splitlines()[0]}"
            ) from e
        return PolicyDecision(allowed is True, package)

    def decide(self, package: str, input_doc: dict[str, Any]) -> "Deferred[PolicyDecision]":
        try:
            return succeed(self.evaluate(package, input_doc))
        except Exception as e:
            return fail(e)
