"""Turning a policy directory into one compiled regorus engine.

Discovery follows ``opa run <dir>``: every ``*.rego`` file below the directory
is a module (``*_test.rego`` too; ``test_`` rules are harmless), and every
``*.json``, ``*.yaml`` and ``*.yml`` file is data, placed under ``data`` at its
directory's path relative to the policy directory (the file name is not part
of the path, so ``users/data.json`` holding ``{"alice": ...}`` becomes
``data.users.alice``; a bundle's ``data.json``/``data.yaml`` naming fits this).
Objects from several files are merged; two files setting the same non-object
key is an error naming both. Names starting with ``.`` (editor lock files, VCS
directories) are skipped.

Everything is read and compiled up front, once per load, so a request never
parses Rego; a failed load raises and leaves whatever was in force untouched.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

from dsfw.policy._regorus import regorus

from dsfw.policy.explain import Explainer
from dsfw.policy.input_reads import input_fields

from dsfw.policy.rego_source import (
    COMPAT_MODULE,
    COMPAT_PATH,
    RegoModule,
    RegoSyntaxError,
    code_only,
    defined_functions,
    describe_regorus_error,
    prepare_module,
)

POLICY_SUFFIXES = (".rego",)
DATA_SUFFIXES = (".json", ".yaml", ".yml")


class PolicyLoadError(Exception):
    """A policy directory cannot be loaded; the message names the file that broke it.

    ``path`` is that file (or the directory), for logs that want it as a field.
    """

    def __init__(self, message: str, path: str | None = None):
        super().__init__(message)
        self.path = path


@dataclass
class LoadedPolicy:
    """One compiled policy set and what identifies it."""

    engine: Any  # regorus.Engine
    revision: str
    modules: tuple[RegoModule, ...]
    data_files: tuple[str, ...]
    # Rule paths regorus said do not exist; filled lazily by the evaluator.
    missing_rules: set[str] = field(default_factory=set)
    # Which scoping rules (labels, remove, visible) data.docker.authz defines;
    # found once per load by the engine, so a policy without them costs nothing.
    scope_rules: frozenset[str] = frozenset()
    deterministic: bool = False  # no built-in that looks beyond input and data
    # The top-level input fields the modules can read (dsfw.policy.input_reads);
    # None: any of them.
    input_fields: frozenset[str] | None = None
    # What compile_policy was given (root, files, roots), so a body worker process
    # (dsfw.offload) compiles exactly this set under the same revision.
    sources: "PolicySources | None" = None
    _explainer: Any = None

    @property
    def explainer(self) -> "Explainer":
        """Explains this set's denials; its probes compile on first use."""
        if self._explainer is None:
            self._explainer = Explainer(self.engine)
        return self._explainer


@dataclass(frozen=True)
class PolicySources:
    """The input of :func:`compile_policy` for one revision: compiling it again gives the same set."""

    root: str
    contents: tuple[tuple[str, bytes], ...]
    revision: str
    roots: tuple[str, ...] | None = None

    def compile(self) -> LoadedPolicy:
        return compile_policy(self.root, dict(self.contents), self.revision, self.roots)


# A subdirectory holding this file is not loaded with its parent: it is a
# collection to copy from (the shipped policies/library/), not a policy in force.
IGNORE_MARKER = ".dsfw-ignore"


def policy_files(policy_dir: str) -> list[str]:
    """Every policy and data file below ``policy_dir``, in a stable order.

    Subdirectories marked with :data:`IGNORE_MARKER` are skipped; the marker
    of ``policy_dir`` itself does not count, so ``--policyDir policies/library``
    still loads the library.
    """
    def unreadable(e: OSError) -> None:
        # A directory that cannot be listed (EACCES, EMFILE...) would silently
        # drop its rules, deny rules included: the whole load fails instead.
        raise PolicyLoadError(f"{e.filename}: cannot list the directory: {e.strerror}",
                              e.filename) from e

    found = []
    for root, dirs, files in os.walk(policy_dir, onerror=unreadable):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and not _ignored(os.path.join(root, d)))
        for name in sorted(files):
            if not name.startswith(".") and name.endswith(POLICY_SUFFIXES + DATA_SUFFIXES):
                found.append(os.path.join(root, name))
    return found


def _ignored(directory: str) -> bool:
    """True when ``directory`` holds the ignore marker; an unanswerable stat fails the load."""
    try:
        os.lstat(os.path.join(directory, IGNORE_MARKER))
    except FileNotFoundError:
        return False
    except OSError as e:
        raise PolicyLoadError(f"{directory}: cannot tell whether it is ignored: {e.strerror}",
                              directory) from e
    return True


def fingerprint(policy_dir: str) -> tuple | None:
    """Cheap identity of the directory's state (names, sizes, mtimes) for polling.

    None when the directory cannot be read completely: the next poll then
    sees a change and tries a reload, which fails and keeps the policy in force.
    """
    try:
        entries = []
        for path in policy_files(policy_dir):
            st = os.stat(path)
            entries.append((path, st.st_size, st.st_mtime_ns))
        return (os.stat(policy_dir).st_mtime_ns, tuple(entries))
    except (OSError, PolicyLoadError):
        return None


def data_path(policy_dir: str, path: str) -> list[str]:
    """Where a data file's content goes under ``data``: its directory's path."""
    rel = os.path.relpath(os.path.dirname(path), policy_dir)
    return [] if rel == "." else rel.split(os.sep)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load``, with PyYAML loaded by the first YAML file; ValueError if malformed."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(str(e)) from e


def _parse_data(path: str, raw: bytes) -> Any:
    try:
        if path.endswith(".json"):
            return json.loads(raw.decode("utf-8"))
        return load_yaml(raw.decode("utf-8"))
    except ValueError as e:
        raise PolicyLoadError(f"{path}: cannot parse data file: {e}", path) from e


def merge_data(tree: dict, path: list[str], value: Any, origin: str, owners: dict) -> None:
    """Put ``value`` at ``path`` in ``tree``, merging objects, refusing overwrites.

    ``owners`` maps each key path to the file that first set it, so a conflict
    names both files.
    """
    if not path and not isinstance(value, dict):
        raise PolicyLoadError(f"{origin}: data at the root of the policy directory must be an object", origin)
    for key in reversed(path):
        value = {key: value}
    _merge(tree, value, (), origin, owners)


def _merge(dst: dict, src: dict, prefix: tuple, origin: str, owners: dict) -> None:
    for key, item in src.items():
        here = prefix + (key,)
        if key not in dst:
            dst[key] = item
            owners[here] = origin
        elif isinstance(dst[key], dict) and isinstance(item, dict):
            _merge(dst[key], item, here, origin, owners)
        else:
            owner = next(owners[here[:i]] for i in range(len(here), 0, -1) if here[:i] in owners)
            raise PolicyLoadError(
                f"{origin}: data key {'.'.join(map(str, here))!r} is also set by {owner}", origin
            )


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise PolicyLoadError(f"{path}: cannot read: {e.strerror}", path) from e


def _decode(path: str, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PolicyLoadError(f"{path}: not UTF-8: {e}", path) from e


def load_policy_dir(policy_dir: str) -> LoadedPolicy:
    """Read, check and compile ``policy_dir``; raise PolicyLoadError if anything is wrong."""
    if not os.path.isdir(policy_dir):
        raise PolicyLoadError(f"policy directory {policy_dir!r} does not exist", policy_dir)
    files = policy_files(policy_dir)
    contents = {path: _read(path) for path in files}
    digest = hashlib.sha256()
    for path in files:
        digest.update(os.path.relpath(path, policy_dir).encode() + b"\0" + contents[path] + b"\0")
    return compile_policy(policy_dir, contents, digest.hexdigest()[:12])


def compile_policy(root: str, contents: dict[str, bytes], revision: str,
                   roots: tuple[str, ...] | None = None) -> LoadedPolicy:
    """Compile policy and data files (paths under ``root``, in order) into one engine.

    ``roots`` (a bundle manifest's, ``a/b`` style) confines every package and
    data path; None leaves them unconfined, as a policy directory is.
    """
    files = list(contents)
    rego_paths = [p for p in files if p.endswith(POLICY_SUFFIXES)]
    sources = {p: _decode(p, contents[p]) for p in rego_paths}
    own_functions: set[str] = set()
    for source in sources.values():
        own_functions |= defined_functions(code_only(source))
    modules = []
    for path in rego_paths:
        try:
            modules.append(prepare_module(path, sources[path], own_functions))
        except RegoSyntaxError as e:
            raise PolicyLoadError(str(e), path) from e

    engine = regorus.Engine()
    if any(m.uses_compat for m in modules):
        engine.add_policy(COMPAT_PATH, COMPAT_MODULE)
    for module in modules:
        engine.set_rego_v0(module.version == 0)
        try:
            package = engine.add_policy(module.path, module.source)
        except Exception as e:  # regorus: RuntimeError with a rendered report
            raise PolicyLoadError(describe_regorus_error(e), module.path) from e
        if roots is not None and not _under_roots(package.split(".")[1:], roots):
            raise PolicyLoadError(f"{module.path}: package {package} is outside the bundle's "
                                  f"roots {list(roots)}", module.path)

    data_files = [p for p in files if p.endswith(DATA_SUFFIXES)]
    tree: dict = {}
    owners: dict = {}
    for path in data_files:
        value = _parse_data(path, contents[path])
        if value is None:  # an empty YAML file
            continue
        merge_data(tree, data_path(root, path), value, path, owners)
    if roots is not None:
        _check_data_roots(tree, [], roots)
    if tree:
        try:
            engine.add_data_json(json.dumps(tree))
        except Exception as e:
            raise PolicyLoadError(
                f"data files under {root}: {describe_regorus_error(e)}", root
            ) from e
    return LoadedPolicy(engine, revision, tuple(modules), tuple(data_files),
                        input_fields=input_fields(engine),
                        sources=PolicySources(root, tuple(contents.items()), revision,
                                              None if roots is None else tuple(roots)))


def _under_roots(path: list[str], roots: tuple[str, ...]) -> bool:
    return any(root == "" or path[:len(root.split("/"))] == root.split("/") for root in roots)


def _check_data_roots(tree: Any, path: list[str], roots: tuple[str, ...]) -> None:
    """Every data value must sit under a root (containers leading to a root are fine)."""
    if _under_roots(path, roots):
        return
    leads_to_root = any(root.split("/")[:len(path)] == path for root in roots)
    if not (leads_to_root and isinstance(tree, dict)):
        raise PolicyLoadError(f"data at {'/'.join(path) or '/'} is outside the bundle's roots "
                              f"{list(roots)}")
    for key, value in tree.items():
        _check_data_roots(value, path + [str(key)], roots)
