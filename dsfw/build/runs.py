"""The command a RUN step executes: SHELL applied, known variables substituted.

The builder never expands RUN; the shell does, at run time, with the stage's
ENV and ARG values in its environment.  For a policy that matches commands
(``library.builds.denied_run_patterns``) dsfw does that substitution ahead
of time, the way ``sh`` would for the simple forms (``$X``, ``${X}``,
``${X:-w}``, ``${X-w}``, ``${X:+w}``, ``${X+w}``, ``${X:=w}``, ``${X=w}``,
``${X:?w}``, ``${X?w}``): not inside single quotes, not after a backslash.
A variable dsfw does not know (set by the base image, by the command itself,
a loop variable) is left as written, and so is every other form
(``${#X}``, ``${X%w}``, ``$(...)``).  The unsubstituted command is kept too
(``Raw``): a pattern should be matched against both.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SPECIAL = re.compile(r"[^\\'\"$]*")
_SPECIAL_STOP = re.compile(r"[^\\'\"$}]*")
_MODIFIERS = (":-", ":+", ":=", ":?", "-", "+", "=", "?")


class _Substitution:
    def __init__(self, text: str, known: Mapping[str, str]):
        self.text, self.known, self.used = text, known, []

    def run(self, start: int = 0, stop: str = "") -> tuple[str, int]:
        """Substitute from ``start`` up to an unquoted ``stop`` character (or the end)."""
        text, out, i, dquote = self.text, [], start, False
        special = _SPECIAL_STOP if stop else _SPECIAL
        while i < len(text):
            plain = special.match(text, i).end()  # copy ordinary text in one piece
            if plain > i:
                out.append(text[i:plain])
                i = plain
                continue
            ch = text[i]
            if stop and ch == stop and not dquote:
                return "".join(out), i
            if ch == "\\":
                out.append(text[i:i + 2])
                i += 2
            elif ch == "'" and not dquote:
                end = text.find("'", i + 1)
                end = len(text) if end < 0 else end + 1
                out.append(text[i:end])
                i = end
            elif ch == '"':
                dquote = not dquote
                out.append(ch)
                i += 1
            elif ch == "$":
                value, i = self.dollar(i)
                out.append(value)
            else:
                out.append(ch)
                i += 1
        return "".join(out), i

    def dollar(self, i: int) -> tuple[str, int]:
        text = self.text
        if text.startswith("${", i):
            match = _NAME.match(text, i + 2)
            if match is None:
                return "$", i + 1
            name, j = match.group(), match.end()
            if text.startswith("}", j):
                return self.value(name, text[i:j + 1]), j + 1
            modifier = next((m for m in _MODIFIERS if text.startswith(m, j)), None)
            if modifier is None:
                return "$", i + 1  # ${#X}, ${X%w}, ...: left alone
            word, end = self.run(j + len(modifier), stop="}")
            if end >= len(text):
                return "$", i + 1
            original = text[i:end + 1]
            if name not in self.known:
                return original, end + 1
            self.used.append(name)
            value, is_empty = self.known[name], self.known[name] == ""
            if modifier in (":-", ":=", ":?"):
                return (word if is_empty else value), end + 1
            if modifier == ":+":
                return ("" if is_empty else word), end + 1
            if modifier == "+":
                return word, end + 1
            return value, end + 1  # "-", "=", "?": the variable is set
        match = _NAME.match(text, i + 1)
        if match is None:
            return "$", i + 1
        return self.value(match.group(), text[i:match.end()]), match.end()

    def value(self, name: str, original: str) -> str:
        if name not in self.known:
            return original
        self.used.append(name)
        return self.known[name]


def substitute(text: str, known: Mapping[str, str]) -> tuple[str, list[str]]:
    """``text`` with the known variables substituted as sh would; also the names used."""
    sub = _Substitution(text, known)
    out, _ = sub.run()
    return out, sub.used


def effective_command(shell: list[str], json_form: bool, words: list[str],
                      known: Mapping[str, str]) -> dict[str, Any]:
    """A ``RunCommands`` entry (without its position fields); see docs/builds.md."""
    argv, used = [], []
    for word in words:
        value, names = substitute(word, known)
        argv.append(value)
        used.extend(names)
    prefix = [] if json_form else list(shell)
    return {"Json": json_form, "Shell": prefix, "Argv": prefix + argv,
            "Command": " ".join(prefix + argv), "Raw": " ".join(prefix + list(words)),
            "Used": used}
