"""Reading one Rego file the way OPA would: its language version and old built-ins.

regorus parses Rego v1 by default and Rego v0 after ``set_rego_v0(True)``.
The switch is read when a module is *added*, so one engine can hold v0 and v1
modules side by side: the version is chosen per file, by trying to parse the
file alone in a scratch engine:

1. a file that imports ``rego.v1`` is Rego v1 (that import is OPA's own marker);
2. otherwise a file that parses as Rego v1 is v1;
3. otherwise a file that parses as Rego v0 is v0;
4. otherwise it is broken, and the error names the file, line and column.

v1 is tried first because regorus' v0 parser is lenient (it accepts
``allow if {...}`` by reading ``if`` as a variable), while v0-only syntax --
rule bodies without ``if``, ``deny[msg] {...}`` -- never parses as v1.

OPA 1.x dropped the built-ins deprecated in 0.x, and regorus never had them,
but policies written for the original firewall call them (``re_match``).
:func:`modernize_builtins` rewrites those calls to their replacements; the ones
without a same-shaped replacement call small functions of a compat module
(:data:`COMPAT_MODULE`). The rewrite works on a token level: text inside
strings, raw strings and comments is never touched, nor a name that is part of
a longer reference (``data.lib.re_match(...)``), nor a name the policy defines
itself as a function.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from dsfw.policy._regorus import regorus

COMPAT_PACKAGE = "_dsfw_compat"
COMPAT_PATH = "<dsfw>/_dsfw_compat.rego"

# Rego v1, added only when a policy needed it. Each function is undefined for an
# argument of the wrong type (OPA rejected those at compile time): a rule that
# depends on it does not hold, which fails closed.
COMPAT_MODULE = f"""package {COMPAT_PACKAGE}

any(coll) := count([x | some x in coll; x == true]) > 0
all(coll) := count([x | some x in coll; x != true]) == 0
set_diff(a, b) := a - b
cast_array(x) := x if is_array(x)
cast_array(x) := y if {{ is_set(x); y := sort(x) }}
cast_set(x) := x if is_set(x)
cast_set(x) := y if {{ is_array(x); y := {{v | some v in x}} }}
cast_string(x) := x if is_string(x)
cast_boolean(x) := x if is_boolean(x)
cast_null(x) := x if is_null(x)
cast_object(x) := x if is_object(x)
"""

# Deprecated OPA built-in -> what a call to it becomes.
DEPRECATED_BUILTINS = {
    "re_match": "regex.match",
    "net.cidr_overlap": "net.cidr_contains",
    **{
        name: f"data.{COMPAT_PACKAGE}.{name}"
        for name in (
            "any", "all", "set_diff", "cast_array", "cast_set",
            "cast_string", "cast_boolean", "cast_null", "cast_object",
        )
    },
}

_CALL_RE = re.compile(
    r"(?<![\w.])("
    + "|".join(re.escape(n) for n in sorted(DEPRECATED_BUILTINS, key=len, reverse=True))
    + r")(?=\s*\()"
)
_V1_WORDS_RE = re.compile(r"\b(if|contains)\b")
_IMPORT_V1_RE = re.compile(r"^[ \t]*import[ \t]+rego\.v1\b", re.M)
_LOCATION_RE = re.compile(r"-->\s*(.*?):(\d+):(\d+)")
_ERROR_RE = re.compile(r"^error:\s*(.*)$", re.M)


class RegoSyntaxError(ValueError):
    """A Rego file parses as neither v1 nor v0; ``str()`` names file and line."""


@dataclass(frozen=True)
class RegoModule:
    """One policy file ready to be added to an engine."""

    path: str
    version: int  # 0 or 1
    source: str  # after modernize_builtins
    uses_compat: bool


def split_code(source: str) -> list[tuple[bool, str]]:
    """Cut Rego source into ``(is_code, text)`` runs.

    Strings (``"..."`` with backslash escapes), raw strings (`````...`````) and
    ``#`` comments are the non-code runs. Joining the texts gives back
    ``source`` exactly.
    """
    runs: list[tuple[bool, str]] = []
    i, start, n = 0, 0, len(source)
    while i < n:
        c = source[i]
        if c not in '"`#':
            i += 1
            continue
        if i > start:
            runs.append((True, source[start:i]))
        if c == "#":
            end = source.find("\n", i)
            end = n if end < 0 else end
        elif c == "`":
            end = source.find("`", i + 1)
            end = n if end < 0 else end + 1
        else:
            end = i + 1
            while end < n and source[end] not in '"\n':
                end += 2 if source[end] == "\\" else 1
            end = min(end + 1, n)
        runs.append((False, source[i:end]))
        i = start = end
    if start < n:
        runs.append((True, source[start:]))
    return runs


def code_only(source: str) -> str:
    """``source`` with strings and comments blanked out, lines kept in place."""
    return "".join(
        text if is_code else re.sub(r"[^\n]", " ", text) for is_code, text in split_code(source)
    )


def defined_functions(code: str) -> set[str]:
    """Names of deprecated built-ins that ``code`` defines as its own functions.

    A definition is a head at the start of a line whose arguments are plain
    variables, ``name(a, b) ...``; a call in a body passes values or refs.
    """
    found = set()
    for name in DEPRECATED_BUILTINS:
        head = re.compile(
            r"^" + re.escape(name) + r"\(\s*\w+(\s*,\s*\w+)*\s*\)\s*(:?=|\{|if\b)", re.M
        )
        if head.search(code):
            found.add(name)
    return found


def modernize_builtins(source: str, keep: frozenset[str] | set[str] = frozenset()) -> str:
    """Rewrite calls of deprecated built-ins (except names in ``keep``)."""

    def rename(m: re.Match[str]) -> str:
        name = m.group(1)
        return name if name in keep else DEPRECATED_BUILTINS[name]

    return "".join(
        _CALL_RE.sub(rename, text) if is_code else text for is_code, text in split_code(source)
    )


def describe_regorus_error(exc: BaseException) -> str:
    """regorus' multi-line report (with a Rust backtrace) as ``file:line:col: message``."""
    text = str(exc).split("Stack backtrace:")[0]
    where = _LOCATION_RE.search(text)
    what = _ERROR_RE.search(text)
    message = what.group(1).strip() if what else next(
        (line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__
    )
    if where:
        return f"{where.group(1)}:{where.group(2)}:{where.group(3)}: {message}"
    return message


def _error_position(description: str) -> tuple[int, int]:
    m = re.search(r":(\d+):(\d+): ", description)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _parse_error(path: str, source: str, v0: bool) -> str | None:
    scratch = regorus.Engine()
    scratch.set_rego_v0(v0)
    try:
        scratch.add_policy(path, source)
    except Exception as e:  # regorus raises RuntimeError; be broad, it is a parser
        return describe_regorus_error(e)
    return None


def rego_version(path: str, source: str) -> int:
    """The Rego version of one file, by the rule in this module's docstring."""
    if _IMPORT_V1_RE.search(code_only(source)):
        return 1
    as_v1 = _parse_error(path, source, v0=False)
    if as_v1 is None:
        return 1
    as_v0 = _parse_error(path, source, v0=True)
    if as_v0 is None:
        return 0
    # Report first the reading that got further into the file (it is the
    # likelier intent, and its line is where to look); on a tie, the version
    # whose keywords the file uses.
    looks_v1 = bool(_V1_WORDS_RE.search(code_only(source)))
    readings = sorted(
        [("Rego v1", as_v1, looks_v1), ("Rego v0", as_v0, not looks_v1)],
        key=lambda r: (_error_position(r[1]), r[2]),
        reverse=True,
    )
    (best_name, best, _), (other_name, other, _) = readings
    other = other[len(path) + 1:] if other.startswith(path + ":") else other
    raise RegoSyntaxError(f"{best} (read as {best_name}; as {other_name}: {other})")


def prepare_module(path: str, source: str, keep: frozenset[str] | set[str] = frozenset()) -> RegoModule:
    """Detect the version of one file and rewrite its deprecated built-in calls."""
    version = rego_version(path, source)
    modern = modernize_builtins(source, keep)
    return RegoModule(path, version, modern, f"data.{COMPAT_PACKAGE}." in modern)
