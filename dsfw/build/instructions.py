"""What a Dockerfile's instructions mean: ARG scoping, stages, expansion, RUN commands.

This follows buildkit's ``instructions`` package and dockerd 20.10's classic
builder (``builder/dockerfile``): meta ARGs (before the first FROM) are seen
by FROM lines only; inside a stage an ARG must be redeclared and then takes
the build argument, its default or the meta value; ENV wins over ARG; the
proxy build arguments (``HTTP_PROXY`` ...) are visible without an ARG; a
stage built on an earlier stage inherits its ENV and SHELL.  Values that come
from the request's ``buildargs`` are tracked (``BuildArgs`` names), so logs
and records can redact them.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

from dsfw.build.dockerfile import (INSTRUCTIONS, WHITESPACE, AmbiguousDockerfile,
                                   InvalidDockerfile, line_error)
from dsfw.build.runs import effective_command
from dsfw.build.words import WordError, expand_word, parse_words

_STAGE_NAME = re.compile(r"^[a-z][a-z0-9_.-]*$")
# builtinAllowedBuildArgs: usable without an ARG instruction when given as build arguments.
PROXY_ARGS = frozenset({"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY",
                        "ftp_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"})
_EXPANDED = frozenset({"add", "copy", "env", "expose", "label", "stopsignal", "user",
                       "volume", "workdir"})
DEFAULT_SHELL = ("/bin/sh", "-c")


def _flags(node: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for flag in node["RawFlags"]:
        name, sep, value = flag[2:].partition("=")
        out.setdefault(name.lower(), []).append(value if sep else "true")
    return out


class _Scope:
    """Variables visible to expansion, and which of them came from buildargs."""

    def __init__(self, escape: str, proxies: Mapping[str, str]):
        self.escape = escape
        self.args: dict[str, str] = dict(proxies)
        self.env: dict[str, str] = {}
        self.tainted: set[str] = set(proxies)  # names whose value derives from buildargs
        self.env_tainted: set[str] = set()
        self.used: set[str] = set()  # build-arg-derived names used since the last reset

    def values(self) -> dict[str, str]:
        return {**self.args, **self.env}

    def is_tainted(self, name: str) -> bool:
        return name in self.env_tainted if name in self.env else name in self.tainted

    def expand(self, word: str, line: int) -> str:
        try:
            value, names = expand_word(word, self.values(), self.escape)
        except WordError as exc:
            raise line_error(line, str(exc)) from None
        self.used.update(n for n in names if self.is_tainted(n))
        return value


def _key_values(node: dict[str, Any], scope: _Scope) -> list[tuple[str, str]]:
    """ENV/LABEL pairs (parseNameVal), expanded."""
    words = parse_words(node["Rest"], scope.escape)
    if not words:
        raise line_error(node["Line"], f"{node['Cmd']} requires at least one argument")
    if "=" not in words[0]:
        parts = WHITESPACE.split(node["Rest"], maxsplit=1)
        if len(parts) < 2:
            raise line_error(node["Line"], f"{node['Cmd']} must have two arguments")
        pairs = [(parts[0], parts[1])]
    else:
        if any("=" not in w for w in words):
            raise line_error(node["Line"], "syntax error - can't find = in a word; must be of the "
                        "form: name=value")
        pairs = [tuple(w.split("=", 1)) for w in words]
    return [(scope.expand(k, node["Line"]), scope.expand(v, node["Line"])) for k, v in pairs]


class Builder:
    """Walk the logical lines once, tracking ARG scope, stages, SHELL and RUN commands."""

    def __init__(self, escape: str, buildargs: Mapping[str, str | None]):
        self.escape = escape
        self.buildargs = {k: v for k, v in buildargs.items() if v is not None}
        self.proxies = {k: v for k, v in self.buildargs.items() if k in PROXY_ARGS}
        self.meta = _Scope(escape, self.proxies)
        self.meta_args: list[dict[str, Any]] = []
        self.scope = self.meta
        self.shell: list[str] = list(DEFAULT_SHELL)
        self.stages: list[dict[str, Any]] = []
        self._finals: list[tuple[dict[str, str], set[str], list[str]]] = []
        self.instructions: list[dict[str, Any]] = []
        self.images: list[str | None] = []  # per node: the expanded FROM image, else None
        self.run_commands: list[dict[str, Any]] = []
        self.external: list[str] = []
        self.stage_refs: list[tuple[str, int, int]] = []  # (name, stage index, line)

    def add(self, node: dict[str, Any]) -> None:
        cmd, line = node["cmd"], node["Line"]
        if cmd not in INSTRUCTIONS:
            raise line_error(line, f"unknown instruction: {node['Cmd']}")
        self.scope.used = set()
        if cmd == "from":
            return self._from(node)
        self.images.append(None)
        if not self.stages and cmd != "arg":
            raise line_error(line, f"{node['Cmd']} before the first FROM; only ARG may come first")
        flags = {k: [self._flag_value(k, v, line) for v in vs] for k, vs in _flags(node).items()}
        out = {"Cmd": node["Cmd"], "Line": line, "EndLine": node["EndLine"], "Flags": flags,
               "Json": node["Json"], "Heredocs": node["Heredocs"],
               "Stage": len(self.stages) - 1 if self.stages else None,
               "Original": node["Original"], "Args": self._args(node)}
        if cmd == "onbuild":
            sub = node["Sub"]
            if sub is None or sub["cmd"] in ("onbuild", "from", "maintainer"):
                raise line_error(line, "ONBUILD needs an instruction other than ONBUILD, FROM or "
                            "MAINTAINER")
            if sub["cmd"] not in INSTRUCTIONS:
                raise line_error(line, f"unknown instruction in ONBUILD: {sub['Cmd']}")
            out["Heredocs"] = sub["Heredocs"]
            # A trigger runs in a later build, or in a later stage of this one (FROM <stage>):
            # what it pulls counts here too.
            self._references({k: [self._flag_value(k, v, line) for v in vs]
                              for k, vs in _flags(sub).items() if k in ("from", "mount")}, line)
            if sub["cmd"] == "run":
                self._run(sub, line, onbuild=True)
        elif cmd == "run":
            self._run(node, line, onbuild=False)
        elif cmd == "shell":
            if not node["Json"]:
                raise line_error(line, "SHELL requires the arguments to be in JSON form")
            self.shell = list(node["Words"])
        self._references(flags, line)
        out["BuildArgs"] = sorted(self.scope.used)
        self.instructions.append(out)

    def _references(self, flags: dict[str, list[str]], line: int) -> None:
        for value in flags.get("from", []):
            self._reference(value, line)
        for mount in flags.get("mount", []):
            fields = dict(f.split("=", 1) for f in mount.split(",") if "=" in f)
            if "from" in fields:
                self._reference(fields["from"], line)

    def _run(self, node: dict[str, Any], line: int, onbuild: bool) -> None:
        # A trigger keeps this stage's ENV and SHELL (they are in the image); ARGs stay behind.
        if onbuild:
            known = dict(self.scope.env)
            tainted = {n for n in known if n in self.scope.env_tainted}
        else:
            known = self.scope.values()
            tainted = {n for n in known if self.scope.is_tainted(n)}
        words = node["Words"] if node["Json"] else [node["Rest"]]
        entry = effective_command(self.shell, node["Json"], words, known)
        entry.update({"Line": line, "Stage": len(self.stages) - 1, "OnBuild": onbuild})
        entry["BuildArgs"] = sorted(set(entry.pop("Used")) & tainted)
        self.run_commands.append(entry)

    def _flag_value(self, name: str, value: str, line: int) -> str:
        if name in ("from", "mount") and "$" in value:
            raise line_error(line, f"variables in --{name} are expanded by some builders and not "
                        "by others", AmbiguousDockerfile)
        return self.scope.expand(value, line)

    def _args(self, node: dict[str, Any]) -> list[str]:
        cmd, line, rest = node["cmd"], node["Line"], node["Rest"]
        if cmd == "arg":
            return self._arg(node)
        if cmd in ("env", "label"):
            pairs = _key_values(node, self.scope)
            if cmd == "env":
                for name, value in pairs:
                    self.scope.env[name] = value
                    self.scope.env_tainted.discard(name)
                    if self.scope.used:
                        self.scope.env_tainted.add(name)
            return [f"{k}={v}" for k, v in pairs]
        if cmd == "healthcheck" and "HealthType" in node:
            kind = node["HealthType"]
            kind = kind.upper() if kind.isascii() else kind
            if node["Json"]:
                return [kind, *node["Words"]]
            return [kind] + ([node["HealthCommand"]] if node["HealthCommand"] else [])
        if node["Json"]:
            words = node["Words"]
        elif cmd in ("add", "copy", "volume", "expose"):
            words = [w for w in WHITESPACE.split(rest) if w]
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
            raise line_error(node["Line"], "ARG requires at least one argument")
        out = []
        for word in words:
            name, sep, default = word.partition("=")
            before = set(self.scope.used)
            value = self.buildargs.get(name)
            tainted = value is not None
            if value is None and sep:
                self.scope.used = set()
                value = self.scope.expand(default, node["Line"])
                tainted = bool(self.scope.used)
                self.scope.used |= before
            if value is None and self.scope is not self.meta:
                value = self.meta.args.get(name)
                tainted = name in self.meta.tainted
            if value is not None:
                self.scope.args[name] = value
                self.scope.tainted.discard(name)
                if tainted:
                    self.scope.tainted.add(name)
                    self.scope.used.add(name)
            if self.scope is self.meta:
                self.meta_args.append({"Name": name, "Value": value, "Line": node["Line"],
                                       "FromBuildArgs": tainted})
            out.append(name if value is None else f"{name}={value}")
        return out

    def _from(self, node: dict[str, Any]) -> None:
        line = node["Line"]
        words = [w for w in WHITESPACE.split(node["Rest"]) if w]
        flags = _flags(node)
        if set(flags) - {"platform"}:
            raise line_error(line, f"unknown flag for FROM: {sorted(set(flags) - {'platform'})}")
        if len(words) not in (1, 3) or (len(words) == 3 and words[1].lower() != "as"):
            raise line_error(line, "FROM requires either one or three arguments (FROM image [AS name])")
        self.meta.used = set()
        image = self.meta.expand(words[0], line)
        platform = [self.meta.expand(p, line) for p in flags.get("platform", [])]
        name = words[2].lower() if len(words) == 3 else None
        if name is not None and not _STAGE_NAME.match(name):
            raise line_error(line, f"invalid stage name {words[2]!r}")
        if name is not None and any(s["Name"] == name for s in self.stages):
            raise line_error(line, f"duplicate stage name {name!r}")
        if self.stages:
            self._finals.append((dict(self.scope.env), set(self.scope.env_tainted), self.shell))
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
                                  "Args": [image] + (["AS", name] if name else []),
                                  "BuildArgs": sorted(self.meta.used)})
        self.images.append(image)
        self.scope = _Scope(self.escape, self.proxies)
        self.shell = list(DEFAULT_SHELL)
        if base_stage is not None:  # the earlier stage's image config: ENV and SHELL
            env, env_tainted, shell = self._finals[base_stage]
            self.scope.env, self.scope.env_tainted, self.shell = dict(env), set(env_tainted), shell

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
                raise line_error(line, f"{ref!r} names this or a later stage; the legacy builder "
                            "would pull an image of that name, BuildKit would use the stage",
                            AmbiguousDockerfile)
