"""End to end: the policy engine of a real ``twistd dsfw`` in front of the real dockerd.

Each test starts its own dsfw on a temporary socket with its own policy
directory and drives it with the real docker CLI (``DOCKER_BUILDKIT=0``) or
with raw HTTP bytes; what dockerd actually did is checked on the direct
socket, never through dsfw.  Every wait is bounded; every docker object has a
unique name and is removed at teardown.
"""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import pytest

from dsfw.testing.e2e import (DOCKER_SOCKET, TWISTD, DsfwProcess, docker_cli, dsfw_args,
                         policy_dir, raw_request, requires_docker, subprocess_env, unique_name)

pytestmark = requires_docker

# The original docker-socket-firewall's authz policy, exactly as its README published it:
# Rego v0 (rules without `if`, `=` assignment) and the deprecated built-in re_match.
ORIGINAL_AUTHZ = r'''package docker.authz

allow {
  not createNetwork
}

createNetwork {
  startswith(path, "/networks/create")
}

## Parsing Path, Allowing for versioned and non versioned
versioned = output {
  output = re_match("/v\\d+.*", input.Path)
}

path = output {
  not versioned
  index := indexof(input.Path, "?")
  output = substring(input.Path, 0, index)
}

path = output {
  versioned
  path := substring(input.Path, 2, -1)
  end := indexof(path, "?")
  start := indexof(path, "/")
  output = substring(path, start, end)
}
'''

ALLOW_ALL_V1 = "package docker.authz\n\nallow := true\n"

DENIED_BY_ALLOW = "Error response from daemon: dsfw: request denied by policy data.docker.authz.allow"


# --- helpers -----------------------------------------------------------------------------------

def http(sock: str, method: str, path: str, body: object = None,
         headers: tuple[str, ...] = (), timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection: (status, lower-cased headers, de-chunked body)."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    head = f"{method} {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n"
    if data is not None:
        if not any(h.lower().startswith("content-type:") for h in headers):
            head += "Content-Type: application/json\r\n"
        head += f"Content-Length: {len(data)}\r\n"
    head += "".join(h + "\r\n" for h in headers) + "\r\n"
    reply = raw_request(sock, head.encode() + (data or b""), responses=1, timeout=timeout)
    head_bytes, _, rest = reply.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    hdrs = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if "chunked" in hdrs.get("transfer-encoding", "").lower():
        out, pos = b"", 0
        while True:
            end = rest.index(b"\r\n", pos)
            size = int(rest[pos:end].split(b";")[0], 16)
            if size == 0:
                break
            out += rest[end + 2:end + 2 + size]
            pos = end + 4 + size
        rest = out
    return status, hdrs, rest


def message(body: bytes) -> str:
    """The ``message`` of a Docker-style error body."""
    return json.loads(body)["message"]


def wait_for(predicate: Callable[[], object], timeout: float = 10, what: str = "condition"):
    """Poll ``predicate`` until it returns something true; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def network_exists(name: str) -> bool:
    """Asked of dockerd directly, not through dsfw."""
    return docker_cli(DOCKER_SOCKET, "network", "inspect", name, timeout=30).returncode == 0


def refuse_network_create(sock: str, networks: list[str], expected: str) -> None:
    """``docker network create`` through dsfw fails printing ``expected`` (``{name}`` is filled in),
    and dockerd -- asked directly -- has no such network."""
    name = unique_name()
    networks.append(name)
    created = docker_cli(sock, "network", "create", name)
    assert created.returncode != 0, created
    assert expected.format(name=name) in created.stderr, created.stderr
    assert not network_exists(name)


def allow_ps(sock: str) -> None:
    listed = docker_cli(sock, "ps")
    assert listed.returncode == 0, listed
    assert "CONTAINER ID" in listed.stdout


def replace_file(path: Path, text: str) -> None:
    """Write atomically (dot-files are skipped by the loader), so a poll never sees half a file."""
    tmp = path.parent / f".{path.name}.tmp"
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.fixture
def networks() -> list[str]:
    """Names of networks to remove at teardown (through the direct socket)."""
    names: list[str] = []
    yield names
    for name in names:
        docker_cli(DOCKER_SOCKET, "network", "rm", name, timeout=30)


@pytest.fixture
def short_tmp() -> Path:
    """A directory whose path is short enough for AF_UNIX socket names."""
    with tempfile.TemporaryDirectory(prefix="dsfw-e2e-") as d:
        yield Path(d)


# --- the original firewall's policy, unmodified ------------------------------------------------

def test_original_policy_refuses_network_create_through_cli(dsfw_factory, tmp_path, networks):
    proc = dsfw_factory(policy_dir(tmp_path, {"authz.rego": ORIGINAL_AUTHZ}))
    refuse_network_create(proc.socket, networks, DENIED_BY_ALLOW)
    allow_ps(proc.socket)


def test_original_policy_versioned_and_unversioned_paths(dsfw_factory, tmp_path, networks):
    proc = dsfw_factory(policy_dir(tmp_path, {"authz.rego": ORIGINAL_AUTHZ}))

    for path in ("/containers/json", "/v1.41/containers/json", "/v1.24/containers/json"):
        status, _, body = http(proc.socket, "GET", path)
        assert status == 200, (path, body)
        assert isinstance(json.loads(body), list)

    for path in ("/networks/create", "/v1.41/networks/create", "/v1.24/networks/create"):
        name = unique_name()
        networks.append(name)
        status, _, body = http(proc.socket, "POST", path, {"Name": name})
        assert status == 403, (path, body)
        assert message(body).startswith("dsfw: request denied by policy data.docker.authz.allow")
        assert not network_exists(name)


# --- Rego v1 ----------------------------------------------------------------------------------

V1_AUTHZ = '''package docker.authz

default allow := false

allow if not network_create

network_create if input.PathPlain == "/networks/create"

deny contains msg if {
    network_create
    msg := sprintf("networks are managed by ops, not %s", [input.Body.Name])
}
'''
V1_REFUSAL = "Error response from daemon: dsfw: networks are managed by ops, not {name}"


def test_rego_v1_policy_with_deny_messages(dsfw_factory, tmp_path, networks):
    proc = dsfw_factory(policy_dir(tmp_path, {"authz.rego": V1_AUTHZ}))
    refuse_network_create(proc.socket, networks, V1_REFUSAL)
    allow_ps(proc.socket)


def test_rego_v0_and_v1_modules_in_one_dir(dsfw_factory, tmp_path, networks):
    # A v1 module using a rule of a v0 module: the version is chosen per file.
    files = {
        "helpers.rego": 'package docker.lib\n\nis_network_create {\n  input.PathPlain == '
                        '"/networks/create"\n}\n',
        "authz.rego": 'package docker.authz\n\nimport rego.v1\n\n'
                      'allow if not data.docker.lib.is_network_create\n',
    }
    proc = dsfw_factory(policy_dir(tmp_path, files))
    allow_ps(proc.socket)
    refuse_network_create(proc.socket, networks, DENIED_BY_ALLOW)


# --- reload -----------------------------------------------------------------------------------

DENY_PS_V1 = '''package docker.authz

allow if input.PathPlain != "/containers/json"

deny contains "listing containers is switched off" if input.PathPlain == "/containers/json"
'''

DENY_PS_OTHER_MESSAGE = DENY_PS_V1.replace("switched off", "switched off again, for good")


def ps_message(sock: str) -> str | None:
    """None if ``GET /containers/json`` is allowed, else dsfw's message."""
    status, _, body = http(sock, "GET", "/v1.41/containers/json")
    if status == 200:
        return None
    assert status == 403, body
    return message(body)


def test_policy_edit_takes_effect_without_restart(dsfw_factory, tmp_path):
    pdir = policy_dir(tmp_path, {"authz.rego": ALLOW_ALL_V1})
    proc = dsfw_factory(pdir, "--policy-reload-interval", "0.2")
    assert ps_message(proc.socket) is None

    replace_file(pdir / "authz.rego", DENY_PS_V1)
    wait_for(lambda: ps_message(proc.socket), what="the edited policy to deny docker ps")
    assert ps_message(proc.socket) == "dsfw: listing containers is switched off"
    listed = docker_cli(proc.socket, "ps")
    assert "Error response from daemon: dsfw: listing containers is switched off" in listed.stderr
    assert "policy.reloaded" in proc.log_text()

    # A broken edit: reported with the file name, and the last good policy stays in force.
    assert "policy.reload_failed" not in proc.log_text()
    replace_file(pdir / "authz.rego", "package docker.authz\n\nallow if {\n")
    log = wait_for(lambda: "policy.reload_failed" in proc.log_text() and proc.log_text(),
                   what="policy.reload_failed in the log")
    failed = [line for line in log.splitlines() if "policy.reload_failed" in line]
    assert any("authz.rego" in line for line in failed), failed
    time.sleep(0.5)  # a few more polls: the broken directory must not replace the policy
    assert ps_message(proc.socket) == "dsfw: listing containers is switched off"
    assert proc.alive()

    # A good edit after the broken one is picked up again.
    replace_file(pdir / "authz.rego", ALLOW_ALL_V1)
    wait_for(lambda: ps_message(proc.socket) is None, what="the fixed policy to allow docker ps")


def test_sighup_reloads_policy(dsfw_factory, tmp_path):
    pdir = policy_dir(tmp_path, {"authz.rego": DENY_PS_V1})
    proc = dsfw_factory(pdir, "--policy-reload-interval", "3600")
    assert ps_message(proc.socket) == "dsfw: listing containers is switched off"

    replace_file(pdir / "authz.rego", DENY_PS_OTHER_MESSAGE)
    time.sleep(0.5)
    assert ps_message(proc.socket) == "dsfw: listing containers is switched off", \
        "the policy changed before SIGHUP although the poll interval is an hour"

    os.kill(proc.pid, signal.SIGHUP)
    wait_for(lambda: ps_message(proc.socket) == "dsfw: listing containers is switched off again, "
                                                "for good", what="the policy reloaded by SIGHUP")
    assert proc.alive()
    assert "policy.reloaded" in proc.log_text()

    # A broken file and SIGHUP: reported, and the policy in force stays.
    replace_file(pdir / "zz_broken.rego", "package docker.authz\n\nallow if input.Method ==\n")
    os.kill(proc.pid, signal.SIGHUP)
    log = wait_for(lambda: "policy.reload_failed" in proc.log_text() and proc.log_text(),
                   what="policy.reload_failed after SIGHUP")
    assert any("zz_broken.rego" in line for line in log.splitlines()
               if "policy.reload_failed" in line)
    assert ps_message(proc.socket) == "dsfw: listing containers is switched off again, for good"
    assert proc.alive()


def test_evaluation_error_is_a_503_never_an_allow(dsfw_factory, tmp_path):
    # Two values for one complete rule: an evaluation error for GET /containers/json only.
    conflict = '''package docker.authz

mode := "read" if input.Method == "GET"

mode := "list" if input.PathPlain == "/containers/json"

allow if mode == "read"
'''
    proc = dsfw_factory(policy_dir(tmp_path, {"authz.rego": conflict}))

    assert http(proc.socket, "GET", "/v1.41/version")[0] == 200
    status, _, body = http(proc.socket, "GET", "/v1.41/containers/json")
    assert status == 503, body
    assert message(body).startswith("dsfw: policy evaluation of data.docker.authz.allow failed")
    listed = docker_cli(proc.socket, "ps")
    assert listed.returncode != 0
    assert ("Error response from daemon: dsfw: policy evaluation of data.docker.authz.allow failed"
            in listed.stderr)


# --- start-up ---------------------------------------------------------------------------------

def test_broken_policy_at_start_exits_nonzero_naming_the_file(tmp_path, short_tmp):
    pdir = policy_dir(tmp_path, {"authz.rego": ALLOW_ALL_V1,
                                 "broken_rules.rego": "package docker.authz\n\nallow {{ true\n"})
    sock = short_tmp / "dsfw.sock"

    done = subprocess.run(TWISTD + dsfw_args(sock, pdir), capture_output=True, timeout=60,
                          env=subprocess_env(), cwd=str(tmp_path), stdin=subprocess.DEVNULL)

    output = (done.stdout + done.stderr).decode("utf-8", "replace")
    assert done.returncode != 0, output
    assert "broken_rules.rego" in output
    assert not sock.exists()


def test_dir_without_authz_allow_denies_everything(dsfw_factory, tmp_path):
    pdir = policy_dir(tmp_path, {"other.rego": "package docker.other\n\nallow := true\n"})
    proc = dsfw_factory(pdir)

    assert "policy.no_authz_allow" in proc.log_text()
    for method, path in (("GET", "/_ping"), ("GET", "/v1.41/containers/json"),
                         ("GET", "/version")):
        status, _, body = http(proc.socket, method, path)
        assert status == 403, (path, body)
        assert message(body) == ("dsfw: request denied by policy data.docker.authz.allow "
                                 "(undefined): no rule data.docker.authz.allow with a body is defined")
    listed = docker_cli(proc.socket, "ps")
    assert listed.returncode != 0
    assert DENIED_BY_ALLOW in listed.stderr


# --- data files -------------------------------------------------------------------------------

ALLOWLIST_AUTHZ = '''package docker.authz

allow if input.PathPlain != "/networks/create"

allow if {
    input.PathPlain == "/networks/create"
    input.Body.Name in data.networks.allowed
}

deny contains sprintf("network %s is not on the allowlist", [input.Body.Name]) if {
    input.PathPlain == "/networks/create"
    not input.Body.Name in data.networks.allowed
}
'''


def test_allowlist_from_data_yaml(dsfw_factory, tmp_path, networks):
    allowed = unique_name("dsfw-e2e-ok")
    networks.append(allowed)
    pdir = policy_dir(tmp_path, {"authz.rego": ALLOWLIST_AUTHZ})
    (pdir / "networks").mkdir()
    (pdir / "networks" / "data.yaml").write_text(f"allowed:\n  - {allowed}\n  - unused-name\n")
    proc = dsfw_factory(pdir)

    refuse_network_create(proc.socket, networks,
                          "Error response from daemon: dsfw: network {name} is not on the allowlist")

    created = docker_cli(proc.socket, "network", "create", allowed)
    assert created.returncode == 0, created
    assert network_exists(allowed)


def test_data_file_edit_is_reloaded(dsfw_factory, tmp_path, networks):
    late = unique_name("dsfw-e2e-late")
    networks.append(late)
    pdir = policy_dir(tmp_path, {"authz.rego": ALLOWLIST_AUTHZ})
    (pdir / "networks").mkdir()
    data = pdir / "networks" / "data.yaml"
    data.write_text("allowed: []\n")
    proc = dsfw_factory(pdir, "--policy-reload-interval", "0.2")

    status, _, body = http(proc.socket, "POST", "/v1.41/networks/create", {"Name": late})
    assert status == 403, body
    assert message(body) == f"dsfw: network {late} is not on the allowlist"

    replace_file(data, f"allowed: [{late}]\n")
    wait_for(lambda: http(proc.socket, "POST", "/v1.41/networks/create", {"Name": late})[0] == 201,
             what="the edited data.yaml to allow the network")
    assert network_exists(late)


# --- OPA mode ---------------------------------------------------------------------------------

class OpaServer:
    """``python -m dsfw.testing.opa`` as a process; ready once it printed ``listening``."""

    def __init__(self, pdir: Path, listen: str, token_file: Path | None = None,
                 timeout: float = 20):
        args = [sys.executable, "-m", "dsfw.testing.opa",
                "--policyDir", str(pdir), "--listen", listen]
        if token_file is not None:
            args += ["--token-file", str(token_file)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=subprocess_env())
        deadline = time.monotonic() + timeout
        seen = b""
        while b"listening" not in seen:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.stop()
                raise AssertionError(f"OPA test server did not start: {seen!r}")
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    continue
                seen += chunk

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc.stdout.close()


@pytest.fixture
def opa_servers():
    """``start(pdir, listen, token_file=None)``; every server started is stopped at teardown."""
    started: list[OpaServer] = []

    def start(pdir: Path, listen: str, token_file: Path | None = None) -> OpaServer:
        server = OpaServer(pdir, listen, token_file)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_opa_mode_over_unix_socket(dsfw_factory, opa_servers, tmp_path, short_tmp, networks):
    pdir = policy_dir(tmp_path, {"authz.rego": ORIGINAL_AUTHZ})
    opa_sock = short_tmp / "opa.sock"
    server = opa_servers(pdir, f"unix:{opa_sock}")
    # dsfw must not read --policyDir in OPA mode: give it one that would allow everything.
    proc = dsfw_factory(policy_dir(tmp_path, {"authz.rego": ALLOW_ALL_V1}, name="unused"),
                        "--opa-url", f"unix://{opa_sock}", "--opa-timeout", "2")
    allow_ps(proc.socket)
    refuse_network_create(proc.socket, networks, DENIED_BY_ALLOW)

    server.stop()
    status, _, body = http(proc.socket, "GET", "/v1.41/containers/json")
    assert status == 503, body
    assert message(body).startswith(f"dsfw: OPA at unix://{opa_sock} failed"), body
    listed = docker_cli(proc.socket, "ps")
    assert listed.returncode != 0
    assert f"Error response from daemon: dsfw: OPA at unix://{opa_sock} failed" in listed.stderr
    assert proc.alive()

    if opa_sock.exists():
        opa_sock.unlink()
    opa_servers(pdir, f"unix:{opa_sock}")
    wait_for(lambda: http(proc.socket, "GET", "/_ping")[0] == 200,
             what="/_ping to pass again once OPA is back")


def test_opa_that_never_answers_times_out_as_503(dsfw_factory, tmp_path, short_tmp):
    opa_sock = short_tmp / "silent.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.bind(str(opa_sock))
        silent.listen(16)  # connections complete in the backlog; nobody ever answers
        proc = dsfw_factory(policy_dir(tmp_path, {}, name="unused"),
                            "--opa-url", f"unix://{opa_sock}", "--opa-timeout", "0.5")
        started = time.monotonic()
        status, _, body = http(proc.socket, "GET", "/v1.41/containers/json")
        elapsed = time.monotonic() - started

    assert status == 503, body
    assert message(body) == f"dsfw: OPA at unix://{opa_sock} failed: no answer within 0.5 s"
    assert 0.4 < elapsed < 5, elapsed
    assert proc.alive()


def test_opa_mode_over_tcp(dsfw_factory, opa_servers, tmp_path, networks):
    pdir = policy_dir(tmp_path, {"authz.rego": V1_AUTHZ})
    port = free_tcp_port()
    opa_servers(pdir, f"tcp:{port}")
    proc = dsfw_factory(policy_dir(tmp_path, {}, name="unused"),
                        "--opa-url", f"http://127.0.0.1:{port}")
    allow_ps(proc.socket)
    refuse_network_create(proc.socket, networks, V1_REFUSAL)


def test_opa_mode_with_bearer_token(dsfw_factory, opa_servers, tmp_path, short_tmp):
    secret = "s3cret-" + unique_name("tok")
    token = tmp_path / "token"
    token.write_text(secret + "\n")
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-token\n")
    opa_sock = short_tmp / "opa.sock"
    opa_servers(policy_dir(tmp_path, {"authz.rego": ORIGINAL_AUTHZ}), f"unix:{opa_sock}",
                token_file=token)
    empty = policy_dir(tmp_path, {}, name="unused")

    good = dsfw_factory(empty, "--opa-url", f"unix://{opa_sock}", "--opa-token-file", str(token))
    bad = dsfw_factory(empty, "--opa-url", f"unix://{opa_sock}", "--opa-token-file", str(wrong))

    allow_ps(good.socket)
    status, _, body = http(bad.socket, "GET", "/v1.41/containers/json")
    assert status == 503, body
    assert "401" in message(body) and "unauthorized" in message(body)
    listed = docker_cli(bad.socket, "ps")
    assert listed.returncode != 0
    assert "Error response from daemon: dsfw: OPA answered 401" in listed.stderr
    for proc in (good, bad):
        assert secret not in proc.log_text()


# --- dry run and config file ------------------------------------------------------------------

def test_dry_run_relays_a_denied_request_and_logs_it(dsfw_factory, tmp_path, networks):
    proc = dsfw_factory(policy_dir(tmp_path, {"authz.rego": ORIGINAL_AUTHZ}), "--dry-run")
    name = unique_name()
    networks.append(name)

    created = docker_cli(proc.socket, "network", "create", name)

    assert created.returncode == 0, created
    assert network_exists(name)
    log = wait_for(lambda: "policy.dry_run_would_deny" in proc.log_text() and proc.log_text(),
                   what="policy.dry_run_would_deny in the log")
    assert any("networks/create" in line for line in log.splitlines()
               if "policy.dry_run_would_deny" in line)


def test_config_file_carries_the_options(tmp_path, short_tmp):
    pdir = policy_dir(tmp_path, {"authz.rego": DENY_PS_V1})
    sock = short_tmp / "from-config.sock"
    config = tmp_path / "dsfw.yaml"
    config.write_text(f"host: {sock}\ntarget: {DOCKER_SOCKET}\npolicyDir: {pdir}\n"
                      "policy-reload-interval: 0.2\nmax-context-size: 4096\n")
    proc = DsfwProcess(["-n", "--pidfile=", "dsfw", "--config", str(config)], sock,
                       tmp_path / "config-dsfw.log")
    try:
        proc.wait_ready()
        # The policy in force is the config file's policyDir (the default /etc/docker has none).
        assert ps_message(str(sock)) == "dsfw: listing containers is switched off"
        assert str(pdir) in proc.log_text()
        # policy-reload-interval came from the file too: an edit is seen within a second or so.
        replace_file(pdir / "authz.rego", ALLOW_ALL_V1)
        wait_for(lambda: ps_message(str(sock)) is None, timeout=5,
                 what="the config's 0.2 s reload interval to pick up the edit")
    finally:
        proc.stop()


def test_command_line_wins_over_config_file(dsfw_factory, tmp_path):
    config = tmp_path / "dsfw.yaml"
    config.write_text(f"policyDir: {policy_dir(tmp_path, {'authz.rego': ALLOW_ALL_V1}, 'cfg')}\n")
    proc = dsfw_factory(policy_dir(tmp_path, {"authz.rego": DENY_PS_V1}), "--config", str(config))
    assert ps_message(proc.socket) == "dsfw: listing containers is switched off"


def test_config_file_with_unknown_option_is_refused(tmp_path, short_tmp):
    config = tmp_path / "dsfw.yaml"
    config.write_text("policyDirectory: /nowhere\n")
    done = subprocess.run(TWISTD + ["-n", "--pidfile=", "dsfw", "--host", str(short_tmp / "s"),
                                    "--config", str(config)],
                          capture_output=True, timeout=60, env=subprocess_env(),
                          cwd=str(tmp_path), stdin=subprocess.DEVNULL)
    output = (done.stdout + done.stderr).decode("utf-8", "replace")
    assert done.returncode != 0, output
    assert "policyDirectory" in output
