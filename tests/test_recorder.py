"""dsfw.ops.recorder: one redacted JSON file per decision, readable by dsfw eval --input."""
from __future__ import annotations

import json
import os

from dsfw.policy import PolicyDecision
from dsfw.ops.recorder import InputRecorder, input_of

LIVE = {
    "Method": "POST",
    "PathPlain": "/containers/create",
    "Headers": {"X-Registry-Auth": "c2VjcmV0", "X-Registry-Config": "e30=",
                "Authorization": "Bearer t0k3n", "User-Agent": "Docker-Client/28"},
    "Body": {"Image": "busybox", "Env": ["PASSWORD=hunter2", "TERM=xterm"]},
}


def test_one_redacted_file_per_decision(tmp_path):
    rec = InputRecorder(str(tmp_path / "rec"), lambda: 1715000000.25)
    first = rec.record(LIVE, PolicyDecision(False, "docker.authz", ("no",), revision="abc"))
    second = rec.record(LIVE, PolicyDecision(True, "docker.build"))
    assert first != second and sorted(os.listdir(tmp_path / "rec")) == sorted(
        [os.path.basename(first), os.path.basename(second)])
    text = open(first).read()
    for secret in ("c2VjcmV0", "e30=", "t0k3n", "hunter2", "xterm"):
        assert secret not in text
    record = json.loads(text)
    assert record["time"] == 1715000000.25
    assert record["decision"] == {"package": "docker.authz", "allowed": False, "revision": "abc"}
    assert record["reasons"] == ["no"]
    assert record["input"]["Headers"]["X-Registry-Auth"] == "<redacted>"
    assert record["input"]["Headers"]["User-Agent"] == "Docker-Client/28"
    assert record["input"]["Body"]["Env"] == ["PASSWORD=<redacted>", "TERM=<redacted>"]
    assert LIVE["Body"]["Env"][0] == "PASSWORD=hunter2"  # the live input is untouched
    assert os.stat(first).st_mode & 0o077 == 0


def test_write_failure_is_logged_not_raised(tmp_path):
    rec = InputRecorder(str(tmp_path / "rec"), lambda: 1.0)
    os.chmod(tmp_path / "rec", 0o500)
    try:
        if os.geteuid() == 0:  # root writes anyway: make the directory vanish instead
            os.chmod(tmp_path / "rec", 0o700)
            os.rmdir(tmp_path / "rec")
        assert rec.record(LIVE, PolicyDecision(True, "docker.authz")) is None
    finally:
        if (tmp_path / "rec").exists():
            os.chmod(tmp_path / "rec", 0o700)


def test_input_of_accepts_recordings_opa_shape_and_bare_inputs():
    assert input_of({"input": {"Method": "GET"}, "decision": {}}) == {"Method": "GET"}
    assert input_of({"input": {"Method": "GET"}}) == {"Method": "GET"}
    assert input_of({"Method": "GET", "input": "a field of a bare input"})["Method"] == "GET"
    for bad in ([1], {"input": [1]}):
        try:
            input_of(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} accepted")
