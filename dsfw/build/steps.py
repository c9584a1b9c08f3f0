"""The Dockerfile as steps: what the build policy sees, and what dsfw forwards.

``input.Dockerfile`` is the list of instructions as the builder will execute
them, one canonical line each (see docs/builds.md): continuations joined,
comments dropped, the escape directive applied, keyword upper-case, single
spaces between keyword, flags and arguments, ``FROM`` with its image
expanded, exec-form JSON re-encoded without escapes.  dsfw then forwards a
Dockerfile *rendered from these lines*, so dockerd parses what the policy
saw, not the client's spelling.  Before forwarding, the rendering is read
back with the same parser: if any step or derived fact differs, the
Dockerfile is refused (:class:`UnrenderableDockerfile`) with the step that
would change.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Mapping

from dsfw.build.context import DockerfileTooLarge
from dsfw.build.dockerfile import (AmbiguousDockerfile, DockerfileError, InvalidDockerfile,
                                   WHITESPACE, logical_lines, syntax_directive)
from dsfw.build.instructions import Builder
from dsfw.build.words import go_isspace

# What an image reference is made of (distribution/reference); anything else
# after expansion (quotes, $, spaces) would be read again by dockerd.
_IMAGE = re.compile(r"[A-Za-z0-9_.:/@+-]+\Z")
_FLAG_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*\Z")
# A bound on the CPU one build request can cost (docs/benchmarks.md measures it); dockerd's
# layer limit (127) makes real Dockerfiles far shorter.
MAX_INSTRUCTIONS = 4096
# Facts that depend on the spelling, not on the step: left out of the read-back check.
_SPELLING = frozenset({"Line", "EndLine", "Original", "BuildArgs", "FromBuildArgs"})


class UnrenderableDockerfile(AmbiguousDockerfile):
    """dsfw cannot write these steps so that dockerd reads them as the policy saw them."""


@dataclass(frozen=True)
class CanonicalDockerfile:
    """``rendered`` is forwarded to dockerd; ``fields`` go into the build policy's input."""

    rendered: bytes
    fields: dict[str, Any]


def _decode(content: bytes) -> str:
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidDockerfile(f"the Dockerfile is not valid UTF-8 (byte {exc.start})") from None
    if "\x00" in text:
        raise InvalidDockerfile("the Dockerfile contains a NUL byte")
    return text


def _json(words: list[str]) -> str:
    return json.dumps(words, ensure_ascii=False)


def _flag(word: str, escape: str, line: int) -> str:
    """A flag as extractBuilderFlags reads it back: bare, or its value quoted when needed."""
    name, sep, value = word[2:].partition("=")
    if not _FLAG_NAME.match(name):
        raise UnrenderableDockerfile(f"Dockerfile line {line}: the flag {word!r} cannot be "
                                     "written unambiguously")
    if not sep:
        return f"--{name}"
    if all(not go_isspace(c) and c not in ("'", '"', escape) for c in value):
        return f"--{name}={value}"
    quoted = value.replace(escape, escape * 2).replace('"', escape + '"')
    return f'--{name}="{quoted}"'


def _arguments(node: dict[str, Any], image: str | None, escape: str, strict: bool) -> str:
    cmd, line = node["cmd"], node["Line"]
    if cmd == "from":
        if strict and not _IMAGE.match(image or ""):
            raise UnrenderableDockerfile(
                f"Dockerfile line {line}: the FROM image {image!r} (after ARG substitution) is "
                "not a plain image reference; dsfw forwards FROM lines with the image written out")
        words = [w for w in WHITESPACE.split(node["Rest"]) if w]
        return image + (f" AS {words[2].lower()}" if len(words) == 3 else "")
    if cmd == "onbuild" and node["Sub"] is not None:
        return _line(node["Sub"], None, escape, strict)
    if cmd == "healthcheck" and "HealthType" in node:
        kind = node["HealthType"]
        kind = kind.upper() if kind.isascii() else kind
        command = _json(node["Words"]) if node["Json"] else node["HealthCommand"]
        return f"{kind} {command}" if command else kind
    if node["Json"]:
        return _json(node["Words"])
    return node["Rest"]


def _line(node: dict[str, Any], image: str | None, escape: str, strict: bool = True) -> str:
    """One canonical step."""
    if node["Heredocs"]:
        raise UnrenderableDockerfile(
            f"Dockerfile line {node['Line']}: heredocs (<<) cannot be forwarded: dockerd 20.10's "
            "classic builder reads a heredoc's body as instructions")
    parts = [node["Cmd"]] + [_flag(f, escape, node["Line"]) for f in node["RawFlags"]]
    rest = _arguments(node, image, escape, strict)
    if rest.startswith("--"):
        parts.append("--")  # the flag terminator the client wrote, or the rest becomes flags
    if rest:
        parts.append(rest)
    return " ".join(parts)


def _read(text: str, buildargs: Mapping[str, str | None],
          strict: bool = True) -> tuple[dict[str, Any], Any]:
    """(policy fields, the spelling-independent facts to compare after rendering)."""
    escape, directives, nodes = logical_lines(text)
    if len(nodes) > MAX_INSTRUCTIONS:
        raise DockerfileTooLarge(f"the Dockerfile has {len(nodes)} instructions, more than the "
                                 f"limit of {MAX_INSTRUCTIONS}")
    builder = Builder(escape, buildargs)
    for node in nodes:
        builder.add(node)
    if not builder.stages:
        raise InvalidDockerfile("the Dockerfile has no FROM instruction")
    builder.check_forward_references()
    lines = [_line(node, image, escape, strict) for node, image in zip(nodes, builder.images)]
    for instruction, line in zip(builder.instructions, lines):
        if instruction["Cmd"] == "ONBUILD":  # the trigger as dockerd stores it: canonical too
            instruction["Args"] = [line.partition(" ")[2]] if " " in line else []
    syntax = syntax_directive(text)
    external = list(builder.external)
    if syntax and syntax not in external:
        external.insert(0, syntax)
    parsed = {"Directives": directives, "EscapeChar": escape, "Syntax": syntax,
              "MetaArgs": builder.meta_args, "Stages": builder.stages,
              "Instructions": builder.instructions, "ExternalImages": external}
    fields = {"Dockerfile": lines, "DockerfileParsed": parsed, "ExternalImages": external,
              "RunCommands": builder.run_commands}
    facts = {"Dockerfile": lines, "EscapeChar": escape, "MetaArgs": _strip(builder.meta_args),
             "Stages": _strip(builder.stages), "Instructions": _strip(builder.instructions),
             "External": builder.external, "RunCommands": _strip(builder.run_commands)}
    return fields, facts


def _strip(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Without what depends on the spelling (line numbers, original text, provenance)."""
    return [{k: v for k, v in item.items() if k not in _SPELLING} for item in items]


def _first_difference(facts: dict[str, Any], again: dict[str, Any],
                      fields: dict[str, Any]) -> str:
    instructions = fields["DockerfileParsed"]["Instructions"]
    for i, (before, after) in enumerate(zip(facts["Instructions"], again["Instructions"])):
        if before != after or facts["Dockerfile"][i] != again["Dockerfile"][i]:
            return f"line {instructions[i]['Line']} ({instructions[i]['Cmd']})"
    return "what it derives (stages, ARGs, RUN commands)"


def canonical_dockerfile(content: bytes, buildargs: Mapping[str, str | None] | None = None,
                         strict: bool = True) -> CanonicalDockerfile:
    """The build policy's Dockerfile fields and the Dockerfile dsfw forwards.

    Raises a :class:`~dsfw.build.dockerfile.DockerfileError` for a Dockerfile
    dsfw will not forward.  ``strict=False`` is for reading a Dockerfile again
    with masked values (redaction): the steps are not checked for forwarding.
    """
    buildargs = buildargs or {}
    text = _decode(content)
    fields, facts = _read(text, buildargs, strict)
    if not strict:
        fields["DockerfileRaw"] = text.split("\n")
        return CanonicalDockerfile(b"", fields)
    escape = fields["DockerfileParsed"]["EscapeChar"]
    rendered = ("# escape=`\n" if escape == "`" else "") + "".join(
        f"{line}\n" for line in fields["Dockerfile"])
    try:
        _, again = _read(rendered, buildargs)
    except DockerfileError as exc:
        raise UnrenderableDockerfile(f"the Dockerfile's canonical steps do not read back: {exc}") \
            from None
    if again != facts:
        raise UnrenderableDockerfile(
            "the Dockerfile cannot be rewritten into canonical steps that dockerd reads as the "
            f"policy saw them: {_first_difference(facts, again, fields)} would change")
    fields["DockerfileRaw"] = text.split("\n")
    return CanonicalDockerfile(rendered.encode("utf-8"), fields)


def dockerfile_input(content: bytes, buildargs: Mapping[str, str | None] | None = None,
                     strict: bool = True) -> dict[str, Any]:
    """Policy input fields for a build (see docs/builds.md)."""
    return canonical_dockerfile(content, buildargs, strict).fields
