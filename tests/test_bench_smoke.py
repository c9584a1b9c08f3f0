"""Smoke test of the benchmark harness (bench/run.py), not a timed test.

It runs the benchmark in --quick mode against dockerd's socket and socat only,
and checks that every scenario produced numbers that parse.  It asserts
nothing about how fast anything is.
"""
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCKER_SOCKET = "/var/run/docker.sock"

pytestmark = [
    pytest.mark.skipif(not os.path.exists(DOCKER_SOCKET),
                       reason=f"no dockerd: {DOCKER_SOCKET} is absent"),
    pytest.mark.skipif(shutil.which("gcc") is None,
                       reason="gcc is needed to build bench/loadgen.c"),
]

def _has_base_image():
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(DOCKER_SOCKET)
        sock.sendall(b"GET /images/localbusybox:latest/json HTTP/1.0\r\n\r\n")
        return sock.recv(64).split()[1:2] == [b"200"]


SCENARIOS = ["ping_c1", "ping_c16", "list_c1", "create_delete_c4", "upload", "download", "idle"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    if not _has_base_image():
        pytest.skip("dockerd has no localbusybox:latest image (docs/benchmarks.md says how to make one)")
    # socat is the cheap second target; without it the harness still runs on direct.
    targets = "direct,socat" if shutil.which("socat") else "direct"
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    done = subprocess.run(
        [sys.executable, os.path.join(REPO, "bench", "run.py"), "--quick",
         "--targets", targets, "--skip", "policy", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return targets.split(","), json.loads(out.read_text()), done.stdout


def test_quick_run_reports_every_scenario_for_every_target(quick_run):
    targets, result, _ = quick_run
    assert result["quick"] is True
    assert set(result["summary"]) == set(SCENARIOS)
    for scenario in SCENARIOS:
        assert set(result["summary"][scenario]) == set(targets), scenario


def test_quick_run_numbers_are_positive_and_error_free(quick_run):
    _, result, _ = quick_run
    s = result["summary"]
    for target in s["ping_c1"]:
        assert s["ping_c1"][target]["errors"] == 0, s["ping_c1"][target]
        assert 0 < s["ping_c1"][target]["p50_us"] <= s["ping_c1"][target]["p99_us"]
        assert s["ping_c16"][target]["rps"] > 0
        assert s["list_c1"][target]["errors"] == 0
        assert s["create_delete_c4"][target]["rps"] > 0
        assert s["create_delete_c4"][target]["errors"] == 0
        for transfer in ("upload", "download"):
            assert s[transfer][target]["errors"] == 0, s[transfer][target]
            assert s[transfer][target]["mb_s"] > 0
            assert s[transfer][target]["bytes"] >= 16_000_000
        assert s["idle"][target]["alive_after"] == s["idle"][target]["connections"]
    assert s["upload"]["direct"]["peak_rss_mb"] > 0  # read from dockerd's /proc entry


def test_quick_run_prints_a_markdown_table_with_ratios(quick_run):
    _, _, stdout = quick_run
    assert "## ping_c1" in stdout
    assert "| direct |" in stdout
    assert "× direct" in stdout


def test_quick_run_cleans_up_its_containers_and_image(quick_run):
    if shutil.which("docker") is None:
        pytest.skip("the docker CLI is not installed")
    _, result, _ = quick_run
    run = result["run"]  # other runs on this dockerd have their own token
    containers = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=dsfw-bench-run={run}"],
                                capture_output=True, text=True, check=True)
    images = subprocess.run(["docker", "images", "-q", f"dsfw-bench-blob-{run}:16m"],
                            capture_output=True, text=True, check=True)
    assert run and containers.stdout.strip() == ""
    assert images.stdout.strip() == ""
