"""Word splitting and ``$VAR`` expansion as the Dockerfile parser does them.

These mirror buildkit's ``parser.parseWords``, ``parser.extractBuilderFlags``
and ``shell.Lex`` (the version vendored in dockerd 20.10).  Go's
``unicode.IsSpace`` is not Python's ``str.isspace`` (which also counts
``\\x1c``-``\\x1f``), so the Go definition is spelled out.  Substitution forms
that only newer builders know (``${X-y}``, ``${X#y}``, ...) are errors here:
refusing is the one answer both kinds of builder agree with.
"""
from __future__ import annotations

import unicodedata
from typing import Mapping


class WordError(ValueError):
    """A word that the Dockerfile shell lexer rejects."""


def go_isspace(ch: str) -> bool:
    """Go's unicode.IsSpace."""
    if ch in "\t\n\v\f\r \x85\xa0":
        return True
    return ord(ch) > 0xFF and unicodedata.category(ch) == "Zs" or ch in "\u2028\u2029"


def parse_words(rest: str, escape: str) -> list[str]:
    """Split on whitespace outside quotes, keeping quotes and escapes (parseWords)."""
    words: list[str] = []
    word, quote, in_word, blank_ok = "", "", False, False
    i = 0
    while i < len(rest):
        ch = rest[i]
        if not in_word and not quote:
            if go_isspace(ch):
                i += 1
                continue
            in_word = True
        if quote:
            if ch == quote:
                quote = ""
            elif ch == escape and quote != "'":
                if i + 1 == len(rest):
                    quote, i = "", i + 1
                    continue
                word += ch
                i += 1
                ch = rest[i]
            word += ch
            i += 1
            continue
        if go_isspace(ch):
            if blank_ok or word:
                words.append(word)
            word, in_word, blank_ok = "", False, False
            i += 1
            continue
        if ch in "'\"":
            quote, blank_ok = ch, True
        if ch == escape:
            if i + 1 == len(rest):
                i += 1
                continue
            word += ch
            i += 1
            ch = rest[i]
        word += ch
        i += 1
    if (in_word or quote) and (blank_ok or word):
        words.append(word)
    return words


def extract_flags(line: str, escape: str) -> tuple[str, list[str]]:
    """Take leading ``--flag[=value]`` words off ``line`` (extractBuilderFlags)."""
    words: list[str] = []
    word, quote, blank_ok, in_word = "", "", False, False
    pos = 0
    while pos <= len(line):
        at_end = pos == len(line)
        ch = "" if at_end else line[pos]
        if not in_word:
            if at_end:
                break
            if go_isspace(ch):
                pos += 1
                continue
            if not line.startswith("--", pos):
                return line[pos:], words
            in_word = True
        if at_end:
            if word != "--" and (blank_ok or word):
                words.append(word)
            break
        if quote:
            if ch == quote:
                quote = ""
            else:
                if ch == escape:
                    if pos + 1 == len(line):
                        quote, pos = "", pos + 1
                        continue
                    pos += 1
                    ch = line[pos]
                word += ch
            pos += 1
            continue
        if go_isspace(ch):
            in_word = False
            if word == "--":
                return line[pos:], words
            if blank_ok or word:
                words.append(word)
            word, blank_ok = "", False
        elif ch in "'\"":
            quote, blank_ok = ch, True
        else:
            if ch == escape:
                if pos + 1 == len(line):
                    pos += 1
                    continue
                pos += 1
                ch = line[pos]
            word += ch
        pos += 1
    return "", words


def _is_letter(ch: str) -> bool:
    return unicodedata.category(ch).startswith("L")


def _is_digit(ch: str) -> bool:
    return unicodedata.category(ch) == "Nd"


class _Lexer:
    def __init__(self, text: str, env: Mapping[str, str], escape: str):
        self.text, self.pos, self.env, self.escape = text, 0, env, escape
        self.used: list[str] = []

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def next(self) -> str:
        ch = self.peek()
        self.pos += 1 if ch else 0
        return ch

    def lookup(self, name: str) -> str:
        self.used.append(name)
        return self.env.get(name, "")

    def words(self, stop: str = "") -> tuple[str, list[str]]:
        result, words, word, in_word = "", [], "", False
        while self.peek():
            ch = self.peek()
            if stop and ch == stop:
                self.next()
                return result, words + ([word] if word else [])
            if ch in "'\"$":
                tmp = {"'": self.single, '"': self.double, "$": self.dollar}[ch]()
                result += tmp
                if ch == "$":
                    for c in tmp:
                        if go_isspace(c):
                            if in_word and word:
                                words.append(word)
                                word, in_word = "", False
                        else:
                            word, in_word = word + c, True
                else:
                    word, in_word = word + tmp, True
                continue
            ch = self.next()
            if ch == self.escape:
                ch = self.next()
                if not ch:
                    break
                word, in_word = word + ch, True
            elif go_isspace(ch):
                if in_word and word:
                    words.append(word)
                    word, in_word = "", False
            else:
                word, in_word = word + ch, True
            result += ch
        if stop:
            raise WordError(f"unexpected end of statement while looking for matching {stop}")
        return result, words + ([word] if word else [])

    def single(self) -> str:
        self.next()
        end = self.text.find("'", self.pos)
        if end < 0:
            raise WordError("unexpected end of statement while looking for matching single-quote")
        out, self.pos = self.text[self.pos:end], end + 1
        return out

    def double(self) -> str:
        self.next()
        out = ""
        while True:
            ch = self.peek()
            if not ch:
                raise WordError("unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self.next()
                return out
            if ch == "$":
                out += self.dollar()
                continue
            ch = self.next()
            if ch == self.escape:
                nxt = self.peek()
                if not nxt:
                    continue
                if nxt in ('"', "$", self.escape):
                    ch = self.next()
            out += ch

    def name(self) -> str:
        out = ""
        while self.peek():
            ch = self.peek()
            if not out and _is_digit(ch):
                while self.peek() and _is_digit(self.peek()):
                    out += self.next()
                return out
            if not out and ch in "@*#?-$!0":
                return self.next()
            if not (_is_letter(ch) or _is_digit(ch) or ch == "_"):
                break
            out += self.next()
        return out

    def dollar(self) -> str:
        self.next()
        if self.peek() != "{":
            name = self.name()
            return self.lookup(name) if name else "$"
        self.next()
        if not self.peek():
            raise WordError("syntax error: missing '}'")
        if self.peek() in "{}:":
            raise WordError("syntax error: bad substitution")
        name = self.name()
        ch = self.next()
        if ch == "}":
            return self.lookup(name)
        if ch != ":":
            raise WordError(f"unsupported substitution form in ${{{name}{ch}...}}")
        modifier = self.next()
        word, _ = self.words("}")
        value = self.lookup(name)
        if modifier == "+":
            return word if value else value
        if modifier == "-":
            return value or word
        raise WordError(f"unsupported modifier ({modifier}) in substitution")


def expand_word(word: str, env: Mapping[str, str], escape: str) -> tuple[str, list[str]]:
    """Process one word (quotes, escapes, ``$VAR``); also return the names looked up."""
    lexer = _Lexer(word, env, escape)
    result, _ = lexer.words()
    return result, lexer.used
