"""``dsfw test`` and ``dsfw eval``: exit statuses, output, replay of recorded inputs."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

from dsfw.cli import app as cli
from dsfw.ops.recorder import InputRecorder
from dsfw.policy import PolicyDecision

REPO = Path(__file__).resolve().parents[1]

POLICY = """package docker.authz
import rego.v1

default allow := true
deny contains "privileged containers are not allowed" if input.Privileged
deny contains sprintf("env %s", [e]) if { some e in input.Body.Env; startswith(e, "SECRET=") }
"""
TESTS = """package docker.authz_test
import rego.v1

test_allows_plain if data.docker.authz.allow with input as {"Privileged": false}
test_denies_privileged if "privileged containers are not allowed" in data.docker.authz.deny with input as {"Privileged": true}
test_wrong if count(data.docker.authz.deny) == 0 with input as {"Privileged": true}
boom if { some x in input.n; x }
test_error if boom with input as {"n": null}
"""


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = cli.main(list(argv), out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def policies(tmp_path: Path, **files: str) -> str:
    d = tmp_path / "p"
    d.mkdir()
    for name, text in files.items():
        (d / name).write_text(text)
    return str(d)


def test_test_reports_pass_fail_and_error(tmp_path):
    d = policies(tmp_path, **{"authz.rego": POLICY, "authz_test.rego": TESTS})
    status, out, _ = run("test", "--policyDir", d)
    assert status == 1
    assert "data.docker.authz_test.test_wrong: FAIL" in out
    assert "data.docker.authz_test.test_error: ERROR" in out
    assert out.rstrip().endswith("PASS: 2/4\nFAIL: 1/4\nERROR: 1/4")
    assert "test_allows_plain" not in out  # passes are listed with -v only


def test_test_all_passing_verbose_and_run_filter(tmp_path):
    d = policies(tmp_path, **{"authz.rego": POLICY, "authz_test.rego": TESTS})
    status, out, _ = run("test", "--policyDir", d, "-v", "--run", "test_(allows|denies)")
    assert status == 0, out
    assert "data.docker.authz_test.test_allows_plain: PASS" in out
    assert out.rstrip().endswith("PASS: 2/2")


def test_test_sees_data_files_like_dsfw(tmp_path):
    d = policies(tmp_path, **{
        "a.rego": "package a\nimport rego.v1\ntest_data if data.site.name == \"lab\"\n"})
    (Path(d) / "site").mkdir()
    (Path(d) / "site" / "data.yaml").write_text("name: lab\n")
    assert run("test", "--policyDir", d)[0] == 0


def test_test_without_tests_or_with_a_broken_policy(tmp_path):
    assert run("test", "--policyDir", policies(tmp_path, **{"a.rego": POLICY}))[0] == 1
    status, _, err = run("test", "--policyDir", str(tmp_path / "missing"))
    assert status == 2 and "does not exist" in err


def test_eval_allowed(tmp_path):
    d = policies(tmp_path, **{"authz.rego": POLICY})
    status, out, _ = run("eval", "--policyDir", d, "--method", "get", "--path", "/v1.41/containers/json?all=1")
    assert status == 0
    doc = json.loads(out[out.index("{"):out.index("\ndata.docker.authz")])
    assert doc["PathPlain"] == "/containers/json" and doc["Query"] == {"all": ["1"]}
    assert doc["Method"] == "GET" and doc["Version"] == "1.41"
    assert out.endswith("data.docker.authz: allowed\n")


def test_eval_denied_with_reasons_and_canonical_body(tmp_path):
    d = policies(tmp_path, **{"authz.rego": POLICY})
    body = tmp_path / "body.json"
    # lower-case keys: dockerd (and so dsfw's canonical body) folds them
    body.write_text('{"image": "busybox", "hostconfig": {"privileged": true, "binds": null}}')
    status, out, _ = run("eval", "--policyDir", d, "--method", "POST", "--path",
                         "/v1.41/containers/create", "--body", str(body), "--header",
                         "X-Registry-Auth: s3cr3t")
    assert status == 1
    assert "data.docker.authz: denied\n  - privileged containers are not allowed\n" in out
    assert '"Privileged": true' in out and '"HostConfig"' in out
    assert "s3cr3t" not in out


def test_eval_build_with_dockerfile(tmp_path):
    d = policies(tmp_path, **{"authz.rego": POLICY, "build.rego": (REPO / "policies/build.rego").read_text()})
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM node:18\n")
    status, out, _ = run("eval", "--policyDir", d, "-q", "--method", "POST", "--path", "/build",
                         "--dockerfile", str(dockerfile))
    assert status == 1
    assert "data.docker.authz: allowed\ndata.docker.build: denied\n" in out
    dockerfile.write_text("FROM busybox\n")
    assert run("eval", "--policyDir", d, "-q", "--method", "POST", "--path", "/build",
               "--dockerfile", str(dockerfile))[0] == 0


def test_eval_replays_a_recorded_decision_and_a_bare_input(tmp_path):
    d = policies(tmp_path, **{"authz.rego": POLICY})
    live = {"Method": "POST", "PathPlain": "/containers/create", "Privileged": False,
            "Body": {"Env": ["SECRET=x"]}, "Headers": {}}
    path = InputRecorder(str(tmp_path / "rec"), lambda: 1000.5).record(
        live, PolicyDecision(False, "docker.authz", ("env SECRET=x",)))
    # the recording holds the redacted value, so the replay no longer matches "SECRET=x"...
    status, out, _ = run("eval", "--policyDir", d, "-q", "--input", path)
    assert "recorded: data.docker.authz: denied\n" in out
    assert "env SECRET=<redacted>" in out and status == 1
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({**live, "Body": {}}))
    assert run("eval", "--policyDir", d, "-q", "--input", str(bare)) == (0, "data.docker.authz: allowed\n", "")


def test_eval_bad_inputs_exit_2(tmp_path):
    d = policies(tmp_path, **{"authz.rego": POLICY})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    status, _, err = run("eval", "--policyDir", d, "--input", str(bad))
    assert status == 2 and "cannot read an input document" in err
    status, _, err = run("eval", "--policyDir", d, "--method", "GET", "--path", "/v1.41/a%zz")
    assert status == 2 and err.startswith("dsfw eval: dsfw: ")
    body = tmp_path / "dup.json"
    body.write_text('{"Image": "a", "Image": "b"}')
    assert run("eval", "--policyDir", d, "--method", "POST", "--path", "/containers/create",
               "--body", str(body))[0] == 2
    assert run("eval", "--policyDir", d, "--method", "GET")[0] == 2  # no --path
    assert run("eval", "--policyDir", str(tmp_path / "nope"), "--method", "GET", "--path", "/_ping")[0] == 2
    assert run("eval", "--policyDir", d, "--input", str(tmp_path / "none.json"))[0] == 2
    bad.write_text("[1]")
    assert run("eval", "--policyDir", d, "--input", str(bad))[0] == 2


def test_eval_evaluation_error_is_exit_2(tmp_path):
    d = policies(tmp_path, **{"a.rego": "package docker.authz\nimport rego.v1\n"
                                        "allow if { some x in input.Body.Binds; x }\n"})
    f = tmp_path / "in.json"
    f.write_text('{"Method": "POST", "Body": {"Binds": null}}')
    status, _, err = run("eval", "--policyDir", d, "--input", str(f))
    assert status == 2 and "policy evaluation" in err


def test_record_help_says_how_to_enable_recording():
    out = subprocess.run([sys.executable, "-m", "dsfw.cli", "record", "--help"], capture_output=True,
                         text=True, timeout=60, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert out.returncode == 0
    assert "twistd dsfw --record-dir DIR" in out.stdout


def test_record_lists_and_redecides(tmp_path):
    rec = InputRecorder(str(tmp_path / "rec"), iter([1.0, 2.0]).__next__)
    rec.record({"Method": "POST", "PathPlain": "/containers/create", "Privileged": True},
               PolicyDecision(True, "docker.authz"))
    rec.record({"Method": "GET", "PathPlain": "/_ping", "Privileged": False},
               PolicyDecision(True, "docker.authz"))
    status, out, _ = run("record", str(tmp_path / "rec"))
    assert status == 0 and "2 recorded decisions" in out and "POST /containers/create docker.authz allowed" in out
    d = policies(tmp_path, **{"authz.rego": POLICY})
    status, out, _ = run("record", str(tmp_path / "rec"), "--policyDir", d)
    assert status == 1
    assert "-> now denied\n  - privileged containers are not allowed" in out
    assert "1 decided differently now" in out
