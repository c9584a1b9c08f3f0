"""A Dockerfile's logical lines, read as buildkit's ``frontend/dockerfile/parser`` reads them.

Directives, continuations, comments, flags, JSON forms and heredocs are
handled here; what the instructions mean (ARG scoping, stages) is
:mod:`dsfw.build.instructions`.  Where builders disagree about the same
bytes, dsfw refuses instead of picking a reading:

* heredocs are unknown to dockerd 20.10's builders, which read the heredoc
  body as instructions; if that other reading is a valid Dockerfile too, the
  Dockerfile is ambiguous;
* ``# escape=`` after another directive is ignored by old parsers, honoured by
  new ones;
* a line ending in an escaped escape character (``\\\\``) continues in old
  parsers only;
* ``COPY --from=$X`` / ``--mount=from=$X`` are expanded by some builders only
  (see :mod:`dsfw.build.instructions`);
* ``FROM name`` naming a *later* stage is an image for the legacy builder and
  a stage for BuildKit (likewise).
"""
from __future__ import annotations

import json
import re
from typing import Any

from dsfw.build.context import BuildContextError
from dsfw.build.words import WordError, expand_word, extract_flags, go_isspace, parse_words


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
_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_OLD_ESCAPE = re.compile(r"^#[ \t]*escape[ \t]*=[ \t]*(.)[ \t]*$", re.IGNORECASE)
_HEREDOC = re.compile(r"^(\d*)<<(-?)([^<]*)$")
WHITESPACE = re.compile(r"[\t\v\f\r ]+")


def line_error(line: int, message: str, cls=InvalidDockerfile):
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
            raise line_error(self.pos, f"only one {key} parser directive can be used")
        value = match.group(2)
        if key == "escape":
            old = _OLD_ESCAPE.match(token)
            if self.directives or not old or old.group(1) != value:
                raise line_error(self.pos, "the escape directive is read differently by old and "
                            "new Dockerfile parsers here; put it alone on the first line",
                            AmbiguousDockerfile)
            if value not in ("\\", "`"):
                raise line_error(self.pos, f"invalid escape token {value!r} does not match ` or \\")
            self.escape = value
        self.directives[key] = value

    def continues(self, line: str) -> tuple[str, bool]:
        e = re.escape(self.escape)
        if re.search(f"{e}{e}[ \t]*$", line):
            raise line_error(self.pos, "a line ending in an escaped escape character continues in "
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
                        raise line_error(start, "unterminated heredoc")
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
    """One instruction as splitCommand and the parser's dispatch table read it."""
    parts = WHITESPACE.split(_strip(line), maxsplit=1)
    cmd = parts[0]
    args, flags = extract_flags(parts[1], escape) if len(parts) == 2 else ("", [])
    args = _strip(args)
    low = cmd.lower()
    # The keyword as the builder knows it: "wor\u212adir" is WORKDIR to Go and Python alike.
    node: dict[str, Any] = {"cmd": low, "Cmd": (low if low in INSTRUCTIONS else cmd).upper(),
                            "Line": start, "EndLine": end, "Original": line, "RawFlags": flags,
                            "Json": False, "Rest": args, "Heredocs": [], "Sub": None}
    if any(not f.isascii() for f in flags):
        raise line_error(start, "non-ASCII characters in flags are read differently by builders",
                    AmbiguousDockerfile)
    if low == "onbuild" and args and not sub:
        node["Sub"] = _node(args, escape, start, end, sub=True)
    elif low in ("run", "cmd", "entrypoint", "shell", "add", "copy", "volume"):
        words = _json_words(args, start)
        if words is not None:
            node["Json"], node["Words"] = True, words
    elif low == "healthcheck":
        _healthcheck(node, start)
    return node


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("number out of range")
    return value


_JSON = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite)
_SURROGATE = re.compile("[\ud800-\udfff]")


def _json_words(args: str, line: int) -> list[str] | None:
    """parseJSON: Go's json.Decoder reads one value and ignores what follows it.

    A lone surrogate escape decodes to U+FFFD in Go; text that is not a JSON
    array is the shell form (None); an array of anything but strings is an
    error in both.
    """
    if not args.startswith("["):
        return None
    try:
        value, _ = _JSON.raw_decode(args)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(v, str) for v in value):
        raise line_error(line, "when using JSON array syntax, arrays must be comprised of strings only")
    return [_SURROGATE.sub("\ufffd", v) for v in value]


def _healthcheck(node: dict[str, Any], line: int) -> None:
    """parseHealthConfig: the type word, then the command (JSON or not).

    Go finds the end of the type with ``unicode.IsSpace`` on single *bytes*, so
    it is done on the UTF-8 bytes here; a cut inside a character is refused.
    """
    raw = node["Rest"].encode("utf-8")
    sep = 0
    while sep < len(raw) and not go_isspace(chr(raw[sep])):
        sep += 1
    if not sep:
        return
    nxt = sep
    while nxt < len(raw) and go_isspace(chr(raw[nxt])):
        nxt += 1
    try:
        kind, command = raw[:sep].decode("utf-8"), raw[nxt:].decode("utf-8")
    except UnicodeDecodeError:
        raise line_error(line, "HEALTHCHECK's type word ends inside a character") from None
    node["HealthType"], node["HealthCommand"] = kind, command
    words = _json_words(command, line)
    if words is not None:
        node["Json"], node["Words"] = True, words


def logical_lines(text: str) -> tuple[str, dict[str, str], list[dict[str, Any]]]:
    """(escape character, directives, instruction nodes) of a decoded Dockerfile."""
    src, nodes = _nodes(text, heredocs=True)
    _check_heredoc_ambiguity(text, nodes)
    return src.escape, dict(src.directives), nodes


def syntax_directive(text: str) -> str | None:
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
