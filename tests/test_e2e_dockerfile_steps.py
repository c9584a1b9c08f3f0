"""End to end: the build policy sees canonical steps, and dockerd builds exactly those.

Judged by dockerd's own state, asked directly: whether the image exists, and
for allowed builds its configuration and history compared with the same
Dockerfile built directly against dockerd.  The spellings go through the
real docker CLI (classic builder) where it can send them, and raw HTTP where
it cannot (a hard-linked Dockerfile, a ``dockerfile=`` path dsfw resolves).
"""
from __future__ import annotations

import json

import pytest

from dsfw.testing.e2e import DOCKER_SOCKET, TEST_IMAGE, docker_cli, policy_dir, requires_docker
from tests.test_dockerfile_steps import NODE_SPELLINGS, run_line_policy
from tests.test_e2e_build import (BUILD_DENIED, LINE_BASED_BUILD, builds,  # noqa: F401 (fixture)
                            image_exists, post_build)
from tests.test_e2e_policy import ALLOW_ALL_V1, message

pytestmark = requires_docker

# The original firewall's example build policy (README) is LINE_BASED_BUILD, aimed at this test's
# base image so that a build it lets through would really succeed: "not built" means "refused".
ORIGINAL_BUILD = LINE_BASED_BUILD
RUN_LINE_BUILD = run_line_policy("echo forbidden")


def spelled(text: bytes, image: str) -> str:
    """A NODE_SPELLINGS entry with ``node`` replaced by ``image``, in the same spelling."""
    out = text.decode("utf-8")
    if image == "node":
        return out
    head, tail = image[:3], image[3:]
    for old, new in (("no`\nde", f"{head}`\n{tail}"), ("no'de'", f"{head}'{tail}'"),
                     ("no\\de", f"{head}\\{tail}"), ("no${UNSET}de", f"{head}${{UNSET}}{tail}"),
                     ("node", image)):
        out = out.replace(old, new)
    assert "node" not in out and "no" + "de" not in out.replace("`\n", "")
    return out


def build_arg_options(buildargs: dict | None, image: str) -> list[str]:
    return [f"--build-arg={k}={v.replace('node', image)}" for k, v in (buildargs or {}).items()]


def refusals_missed(builds, sock: str, cases, image: str) -> list[str]:
    """Build each spelling through one dsfw; the names of those not refused by the policy."""
    missed = []
    for name, text, buildargs in cases:
        done, tag = builds.cli(sock, {"Dockerfile": spelled(text, image) + "\nRUN echo built\n"},
                               *build_arg_options(buildargs, image))
        if done.returncode == 0 or BUILD_DENIED not in done.stderr or image_exists(tag):
            missed.append(f"{name}: {done.stderr.strip()[-200:]}")
    return missed


def test_shipped_build_policy_refuses_every_spelling_of_from_node(dsfw, builds):
    assert refusals_missed(builds, dsfw.socket, NODE_SPELLINGS, "node") == []


@pytest.fixture
def original(dsfw_factory, tmp_path):
    return dsfw_factory(policy_dir(tmp_path, {"authz.rego": ALLOW_ALL_V1,
                                              "build.rego": ORIGINAL_BUILD}, "original"))


@pytest.fixture
def allowed_tag():
    """Another name for the test image, which the original policy does not name."""
    tag = f"dsfw-e2e-steps-{__import__('uuid').uuid4().hex[:10]}:latest"
    assert docker_cli(DOCKER_SOCKET, "tag", TEST_IMAGE, tag).returncode == 0
    yield tag
    docker_cli(DOCKER_SOCKET, "image", "rm", tag)


ORIGINAL_CASES = [case for case in NODE_SPELLINGS if case[0] != "stage alias"]


def test_original_policy_holds_against_every_spelling(original, builds):
    assert refusals_missed(builds, original.socket, ORIGINAL_CASES, TEST_IMAGE) == []


CONTROLS = [case for case in ORIGINAL_CASES if case[0] in (
    "continuation in keyword", "escape directive in word", "CRLF", "unset variable", "buildargs")]


@pytest.mark.parametrize("name, text, buildargs", CONTROLS, ids=[n for n, _, _ in CONTROLS])
def test_original_policy_builds_the_same_spelling_of_another_image(original, builds, allowed_tag,
                                                                   name, text, buildargs):
    # The refusals above were the policy's: the same spelling of an image it does not name builds.
    builds.built(original.socket, {"Dockerfile": spelled(text, allowed_tag) + "\nRUN echo ok\n"},
                 *build_arg_options(buildargs, allowed_tag))


RUN_CASES = [b"RUN\techo forbidden\n", b"RUN\x0becho forbidden\n", b"run echo forbidden\n",
             b"R\\\nUN echo forbidden\n", b'RUN ["/bin/sh", "-c", "ech\\u006f forbidden"]\n',
             b'RUN ["/bin/sh", "-c", "echo \\u0066orbidden"]\n']


def test_line_based_run_check_holds_through_the_cli(dsfw_factory, tmp_path, builds):
    proc = dsfw_factory(policy_dir(tmp_path, {"authz.rego": ALLOW_ALL_V1,
                                              "build.rego": RUN_LINE_BUILD}))
    for run in RUN_CASES:
        builds.refused(proc.socket, {"Dockerfile": f"FROM {TEST_IMAGE}\n" + run.decode()},
                       BUILD_DENIED)
    for run in RUN_CASES[3:5]:  # the refusals were the policy's
        builds.built(proc.socket, {"Dockerfile": f"FROM {TEST_IMAGE}\n" +
                                   run.decode().replace("\\u0066", "f").replace("forbidden", "fine")})


def test_raw_http_spellings_behind_a_hard_link_and_a_dockerfile_path(original):
    # The Dockerfile is reached through a hard link and an unclean dockerfile= path; BOM, CRLF,
    # a tab and a lower-case keyword: one step, "FROM <image>", refused.
    import io
    import tarfile
    text = f"\ufeffarg B={TEST_IMAGE}\r\nfrom\t$B\r\nRUN echo built\r\n".encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("real/df")
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text))
        link = tarfile.TarInfo("sub/Dockerfile")
        link.type, link.linkname = tarfile.LNKTYPE, "real/df"
        tar.addfile(link)
    tag = f"dsfw-e2e-steps-{__import__('uuid').uuid4().hex[:10]}:raw"
    status, _, body = post_build(original.socket, f"t={tag}&dockerfile=.%2Fsub%2F%2FDockerfile",
                                 out.getvalue())
    assert status == 403, body
    assert message(body).startswith("dsfw: request denied by policy data.docker.build.allow")
    assert not image_exists(tag)


# --- ordinary Dockerfiles build as they would without dsfw ------------------------------------

ORDINARY = f"""# syntax=docker/dockerfile:1
# An ordinary multi-stage Dockerfile, written the way people write them.
ARG BASE={TEST_IMAGE}
ARG GREETING="hello world"

FROM ${{BASE}} AS builder
ARG GREETING
ENV OUT=/out \\
    MODE=release
WORKDIR $OUT
RUN echo "$GREETING" > greeting.txt \\
    # a comment inside the continuation
    && echo "$MODE" >> greeting.txt
RUN ["/bin/sh", "-c", "echo json \\u00e9 >> greeting.txt"]

from $BASE
LABEL org.example.title="steps test" \\
      org.example.mode=${{MODE:-none}}
COPY --from=builder /out/greeting.txt /greeting.txt
SHELL ["/bin/sh", "-e", "-c"]
RUN cat /greeting.txt
EXPOSE 8080/tcp
VOLUME ["/data"]
USER 1000:1000
WORKDIR /home
HEALTHCHECK --interval=30s  CMD  ["cat", "/greeting.txt"]
ONBUILD RUN echo child
STOPSIGNAL SIGTERM
ENTRYPOINT ["cat"]
CMD  ["/greeting.txt"]
"""
BACKTICK = f"""# escape=`
FROM {TEST_IMAGE}
ENV P=C:\\tools `
    Q=two
RUN echo $P `
    $Q > /p.txt
"""


def image_facts(ref: str) -> dict:
    """What dockerd stored for an image: its config and history, without ids and times."""
    inspected = json.loads(docker_cli(DOCKER_SOCKET, "image", "inspect", ref).stdout)[0]
    config = {k: inspected["Config"].get(k) for k in (
        "Env", "Cmd", "Entrypoint", "Labels", "WorkingDir", "User", "ExposedPorts", "Volumes",
        "StopSignal", "Healthcheck", "OnBuild", "Shell")}
    history = docker_cli(DOCKER_SOCKET, "history", "--no-trunc", "--format",
                         "{{.CreatedBy}}", ref).stdout
    ran = docker_cli(DOCKER_SOCKET, "run", "--rm", "--entrypoint", "cat", ref, *(
        ["/greeting.txt"] if "greeting" in json.dumps(config) else ["/p.txt"]), timeout=60)
    return {"config": config, "history": history.splitlines(), "output": ran.stdout}


@pytest.mark.parametrize("dockerfile, buildargs", [(ORDINARY, []),
                                                   (ORDINARY, ["--build-arg", "GREETING=hi"]),
                                                   (BACKTICK, [])],
                         ids=["multi-stage", "multi-stage-with-build-arg", "backtick-escape"])
def test_ordinary_dockerfiles_build_as_they_do_directly(dsfw, builds, dockerfile, buildargs):
    direct = builds.built(DOCKER_SOCKET, {"Dockerfile": dockerfile}, "--no-cache", *buildargs)
    through = builds.built(dsfw.socket, {"Dockerfile": dockerfile}, "--no-cache", *buildargs)
    expected, got = image_facts(direct), image_facts(through)
    assert got == expected
    assert got["output"]  # the build really produced the file the steps wrote


def test_dockerd_stores_the_canonical_trigger(dsfw, builds):
    # What dockerd keeps is the forwarded rendering, not the client's spelling: the ONBUILD
    # trigger (stored as text, run by later builds) is the canonical step the policy saw.
    tag = builds.built(dsfw.socket, {"Dockerfile": f"from  {TEST_IMAGE}\nonbuild\trun  [\"ech\\u006f\", "
                                                   f"\"child\"]\n"})
    inspected = json.loads(docker_cli(DOCKER_SOCKET, "image", "inspect", tag).stdout)[0]
    assert inspected["Config"]["OnBuild"] == ['RUN ["echo", "child"]']
