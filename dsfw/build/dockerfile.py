"""The policy input for ``POST /build``: a Dockerfile, parsed as the builders parse it.

The reading follows buildkit's ``frontend/dockerfile/parser`` (directives,
continuations, comments, heredocs) and its ``instructions`` package (ARG
scoping, stages, flags).  Where builders disagree about the same bytes,
dsfw refuses instead of picking a reading:

* heredocs are unknown to dockerd 20.10's builders, which read the heredoc
  body as instructions; if that other reading is a valid Dockerfile too, the
  Dockerfile is ambiguous;
* ``# escape=`` after another directive is ignored by old parsers, honoured by
  new ones;
* a line ending in an escaped escape character (``\\\\``) continues in old
  parsers only;
* ``COPY --from=$X`` / ``--mount=from=$X`` are expanded by some builders only;
* ``FROM name`` naming a *later* stage is an image for the legacy builder and
  a stage for BuildKit.
"""
from __future__ import annotations

import json
import re
from typing import Any, Mapping

from dsfw.build.context import BuildContextError
from dsfw.build.words import (WordError, expand_word, extract_flags, go_isspace,
                                   parse_words)


class DockerfileError(BuildContextError):
    """A Dockerfile dsfw will not forward."""


class InvalidDockerfile(DockerfileError):
    """Not UTF-8, or a syntax dockerd would reject as well."""


class AmbiguousDockerfile(DockerfileError):
    """Builders would read this Dockerfile differently."""


INSTRUCTIONS = frozenset({"add", "arg", "cmd", "copy", "entrypoint", "env", "expose", "from",
                          "healthcheck", "label", "maintainer", "onbuild", "run", "shell",
                          "stopsignal", "user", "volume", "workdir"})
_HEREDOC_CMDS = frozenset({"add", "copy", "run"})
_EXPANDED = frozenset({"add", "copy", "env", "expose", "label", "stopsignal", "user",
                       "volume", "workdir"})
_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_OLD_ESCAPE = re.compile(r"^#[ \t]*escape[ \t]*=[ \t]*(.)[ \t]*$", re.IGNORECASE)
_HEREDOC = re.compile(r"^(\d*)<<(-?)([^<]*)$")
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9_.-]*$")
_WS = re.compile(r"[\t\v\f\r ]+")


def _fail(line: int, message: str, cls=InvalidDockerfile):
    return cls(f"Dockerfile line {line}: {message}")


class _Source:
    """Physical lines (newline kept) and the directive state of one parse."""

    def __init__(self, text: str):
        parts = text.split("\n")
        self.lines = [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
        if self.lines and self.lines[0].startswith("\ufeff"):
            self.lines[0] = self.lines[0][1:]
        self.pos = 0
        self.escape = "\\"
        self.directives: dict[str, str] = {}
        self._done = False

    def next(self) -> str | None:
        if self.pos >= len(self.lines):
            return None
        self.pos += 1
        return self.lines[self.pos - 1]

    def directive(self, token: str) -> None:
        """DirectiveParser.ParseLine: directives only at the very top."""
        if self._done:
            return
        match = _DIRECTIVE.match(token)
        key = match.group(1).lower() if match else ""
        if key not in ("syntax", "escape", "check"):
            self._done = True
            return
        if key in self.directives:
            raise _fail(self.pos, f"only one {key} parser directive can be used")
        value = match.group(2)
        if key == "escape":
            old = _OLD_ESCAPE.match(token)
            if self.directives or not old or old.group(1) != value:
                raise _fail(self.pos, "the escape directive is read differently by old and "
                            "new Dockerfile parsers here; put it alone on the first line",
                            AmbiguousDockerfile)
            if value not in ("\\", "`"):
                raise _fail(self.pos, f"invalid escape token {value!r} does not match ` or \\")
            self.escape = value
        self.directives[key] = value

    def continues(self, line: str) -> tuple[str, bool]:
        e = re.escape(self.escape)
        if re.search(f"{e}{e}[ \t]*$", line):
            raise _fail(self.pos, "a line ending in an escaped escape character continues in "
                        "some builders and not in others", AmbiguousDockerfile)
        match = re.search(f"([^{e}]){e}[ \t]*$|^{e}[ \t]*$", line)
        if not match:
            return line, False
        return line[:match.start()] + (match.group(1) or ""), True


def _lstrip(line: str) -> str:
    i = 0
    while i < len(line) and go_isspace(line[i]):
        i += 1
    return line[i:]


def _strip(line: str) -> str:
    return _lstrip(_lstrip(line)[::-1])[::-1]


def _is_comment(line: str) -> bool:
    return _lstrip(line)[:1] == "#"


def _heredocs(line: str) -> list[dict[str, Any]]:
    docs = []
    for word in parse_words(line, "\\"):
        match = _HEREDOC.match(word)
        if not match or not match.group(3):
            continue
        rest = match.group(3)
        try:
            name, _ = expand_word(rest.replace("$", "\\$"), {}, "\\")
        except WordError as exc:
            raise InvalidDockerfile(f"bad heredoc word {rest!r}: {exc}") from None
        docs.append({"Name": name, "Expand": not any(q in rest for q in "'\""),
                     "Chomp": match.group(2) == "-", "FileDescriptor": int(match.group(1) or 0)})
    return docs


def _nodes(text: str, heredocs: bool) -> tuple[_Source, list[dict[str, Any]]]:
    """Logical lines as parser.Parse makes them: continuations joined, comments dropped."""
    src = _Source(text)
    nodes = []
    while (raw := src.next()) is not None:
        token = _lstrip(raw.rstrip("\r\n"))
        src.directive(token)
        start = src.pos
        if _is_comment(token):
            token = ""
        buf, cont = src.continues(token)
        if not cont and not buf:
            continue
        while cont and (raw := src.next()) is not None:
            token = raw.rstrip("\r\n")
            src.directive(token)
            if _is_comment(token) or not _lstrip(token):
                continue
            part, cont = src.continues(token)
            buf += part
        node = _node(buf, src.escape, start, src.pos)
        sub = node["Sub"] or node
        if heredocs and sub["cmd"] in _HEREDOC_CMDS and not sub["Json"] and "<<" in buf:
            for doc in _heredocs(buf):
                content = ""
                while True:
                    body = src.next()
                    if body is None:
                        raise _fail(start, "unterminated heredoc")
                    candidate = body.rstrip("\r\n")
                    if (candidate.lstrip("\t") if doc["Chomp"] else candidate) == doc["Name"]:
                        break
                    content += body
                doc["Content"] = content
                sub["Heredocs"].append(doc)
            node["EndLine"] = src.pos
        nodes.append(node)
    if not nodes:
        raise InvalidDockerfile("the Dockerfile has no instructions")
    return src, nodes


def _node(line: str, escape: str, start: int, end: int, sub: bool = False) -> dict[str, Any]:
    parts = _WS.split(_strip(line), maxsplit=1)
    cmd = parts[0]
    args, flags = extract_flags(parts[1], escape) if len(parts) == 2 else ("", [])
    args = _strip(args)
    low = cmd.lower()
    node: dict[str, Any] = {"cmd": low, "Cmd": cmd.upper(), "Line": start, "EndLine": end,
                            "Original": line, "RawFlags": flags, "Json": False, "Rest": args,
                            "Heredocs": [], "Sub": None}
    if any(not f.isascii() for f in flags):
        raise _fail(start, "non-ASCII characters in flags are read differently by builders",
                    AmbiguousDockerfile)
    if low == "onbuild" and args and not sub:
        node["Sub"] = _node(args, escape, start, end, sub=True)
    elif low in ("run", "cmd", "entrypoint", "shell", "add", "copy", "volume"):
        if args.startswith("["):
            try:
                value = json.loads(args)
            except ValueError:
                value = None
            if isinstance(value, list):
                if not all(isinstance(v, str) for v in value):
                    raise _fail(start, "when using JSON array syntax, arrays must be "
                                "comprised of strings only")
                node["Json"], node["Words"] = True, value
    return node


def _flags(node: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for flag in node["RawFlags"]:
        name, sep, value = flag[2:].partition("=")
        out.setdefault(name.lower(), []).append(value if sep else "true")
    return out


class _Scope:
    """Variables visible to expansion: ENV wins over ARG, as in the builders."""

    def __init__(self, escape: str):
        self.escape = escape
        self.args: dict[str, str] = {}
        self.env: dict[str, str] = {}

    def values(self) -> dict[str, str]:
        return {**self.args, **self.env}

    def expand(self, word: str, line: int) -> str:
        try:
            return expand_word(word, self.values(), self.escape)[0]
        except WordError as exc:
            raise _fail(line, str(exc)) from None


def _key_values(node: dict[str, Any], scope: _Scope) -> list[tuple[str, str]]:
    """ENV/LABEL pairs (parseNameVal), expanded."""
    words = parse_words(node["Rest"], scope.escape)
    if not words:
        raise _fail(node["Line"], f"{node['Cmd']} requires at least one argument")
    if "=" not in words[0]:
        parts = _WS.split(node["Rest"], maxsplit=1)
        if len(parts) < 2:
            raise _fail(node["Line"], f"{node['Cmd']} must have two arguments")
        pairs = [(parts[0], parts[1])]
    else:
        if any("=" not in w for w in words):
            raise _fail(node["Line"], "syntax error - can't find = in a word; must be of the "
                        "form: name=value")
        pairs = [tuple(w.split("=", 1)) for w in words]
    return [(scope.expand(k, node["Line"]), scope.expand(v, node["Line"])) for k, v in pairs]


class _Builder:
    """Walk the logical lines once, tracking ARG scope and stages."""

    def __init__(self, escape: str, buildargs: Mapping[str, str | None]):
        self.escape = escape
        self.buildargs = {k: v for k, v in buildargs.items() if v is not None}
        self.meta = _Scope(escape)
        self.meta_args: list[dict[str, Any]] = []
        self.scope = self.meta
        self.stages: list[dict[str, Any]] = []
        self.instructions: list[dict[str, Any]] = []
        self.external: list[str] = []
        self.stage_refs: list[tuple[str, int, int]] = []  # (name, stage index, line)

    def add(self, node: dict[str, Any]) -> None:
        cmd, line = node["cmd"], node["Line"]
        if cmd not in INSTRUCTIONS:
            raise _fail(line, f"unknown instruction: {node['Cmd']}")
        if cmd == "from":
            return self._from(node)
        if not self.stages and cmd != "arg":
            raise _fail(line, f"{node['Cmd']} before the first FROM; only ARG may come first")
        flags = {k: [self._flag_value(k, v, line) for v in vs] for k, vs in _flags(node).items()}
        out = {"Cmd": node["Cmd"], "Line": line, "EndLine": node["EndLine"], "Flags": flags,
               "Json": node["Json"], "Heredocs": node["Heredocs"],
               "Stage": len(self.stages) - 1 if self.stages else None,
               "Original": node["Original"], "Args": self._args(node)}
        if cmd == "onbuild":
            if node["Sub"] is None or node["Sub"]["cmd"] in ("onbuild", "from", "maintainer"):
                raise _fail(line, "ONBUILD needs an instruction other than ONBUILD, FROM or "
                            "MAINTAINER")
            out["Heredocs"] = node["Sub"]["Heredocs"]
        for value in flags.get("from", []):
            self._reference(value, line)
        for mount in flags.get("mount", []):
            fields = dict(f.split("=", 1) for f in mount.split(",") if "=" in f)
            if "from" in fields:
                self._reference(fields["from"], line)
        self.instructions.append(out)

    def _flag_value(self, name: str, value: str, line: int) -> str:
        if name in ("from", "mount") and "$" in value:
            raise _fail(line, f"variables in --{name} are expanded by some builders and not "
                        "by others", AmbiguousDockerfile)
        return self.scope.expand(value, line)

    def _args(self, node: dict[str, Any]) -> list[str]:
        cmd, line, rest = node["cmd"], node["Line"], node["Rest"]
        if cmd == "arg":
            return self._arg(node)
        if cmd in ("env", "label"):
            pairs = _key_values(node, self.scope)
            if cmd == "env":
                self.scope.env.update(pairs)
            return [f"{k}={v}" for k, v in pairs]
        if node["Json"]:
            words = node["Words"]
        elif cmd in ("add", "copy", "volume", "expose"):
            words = [w for w in _WS.split(rest) if w]
        elif cmd == "onbuild":
            words = [node["Sub"]["Original"]] if node["Sub"] else []
        else:
            words = [rest] if rest else []
        if cmd in _EXPANDED:
            words = [self.scope.expand(w, line) for w in words]
        return words

    def _arg(self, node: dict[str, Any]) -> list[str]:
        words = parse_words(node["Rest"], self.escape)
        if not words:
            raise _fail(node["Line"], "ARG requires at least one argument")
        out = []
        for word in words:
            name, sep, default = word.partition("=")
            value = self.buildargs.get(name)
            if value is None and sep:
                value = self.scope.expand(default, node["Line"])
            if value is None and self.scope is not self.meta:
                value = self.meta.args.get(name)
            if value is not None:
                self.scope.args[name] = value
            if self.scope is self.meta:
                self.meta_args.append({"Name": name, "Value": value, "Line": node["Line"]})
            out.append(name if value is None else f"{name}={value}")
        return out

    def _from(self, node: dict[str, Any]) -> None:
        line = node["Line"]
        words = [w for w in _WS.split(node["Rest"]) if w]
        flags = _flags(node)
        if set(flags) - {"platform"}:
            raise _fail(line, f"unknown flag for FROM: {sorted(set(flags) - {'platform'})}")
        if len(words) not in (1, 3) or (len(words) == 3 and words[1].lower() != "as"):
            raise _fail(line, "FROM requires either one or three arguments (FROM image [AS name])")
        image = self.meta.expand(words[0], line)
        platform = [self.meta.expand(p, line) for p in flags.get("platform", [])]
        name = words[2].lower() if len(words) == 3 else None
        if name is not None and not _STAGE_NAME.match(name):
            raise _fail(line, f"invalid stage name {words[2]!r}")
        if name is not None and any(s["Name"] == name for s in self.stages):
            raise _fail(line, f"duplicate stage name {name!r}")
        index = len(self.stages)
        base_stage = self._stage_index(image, index, numeric=False)
        if base_stage is None and image.lower() != "scratch":
            self._external(image)
        self.stage_refs.append((image, index, line))
        self.stages.append({"Index": index, "Name": name, "BaseImage": image,
                            "BaseStage": base_stage, "Platform": platform[-1] if platform else None,
                            "Line": line})
        self.instructions.append({"Cmd": "FROM", "Line": line, "EndLine": node["EndLine"],
                                  "Flags": {"platform": platform} if platform else {},
                                  "Json": False, "Heredocs": [], "Stage": index,
                                  "Original": node["Original"],
                                  "Args": [image] + (["AS", name] if name else [])})
        self.scope = _Scope(self.escape)

    def _stage_index(self, ref: str, current: int, numeric: bool) -> int | None:
        low = ref.lower()
        for stage in self.stages[:current]:
            if stage["Name"] == low:
                return stage["Index"]
        if numeric and ref.isdigit() and ref.isascii():
            if int(ref) >= current:
                raise InvalidDockerfile(f"stage index {ref} refers to a stage that is not "
                                        "defined before this one")
            return int(ref)
        return None

    def _reference(self, ref: str, line: int) -> None:
        index = len(self.stages) - 1
        if self._stage_index(ref, index, numeric=True) is None:
            self._external(ref)
            self.stage_refs.append((ref, index, line))

    def _external(self, image: str) -> None:
        if image and image not in self.external:
            self.external.append(image)

    def check_forward_references(self) -> None:
        names = {s["Name"]: s["Index"] for s in self.stages if s["Name"]}
        for ref, index, line in self.stage_refs:
            later = names.get(ref.lower())
            if later is not None and later >= index:
                raise _fail(line, f"{ref!r} names this or a later stage; the legacy builder "
                            "would pull an image of that name, BuildKit would use the stage",
                            AmbiguousDockerfile)


def _syntax(text: str) -> str | None:
    """parser.DetectSyntax: ``# syntax=`` or ``// syntax=``, after an optional shebang."""
    lines = text.lstrip("\ufeff").split("\n")
    if lines and lines[0].startswith("#!"):
        lines = lines[1:]
    for prefix in ("#", "//"):
        pattern = re.compile(rf"^{re.escape(prefix)}\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
        for line in lines:
            match = pattern.match(line.rstrip("\r"))
            if not match or match.group(1).lower() not in ("syntax", "escape", "check"):
                break
            if match.group(1).lower() == "syntax":
                return match.group(2).split(" ")[0]
    return None


def _check_heredoc_ambiguity(text: str, nodes: list[dict[str, Any]]) -> None:
    """A builder without heredocs reads the bodies as instructions: refuse if that is valid."""
    if not any(n["Heredocs"] or (n["Sub"] and n["Sub"]["Heredocs"]) for n in nodes):
        return
    _, legacy = _nodes(text, heredocs=False)
    if all(n["cmd"] in INSTRUCTIONS for n in legacy):
        raise AmbiguousDockerfile("the Dockerfile uses heredocs, and a builder without heredoc "
                                  "support would read their bodies as valid instructions")


def parse_dockerfile(content: bytes,
                     buildargs: Mapping[str, str | None] | None = None) -> dict[str, Any]:
    """The ``DockerfileParsed`` policy field; see docs/builds.md for the reference."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidDockerfile(f"the Dockerfile is not valid UTF-8 (byte {exc.start})") from None
    if "\x00" in text:
        raise InvalidDockerfile("the Dockerfile contains a NUL byte")
    src, nodes = _nodes(text, heredocs=True)
    _check_heredoc_ambiguity(text, nodes)
    builder = _Builder(src.escape, buildargs or {})
    for node in nodes:
        builder.add(node)
    if not builder.stages:
        raise InvalidDockerfile("the Dockerfile has no FROM instruction")
    builder.check_forward_references()
    syntax = _syntax(text)
    external = list(builder.external)
    if syntax and syntax not in external:
        external.insert(0, syntax)
    return {"Directives": dict(src.directives), "EscapeChar": src.escape, "Syntax": syntax,
            "MetaArgs": builder.meta_args, "Stages": builder.stages,
            "Instructions": builder.instructions, "ExternalImages": external}


def dockerfile_input(content: bytes,
                     buildargs: Mapping[str, str | None] | None = None) -> dict[str, Any]:
    """Policy input fields for a build: raw lines, parsed form, pulled images."""
    parsed = parse_dockerfile(content, buildargs)
    return {"Dockerfile": content.decode("utf-8").split("\n"), "DockerfileParsed": parsed,
            "ExternalImages": parsed["ExternalImages"]}
