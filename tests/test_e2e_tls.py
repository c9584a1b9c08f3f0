"""End to end over TCP with mutual TLS: the docker CLI and SDK -> dsfw (--tlsverify) -> dockerd.

Certificates are made in the test (a CA, a server certificate for IP:127.0.0.1,
clients ``alice`` and ``bob``, and ``mallory`` signed by another CA).  The
workflows are those of /work/shared/checks/docker-cli-smoke.sh (which only
takes a UNIX socket), run with ``DOCKER_HOST=tcp://... DOCKER_TLS_VERIFY=1``.
"""
from __future__ import annotations

import socket
import ssl
import subprocess
import time

import pytest

from dsfw.testing.e2e import DOCKER_SOCKET, TEST_IMAGE, docker_cli, policy_dir, requires_docker, \
    unique_name
from dsfw.testing.fleet import docker_tls, free_port, make_pki, tls_args

pytestmark = requires_docker

ALLOW_ALL = {"allow.rego": "package docker.authz\nimport rego.v1\ndefault allow := true\n",
             "build.rego": "package docker.build\nimport rego.v1\ndefault allow := true\n"}

# alice may do anything, bob only read-only calls; both prove who they are with a certificate.
BY_CN = {"authz.rego": """package docker.authz
import rego.v1

default allow := false
allow if input.Peer.Tls.SubjectCN == "alice"
allow if {
    input.Peer.Tls.SubjectCN == "bob"
    input.Method in {"GET", "HEAD"}
}
deny contains msg if {
    input.Peer.Tls.SubjectCN == "bob"
    not input.Method in {"GET", "HEAD"}
    msg := sprintf("%s (issued by %s) may only read", [input.Peer.Tls.SubjectCN, input.Peer.Tls.IssuerCN])
}
"""}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def names():
    made: list[str] = []
    yield made
    for name in made:
        docker_cli(DOCKER_SOCKET, "rm", "-f", name, timeout=30)
        docker_cli(DOCKER_SOCKET, "rmi", "-f", name + "-img", timeout=30)


@pytest.fixture
def tls_dsfw(dsfw_factory, tmp_path, pki):
    """dsfw with an allow-all policy on a UNIX socket and on 127.0.0.1:PORT with mutual TLS."""
    port = free_port()
    proc = dsfw_factory(policy_dir(tmp_path, ALLOW_ALL), *tls_args(pki, port))
    return proc, port


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, (result.args, result.stdout, result.stderr)
    return result.stdout


def test_cli_workflows_over_tls(tls_dsfw, pki, names, tmp_path):
    proc, port = tls_dsfw
    alice = pki.clients["alice"]

    def cli(*args, **kw):
        return docker_tls(alice, port, *args, **kw)

    name = unique_name("dsfw-tls")
    names.append(name)
    assert ok(cli("version", "--format", "{{.Server.Version}}")).strip()
    ok(cli("ps", "-a"))
    assert ok(cli("run", "--rm", TEST_IMAGE, "echo", "hello")) == "hello\n"
    assert ok(cli("run", "-i", "--rm", TEST_IMAGE, "cat", input="piped\n")) == "piped\n"
    ok(cli("run", "-d", "--name", name, TEST_IMAGE, "sh", "-c",
           "echo started; for i in 1 2 3 4 5 6; do sleep 1; echo tick$i; done; sleep 60"))
    assert ok(cli("exec", name, "echo", "hi")) == "hi\n"
    # stdin ends (the client half-closes its TLS stream); output must still arrive
    started = time.monotonic()
    assert ok(cli("exec", "-i", name, "cat", input="halfclose\n", timeout=20)) == "halfclose\n"
    assert time.monotonic() - started < 15
    big = "x" * 300_000 + "\n"
    assert ok(cli("exec", "-i", name, "cat", input=big)) == big
    # logs -f streams: the first tick arrives while the container keeps running
    follow = subprocess.Popen(["docker", "logs", "-f", name], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=alice.env(port))
    try:
        assert follow.stdout.readline() == b"started\n"
        assert follow.stdout.readline().startswith(b"tick")
    finally:
        follow.kill()
        follow.wait(10)
    # attach: the next tick comes through the hijacked connection
    attach = subprocess.Popen(["docker", "attach", "--no-stdin", name], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=alice.env(port))
    try:
        assert attach.stdout.readline().startswith(b"tick")
    finally:
        attach.kill()
        attach.wait(10)
    src = tmp_path / "payload"
    src.write_text("payload\n")
    ok(cli("cp", str(src), f"{name}:/x"))
    ok(cli("cp", f"{name}:/x", str(tmp_path / "back")))
    assert (tmp_path / "back").read_text() == "payload\n"
    ok(cli("stop", "-t", "1", name))
    ok(cli("rm", name))
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {TEST_IMAGE}\nRUN echo built\n")
    ok(cli("build", "-q", "-t", name + "-img", str(context), timeout=120))
    assert proc.alive()


def test_client_without_certificate_is_refused_at_handshake(tls_dsfw, pki):
    _, port = tls_dsfw
    ctx = ssl.create_default_context(cafile=str(pki.server / "ca.pem"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            # TLS 1.3 reports the missing certificate with the first read
            with pytest.raises(ssl.SSLError, match="CERTIFICATE_REQUIRED|HANDSHAKE"):
                s.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
                assert s.recv(100) == b"", "dsfw answered a client without a certificate"


def test_client_with_foreign_certificate_is_refused(tls_dsfw, pki):
    _, port = tls_dsfw
    result = docker_tls(pki.clients["mallory"], port, "ps")
    assert result.returncode != 0
    assert "unknown certificate authority" in result.stderr or "certificate" in result.stderr
    ctx = ssl.create_default_context(cafile=str(pki.server / "ca.pem"))
    ctx.load_cert_chain(pki.clients["mallory"].dir / "cert.pem",
                        pki.clients["mallory"].dir / "key.pem")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            with pytest.raises(ssl.SSLError, match="UNKNOWN_CA|unknown ca|HANDSHAKE"):
                s.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
                assert s.recv(100) == b"", "dsfw answered a certificate from another CA"


def test_policy_decides_by_certificate_name(dsfw_factory, tmp_path, pki, names):
    port = free_port()
    proc = dsfw_factory(policy_dir(tmp_path, BY_CN), *tls_args(pki, port))
    alice, bob = pki.clients["alice"], pki.clients["bob"]
    name = unique_name("dsfw-tls-cn")
    names.append(name)
    ok(docker_tls(bob, port, "ps"))
    refused = docker_tls(bob, port, "create", "--name", name, TEST_IMAGE, "true")
    assert refused.returncode != 0
    assert "Error response from daemon: dsfw: bob (issued by dsfw test CA) may only read" \
        in refused.stderr
    assert docker_cli(DOCKER_SOCKET, "inspect", name).returncode != 0  # never created
    ok(docker_tls(alice, port, "create", "--name", name, TEST_IMAGE, "true"))
    # The UNIX socket has no certificate: the same policy refuses it.
    assert docker_cli(proc.socket, "ps").returncode != 0
    log = proc.log_text()
    assert "peer_cn=alice" in log and "peer_cn=bob" in log


def test_python_sdk_over_tls(tls_dsfw, pki, names, monkeypatch):
    docker = pytest.importorskip("docker")
    # requests lets these override a session's own CA file (psf/requests#3829)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    _, port = tls_dsfw
    client_dir = pki.clients["alice"].dir
    tls = docker.tls.TLSConfig(client_cert=(str(client_dir / "cert.pem"),
                                            str(client_dir / "key.pem")),
                               ca_cert=str(client_dir / "ca.pem"), verify=True)
    client = docker.DockerClient(base_url=f"https://127.0.0.1:{port}", tls=tls, timeout=60)
    try:
        assert client.ping() is True
        assert client.containers.run(TEST_IMAGE, ["echo", "sdk"], remove=True) == b"sdk\n"
        name = unique_name("dsfw-tls-sdk")
        names.append(name)
        c = client.containers.run(TEST_IMAGE, ["sleep", "60"], name=name, detach=True)
        code, out = c.exec_run(["sh", "-c", "echo out; echo err >&2"])
        assert code == 0 and sorted(out.split()) == [b"err", b"out"]
        c.remove(force=True)
    finally:
        client.close()


def test_insecure_tcp_listener_refused_at_start(dsfw_factory, tmp_path):
    port = free_port()
    proc = dsfw_factory(policy_dir(tmp_path, ALLOW_ALL), "--host", f"tcp://0.0.0.0:{port}",
                        "--tls-insecure-loopback", wait=False)
    deadline = time.monotonic() + 20
    while proc.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not proc.alive() and proc.returncode != 0
    assert "without a verified certificate" in proc.log_text()
