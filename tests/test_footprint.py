"""What a daemon loads at rest: only what its configuration needs.

Most of dsfw's resident memory is imported code (docs/benchmarks.md, "Memory
at rest").  pyOpenSSL and cryptography (which Twisted's reactor loads whenever
it can), treq and twisted.web.client, PyYAML each cost megabytes a daemon on a
UNIX socket with no URL never uses.  The service is built in a fresh process,
as ``twistd dsfw`` builds it (``makeService`` with the global reactor), and
its ``sys.modules`` is read: an import that brings one of them back eagerly
fails here rather than as a number in bench/RESULTS.md.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import dsfw

REPO = os.path.dirname(os.path.dirname(os.path.abspath(dsfw.__file__)))

# Loaded only by the configurations that use them.
HEAVY = ("OpenSSL", "cryptography", "service_identity", "twisted.internet.ssl",
         "twisted.protocols.tls", "treq", "twisted.web.client", "yaml",
         "dsfw.edge.tls", "dsfw.policy.opa",
         "dockerfile", "hypothesis", "pytest")

_BUILD = """
import json, sys
from dsfw.tap import Options, makeService
options = Options()
options.parseOptions(sys.argv[2:])
makeService(options)
with open(sys.argv[1], "w") as f:
    json.dump(sorted(name for name, module in sys.modules.items() if module is not None), f)
"""


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=REPO, **extra)
    return env


def loaded_modules(tmp_path, *argv: str) -> set[str]:
    out = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", _BUILD, str(out),
         "--target", str(tmp_path / "docker.sock"), "--policyDir", os.path.join(REPO, "policies"),
         *argv],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(json.loads(out.read_text()))


def test_default_configuration_loads_nothing_it_does_not_use(tmp_path):
    modules = loaded_modules(tmp_path, "--host", f"unix://{tmp_path}/dsfw.sock")
    # the service really was built, on the real reactor, with the embedded engine
    assert {"twisted.internet.reactor", "regorus", "dsfw.edge.server"} <= modules
    assert sorted(modules.intersection(HEAVY)) == []


@pytest.mark.parametrize("argv", [
    ["--host", "tcp://127.0.0.1:2376", "--tls-insecure-loopback"],
    ["--decision-log-url", "http://127.0.0.1:9/logs"],
    ["--opa-url", "http://127.0.0.1:9"],
], ids=["tcp-host", "decision-log-url", "opa-url"])
def test_tls_stays_available_where_it_may_be_used(tmp_path, argv):
    # A TCP listener, or any URL (an http:// server may redirect to https://).
    modules = loaded_modules(tmp_path, "--host", f"unix://{tmp_path}/dsfw.sock", *argv)
    assert {"OpenSSL", "twisted.internet.ssl"} <= modules


_REGORUS_ERROR = """
import dsfw.policy.embedded
import regorus
try:
    regorus.Engine().add_policy("broken.rego", "package broken\\nallow {")
except Exception as e:
    print("Stack backtrace" in str(e))
"""


@pytest.mark.parametrize("operator, backtrace", [(None, "False"), ("1", "True")])
def test_regorus_errors_carry_no_backtrace_unless_asked(operator, backtrace):
    # With RUST_BACKTRACE=1 every regorus error symbolized a Rust backtrace, whose
    # tables then stayed resident (about 60 MB for the shipped v0 policies).
    env = _env(RUST_BACKTRACE="1")
    env.pop("RUST_LIB_BACKTRACE", None)
    if operator is not None:
        env["RUST_LIB_BACKTRACE"] = operator
    done = subprocess.run([sys.executable, "-c", _REGORUS_ERROR], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == backtrace
