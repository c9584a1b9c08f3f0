"""What may leave dsfw of a policy input: credentials never do.

The policy sees everything (it may check a registry, a token's presence, an
env var).  Everything else -- the default and verbose logs, ``--record-dir``,
shipped decision logs, ``dsfw eval``/``dsfw record`` output -- gets a copy
from :func:`redacted_input`, made by meaning rather than by spelling:

* per endpoint, the fields that carry secrets (``secrets`` in the route table,
  :mod:`dsfw.routes`), matched on keys folded as Go's decoder folds them, so
  ``paſſword`` and ``PASSWORD`` are the ``Password`` dockerd logs in with;
* every other key -- fields dsfw does not know, map keys such as ``Labels``,
  query parameter and header names -- is kept only if its folded name cannot
  name a credential (``*token*``, ``*password*``, ``*key*``, ``*auth*``...);
* credentials in URLs anywhere (``user:password@``, query strings);
* build args come back in ``DockerfileParsed`` wherever the Dockerfile
  substitutes them: the Dockerfile is parsed again with each value replaced
  by the marker, so ``ENV``, ``LABEL``, ``FROM`` and ``ARG`` show the marker.

What a policy writes into a deny message, or an engine into an error, may
echo input: :func:`secret_values` lists the values masked above (and the
decoded registry credentials), and :func:`scrub` cuts them out of text.
Names stay (``Env`` names, option keys, build arg names), so a record still
shows what a request set.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import json
import re
from typing import Any, Iterable
from urllib.parse import quote, unquote

from dsfw import routes
from dsfw.input.types import go_fold
from dsfw.routes import BUILDARGS, CHANGES, ENV, MOUNT_OPTIONS, OPTIONS, URL

MARK = "<redacted>"
# Values shorter than this are masked where they stand but not searched for in
# free text: cutting every "1" or "yes" out of a message would hide the message.
MIN_SCRUB = 4
SECRET_HEADERS = frozenset({"X-Registry-Auth", "X-Registry-Config", "Authorization",
                            "Proxy-Authorization", "Cookie"})

# Substrings (of a folded name without separators) that may name a credential,
# and short names that do when they are the whole name.
_CREDENTIAL_PARTS = ("token", "passw", "passwd", "pwd", "passphrase", "secret", "key", "auth",
                     "cred", "cert", "private", "signature", "cookie", "session", "bearer")
_CREDENTIAL_NAMES = frozenset({"pass", "pw", "sig", "sas", "jwt", "otp", "pin"})
# Known fields whose names match the rule above but never hold a secret.
_KNOWN_HARMLESS = frozenset({"detachkeys", "nodecertexpiry", "rotateworkertoken",
                             "rotatemanagertoken", "rotatemanagerunlockkey", "signingcacert",
                             "cacert", "keepoldsnapshots"})
_SEPARATORS = re.compile(r"[^a-z0-9]")
_MOUNT_SEPARATOR = re.compile(r"(?<!,),(?!,)")
# A query value that reads as an address (no blanks or JSON), and one with user
# info before a host -- not an image digest (name:tag@sha256:...).
_ADDRESS = re.compile(r"^[^\s{}\[\]\"'<>]+$")
_USER_INFO = re.compile(r"^[^/@]+@(?![A-Za-z][A-Za-z0-9+._-]*:[0-9a-fA-F]{32,})")
_URL_IN_TEXT = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/?#\s]*@)?(?P<rest>[^?#\s]*)"
    r"(?P<query>\?[^#\s]*)?")


_fold = functools.lru_cache(maxsize=4096)(go_fold)


@functools.lru_cache(maxsize=4096)
def may_name_credential(name: str) -> bool:
    """True unless ``name`` (folded as Go folds keys) certainly names no credential.

    Names with characters Go would not fold to ASCII are treated as possible
    credentials: a look-alike of ``password`` is not provably harmless.
    """
    folded = go_fold(name)
    if not folded.isascii():
        return True
    bare = _SEPARATORS.sub("", folded)
    if bare in _KNOWN_HARMLESS:
        return False
    return bare in _CREDENTIAL_NAMES or any(part in bare for part in _CREDENTIAL_PARTS)


class _Node:
    __slots__ = ("kind", "children", "each")

    def __init__(self) -> None:
        self.kind: str | None = None
        self.children: dict[str, _Node] = {}
        self.each: _Node | None = None


def _compile(fields: dict[str, str]) -> tuple[_Node, dict[str, str]]:
    """A body path tree (keys folded) and the query parameter kinds."""
    root, query = _Node(), {}
    for path, kind in fields.items():
        if path.startswith("?"):
            query[path[1:]] = kind
            continue
        node = root
        for part in path.split(".") if path else ():
            many = part.endswith("[]")
            name = part[:-2] if many else part
            if name:
                node = node.children.setdefault(go_fold(name), _Node())
            if many:
                node.each = node.each or _Node()
                node = node.each
        node.kind = kind
    return root, query


# Fields dsfw adds to the input that repeat secrets: ``Target`` (dsfw.scope.target)
# describes the named object as dockerd stored it (a container's log and volume
# driver options, a volume's options, an exec instance's container), and
# ``LocalVolumes`` (dsfw.input.volumes) quotes each local volume's ``o`` options.
_HOST_CONFIG_SECRETS = {"HostConfig.LogConfig.Config": OPTIONS,
                        "HostConfig.Mounts[].VolumeOptions.DriverConfig.Options": MOUNT_OPTIONS}
_ADDED_FIELDS = _compile({
    "Target.Options": MOUNT_OPTIONS,
    **{"Target." + k: v for k, v in _HOST_CONFIG_SECRETS.items()},
    **{"Target.Container." + k: v for k, v in _HOST_CONFIG_SECRETS.items()},
    "LocalVolumes[].Options": MOUNT_OPTIONS, "LocalVolumes[].Device": URL})[0]


@functools.lru_cache(maxsize=256)
def _compiled(secrets: tuple[tuple[str, str], ...]) -> tuple[_Node, dict[str, str]]:
    return _compile(dict(secrets))


def _fields_of(method: Any, plain_path: Any) -> tuple[_Node, dict[str, str]]:
    """The secret-bearing fields of the endpoint (:attr:`dsfw.routes.Endpoint.secrets`)."""
    if not isinstance(method, str) or not isinstance(plain_path, str):
        return _compiled(())
    return _compiled(routes.match(method, plain_path).endpoint.secrets)


class _Redaction:
    """One pass over one input document; ``found`` collects what was masked."""

    def __init__(self, doc: dict[str, Any], collect: bool = False):
        self.doc = doc
        self.collect = collect  # also find secrets only a decoder sees (base64 credentials)
        self.found: list[str] = []
        self.body_fields, self.query_kinds = _fields_of(doc.get("Method"), doc.get("PathPlain"))

    def secret(self, value: Any) -> str:
        if isinstance(value, str) and value:
            self.found.append(value)
        return MARK

    def mask_all(self, value: Any) -> Any:
        """Strings and numbers at every depth; the shape and key names stay."""
        if isinstance(value, dict):
            return {k: self.mask_all(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.mask_all(v) for v in value]
        if isinstance(value, bool) or value is None:
            return value
        return self.secret(value if isinstance(value, str) else json.dumps(value))

    def env_entry(self, entry: Any) -> Any:
        if not isinstance(entry, str):
            return self.mask_all(entry)
        name, sep, value = entry.partition("=")
        return f"{name}={self.secret(value)}" if sep else entry

    def apply(self, kind: str, value: Any) -> Any:
        if kind == ENV:
            if isinstance(value, list):
                return [self.env_entry(v) for v in value]
            return self.env_entry(value)
        if kind == OPTIONS and isinstance(value, dict):
            return {k: self.mask_all(v) for k, v in value.items()}
        if kind == MOUNT_OPTIONS and isinstance(value, dict):
            return {k: self.mount_option(k, v) for k, v in value.items()}
        if kind == MOUNT_OPTIONS and isinstance(value, str):
            return self.mount_o(value)
        if kind == URL and isinstance(value, str):
            return self.url(value)
        return self.mask_all(value)

    def mount_option(self, key: str, value: Any) -> Any:
        """One volume driver option: types and devices stay (policies quote them)."""
        if may_name_credential(key) or not isinstance(value, str):
            return self.mask_all(value)
        return self.mount_o(value) if _fold(key) == "o" else self.url(value)

    def mount_o(self, value: str) -> str:
        """mount(8) options (``username=u,password=p,vers=3``): credential-named values masked.

        ``,,`` is an escaped comma inside a value (mount.cifs), not a separator.
        """
        words = []
        for word in _MOUNT_SEPARATOR.split(value):
            name, sep, item = word.partition("=")
            words.append(f"{name}={self.secret(item)}" if sep and may_name_credential(name)
                         else word)
        return ",".join(words)

    def walk(self, value: Any, node: _Node | None = None) -> Any:
        if node is not None and node.kind is not None:
            return self.apply(node.kind, value)
        if node is not None and value is not None and (
                (node.children and not isinstance(value, dict))
                or (node.each is not None and not isinstance(value, list))):
            return self.mask_all(value)  # not the shape whose secrets dsfw knows: all of it
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                child = node.children.get(_fold(key)) if node is not None else None
                if child is not None:
                    out[key] = self.walk(item, child)
                elif may_name_credential(key):
                    out[key] = self.mask_all(item)
                elif _fold(key) == "env":  # an Env list wherever dsfw has no field list
                    out[key] = self.apply(ENV, item)
                else:
                    out[key] = self.walk(item)
            return out
        if isinstance(value, list):
            each = node.each if node is not None else None
            return [self.walk(v, each) for v in value]
        if isinstance(value, str):
            return self.text(value)
        return value

    def _url_match(self, m: re.Match[str]) -> str:
        userinfo = m.group("userinfo")
        query = m.group("query")
        out = m.group("scheme")
        if userinfo:
            self.found.append(userinfo[:-1])
            self.found.extend(p for p in userinfo[:-1].split(":") if p)
            out += MARK + "@"
        out += m.group("rest")
        if query and len(query) > 1:
            self.found.append(query[1:])
            self.found.extend(v for _, _, v in (p.partition("=") for p in query[1:].split("&")) if v)
            out += "?" + MARK
        elif query:
            out += query
        return out

    def text(self, value: str) -> str:
        """Free text: credentials in the URLs it contains."""
        if "://" not in value:
            return value
        return _URL_IN_TEXT.sub(self._url_match, value)

    def url(self, value: str) -> str:
        """A value that is an address: also ``user:token@host:repo`` and bare query strings."""
        if "://" in value:
            return self.text(value)
        address, hash_, fragment = value.partition("#")  # a git ref, never a credential
        if "@" in address:
            userinfo, _, address = address.rpartition("@")
            address = self.secret(userinfo) + "@" + address
        if "?" in address:
            address, _, query = address.partition("?")
            address += "?" + self.secret(query)
        return address + hash_ + fragment

    # -- query parameters --------------------------------------------------------------

    def param(self, name: str, value: str) -> str:
        kind = self.query_kinds.get(name)
        if kind == BUILDARGS:
            return self.buildargs(value)
        if kind == CHANGES:
            return self.change(value)
        if kind == URL:
            return self.url(value)
        if may_name_credential(name) and value:
            return self.secret(value)
        if _ADDRESS.match(value) and ("?" in value or _USER_INFO.match(value)):
            return self.url(value)  # an address without a scheme: user:token@host/x, x?token=
        return self.text(value)

    def buildargs(self, value: str) -> str:
        try:
            args = json.loads(value)
        except ValueError:
            args = None
        if not isinstance(args, dict):
            return self.secret(value)
        return json.dumps({k: v if v is None else self.mask_all(v) for k, v in args.items()},
                          separators=(",", ":"))

    def change(self, value: str) -> str:
        """One ``changes=`` instruction: ``ENV`` values are masked, names kept."""
        from dsfw.build.words import WordError, parse_words  # the Dockerfile's word rules

        keyword, _, rest = value.strip().partition(" ")
        if keyword.lower() != "env":
            return self.text(value)
        try:
            words = parse_words(rest, "\\")
        except WordError:
            words = []
        self.secret(rest)
        if words and "=" in words[0]:
            names = [w.partition("=")[0] for w in words]
            for w in words:
                self.secret(w.partition("=")[2])
        else:
            names = words[:1]
            self.secret(rest.strip()[len(words[0]):].strip() if words else "")
        return f"{keyword} " + (" ".join(f"{n}={MARK}" for n in names) if names else MARK)

    def query(self, query: Any) -> Any:
        if not isinstance(query, dict):
            return self.walk(query)
        return {k: [self.param(k, v) if isinstance(v, str) else self.mask_all(v) for v in vs]
                if isinstance(vs, list) else self.mask_all(vs) for k, vs in query.items()}

    def path(self, path: Any) -> Any:
        """The original's ``Path``: its query string redacted like ``Query``."""
        if not isinstance(path, str):
            return path
        base, sep, raw = path.partition("?")
        if not raw:
            return path
        pairs = []
        for piece in raw.split("&"):
            k, eq, v = piece.partition("=")
            name = unquote(k)
            pairs.append(quote(name, safe="") + eq + quote(self.param(name, unquote(v)), safe=""))
        return base + sep + "&".join(pairs)

    # -- headers -----------------------------------------------------------------------

    def headers(self, headers: Any) -> Any:
        if not isinstance(headers, dict):
            return self.walk(headers)
        out = {}
        for name, value in headers.items():
            if name in SECRET_HEADERS or may_name_credential(name):
                if self.collect:
                    self.registry_credentials(name, value)
                out[name] = self.secret(value)
            else:
                out[name] = self.walk(value)
        return out

    def registry_credentials(self, name: str, value: Any) -> None:
        """The strings inside base64url JSON credentials, so messages echoing them are scrubbed."""
        if name not in ("X-Registry-Auth", "X-Registry-Config") or not isinstance(value, str):
            return
        try:
            decoded = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        except (ValueError, binascii.Error):
            return
        self.mask_all(decoded)
        self.basic_auth(decoded)

    def basic_auth(self, value: Any) -> None:
        """The user and password inside ``auth`` fields (base64 of ``user:password``)."""
        for inner in _auth_fields(value):
            try:
                user_pass = base64.b64decode(inner, validate=True).decode("utf-8")
            except (ValueError, binascii.Error):
                continue
            self.found.extend(p for p in user_pass.split(":", 1) if p)

    # -- build fields ------------------------------------------------------------------

    def build_fields(self, out: dict[str, Any], others: list[str]) -> None:
        """The build fields (``others``: keys of the document that are not the request's)
        as the Dockerfile gives them with every build arg value masked."""
        from dsfw.build.dockerfile import DockerfileError
        from dsfw.build.steps import dockerfile_input

        buildargs = self.buildarg_values()
        if not buildargs:
            return
        # The client's text: the canonical steps have FROM images expanded already.
        lines, raw = self.doc.get("DockerfileRaw", self.doc.get("Dockerfile")), None
        if isinstance(lines, list) and all(isinstance(x, str) for x in lines):
            masked = {k: None if v is None else MARK for k, v in buildargs.items()}
            try:
                raw = dockerfile_input("\n".join(lines).encode("utf-8"), masked, strict=False)
            except (DockerfileError, ValueError, TypeError):
                raw = None
        # What the parse cannot reach (a Dockerfile that no longer parses, a field it
        # does not give): the values are cut out, unless too short to mean anything.
        values = sorted((v for v in buildargs.values() if isinstance(v, str)
                         and len(v) >= MIN_SCRUB), key=len, reverse=True)
        for key in others:
            if raw is not None and key in raw:
                out[key] = self.walk(raw[key])
            else:
                out[key] = _replace_strings(out[key], values)

    def buildarg_values(self) -> dict[str, Any]:
        query = self.doc.get("Query")
        values = query.get("buildargs") if isinstance(query, dict) else None
        if not values or not isinstance(values, list) or not isinstance(values[0], str):
            return {}
        try:
            args = json.loads(values[0])
        except ValueError:
            return {}
        if not isinstance(args, dict):
            return {}
        self.found.extend(v for v in args.values() if isinstance(v, str) and v)
        return args

    def document(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        others = []
        for key, value in self.doc.items():
            if key in ("Method", "PathPlain", "Version", "Peer", "Route"):
                out[key] = value
            elif key == "Path":
                out[key] = self.path(value)
            elif key == "Query":
                out[key] = self.query(value)
            elif key == "Headers":
                out[key] = self.headers(value)
            elif key == "Body":
                out[key] = self.walk(value, self.body_fields)
                if self.collect:
                    self.basic_auth(value)
            else:  # derived facts, the named object, build fields, what later versions add
                out[key] = self.walk(value, _ADDED_FIELDS.children.get(_fold(key)))
                others.append(key)
        if "Dockerfile" in out:
            self.build_fields(out, others)
        return out


def _auth_fields(value: Any) -> Iterable[str]:
    """Every string under a key Go reads as ``auth``, at any depth."""
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, str) and go_fold(k) == "auth":
                yield v
            else:
                yield from _auth_fields(v)
    elif isinstance(value, list):
        for v in value:
            yield from _auth_fields(v)


def _replace_strings(value: Any, secrets: list[str]) -> Any:
    if not secrets:
        return value
    if isinstance(value, str):
        return scrub(value, secrets)
    if isinstance(value, dict):
        return {k: _replace_strings(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_strings(v, secrets) for v in value]
    return value


def redacted_input(doc: dict[str, Any]) -> dict[str, Any]:
    """A copy of a policy input that is safe to log, record or ship; ``doc`` is untouched."""
    return _Redaction(doc).document()


def redacted_query(doc: dict[str, Any]) -> Any:
    """Only the ``Query`` of :func:`redacted_input` (for the per-request decision line).

    Most queries hold nothing to hide; they are returned as they are, cheaply.
    """
    query = doc.get("Query")
    if not query or (isinstance(query, dict) and all(
            _plain_param(k) and isinstance(vs, list)
            and all(isinstance(v, str) and "@" not in v and "?" not in v and "://" not in v
                    for v in vs)
            for k, vs in query.items())):
        return query
    return _Redaction(doc).query(query)


_SECRET_PARAMS = frozenset(path[1:] for endpoint in routes.ENDPOINTS
                           for path, _ in endpoint.secrets if path.startswith("?"))


@functools.lru_cache(maxsize=1024)
def _plain_param(name: str) -> bool:
    """A query parameter no endpoint lists as secret and whose name names no credential."""
    return name not in _SECRET_PARAMS and not may_name_credential(name)


def secret_values(doc: dict[str, Any]) -> frozenset[str]:
    """The values :func:`redacted_input` masks in ``doc`` (and decoded registry credentials)."""
    redaction = _Redaction(doc, collect=True)
    redaction.document()
    values = {v for v in redaction.found if len(v) >= MIN_SCRUB and v != MARK}
    return frozenset(values | {quote(v, safe="") for v in values})  # as they appear in Path


def _worded_by_dsfw(decision: Any) -> bool:
    """A denial whose only reason is dsfw's own "allow was false/undefined" (quotes no input)."""
    words = tuple(f"request denied by policy data.{decision.package}.allow ({value})"
                  for value in ("false", "undefined"))
    return all(r.startswith(words) for r in decision.reasons)


def scrubbed_decision(decision: Any, doc: dict[str, Any]) -> Any:
    """A :class:`dsfw.policy.PolicyDecision` whose deny messages hold none of ``doc``'s secrets.

    A deny message may quote the input: what leaves dsfw never holds its secrets.
    """
    if not decision.reasons or _worded_by_dsfw(decision):
        return decision
    secrets = secret_values(doc)
    return dataclasses.replace(decision, reasons=tuple(scrub(r, secrets) for r in decision.reasons))


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of a secret value replaced by the marker.

    A message cut short (deny messages are bounded, ``...`` marks the cut) may
    end a secret half-way: a prefix of one right before ``...`` goes too.
    """
    secrets = sorted(secrets, key=len, reverse=True)
    for value in secrets:
        if value in text:
            text = text.replace(value, MARK)
    if "..." in text:
        for value in secrets:
            for cut in range(len(value) - 1, MIN_SCRUB - 1, -1):
                piece = value[:cut] + "..."
                if piece in text:
                    text = text.replace(piece, MARK + "...")
                    break
    return text


def scrub_messages(doc: dict[str, Any] | None, messages: Iterable[str]) -> tuple[str, ...]:
    """Messages (deny reasons, errors) with the secret values of ``doc`` cut out."""
    messages = tuple(messages)
    if not doc or not messages:
        return messages
    secrets = secret_values(doc)
    return tuple(scrub(m, secrets) for m in messages)
