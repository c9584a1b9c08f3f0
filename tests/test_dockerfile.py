"""Tests for the Dockerfile policy input: plain asserts, and hypothesis for hostile text."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from dsfw.build.context import BuildContextError
from dsfw.build.dockerfile import AmbiguousDockerfile, InvalidDockerfile
from dsfw.build.steps import dockerfile_input

SAMPLE = b"""# escape=\\
# syntax=docker/dockerfile:1
ARG BASE=alpine
ARG VER
FROM --platform=$BUILDPLATFORM ${BASE}:${VER:-3.18} AS Build
ARG VER
ARG BASE
ENV A=1 B="two words"
RUN echo hi \\
  # comment inside a continuation
  && echo there
COPY --from=golang:1.21 /x /y
COPY x /etc/$A
FROM scratch
COPY --from=build /a /b
COPY --from=0 /a /b
RUN --mount=type=cache,from=node:20,target=/n ls
LABEL a=$A version=$VER
"""


def parsed(text: bytes, buildargs=None) -> dict:
    return dockerfile_input(text, buildargs)["DockerfileParsed"]


def by_cmd(p: dict, cmd: str) -> list[dict]:
    return [i for i in p["Instructions"] if i["Cmd"] == cmd]


def test_raw_lines_are_split_on_newline_like_the_original():
    out = dockerfile_input(b"FROM ubuntu:18.04\nCOPY . /app\n", None)
    assert out["DockerfileRaw"] == ["FROM ubuntu:18.04", "COPY . /app", ""]
    assert out["Dockerfile"] == ["FROM ubuntu:18.04", "COPY . /app"]


def test_sample_stages_args_and_external_images():
    out = dockerfile_input(SAMPLE, {"VER": "3.19", "UNUSED": None})
    p = out["DockerfileParsed"]
    assert p["Directives"] == {"escape": "\\", "syntax": "docker/dockerfile:1"}
    assert p["Syntax"] == "docker/dockerfile:1"
    assert p["MetaArgs"] == [{"Name": "BASE", "Value": "alpine", "Line": 3, "FromBuildArgs": False},
                             {"Name": "VER", "Value": "3.19", "Line": 4, "FromBuildArgs": True}]
    first, second = p["Stages"]
    assert (first["Name"], first["BaseImage"], first["Platform"]) == ("build", "alpine:3.19", "")
    assert second == {"Index": 1, "Name": None, "BaseImage": "scratch", "BaseStage": None,
                      "Platform": None, "Line": 14}
    assert out["ExternalImages"] == ["docker/dockerfile:1", "alpine:3.19", "golang:1.21",
                                     "node:20"]


def test_continuation_and_comment_inside_it():
    run = by_cmd(parsed(SAMPLE), "RUN")[0]
    assert run["Args"] == ["echo hi   && echo there"]
    assert (run["Line"], run["EndLine"]) == (9, 11)


@pytest.mark.parametrize("text", [b"FROM a\nRUN <<EOF\napt-get update\nEOF\n",
                                  b"FROM a\nCOPY <<-EOT /etc/x\n\tcontent\n\tEOT\n"])
def test_heredocs_cannot_be_forwarded_to_the_classic_builder(text):
    # dockerd 20.10 reads a heredoc body as instructions ("unknown instruction: APT-GET").
    with pytest.raises(AmbiguousDockerfile, match="heredocs"):
        dockerfile_input(text, None)


def test_arg_scoping_redeclared_args_inherit_and_env_expands():
    p = parsed(SAMPLE, {"VER": "3.19"})
    assert by_cmd(p, "ARG")[-2:][0]["Args"] == ["VER=3.19"]
    assert by_cmd(p, "ARG")[-1]["Args"] == ["BASE=alpine"]
    assert by_cmd(p, "ENV")[0]["Args"] == ["A=1", "B=two words"]
    # the second stage did not redeclare anything: $A and $VER are empty there
    assert by_cmd(p, "LABEL")[0]["Args"] == ["a=", "version="]


def test_arg_not_redeclared_is_not_visible_in_stage():
    p = parsed(b"ARG X=1\nFROM a\nLABEL x=$X\nARG X\nLABEL y=$X\n")
    assert [i["Args"] for i in by_cmd(p, "LABEL")] == [["x="], ["y=1"]]


def test_buildargs_override_defaults_and_none_means_unset():
    p = parsed(b"ARG IMG=base\nFROM $IMG\n", {"IMG": "other"})
    assert p["Stages"][0]["BaseImage"] == "other"
    p = parsed(b"ARG IMG=base\nFROM $IMG\n", {"IMG": None})
    assert p["Stages"][0]["BaseImage"] == "base"


def test_stage_references_by_alias_case_insensitive_and_index():
    out = dockerfile_input(b"FROM golang AS B\nFROM b\nCOPY --from=B /x /x\n"
                           b"COPY --from=0 /y /y\n", None)
    p = out["DockerfileParsed"]
    assert p["Stages"][1]["BaseStage"] == 0
    assert out["ExternalImages"] == ["golang"]


def test_escape_directive_backtick():
    p = parsed(b"# escape=`\nFROM a\nRUN echo \\ `\n  more\n")
    assert by_cmd(p, "RUN")[0]["Args"] == ["echo \\   more"]
    assert p["EscapeChar"] == "`"


def test_json_form_and_onbuild():
    p = parsed(b'FROM a\nCMD ["sh", "-c", "x"]\nONBUILD COPY --from=evil / /\n')
    cmd = by_cmd(p, "CMD")[0]
    assert cmd["Json"] and cmd["Args"] == ["sh", "-c", "x"]
    assert by_cmd(p, "ONBUILD")[0]["Args"] == ["COPY --from=evil / /"]


def test_bom_and_crlf():
    p = parsed(b"\xef\xbb\xbfFROM a\r\nRUN x\r\n")
    assert [i["Cmd"] for i in p["Instructions"]] == ["FROM", "RUN"]
    assert by_cmd(p, "RUN")[0]["Args"] == ["x"]


@pytest.mark.parametrize("text, error", [
    (b"\xff\xfe", InvalidDockerfile),
    (b"", InvalidDockerfile),
    (b"# only a comment\n", InvalidDockerfile),
    (b"RUN x\n", InvalidDockerfile),
    (b"FROM a\nFOO bar\n", InvalidDockerfile),
    (b"FROM a\nRUN <<EOF\nno end\n", InvalidDockerfile),
    (b"FROM a b\n", InvalidDockerfile),
    (b"FROM a AS x\nFROM b AS X\n", InvalidDockerfile),
    (b"FROM ${X-y}\n", InvalidDockerfile),
    (b"FROM a\nCOPY --from=5 / /\n", InvalidDockerfile),
    (b"# syntax=x\n# escape=`\nFROM a\n", AmbiguousDockerfile),
    (b"FROM a\nRUN <<CMD\nFROM evil\nCMD\n", AmbiguousDockerfile),
    (b"FROM a\nARG S=x\nCOPY --from=$S / /\n", AmbiguousDockerfile),
    (b"FROM later AS first\nFROM b AS later\n", AmbiguousDockerfile),
    (b"FROM a\nRUN echo \\\\\nFROM b\n", AmbiguousDockerfile),
])
def test_refusals(text, error):
    with pytest.raises(error):
        dockerfile_input(text, None)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(
    alphabet=st.sampled_from(list("FROMRUNCOPYARG<>EOF $\\`{}:-=\"'#\n\t ax0")), max_size=200
).map(lambda s: s.encode()))
def test_arbitrary_input_only_raises_build_context_errors(data):
    try:
        out = dockerfile_input(data, {"a": "b"})
    except BuildContextError:
        return
    assert out["DockerfileRaw"] == data.decode().split("\n")
    assert len(out["Dockerfile"]) == len(out["DockerfileParsed"]["Instructions"])
    assert all(isinstance(i, str) for i in out["ExternalImages"])
