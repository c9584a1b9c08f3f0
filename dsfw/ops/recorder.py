"""Recording policy decisions of a running dsfw, for ``dsfw eval --input`` to replay.

One JSON file per decision in a directory::

    {"time": 1715000000.25, "input": {...redacted...}, "decision": {"package":
     "docker.authz", "allowed": false, "revision": "ab12..."}, "reasons": [...]}

Credentials never reach the disk: the input goes through
:func:`dsfw.input.redact.redacted_input` (registry credentials, ``Env`` values,
swarm tokens and keys, secret payloads, log and volume driver options, build
args wherever the Dockerfile uses them, credentials in URLs...; see
docs/input.md), and the reasons lose the secret values they quote. A replay therefore
sees ``<redacted>`` where the live policy saw the secret; a policy that
decides on a secret's value will not decide the same way on a recording.

The recorder is synchronous and small (one ``json.dump`` of an input
document); the resource calls it after each decision. Writing is
best-effort: a full disk must not turn into refused requests, so failures
are logged and swallowed.
"""
from __future__ import annotations

import itertools
import json
import os
from typing import Any, Callable

import structlog

from dsfw.input.redact import redacted_input, scrub_messages

log = structlog.get_logger("dsfw.ops.recorder")


def decision_record(input_doc: dict[str, Any], package: str, allowed: bool,
                    reasons: tuple[str, ...] | list[str], revision: str, when: float) -> dict[str, Any]:
    """The recorded form of one decision (input redacted, reasons without its secrets)."""
    return {
        "time": when,
        "input": redacted_input(input_doc),
        "decision": {"package": package, "allowed": bool(allowed), "revision": revision},
        "reasons": list(scrub_messages(input_doc, reasons)),
    }


def input_of(document: Any) -> dict[str, Any]:
    """The input document in a file given to ``dsfw eval --input``.

    Accepts a recorded decision (``{"input": ..., "decision": ...}``), OPA's
    ``{"input": ...}`` request shape, and a bare input document.
    """
    if not isinstance(document, dict):
        raise ValueError("an input file must hold a JSON object")
    if "input" in document and "Method" not in document:
        inner = document["input"]
        if not isinstance(inner, dict):
            raise ValueError("the 'input' of a recorded decision must be an object")
        return inner
    return document


class InputRecorder:
    """Writes each decision to ``directory/<time>-<pid>-<n>-<package>.json``.

    ``clock`` returns seconds since the epoch (``reactor.seconds`` in dsfw,
    a fixed function in tests). Files are written to a temporary name and
    renamed, so a reader never sees half a record.
    """

    def __init__(self, directory: str, clock: Callable[[], float]):
        self._directory = directory
        self._clock = clock
        self._count = itertools.count(1)
        os.makedirs(directory, mode=0o700, exist_ok=True)

    @property
    def directory(self) -> str:
        return self._directory

    def record(self, input_doc: dict[str, Any], decision: Any) -> str | None:
        """Record one :class:`dsfw.policy.PolicyDecision` for ``input_doc``.

        Returns the file written, or None if writing failed (logged, never raised).
        """
        when = self._clock()
        record = decision_record(input_doc, decision.package, decision.allowed,
                                 decision.reasons, decision.revision, when)
        name = f"{when:017.6f}-{os.getpid()}-{next(self._count):06d}-{decision.package}.json"
        path = os.path.join(self._directory, name)
        tmp = path + ".tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(record, f, sort_keys=True, indent=1)
                f.write("\n")
            os.replace(tmp, path)
        except (OSError, TypeError, ValueError) as e:
            log.error("recorder.write_failed", path=path, error=str(e))
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return None
        return path
