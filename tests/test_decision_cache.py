"""The decision cache: only for policies that answer the same input the same way."""
from __future__ import annotations

import os

from dsfw.policy import PolicyDecision
from dsfw.policy.decision_cache import DecisionCache, is_deterministic
from dsfw.policy.embedded import EmbeddedEngine


def test_nondeterministic_builtins_disable_caching():
    assert is_deterministic(["package docker.authz\nallow if input.Method == \"GET\""])
    assert not is_deterministic(["allow if time.now_ns() > 0"])
    assert not is_deterministic(["x := http.send({\"method\": \"get\"})"])
    assert not is_deterministic(["r := rand.intn(\"k\", 10)"])


def test_lru_bound_and_counters():
    cache = DecisionCache(size=2)
    d = PolicyDecision(True, "docker.authz")
    cache.put("docker.authz", "a", d)
    cache.put("docker.authz", "b", d)
    assert cache.get("docker.authz", "a") is d  # a is now the most recent
    cache.put("docker.authz", "c", d)  # evicts b
    assert cache.get("docker.authz", "b") is None
    assert cache.get("docker.authz", "c") is d
    assert cache.get("docker.build", "c") is None  # keyed by package too
    assert (cache.hits, cache.misses) == (2, 2)


def test_disabled_cache_never_answers():
    cache = DecisionCache(size=0)
    cache.put("docker.authz", "a", PolicyDecision(True, "docker.authz"))
    assert cache.get("docker.authz", "a") is None


def _write(directory, text):
    with open(os.path.join(directory, "p.rego"), "w") as f:
        f.write(text)


def test_engine_caches_and_a_reload_starts_afresh(tmp_path):
    _write(tmp_path, 'package docker.authz\nimport rego.v1\nallow if input.Method == "GET"\n')
    engine = EmbeddedEngine(str(tmp_path))
    doc = {"Method": "GET", "Path": "/_ping?"}
    assert engine.evaluate("docker.authz", doc).allowed
    assert engine.evaluate("docker.authz", doc).allowed
    assert engine.cache_stats()["hits"] == 1 and engine.cache_stats()["misses"] == 1
    _write(tmp_path, 'package docker.authz\nimport rego.v1\nallow if input.Method == "POST"\n')
    assert engine.reload()
    assert not engine.evaluate("docker.authz", doc).allowed  # not the cached answer
    assert (engine.cache_stats()["hits"], engine.cache_stats()["misses"]) == (0, 1)


def test_engine_with_a_clock_dependent_policy_does_not_cache(tmp_path):
    _write(tmp_path, 'package docker.authz\nimport rego.v1\nallow if time.now_ns() > 0\n')
    engine = EmbeddedEngine(str(tmp_path))
    for _ in range(3):
        assert engine.evaluate("docker.authz", {"Method": "GET"}).allowed
    assert engine.cache_stats()["hits"] == 0


def test_keys_are_digests_so_huge_inputs_cost_no_more_than_small_ones():
    cache = DecisionCache(size=100, max_bytes=1 << 20, max_input_bytes=1 << 22)
    d = PolicyDecision(True, "docker.authz")
    for i in range(20):
        cache.put("docker.authz", f"{i}" + "x" * (1 << 20), d)
    assert cache.get("docker.authz", "3" + "x" * (1 << 20)) is d
    assert cache.bytes < 20 * 2048  # not 20 MB of keys


def test_inputs_above_the_limit_are_not_cached():
    cache = DecisionCache(size=100, max_input_bytes=1000)
    d = PolicyDecision(True, "docker.authz")
    cache.put("docker.authz", "y" * 1001, d)
    assert cache.get("docker.authz", "y" * 1001) is None
    assert cache.bytes == 0 and cache.misses == 0  # not even looked up


def test_bytes_bound_evicts_least_recent_and_skips_huge_decisions():
    cache = DecisionCache(size=10_000, max_bytes=64 * 1024)
    small = PolicyDecision(False, "docker.authz", ("no",))
    for i in range(1000):
        cache.put("docker.authz", str(i), small)
        assert cache.bytes <= 64 * 1024
    assert cache.get("docker.authz", "999") is small
    assert cache.get("docker.authz", "0") is None  # evicted
    chatty = PolicyDecision(False, "docker.authz", ("m" * 10_000,))  # > 1/16 of the bound
    cache.put("docker.authz", "chatty", chatty)
    assert cache.get("docker.authz", "chatty") is None
    assert cache.get("docker.authz", "999") is small  # nothing flushed for it
