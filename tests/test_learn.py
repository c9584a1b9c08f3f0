"""dsfw learn on recordings made here: routes per caller, values narrowed, tests generated."""
from __future__ import annotations

import io
import json
from pathlib import Path

from dsfw.cli import app
from dsfw.cli.eval import request_input
from dsfw.ops.recorder import decision_record
from dsfw.policy import AUTHZ
from dsfw.policy.embedded import EmbeddedEngine

ALICE = {"Uid": 1000, "Gid": 1000, "User": "alice", "Group": "dev", "Pid": 1}
BOB = {"Uid": 1001, "Gid": 1001, "User": "bob", "Group": "ops", "Pid": 2}
SECRET = "s3cr3t-marker-4242"


def record(directory: Path, n: int, method: str, path: str, body: bytes = b"", peer=ALICE,
           headers=()) -> dict:
    doc, _ = request_input(method, path, body, list(headers), peer)
    directory.mkdir(exist_ok=True)
    (directory / f"{n:04d}-docker.authz.json").write_text(
        json.dumps(decision_record(doc, AUTHZ, True, (), "r", float(n))))
    return doc


def cli(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    return app.main(list(argv), out=out, err=err), out.getvalue() + err.getvalue()


def recordings(tmp_path: Path) -> Path:
    rec = tmp_path / "rec"
    record(rec, 1, "GET", "/v1.41/containers/json")
    record(rec, 2, "POST", "/v1.41/containers/create?name=web",
           json.dumps({"Image": "busybox:1.36", "Env": [f"TOKEN={SECRET}"],
                       "HostConfig": {"CapAdd": ["NET_ADMIN"], "Binds": ["/srv/data:/data"]}}).encode())
    record(rec, 3, "POST", "/v1.41/containers/web/start")
    record(rec, 4, "GET", "/v1.41/containers/web/logs?stdout=1")
    record(rec, 5, "GET", "/v1.41/containers/other/logs?stdout=1")
    record(rec, 6, "GET", "/_ping", peer=BOB)
    record(rec, 7, "POST", "/v1.41/auth", json.dumps({"username": "u", "password": SECRET}).encode())
    return rec


def test_learned_policy_allows_exactly_what_was_recorded(tmp_path):
    rec = recordings(tmp_path)
    out = tmp_path / "out"
    code, output = cli("learn", str(rec), "--output", str(out))
    assert code == 0, output
    assert "learned 6 routes for 2 callers from 7 recordings" in output

    code, output = cli("test", "--policyDir", str(out))
    assert code == 0 and "PASS: 7/7" in output, output  # one test per distinct recorded request
    engine = EmbeddedEngine(str(out))

    def decide(method, path, body=b"", peer=ALICE):
        doc, _ = request_input(method, path, body, [], peer)
        return engine.evaluate(AUTHZ, doc)

    # by template: a container never named while learning
    assert decide("GET", "/v1.41/containers/third/logs").allowed
    assert decide("POST", "/containers/create",
                  json.dumps({"Image": "busybox:1.36", "HostConfig": {"Binds": ["/srv/data:/x"],
                                                                      "CapAdd": ["NET_ADMIN"]}}).encode()
                  ).allowed
    # per caller: bob only pinged
    denied = decide("GET", "/v1.41/containers/json", peer=BOB)
    assert not denied.allowed
    assert "GET /containers/json by uid:1001 was not seen while learning" in denied.message()
    # values narrowed through the library
    assert "not from an allowed registry" in decide(
        "POST", "/containers/create", b'{"Image": "alpine:3"}').message()
    assert "host path /etc cannot be mounted" in decide(
        "POST", "/containers/create",
        b'{"Image": "busybox:1.36", "HostConfig": {"Binds": ["/etc:/x"]}}').message()
    assert "capabilit" in decide(
        "POST", "/containers/create",
        b'{"Image": "busybox:1.36", "HostConfig": {"CapAdd": ["SYS_ADMIN"]}}').message()
    assert "privileged containers are not allowed" in decide(
        "POST", "/containers/create",
        b'{"Image": "busybox:1.36", "HostConfig": {"Privileged": true}}').message()
    # an endpoint never used
    assert not decide("POST", "/v1.41/containers/web/pause").allowed
    # nothing secret reaches the generated files
    for path in out.iterdir():
        assert SECRET not in path.read_text(), path.name


def test_learn_refuses_to_overwrite_and_needs_recordings(tmp_path):
    (tmp_path / "empty").mkdir()
    code, output = cli("learn", str(tmp_path / "empty"), "--output", str(tmp_path / "o"))
    assert code == 2 and "holds no recorded decisions" in output
    rec = recordings(tmp_path)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.rego").write_text("package x\n")
    code, output = cli("learn", str(rec), "--output", str(tmp_path / "busy"))
    assert code == 2 and "is not empty" in output


def test_requests_without_a_caller_are_reported_not_learned(tmp_path):
    rec = tmp_path / "rec"
    record(rec, 1, "GET", "/v1.41/containers/json", peer=None)
    record(rec, 2, "GET", "/_ping")
    code, output = cli("learn", str(rec), "--output", str(tmp_path / "out"))
    assert code == 0, output
    assert "skipped 0001-docker.authz.json: no caller (input.Peer)" in output
