"""The README's set-up commands stay true: `bash scripts/run.sh` runs dsfw with policies/."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time

import pytest

from dsfw.testing.e2e import REPO_ROOT, docker_cli, raw_request, unique_name

pytestmark = pytest.mark.requires_docker


def test_readme_names_the_commands_ci_and_users_run():
    readme = (REPO_ROOT / "README.md").read_text()
    commands = re.findall(r"^    (bash \S+)$", readme, re.M)
    assert commands[:2] == ["bash scripts/run.sh", "bash scripts/test.sh"]
    assert "exec bash scripts/test.sh" in (REPO_ROOT / ".ci" / "run").read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="scripts/run.sh installs packages: needs root")
def test_run_script_serves_the_shipped_policies():
    host = os.path.join(tempfile.mkdtemp(prefix="dsfw-readme-"), "protected.sock")
    proc = subprocess.Popen(["bash", "scripts/run.sh", "--host", host], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 180  # includes pip install of the checkout
        while not os.path.exists(host):
            assert proc.poll() is None, proc.stdout.read().decode(errors="replace")
            assert time.monotonic() < deadline, "dsfw did not create its socket in time"
            time.sleep(0.5)
        time.sleep(0.5)
        assert raw_request(host, b"GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n"
                           ).startswith(b"HTTP/1.1 200")
        assert docker_cli(host, "ps").returncode == 0
        refused = docker_cli(host, "network", "create", unique_name())
        assert refused.returncode != 0 and "dsfw:" in refused.stderr
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
