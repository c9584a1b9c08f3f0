"""Event log format: human-readable on a terminal, JSON lines in files; --log-file reopens."""
from __future__ import annotations

import json
import os
import pty
import sys

import pytest
import structlog

from dsfw.ops import logsetup


def _emit():
    structlog.get_logger("dsfw").info("policy.decision", allowed=False, path="/x", reasons=["no"])


def test_auto_writes_json_lines_to_a_log_file(tmp_path):
    path = tmp_path / "dsfw.log"
    logsetup.configure(fmt="auto", log_file=str(path))
    _emit()
    record = json.loads(path.read_text().splitlines()[-1])
    assert record["event"] == "policy.decision" and record["allowed"] is False
    assert record["level"] == "info" and "timestamp" in record


def test_auto_is_human_readable_on_a_terminal(monkeypatch):
    master, slave = pty.openpty()
    terminal = os.fdopen(slave, "w")
    monkeypatch.setattr(sys, "stdout", terminal)
    try:
        logsetup.configure(fmt="auto", direct=False)
        _emit()
        terminal.flush()
        line = os.read(master, 4096).decode()
    finally:
        terminal.close()
        os.close(master)
    assert "[info] policy.decision" in line and "allowed=False" in line
    assert not line.lstrip().startswith("{")


def test_log_file_is_reopened_after_rotation(tmp_path):
    path = tmp_path / "dsfw.log"
    logsetup.configure(fmt="json", log_file=str(path))
    _emit()
    os.rename(path, tmp_path / "dsfw.log.1")
    logsetup.reopen_log_file()
    _emit()
    assert len((tmp_path / "dsfw.log.1").read_text().splitlines()) == 1
    assert len(path.read_text().splitlines()) == 1


def test_unknown_format_is_refused():
    with pytest.raises(ValueError):
        logsetup.configure(fmt="xml")


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_every_event_is_bounded_in_bytes(tmp_path, fmt):
    path = tmp_path / "dsfw.log"
    logsetup.configure(fmt=fmt, log_file=str(path))
    huge_body = {"HostConfig": {"Binds": [f"/srv/{i}:/m/{i}" for i in range(300_000)]},
                 "Env": ["A=" + "x" * 5_000_000]}
    structlog.get_logger("dsfw").info(
        "policy.query", path="/containers/create?" + "q" * 1_000_000,
        reasons=[f"bind /srv/{i} refused" for i in range(100_000)], input={"Body": huge_body})
    text = path.read_text()
    assert len(text) < logsetup.MAX_EVENT_CHARS + 2 * logsetup.MAX_VALUE_CHARS
    assert "more" in text and "/srv/0:/m/0" in text
    if fmt == "json":
        record = json.loads(text)
        assert record["path"].startswith("/containers/create?qqq")
        assert record["reasons"][0] == "bind /srv/0 refused"


def test_after_a_fork_the_output_is_chosen_again():
    # twistd daemonizes by forking after start-up has logged: the child's fd 1
    # is /dev/null and sys.stdout feeds --logfile, so the child must look again.
    logsetup.configure(fmt="json", direct=True)
    _emit()  # the parent decides where lines go
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: stdout to /dev/null, sys.stdout to the pipe
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            sys.stdout = os.fdopen(write_end, "w")
            _emit()
            sys.stdout.flush()
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end) as pipe:
        line = pipe.read()
    assert json.loads(line.splitlines()[-1])["event"] == "policy.decision"
