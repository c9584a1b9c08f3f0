"""A policy directory that cannot be read completely is a broken edit: the last good policy stays.

Before, ``os.walk`` skipped what it could not list: with the descriptors used
up a reload installed an empty policy set, and an unlistable subdirectory's
deny rules were dropped -- a fail-open.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from dsfw.policy.embedded import EmbeddedEngine
from dsfw.policy.loader import PolicyLoadError, fingerprint, load_policy_dir

ALLOW = "package docker.authz\nimport rego.v1\nallow := true\n"
DENY_X = 'package docker.authz\nimport rego.v1\ndeny contains "no x" if input.PathPlain == "/x"\n'


def make_dir(root, files):
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def denied_x(engine) -> bool:
    return not engine.evaluate("docker.authz", {"PathPlain": "/x"}).allowed


def test_an_unlistable_subdirectory_fails_the_load_and_the_reload_keeps_its_rules(
        tmp_path, monkeypatch):
    root = make_dir(tmp_path, {"authz.rego": ALLOW, "team/deny.rego": DENY_X})
    engine = EmbeddedEngine(str(root))
    revision = engine.revision()
    assert denied_x(engine)
    (root / "team" / "more.rego").write_text("package docker.authz\n")  # an edit to pick up
    real_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path).endswith("team"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)
    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(PolicyLoadError, match="team: cannot list the directory"):
        load_policy_dir(str(root))
    assert fingerprint(str(root)) is None
    assert engine.reload_if_changed() is False
    assert engine.revision() == revision and denied_x(engine)
    monkeypatch.setattr(os, "scandir", real_scandir)
    assert engine.reload_if_changed() is True  # readable again: the edit is loaded
    assert denied_x(engine)


_OUT_OF_FDS = textwrap.dedent("""
    import os, resource, sys
    from dsfw.policy.embedded import EmbeddedEngine
    root = sys.argv[1]
    engine = EmbeddedEngine(root)
    before = engine.revision()
    with open(os.path.join(root, "extra.rego"), "w") as f:
        f.write("package docker.authz\\n")
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    held = []
    try:
        while True:
            held.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        pass
    changed = engine.reload_if_changed()
    x = engine.evaluate("docker.authz", {"PathPlain": "/x"}).allowed
    y = engine.evaluate("docker.authz", {"PathPlain": "/y"}).allowed
    print("RESULT", changed, engine.revision() == before, x, y)
    for fd in held:
        os.close(fd)
    print("RESULT", engine.reload_if_changed(), engine.revision() == before,
          engine.evaluate("docker.authz", {"PathPlain": "/x"}).allowed)
""")


def test_with_no_descriptor_left_a_reload_keeps_the_policy_in_force(tmp_path):
    root = make_dir(tmp_path / "p", {"authz.rego": ALLOW, "team/deny.rego": DENY_X})
    done = subprocess.run([sys.executable, "-c", _OUT_OF_FDS, str(root)], capture_output=True,
                          text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert done.returncode == 0, done.stderr
    out_of_fds, recovered = [line[7:] for line in done.stdout.splitlines()
                             if line.startswith("RESULT ")]
    # not reloaded, same revision, /x still denied by the subdirectory's rule, /y allowed
    assert out_of_fds == "False True False True", done.stdout
    assert recovered == "True False False", done.stdout
