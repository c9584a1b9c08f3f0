"""The embedded Rego engine: Microsoft's regorus, in process.

Evaluation runs on the reactor thread on purpose: a decision on an ordinary
policy is cheaper than a round trip through a thread pool, and a regorus
engine may only be used from the thread that made it (``bench/bench_policy.py``
measures it; docs/benchmarks.md has the numbers). A policy that is slow to
evaluate would change that trade; measure before moving it.

The compiled policy is replaced as a whole: :meth:`EmbeddedEngine.reload`
builds a new engine from the directory and swaps it in only if the whole
directory loaded, so a broken edit never leaves a half-loaded policy -- the
last good one stays in force and the failure is logged.
"""
from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import structlog
from twisted.internet.defer import Deferred, fail, succeed

from dsfw import jsoncodec
from dsfw.errors import PolicyEngineError
from dsfw.policy import AUTHZ, PolicyDecision
from dsfw.policy.explain import Explanation
from dsfw.policy.decision_cache import (DEFAULT_SIZE, DecisionCache, VisibilityCache,
                                        is_deterministic)
from dsfw.policy.loader import (LoadedPolicy, PolicyLoadError, PolicySources, fingerprint,
                               load_policy_dir)
from dsfw.policy.rego_source import describe_regorus_error
from dsfw.policy.verdict import (SCOPE_RULES, UNDEFINED, check_package, make_decision,
                                 scope_fields, visible_flags, visible_query)

__all__ = ["EmbeddedEngine", "PolicyLoadError"]

log = structlog.get_logger("dsfw.policy")

_NO_RULE = "not a valid rule path"
VISIBLE_CACHE_BYTES = 1 << 20


def _rule_value(policy: LoadedPolicy, rule: str) -> Any:
    """The value of ``rule`` for the input already set; UNDEFINED if none."""
    if rule in policy.missing_rules:
        return UNDEFINED
    try:
        value = policy.engine.eval_rule(rule)
    except Exception as e:  # regorus raises RuntimeError for every failure
        if _NO_RULE in str(e).split("\n", 1)[0]:
            policy.missing_rules.add(rule)
            return UNDEFINED
        raise PolicyEngineError(f"policy evaluation of {rule} failed: {describe_regorus_error(e)}") from e
    return UNDEFINED if value is None else value


def _find_scope_rules(policy: LoadedPolicy) -> None:
    """Record which scoping rules ``data.docker.authz`` defines (once per load)."""
    policy.engine.set_input_json("{}")
    found = set()
    for name in SCOPE_RULES:
        try:
            _rule_value(policy, f"data.{AUTHZ}.{name}")
        except PolicyEngineError:
            pass  # it exists; it just cannot be evaluated without a request
        if f"data.{AUTHZ}.{name}" not in policy.missing_rules:
            found.add(name)
    policy.scope_rules = frozenset(found)
    policy.deterministic = is_deterministic(m.source for m in policy.modules)


def _new_visible_cache(policy: LoadedPolicy) -> VisibilityCache:
    """Per policy set; none when the policy may answer differently twice."""
    return VisibilityCache(VISIBLE_CACHE_BYTES if policy.deterministic else 0)


def _warn_if_no_authz(policy: LoadedPolicy, policy_dir: str) -> None:
    policy.engine.set_input_json("{}")
    try:
        value = _rule_value(policy, f"data.{AUTHZ}.allow")
    except PolicyEngineError:
        return  # the rule exists; it just cannot be evaluated without a request
    if value is UNDEFINED and f"data.{AUTHZ}.allow" in policy.missing_rules:
        log.warning(
            "policy.no_authz_allow",
            policy_dir=policy_dir,
            revision=policy.revision,
            consequence="every request will be denied",
        )


class EmbeddedEngine:
    """Decides inputs with the policy directory compiled into regorus.

    ``EmbeddedEngine(policy_dir)`` loads the directory or raises
    :class:`PolicyLoadError` (start-up must fail on a broken policy).
    :meth:`reload` re-reads it on demand (wire SIGHUP to it);
    :meth:`reload_if_changed` is what a poller calls (see
    :mod:`dsfw.policy.watch`).
    """

    name = "embedded"

    def __init__(self, policy_dir: str | None, cache_size: int = DEFAULT_SIZE):
        self._policy_dir = policy_dir
        self._cache_size = cache_size
        self._policy: LoadedPolicy | None = None
        self._cache = DecisionCache(0)
        self._visible_cache = VisibilityCache(0)
        if policy_dir is None:
            return  # policies come as bundles (install); until then every request is denied
        self._fingerprint = fingerprint(policy_dir)
        self._policy = load_policy_dir(policy_dir)
        _find_scope_rules(self._policy)
        self._cache = self._new_cache(self._policy)
        self._visible_cache = _new_visible_cache(self._policy)
        log.info("policy.loaded", policy_dir=policy_dir, revision=self._policy.revision,
                 files=len(self._policy.modules) + len(self._policy.data_files))
        _warn_if_no_authz(self._policy, policy_dir)

    def install(self, policy: LoadedPolicy, origin: str) -> None:
        """Put a compiled policy set in force, as a whole (bundles use this)."""
        _find_scope_rules(policy)
        previous, self._policy = self._policy, policy
        self._cache = self._new_cache(policy)
        self._visible_cache = _new_visible_cache(policy)
        log.info("policy.activated", origin=origin, revision=policy.revision,
                 previous_revision=previous.revision if previous is not None else None,
                 files=len(policy.modules) + len(policy.data_files))
        _warn_if_no_authz(policy, origin)

    def _new_cache(self, policy: LoadedPolicy) -> DecisionCache:
        """A fresh cache for a policy set; none if the policy may answer differently twice."""
        deterministic = is_deterministic(m.source for m in policy.modules)
        if not deterministic:
            log.info("policy.decision_cache_off", revision=policy.revision,
                     reason="a policy calls a built-in that depends on more than input and data")
        return DecisionCache(self._cache_size if deterministic else 0)

    def close(self) -> Deferred:
        """Nothing to release: the compiled policy lives in process."""
        return succeed(None)

    def cache_stats(self) -> dict[str, int]:
        """Decision cache counters of the policy set in force (for /_dsfw/health)."""
        return {"hits": self._cache.hits, "misses": self._cache.misses, "bytes": self._cache.bytes}

    @property
    def policy_dir(self) -> str:
        return self._policy_dir

    def _active(self) -> LoadedPolicy:
        if self._policy is None:
            raise PolicyEngineError("no policy bundle has been activated yet")
        return self._policy

    def input_fields(self) -> frozenset[str] | None:
        """The top-level input fields the policy set in force can read; None when any.

        A policy deciding visibility (``visible``) is shown the objects requests
        name, as ``input.Item``: it counts as reading all of them.
        """
        policy = self._policy
        if policy is None or "visible" in policy.scope_rules:
            return None
        return policy.input_fields

    def policy_sources(self) -> PolicySources | None:
        """The policy set in force as sources a body worker compiles (None before a bundle came)."""
        return self._policy.sources if self._policy is not None else None

    def revision(self) -> str:
        """A short hash of the loaded files' names and contents, or the bundle's revision."""
        return self._policy.revision if self._policy is not None else ""

    def reload(self) -> bool:
        """Load the directory again; keep the policy in force if that fails.

        Returns True when a new policy set was installed. Never raises: it is
        called from a signal handler and a timer, where nobody could catch it.
        """
        if self._policy_dir is None:
            return False
        self._fingerprint = fingerprint(self._policy_dir)
        try:
            policy = load_policy_dir(self._policy_dir)
            _find_scope_rules(policy)
        except PolicyLoadError as e:
            log.error("policy.reload_failed", policy_dir=self._policy_dir, file=e.path,
                      error=str(e), revision_in_force=self._policy.revision)
            return False
        except Exception as e:  # a bug here must not take the running policy down
            log.exception("policy.reload_failed", policy_dir=self._policy_dir, error=repr(e),
                          revision_in_force=self._policy.revision)
            return False
        previous, self._policy = self._policy, policy
        self._cache = self._new_cache(policy)
        self._visible_cache = _new_visible_cache(policy)
        if policy.revision != previous.revision:
            log.info("policy.reloaded", policy_dir=self._policy_dir, revision=policy.revision,
                     previous_revision=previous.revision)
        _warn_if_no_authz(policy, self._policy_dir)
        return True

    def reload_if_changed(self) -> bool:
        """Reload when file names, sizes or mtimes changed since the last attempt.

        A failed attempt is remembered too, so a broken file is reported once,
        not on every poll, and the next edit is tried again.
        """
        if self._policy_dir is None:
            return False
        if fingerprint(self._policy_dir) == self._fingerprint:
            return False
        return self.reload()

    def evaluate(self, package: str, input_doc: dict[str, Any]) -> PolicyDecision:
        """Decide synchronously; raises PolicyEngineError on evaluation errors.

        regorus is handed only the top-level fields the policy set can read
        (:mod:`dsfw.policy.input_reads`), and decisions are remembered by those:
        parsing fields no rule can reach cost a decision most of its input
        hand-over, and two inputs that differ only there are decided alike.
        """
        check_package(package)
        policy, cache = self._active(), self._cache
        fields = policy.input_fields
        if fields is not None:
            input_doc = {k: v for k, v in input_doc.items() if k in fields}
        try:
            input_json = jsoncodec.dumps_input(input_doc)
        except (TypeError, ValueError) as e:
            raise PolicyEngineError(f"policy input cannot be encoded: {e}") from e
        cached = cache.get(package, input_json)
        if cached is not None:
            return cached
        try:
            policy.engine.set_input_json(input_json)
        except Exception as e:
            raise PolicyEngineError(f"policy input rejected: {describe_regorus_error(e)}") from e
        allow = _rule_value(policy, f"data.{package}.allow")
        deny = _rule_value(policy, f"data.{package}.deny")
        decision = make_decision(
            package, allow, deny, self.name, policy.revision,
            why=lambda: policy.explainer.explain(package, "allow", input_json).summary())
        if package == AUTHZ and policy.scope_rules:
            decision = self._with_scope(policy, decision)
        cache.put(package, input_json, decision)
        return decision

    @staticmethod
    def _with_scope(policy: LoadedPolicy, decision: PolicyDecision) -> PolicyDecision:
        """The scoping rules' values for the input already set (only for allowed requests)."""
        rules = policy.scope_rules
        labels = remove = UNDEFINED
        if decision.allowed and "labels" in rules:
            labels = _rule_value(policy, f"data.{AUTHZ}.labels")
        if decision.allowed and "remove" in rules:
            remove = _rule_value(policy, f"data.{AUTHZ}.remove")
        return replace(decision, filters="visible" in rules, deterministic=policy.deterministic,
                       **scope_fields(AUTHZ, labels, remove))

    def release_input(self) -> None:
        """Let go of the last input, which regorus keeps until the next one (a body
        worker's was a whole large body)."""
        if self._policy is not None:
            self._policy.engine.set_input_json("{}")

    def visible_items(self, package: str, input_doc: dict[str, Any],
                      items: list[dict[str, Any]]) -> list[bool]:
        """Synchronous :meth:`visible`; raises PolicyEngineError.

        Items decided before for the same request input are answered from the
        visibility cache; the others in one evaluation.
        """
        policy, cache = self._active(), self._visible_cache
        if package != AUTHZ or "visible" not in policy.scope_rules:
            return [True] * len(items)
        if not items:
            return []
        try:
            request_json = jsoncodec.dumps_sorted(
                {k: v for k, v in input_doc.items() if k not in ("Item", "Items")})
            item_jsons = [jsoncodec.dumps_sorted(item) for item in items]
        except (TypeError, ValueError) as e:
            raise PolicyEngineError(f"policy input cannot be encoded: {e}") from e
        request_key = cache.request_key(request_json)
        flags = [cache.get(request_key, j) for j in item_jsons]
        todo = [i for i, shown in enumerate(flags) if shown is None]
        if not todo:
            return flags
        listed = b'"Items":[' + b",".join(item_jsons[i] for i in todo) + b"]}"
        input_json = (request_json[:-1] + (b"," if len(request_json) > 2 else b"") + listed)
        try:
            policy.engine.set_input_json(input_json.decode("utf-8"))
        except Exception as e:
            raise PolicyEngineError(f"policy input rejected: {describe_regorus_error(e)}") from e
        try:
            answer = policy.engine.eval_query(visible_query(package))
            indices = answer["result"][0]["bindings"]["x"]
        except Exception as e:
            raise PolicyEngineError(f"policy evaluation of data.{package}.visible failed: "
                                    f"{describe_regorus_error(e)}") from e
        for i, shown in zip(todo, visible_flags(indices, len(todo))):
            flags[i] = shown
            cache.put(request_key, item_jsons[i], shown)
        return flags

    def visible(self, package: str, input_doc: dict[str, Any],
                items: list[dict[str, Any]]) -> "Deferred[list[bool]]":
        """:meth:`visible_items` as a Deferred."""
        try:
            return succeed(self.visible_items(package, input_doc, items))
        except PolicyEngineError as e:
            return fail(e)

    def explanation(self, package: str, input_doc: dict[str, Any], rule: str = "allow") -> Explanation:
        """The trace of ``data.<package>.<rule>``'s bodies for ``input_doc`` (``dsfw eval --explain``)."""
        check_package(package)
        try:
            input_json = jsoncodec.dumps_input(input_doc)
        except (TypeError, ValueError) as e:
            raise PolicyEngineError(f"policy input cannot be encoded: {e}") from e
        return self._active().explainer.explain(package, rule, input_json)

    def rule_value(self, rule: str, input_doc: dict[str, Any]) -> Any:
        """The value of any rule (``data.pkg.name``) for ``input_doc``; None when undefined.

        For tools (``dsfw learn`` asks the library which image references it checks).
        """
        try:
            self._active().engine.set_input_json(jsoncodec.dumps_input(input_doc))
        except (TypeError, ValueError) as e:
            raise PolicyEngineError(f"policy input cannot be encoded: {e}") from e
        try:  # as JSON: a set of arrays has no Python equivalent
            text = self._active().engine.eval_rule_as_json(rule)
        except Exception as e:
            if _NO_RULE in str(e).split("\n", 1)[0]:
                return None
            raise PolicyEngineError(f"evaluation of {rule} failed: {describe_regorus_error(e)}") from e
        value = json.loads(text) if text else None
        return value if value != "undefined" else None

    def deny_origins(self, input_doc: dict[str, Any]) -> dict[str, list[str]]:
        """Each deny message of any package for ``input_doc``, with the rules (``file:line``) that made it."""
        try:
            input_json = jsoncodec.dumps_input(input_doc)
        except (TypeError, ValueError) as e:
            raise PolicyEngineError(f"policy input cannot be encoded: {e}") from e
        return self._active().explainer.deny_origins(input_json)

    def explain(self, package: str, input_doc: dict[str, Any]) -> "Deferred[Explanation]":
        """:meth:`explanation` as a Deferred."""
        try:
            return succeed(self.explanation(package, input_doc))
        except PolicyEngineError as e:
            return fail(e)

    def decide(self, package: str, input_doc: dict[str, Any]) -> "Deferred[PolicyDecision]":
        """:meth:`evaluate` as a Deferred; failures come back as a failing Deferred."""
        try:
            return succeed(self.evaluate(package, input_doc))
        except PolicyEngineError as e:
            return fail(e)
        except Exception as e:
            return fail(PolicyEngineError(f"policy evaluation failed: {e!r}"))
