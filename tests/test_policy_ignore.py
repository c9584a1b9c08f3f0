"""A subdirectory marked .dsfw-ignore is a collection to copy from, not a policy in force."""
from __future__ import annotations

import os

from dsfw.policy.embedded import EmbeddedEngine
from dsfw.policy.loader import IGNORE_MARKER, policy_files

REPO = os.path.join(os.path.dirname(__file__), "..")


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def test_marked_subdirectory_is_skipped_but_loads_as_the_root(tmp_path):
    write(tmp_path / "authz.rego", "package docker.authz\nimport rego.v1\nallow if input.Method == \"GET\"\n")
    write(tmp_path / "lib" / "all.rego", "package docker.authz\nimport rego.v1\nallow := true\n")
    write(tmp_path / "lib" / IGNORE_MARKER, "")
    engine = EmbeddedEngine(str(tmp_path))
    assert not engine.evaluate("docker.authz", {"Method": "POST"}).allowed
    assert [os.path.basename(p) for p in policy_files(str(tmp_path))] == ["authz.rego"]
    assert EmbeddedEngine(str(tmp_path / "lib")).evaluate("docker.authz", {"Method": "POST"}).allowed


def test_the_shipped_policies_dir_runs_only_the_original_examples():
    """The original's two examples, and who may read dsfw's own endpoints."""
    names = sorted(os.path.relpath(p, os.path.join(REPO, "policies"))
                   for p in policy_files(os.path.join(REPO, "policies")))
    assert names == ["authz.rego", "build.rego", "dsfw.rego"]
    assert len(policy_files(os.path.join(REPO, "policies", "library"))) > 10
