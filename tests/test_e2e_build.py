"""End to end: builds through a real ``twistd dsfw`` in front of the real dockerd.

The docker CLI builds with the classic builder (``DOCKER_BUILDKIT=0``), the
Python SDK sends a gzip context, and raw HTTP sends what the CLI would not
(BuildKit, ``remote=``, corrupt and oversized contexts).  Whether an image
was built is asked of dockerd directly; every image is tagged with a unique
name and removed at teardown.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path

import docker
import pytest

from dsfw.testing.e2e import (DOCKER_SOCKET, SHIPPED_POLICIES, TEST_IMAGE, docker_cli, policy_dir,
                         raw_request, requires_docker, split_responses, unique_name)
from tests.test_e2e_policy import ALLOW_ALL_V1, http, message, opa_servers  # noqa: F401 (fixture)

pytestmark = requires_docker

BUILD_TIMEOUT = 120
GOOD_DOCKERFILE = f"FROM {TEST_IMAGE}\nRUN echo built\n"
BUILD_DENIED = "Error response from daemon: dsfw: request denied by policy data.docker.build.allow"
BUILDKIT_HINT = "DOCKER_BUILDKIT=0"


# --- helpers -----------------------------------------------------------------------------------

def image_exists(ref: str) -> bool:
    """Asked of dockerd directly, not through dsfw."""
    return docker_cli(DOCKER_SOCKET, "image", "inspect", ref, timeout=30).returncode == 0


def context_dir(root: Path, files: dict[str, str], name: str = "ctx") -> Path:
    """A build context directory with ``{"relative/path": text}``."""
    directory = root / name
    for rel, text in files.items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return directory


def context_tar(files: dict[str, bytes | str]) -> bytes:
    """An uncompressed tar of ``{"name": content}``, as a client sends a build context."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def post_build(sock: str, query: str, body: bytes, timeout: float = BUILD_TIMEOUT):
    return http(sock, "POST", f"/v1.41/build?{query}", body,
                headers=("Content-Type: application/x-tar",), timeout=timeout)


class Builds:
    """Unique tags for one test; every tag handed out is removed at teardown."""

    def __init__(self, tmp_path: Path):
        self._tmp = tmp_path
        self.tags: list[str] = []
        self._dirs = 0

    def tag(self) -> str:
        tag = unique_name("dsfw-e2e-build") + ":test"
        self.tags.append(tag)
        return tag

    def cli(self, sock: str, files: dict[str, str], *args: str):
        """``docker build -t <new tag> [args] <dir with files>``: (result, tag)."""
        self._dirs += 1
        directory = context_dir(self._tmp, files, name=f"ctx{self._dirs}")
        tag = self.tag()
        done = docker_cli(sock, "build", "-t", tag, *[a.replace("{ctx}", str(directory))
                                                      for a in args], str(directory),
                          timeout=BUILD_TIMEOUT)
        return done, tag

    def built(self, sock: str, files: dict[str, str], *args: str) -> str:
        done, tag = self.cli(sock, files, *args)
        assert done.returncode == 0, done
        assert image_exists(tag)
        return tag

    def refused(self, sock: str, files: dict[str, str], expected: str, *args: str) -> None:
        done, tag = self.cli(sock, files, *args)
        assert done.returncode != 0, done
        assert expected in done.stderr, done.stderr
        assert not image_exists(tag)

    def remove(self) -> None:
        for tag in self.tags:
            if image_exists(tag):
                docker_cli(DOCKER_SOCKET, "image", "rm", "-f", tag, timeout=60)


@pytest.fixture
def builds(tmp_path) -> Builds:
    b = Builds(tmp_path)
    yield b
    b.remove()


# --- the docker CLI with the shipped policies --------------------------------------------------

def test_cli_build_succeeds(dsfw, builds):
    done, tag = builds.cli(dsfw.socket, {"Dockerfile": GOOD_DOCKERFILE})
    assert done.returncode == 0, done
    assert "built" in done.stdout
    assert image_exists(tag)


def test_cli_build_from_node_is_refused(dsfw, builds):
    builds.refused(dsfw.socket, {"Dockerfile": "FROM node\nRUN echo never\n"}, BUILD_DENIED)


def test_cli_build_with_dockerfile_in_subdirectory(dsfw, builds):
    files = {"Dockerfile": "FROM node\n",  # the one the policy must NOT judge
             "hello.txt": "hello from the context root\n",
             "sub/Dockerfile": f"FROM {TEST_IMAGE}\nCOPY hello.txt /hello.txt\n"}
    tag = builds.built(dsfw.socket, files, "-f", "{ctx}/sub/Dockerfile")
    ran = docker_cli(DOCKER_SOCKET, "run", "--rm", tag, "cat", "/hello.txt")
    assert ran.stdout == "hello from the context root\n", ran

    # ... and the other way round: the subdirectory file is the one judged.
    files = {"Dockerfile": GOOD_DOCKERFILE, "sub/Dockerfile": "FROM node:20-alpine\n"}
    builds.refused(dsfw.socket, files, BUILD_DENIED, "-f", "{ctx}/sub/Dockerfile")


def test_gzip_context_from_python_sdk(dsfw, builds):
    client = docker.APIClient(base_url="unix://" + dsfw.socket, version="1.41",
                              timeout=BUILD_TIMEOUT)
    try:
        tag = builds.tag()
        context = gzip.compress(context_tar({"Dockerfile": GOOD_DOCKERFILE}))
        events = list(client.build(fileobj=io.BytesIO(context), custom_context=True,
                                   encoding="gzip", tag=tag, rm=True, decode=True))
        assert not [e for e in events if "error" in e], events
        assert any("built" in e.get("stream", "") for e in events), events
        assert image_exists(tag)

        tag = builds.tag()
        context = gzip.compress(context_tar({"Dockerfile": "FROM node:18\nRUN true\n"}))
        with pytest.raises(docker.errors.APIError) as refused:
            list(client.build(fileobj=io.BytesIO(context), custom_context=True,
                              encoding="gzip", tag=tag, rm=True, decode=True))
        assert refused.value.status_code == 403
        assert "dsfw: request denied by policy data.docker.build.allow" in str(
            refused.value.explanation)
        assert not image_exists(tag)
    finally:
        client.close()


# `-f -` (Dockerfile on stdin) and `-f <file outside the context dir>`: the CLI appends the
# Dockerfile to the context tar under a random dot-name (and a .dockerignore entry for it).
# Its tar then ends right after the last member's data, without padding or end-of-archive
# blocks; dockerd (Go's archive/tar) reads that as the end of the archive.
STDIN_CASES = [pytest.param(f"FROM {TEST_IMAGE}\nCOPY hello.txt /\n", True, id="allowed"),
               pytest.param("FROM node:lts\nCOPY hello.txt /\n", False, id="node-refused")]


def check_outcome(done, tag: str, ok: bool) -> None:
    if ok:
        assert done.returncode == 0, done
        assert image_exists(tag)
    else:
        assert done.returncode != 0, done
        assert BUILD_DENIED in done.stderr, done.stderr
        assert not image_exists(tag)


def test_context_ending_right_after_the_last_members_data(dsfw, builds):
    # The shape of the CLI's `-f -` context, reduced: the last member's data is complete, its
    # padding and the end-of-archive blocks are missing.  dockerd builds it (checked directly).
    full = context_tar({"hello.txt": "hi\n", "Dockerfile": GOOD_DOCKERFILE})
    unpadded = full[:512 + 512 + 512 + len(GOOD_DOCKERFILE.encode())]
    direct_tag = builds.tag()
    status, _, body = post_build(DOCKER_SOCKET, "t=" + direct_tag, unpadded)
    assert status == 200 and image_exists(direct_tag), body

    tag = builds.tag()
    status, _, body = post_build(dsfw.socket, "t=" + tag, unpadded)
    assert status == 200, body
    assert image_exists(tag)


@pytest.mark.parametrize("dockerfile, ok", STDIN_CASES)
def test_cli_build_with_dockerfile_from_stdin(dsfw, builds, dockerfile, ok):
    directory = context_dir(builds._tmp, {"hello.txt": "hi\n"})
    tag = builds.tag()
    done = docker_cli(dsfw.socket, "build", "-t", tag, "-f", "-", str(directory),
                      input=dockerfile, timeout=BUILD_TIMEOUT)
    check_outcome(done, tag, ok)


@pytest.mark.parametrize("dockerfile, ok", STDIN_CASES)
def test_cli_build_with_dockerfile_outside_the_context(dsfw, builds, dockerfile, ok):
    directory = context_dir(builds._tmp, {"hello.txt": "hi\n"})
    elsewhere = context_dir(builds._tmp, {"Dockerfile": dockerfile}, name="elsewhere")
    tag = builds.tag()
    done = docker_cli(dsfw.socket, "build", "-t", tag, "-f", str(elsewhere / "Dockerfile"),
                      str(directory), timeout=BUILD_TIMEOUT)
    check_outcome(done, tag, ok)


def test_cli_build_without_context_from_stdin(dsfw, builds):
    # `docker build - < Dockerfile`: the Dockerfile is the whole context.
    for dockerfile, ok in ((GOOD_DOCKERFILE, True), ("FROM node\n", False)):
        tag = builds.tag()
        done = docker_cli(dsfw.socket, "build", "-t", tag, "-", input=dockerfile,
                          timeout=BUILD_TIMEOUT)
        check_outcome(done, tag, ok)


def test_lowercase_dockerfile_is_the_one_judged(dsfw, builds):
    # dockerd falls back to `dockerfile` when `Dockerfile` is absent: so must the policy input.
    status, _, body = post_build(dsfw.socket, "t=" + builds.tag(),
                                 context_tar({"dockerfile": "FROM node\n"}))
    assert status == 403, body
    assert message(body).startswith("dsfw: request denied by policy data.docker.build.allow")
    tag = builds.tag()
    status, _, body = post_build(dsfw.socket, "t=" + tag,
                                 context_tar({"dockerfile": GOOD_DOCKERFILE}))
    assert status == 200, body
    assert b"built" in body
    assert image_exists(tag)


def _sums_in(tag: str) -> dict[str, str]:
    done = docker_cli(DOCKER_SOCKET, "run", "--rm", tag, "busybox", "sha256sum",
                      "/data/big.bin", "/data/mid.bin", "/data/z.txt")
    assert done.returncode == 0, done
    return {path.rsplit("/", 1)[1]: digest for digest, path in
            (line.split() for line in done.stdout.splitlines())}


# A large file (its contents pass from the client's reads to dockerd around the
# rewrite thread), one just over that threshold, and a member after them.
LARGE_FILES = {"big.bin": 24 * 1024 * 1024 + 7, "mid.bin": 300_001, "z.txt": 6}
LARGE_DOCKERFILE = f"FROM {TEST_IMAGE}\nCOPY big.bin mid.bin z.txt /data/\n"


@pytest.mark.parametrize("client", ["cli", "content-length"])
def test_large_context_is_relayed_intact(dsfw, builds, client):
    contents = {name: os.urandom(size) for name, size in LARGE_FILES.items()}
    tag = builds.tag()
    if client == "cli":  # chunked, as the docker CLI sends it
        directory = context_dir(builds._tmp, {"Dockerfile": LARGE_DOCKERFILE}, name="large")
        for name, data in contents.items():
            (directory / name).write_bytes(data)
        done = docker_cli(dsfw.socket, "build", "-t", tag, str(directory), timeout=BUILD_TIMEOUT)
        assert done.returncode == 0, done
    else:
        status, _, body = post_build(dsfw.socket, f"t={tag}",
                                  context_tar({"Dockerfile": LARGE_DOCKERFILE, **contents}))
        assert status == 200 and b"errorDetail" not in body, body
    assert _sums_in(tag) == {name: hashlib.sha256(data).hexdigest()
                             for name, data in contents.items()}


def test_opa_mode_decides_builds(dsfw_factory, opa_servers, tmp_path, builds):  # noqa: F811
    import tempfile
    with tempfile.TemporaryDirectory(prefix="dsfw-e2e-") as short:
        opa_sock = os.path.join(short, "opa.sock")
        opa_servers(SHIPPED_POLICIES, f"unix:{opa_sock}")
        proc = dsfw_factory(policy_dir(tmp_path, {}, name="unused"),
                            "--opa-url", f"unix://{opa_sock}")
        builds.refused(proc.socket, {"Dockerfile": "FROM node:18 AS deps\nRUN true\n"},
                       BUILD_DENIED)
        builds.built(proc.socket, {"Dockerfile": GOOD_DOCKERFILE})


# --- the request's query is seen by data.docker.authz ------------------------------------------

HOST_NETWORK_AUTHZ = '''package docker.authz

allow if count(deny) == 0

deny contains "builds may not use the host network" if {
    input.PathPlain == "/build"
    input.Query.networkmode[_] == "host"
}
'''


def test_authz_policy_refuses_build_with_host_network(dsfw_factory, tmp_path, builds):
    pdir = policy_dir(tmp_path, {"authz.rego": HOST_NETWORK_AUTHZ,
                                 "build.rego": "package docker.build\n\nallow := true\n"})
    proc = dsfw_factory(pdir)
    files = {"Dockerfile": GOOD_DOCKERFILE}

    builds.refused(proc.socket, files,
                   "Error response from daemon: dsfw: builds may not use the host network",
                   "--network", "host")
    builds.built(proc.socket, files, "--network", "bridge")


# --- what dsfw cannot inspect is refused --------------------------------------------------------

def test_buildkit_build_and_session_are_refused(dsfw):
    tiny = context_tar({"Dockerfile": GOOD_DOCKERFILE})
    status, _, body = post_build(dsfw.socket, "version=2&t=" + unique_name(), tiny)
    assert status == 403, body
    assert BUILDKIT_HINT in message(body)
    assert message(body).startswith("dsfw: ")

    for path in ("/session", "/v1.41/session"):
        reply = raw_request(dsfw.socket, (
            f"POST {path} HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
            "X-Docker-Expose-Session-Uuid: dsfw-e2e\r\nX-Docker-Expose-Session-Name: e2e\r\n"
            "Content-Length: 0\r\n\r\n").encode(), responses=1, timeout=30)
        head, _, rest = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 403 "), reply
        assert BUILDKIT_HINT in message(rest), reply
    assert dsfw.alive()


def test_remote_context_is_refused(dsfw):
    for query in ("remote=https%3A%2F%2Fgithub.com%2Fdocker%2Fdocker.git&t=x",
                  "remote=http%3A%2F%2F127.0.0.1%3A1%2Fctx.tar"):
        status, _, body = post_build(dsfw.socket, query, b"")
        assert status == 403, body
        assert message(body).startswith("dsfw: remote build contexts (remote=) cannot be inspected")


def test_corrupt_context_is_a_400_and_dsfw_lives_on(dsfw, builds):
    for body in (b"this is not a tar archive, only text. " * 100,
                 # cut inside the data of a member (not just its padding: see below)
                 context_tar({"Dockerfile": GOOD_DOCKERFILE, "data.bin": b"x" * 5000})[:2000],
                 gzip.compress(context_tar({"Dockerfile": GOOD_DOCKERFILE}))[:-20]):
        status, _, reply = post_build(dsfw.socket, "t=" + builds.tag(), body)
        assert status == 400, reply
        assert message(reply).startswith("dsfw: the build context "), reply
    assert dsfw.alive()
    assert http(dsfw.socket, "GET", "/_ping")[0] == 200
    builds.built(dsfw.socket, {"Dockerfile": GOOD_DOCKERFILE})
    assert all(not image_exists(tag) for tag in builds.tags[:3])


TOO_LARGE = "the build context is larger than 16384 bytes"


def test_context_over_max_size_is_a_413(dsfw_factory, builds):
    proc = dsfw_factory(SHIPPED_POLICIES, "--max-context-size", "16384")
    big = "x" * 200_000 + "\n"
    files = {"Dockerfile": GOOD_DOCKERFILE, "big.txt": big}

    status, _, body = post_build(proc.socket, "t=" + builds.tag(), context_tar(files))
    assert status == 413, body
    assert message(body) == f"dsfw: {TOO_LARGE}", body

    builds.refused(proc.socket, files, f"Error response from daemon: dsfw: {TOO_LARGE}")
    builds.built(proc.socket, {"Dockerfile": GOOD_DOCKERFILE})  # small contexts still build
    assert proc.alive()


# --- the parsed Dockerfile in data.docker.build ------------------------------------------------

EXTERNAL_IMAGES_BUILD = '''package docker.build

allow if count(deny) == 0

deny contains sprintf("base image %s is not allowed", [img]) if {
    some img in input.ExternalImages
    startswith(img, "node")
}

deny contains sprintf("stage %d builds on %s", [stage.Index, stage.BaseImage]) if {
    some stage in input.DockerfileParsed.Stages
    startswith(stage.BaseImage, "forbidden.example/")
}
'''


def test_policy_sees_external_images_and_parsed_stages(dsfw_factory, tmp_path, builds):
    proc = dsfw_factory(policy_dir(tmp_path, {"authz.rego": ALLOW_ALL_V1,
                                              "build.rego": EXTERNAL_IMAGES_BUILD}))
    refused = "Error response from daemon: dsfw: "

    builds.refused(proc.socket, {"Dockerfile": "ARG BASE=node\nFROM $BASE\nRUN true\n"},
                   refused + "base image node is not allowed")
    # A build argument decides the base image: the policy sees the result (and denies
    # it); its deny message quotes the build arg's value, which dsfw cuts out of what
    # leaves it, as it does with every build arg (docs/input.md, What leaves dsfw).
    builds.refused(proc.socket, {"Dockerfile": f"ARG BASE={TEST_IMAGE}\nFROM $BASE\n"},
                   refused + "base image <redacted> is not allowed", "--build-arg", "BASE=node:20")
    # COPY --from pulls an image too.
    builds.refused(proc.socket,
                   {"Dockerfile": f"FROM {TEST_IMAGE}\nCOPY --from=node:18 /usr/bin/env /x\n"},
                   refused + "base image node:18 is not allowed")
    builds.refused(proc.socket, {"Dockerfile": "ARG REG=forbidden.example\n"
                                               f"FROM {TEST_IMAGE} AS base\n"
                                               "FROM ${REG}/tools:1 AS tools\n"},
                   refused + "stage 1 builds on forbidden.example/tools:1")
    builds.built(proc.socket, {"Dockerfile": f"ARG BASE={TEST_IMAGE}\nFROM $BASE AS first\n"
                                             "FROM first\nRUN echo built\n"})


# The original firewall's build policy reads FROM lines as text; here aimed at this
# test's base image.  (The published version also had a second `nodeImage` body `{ true }`,
# which made it refuse every build; that body is left out so the rule can allow anything.)
LINE_BASED_BUILD = f'''package docker.build

allow {{
  not forbiddenImage
}}

forbiddenImage {{
  images[_] = "{TEST_IMAGE}"
}}

## Get all FROM lines ##
images[output] {{
  line := input.Dockerfile[_]
  startswith(line, "FROM")
  output = substring(line, 5, -1)
}}
'''

EXTERNAL_IMAGES_FORBID_TEST_IMAGE = f'''package docker.build

allow if not "{TEST_IMAGE}" in input.ExternalImages
'''

ARG_FROM = f"ARG BASE={TEST_IMAGE}\nFROM $BASE\nRUN echo built\n"


def test_line_based_policy_sees_arg_substituted_from(dsfw_factory, tmp_path, builds):
    line_based = dsfw_factory(policy_dir(tmp_path, {"authz.rego": ALLOW_ALL_V1,
                                                    "build.rego": LINE_BASED_BUILD}, "line"))
    parsed = dsfw_factory(policy_dir(tmp_path, {"authz.rego": ALLOW_ALL_V1,
                                                "build.rego": EXTERNAL_IMAGES_FORBID_TEST_IMAGE},
                                     "parsed"))

    # Both refuse the image written out, and behind an ARG: input.Dockerfile holds the
    # canonical steps, FROM with its image expanded (tests/test_e2e_dockerfile_steps.py has
    # every other spelling).
    for proc in (line_based, parsed):
        builds.refused(proc.socket, {"Dockerfile": GOOD_DOCKERFILE}, BUILD_DENIED)
        builds.refused(proc.socket, {"Dockerfile": ARG_FROM}, BUILD_DENIED)


def test_dry_run_relays_a_build_the_build_policy_denies(dsfw_factory, tmp_path, builds):
    proc = dsfw_factory(policy_dir(tmp_path, {"authz.rego": ALLOW_ALL_V1,
                                              "build.rego": EXTERNAL_IMAGES_FORBID_TEST_IMAGE}),
                        "--dry-run")
    builds.built(proc.socket, {"Dockerfile": GOOD_DOCKERFILE})
    would_deny = [line for line in proc.log_text().splitlines()
                  if "policy.dry_run_would_deny" in line]
    assert any("data.docker.build.allow" in line for line in would_deny), proc.log_text()


def _build_decisions(log_text: str) -> list[str]:
    """The ``query`` of every logged decision on a build request, in order."""
    return [line.split(" query=", 1)[1].split()[0] for line in log_text.splitlines()
            if "policy.decision" in line and " path=/v1.41/build " in line]


@pytest.mark.parametrize("build_allowed", [True, False])
@pytest.mark.parametrize("chunked", [False, True])
def test_a_build_is_one_decision_per_policy_and_keeps_the_connection(
        dsfw_factory, tmp_path, builds, build_allowed, chunked):
    """An allowed request's early check (made before the context is read) is not a second
    logged decision; after the build's answer the connection serves the next request."""
    build_rule = "allow := true" if build_allowed else "allow := false"
    proc = dsfw_factory(policy_dir(tmp_path, {"authz.rego": ALLOW_ALL_V1,
                                              "build.rego": f"package docker.build\n{build_rule}\n"}))
    tag = builds.tag()
    # A refused build leaves what follows its Dockerfile unread (the decision comes as soon as
    # the Dockerfile is in); under 256 kB the connection skips it and stays open.
    body = context_tar({"Dockerfile": GOOD_DOCKERFILE, "pad": os.urandom(200_000)})
    if chunked:
        framed = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 65536]), body[i:i + 65536])
                          for i in range(0, len(body), 65536)) + b"0\r\n\r\n"
        head = b"Transfer-Encoding: chunked\r\n"
    else:
        framed, head = body, b"Content-Length: %d\r\n" % len(body)
    request = (b"POST /v1.41/build?t=%s HTTP/1.1\r\nHost: docker\r\n"
               b"Content-Type: application/x-tar\r\n%s\r\n%s" % (tag.encode(), head, framed))
    ping = b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n"
    answers = split_responses(raw_request(proc.socket, request + ping, responses=2,
                                          timeout=BUILD_TIMEOUT))
    assert len(answers) == 2, answers
    build, pong = answers
    assert build.startswith(b"HTTP/1.1 200" if build_allowed else b"HTTP/1.1 403"), build[:300]
    assert pong.startswith(b"HTTP/1.1 200") and pong.endswith(b"OK"), pong
    assert image_exists(tag) is build_allowed
    decisions = _build_decisions(proc.log_text())
    assert decisions == ["data.docker.authz.allow", "data.docker.build.allow"], decisions


def test_a_build_refused_by_authz_is_decided_once_before_its_context(dsfw_factory, tmp_path,
                                                                     builds):
    proc = dsfw_factory(policy_dir(tmp_path, {
        "authz.rego": "package docker.authz\nallow if not input.PathPlain == \"/build\"\n",
        "build.rego": "package docker.build\nallow := true\n"}))
    tag = builds.tag()
    done = post_build(proc.socket, f"t={tag}", context_tar({"Dockerfile": GOOD_DOCKERFILE}))
    assert done[0] == 403, done
    assert _build_decisions(proc.log_text()) == ["data.docker.authz.allow"]
    assert not image_exists(tag)
