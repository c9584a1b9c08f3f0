"""The operator files in contrib/ are real: the unit verifies, the config parses."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from dsfw.tap import Options

CONTRIB = os.path.join(os.path.dirname(__file__), "..", "contrib")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_unit_verifies(tmp_path):
    with open(os.path.join(CONTRIB, "dsfw.service")) as f:
        unit = f.read()
    assert "ExecStart=/usr/local/bin/twistd --nodaemon --pidfile= dsfw" in unit
    # verify checks that ExecStart exists: point it at this machine's twistd
    twistd = shutil.which("twistd")
    real = twistd if twistd and "/shims/" not in twistd else sys.executable
    path = tmp_path / "dsfw.service"
    path.write_text(unit.replace("/usr/local/bin/twistd", real))
    done = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True,
                          text=True, timeout=60)
    problems = [line for line in (done.stdout + done.stderr).splitlines() if "dsfw.service" in line]
    assert done.returncode == 0 and not problems, done.stdout + done.stderr


def test_systemd_unit_sets_an_fd_limit_that_fits_the_default_connection_limit():
    """Issue 11: the default soft limit (1024) cannot hold 512 connections and dockerd's side."""
    from dsfw.edge.listening import DEFAULT_MAX_CONNECTIONS, FD_RESERVE, FDS_PER_CONNECTION
    with open(os.path.join(CONTRIB, "dsfw.service")) as f:
        limits = [line.split("=", 1)[1] for line in f.read().splitlines()
                  if line.startswith("LimitNOFILE=")]
    assert len(limits) == 1, limits
    soft, _, hard = limits[0].partition(":")
    assert int(hard or soft) >= DEFAULT_MAX_CONNECTIONS * FDS_PER_CONNECTION + FD_RESERVE


def test_example_config_carries_only_known_options(tmp_path):
    options = Options()
    options.parseOptions(["--config", os.path.join(CONTRIB, "dsfw.yaml")])
    assert options["policyDir"] == "/etc/dsfw/policies"
    assert options["socket-mode"] == 0o660
    assert options["socket-group"] == "docker-fw"
    assert options["log-format"] == "json"
    assert not options["allow-buildkit"]
    assert options["host"] == ["/var/run/protected-docker.sock"]
    assert options["tlscacert"] == "/etc/dsfw/tls/ca.pem" and not options["tlsverify"]
    assert options["bundle-poll-interval"] == 60 and options["bundle-url"] is None
    assert options["decision-log-buffer-size"] == 8 << 20
