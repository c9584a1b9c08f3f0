"""From the values of ``allow`` and ``deny`` to a :class:`PolicyDecision`.

Both engines (embedded and OPA) end here, so the rule is written once: a
request is allowed only if ``allow`` is exactly ``true`` and ``deny`` holds no
message. Anything else -- undefined, ``false``, ``1``, ``"yes"`` -- is a
denial, and the denial says why: the policy's own deny messages if it gave
any, otherwise which rule said no and with what value.
"""
from __future__ import annotations

import json
import re
from typing import Any, Callable

from dsfw.errors import PolicyEngineError
from dsfw.policy import PolicyDecision


class _Undefined:
    """The value of a rule that does not exist or did not produce a value."""

    def __repr__(self) -> str:
        return "UNDEFINED"


UNDEFINED: Any = _Undefined()

_PACKAGE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def check_package(package: str) -> str:
    """A package name as a dotted path of identifiers, or PolicyEngineError.

    Packages are spliced into queries and URLs, so nothing else gets through.
    """
    if not isinstance(package, str) or not _PACKAGE_RE.match(package):
        raise PolicyEngineError(f"invalid policy package name {package!r}")
    return package


def _short(value: Any) -> str:
    try:
        text = json.dumps(value, sort_keys=True, default=sorted)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def deny_messages(package: str, deny: Any) -> tuple[str, ...]:
    """The messages a ``deny`` value carries; a non-empty oddity still denies."""
    if deny is UNDEFINED or deny is None or deny is False:
        return ()
    if deny is True:
        return (f"request denied by policy data.{package}.deny",)
    if isinstance(deny, (set, frozenset, list, tuple, dict)):
        items = sorted(deny, key=_short) if isinstance(deny, (set, frozenset, dict)) else list(deny)
        return tuple(item if isinstance(item, str) else _short(item) for item in items)
    if isinstance(deny, str):
        return (deny,) if deny else ()
    return (f"request denied by policy data.{package}.deny ({_short(deny)})",)


# A policy may name every offending value in its deny messages (100,000 binds,
# each several kB): the client, the logs and the recorder get a bounded text.
MAX_REASON_CHARS = 1024
MAX_REASONS_CHARS = 8192


def bounded_reasons(reasons: tuple[str, ...]) -> tuple[str, ...]:
    """``reasons`` cut to ``MAX_REASON_CHARS`` each and ``MAX_REASONS_CHARS`` in all."""
    out: list[str] = []
    total = 0
    for i, reason in enumerate(reasons):
        if len(reason) > MAX_REASON_CHARS:
            reason = f"{reason[:MAX_REASON_CHARS]}... ({len(reason) - MAX_REASON_CHARS} more characters)"
        if total + len(reason) > MAX_REASONS_CHARS and out:
            out.append(f"... and {len(reasons) - i} more deny messages")
            break
        out.append(reason)
        total += len(reason)
    return tuple(out)


def describe_value(value: Any) -> str:
    """How a non-true ``allow`` is named in a denial."""
    if value is UNDEFINED:
        return "undefined"
    if value is False:
        return "false"
    return f"non-boolean value {_short(value)}"


def make_decision(package: str, allow: Any, deny: Any, engine: str, revision: str = "",
                  why: Callable[[], str] | None = None) -> PolicyDecision:
    """The decision for one evaluation's ``allow`` and ``deny`` values.

    ``why`` is asked only for a denial without deny messages: it names the rule
    body and the condition that kept ``allow`` from being true (see
    :mod:`dsfw.policy.explain`), so the message says more than "undefined".
    """
    reasons = bounded_reasons(deny_messages(package, deny))
    if allow is True and not reasons:
        return PolicyDecision(True, package, (), engine, revision)
    if not reasons:
        reason = f"request denied by policy data.{package}.allow ({describe_value(allow)})"
        cause = why() if why is not None else ""
        reasons = bounded_reasons((f"{reason}: {cause}" if cause else reason,))
    return PolicyDecision(False, package, reasons, engine, revision)


# The extra rules a policy may define next to allow/deny (docs/policies.md).
SCOPE_RULES = ("labels", "remove", "visible")


def visible_query(package: str) -> str:
    """One query deciding every ``input.Items[i]``: the set of indices whose
    ``visible`` is exactly true with ``input.Item`` bound to that item."""
    check_package(package)
    return (f"x := {{i | some i, item in input.Items; "
            f"data.{package}.visible == true with input.Item as item}}")


def visible_flags(indices: Any, count: int) -> list[bool]:
    """The answer of :func:`visible_query` as one flag per item."""
    if not isinstance(indices, (list, set, frozenset, tuple)):
        raise PolicyEngineError("the visibility query answered something that is not a set")
    shown = set()
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, (int, float)) or int(i) != i:
            raise PolicyEngineError("the visibility query answered a non-index")
        shown.add(int(i))
    return [i in shown for i in range(count)]


def scope_fields(package: str, labels: Any, remove: Any) -> dict[str, Any]:
    """``labels`` and ``remove`` checked: a value of the wrong shape is an engine error (deny)."""
    fields: dict[str, Any] = {}
    if labels is not UNDEFINED and labels is not None:
        if not isinstance(labels, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
            raise PolicyEngineError(f"data.{package}.labels must be an object of strings, "
                                    f"not {_short(labels)}")
        fields["labels"] = dict(labels)
    if remove is not UNDEFINED and remove is not None:
        items = sorted(remove) if isinstance(remove, (set, frozenset)) else remove
        if not isinstance(items, (list, tuple)) or not all(
                isinstance(f, str) and f and all(f.split(".")) for f in items):
            raise PolicyEngineError(f"data.{package}.remove must be a set of dotted field "
                                    f"names such as \"Config.Env\", not {_short(remove)}")
        fields["remove"] = tuple(dict.fromkeys(items))
    return fields
