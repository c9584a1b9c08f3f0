"""Nothing secret leaves dsfw: every secret-bearing request, through a real dsfw and dockerd.

Two daemons take the whole corpus of :mod:`secret_requests`: one allows it
(so requests reach dockerd, which refuses them harmlessly) and one denies
everything with messages that quote the input and decoded credentials.
Both run with ``--verbose``, ``--record-dir``, ``--log-file`` and
``--decision-log-url`` (a collector on loopback keeps what is shipped); afterwards
``dsfw eval`` replays every recording and decides every request again, and
``dsfw record`` re-decides the directories.  No marker may appear in any file
under the test's directories, in any process output or in a denial a client
received.  The policies themselves must have seen the markers (the echoing
policy's denials carry ``saw-secret``), so the test cannot pass by accident.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dsfw.cli.app import main as dsfw_main
from dsfw.testing.e2e import policy_dir, raw_request, subprocess_env
from dsfw.testing.fleet import Collector
from dsfw.testing.secrets import (ALLOW_BUILDS, ALLOW_BUT_SWARM, ECHO_DENY, ECHO_DENY_BUILD,
                             secret_requests)

pytestmark = pytest.mark.requires_docker

SAW = """
deny contains "saw-secret" if contains(json.marshal(input), "{prefix}")
"""


def _files_under(*roots: Path) -> list[Path]:
    return [Path(d) / f for root in roots for d, _, files in os.walk(root) for f in files]


def _send_all(sock: str, cases) -> list[bytes]:
    replies = []
    for case in cases:
        try:
            replies.append(raw_request(sock, case.raw(), timeout=60))
        except OSError as e:  # a reset after a refusal is an answer too
            replies.append(repr(e).encode())
    return replies


def _eval(*argv: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    dsfw_main(list(argv), out, err)
    return out.getvalue() + err.getvalue()


def test_no_secret_reaches_a_log_a_record_or_eval_output(dsfw_factory, tmp_path):
    cases = secret_requests()
    prefix = cases[0].marker[:-3]
    allow = policy_dir(tmp_path, {"authz.rego": ALLOW_BUT_SWARM, "build.rego": ALLOW_BUILDS},
                       "allow")
    echo = policy_dir(tmp_path, {"authz.rego": ECHO_DENY + SAW.format(prefix=prefix),
                                 "build.rego": ECHO_DENY_BUILD}, "echo")
    records = {"allow": tmp_path / "rec-allow", "echo": tmp_path / "rec-echo"}
    collector = Collector()
    try:
        daemons = {
            name: dsfw_factory(policies, "--verbose", "--record-dir", str(records[name]),
                               "--log-file", str(tmp_path / f"{name}.jsonl"),
                               "--allow-remote-context", "--decision-log-url", collector.url)
            for name, policies in (("allow", allow), ("echo", echo))}
        outputs = {name: _send_all(proc.socket, cases) for name, proc in daemons.items()}
        for proc in daemons.values():
            proc.stop()  # a stop ships what is buffered
        shipped = json.dumps(collector.events, ensure_ascii=False)
    finally:
        collector.close()
    assert sum(1 for e in collector.events if e["input"]["PathPlain"] != "/_ping") >= len(cases)
    assert shipped.count("<redacted>") >= len(cases)  # the shipped inputs were redacted, not empty

    # the echoing policy saw each literal marker, and the client got a scrubbed denial
    for case, reply in zip(cases, outputs["echo"]):
        assert reply.startswith(b"HTTP/1.1 403 ") or reply.startswith(b"HTTP/1.1 400 "), (
            case.name, reply[:300])
        if case.marker.encode() in case.raw():
            assert b"saw-secret" in reply, (case.name, reply[:300])
    # the allowing daemon relayed what it should (dockerd answered, not dsfw)
    relayed = [c.name for c, r in zip(cases, outputs["allow"]) if b'"message":"dsfw:' not in r
               and b'"message": "dsfw:' not in r]
    assert {"auth password", "auth paſſword", "container create", "exec", "volume create",
            "plugin set", "build args"} <= set(relayed), relayed

    texts = []
    for name, proc in daemons.items():
        recorded = sorted(records[name].glob("*.json"))
        assert len(recorded) >= len(cases) - 2, (name, len(recorded))  # refusals before a decision
        for record in recorded:
            texts.append(_eval("eval", "--policyDir", str(echo), "--input", str(record)))
            texts.append(_eval("eval", "--policyDir", str(allow), "--input", str(record)))
        record_cli = subprocess.run(
            [sys.executable, "-m", "dsfw.cli", "record", str(records[name]), "--policyDir",
             str(allow if name == "echo" else echo)],
            capture_output=True, env=subprocess_env(), timeout=120)
        texts.append((record_cli.stdout + record_cli.stderr).decode("utf-8", "replace"))
        assert record_cli.returncode in (0, 1), record_cli
    # dsfw eval on the live requests, as an operator would run it
    for case in cases:
        argv = ["eval", "--policyDir", str(echo), "--explain", "--method", case.method,
                "--path", case.target]
        for k, v in case.headers:
            argv += ["--header", f"{k}:{v}"]
        if case.body:
            body = tmp_path / "body.json"
            body.write_bytes(case.body)
            argv += ["--body", str(body)]
        if case.dockerfile is not None:
            dockerfile = tmp_path / "Dockerfile"
            dockerfile.write_bytes(case.dockerfile)
            argv += ["--dockerfile", str(dockerfile)]
        text = _eval(*argv)
        assert "data.docker.authz: denied" in text, (case.name, text[-400:])
        texts.append(text)
    texts.append(shipped)
    logs = sorted(tmp_path.glob("*.jsonl"))  # dsfw's events (--log-file), after it stopped
    assert len(logs) == 2
    for log in logs:
        text = log.read_text("utf-8", "replace")
        assert "policy.query" in text and "policy.decision" in text and "request.refused" in text

    leaks = []
    for path in _files_under(tmp_path):
        if path.name in ("body.json", "Dockerfile") or path.suffix == ".rego":
            continue  # the test's own inputs
        data = path.read_bytes()
        leaks += [(str(path), c.name) for c in cases if c.marker.encode() in data]
    for text in texts:
        leaks += [("output", c.name, text[max(0, text.find(c.marker) - 200):text.find(c.marker) + 50])
                  for c in cases if c.marker in text]
    for name, replies in outputs.items():
        if name == "echo":  # dockerd's own answers may quote what the client sent it
            leaks += [(f"{name} reply", c.name) for c, r in zip(cases, replies)
                      if c.marker.encode() in r]
    assert not leaks, leaks[:10]
    assert sum(1 for _ in (tmp_path / "rec-echo").glob("*.json")) > 0
    assert (tmp_path / "allow.jsonl").read_text().count("<redacted>") >= len(cases)
    assert len(list(tmp_path.glob("dsfw*.log"))) == 2  # twistd's own output was searched too
