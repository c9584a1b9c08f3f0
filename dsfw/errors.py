"""The one family of errors dsfw turns into Docker-style HTTP answers.

Every refusal reaches the docker client as ``{"message": ...}`` with a status
code, which the docker CLI prints as ``Error response from daemon: ...``.
Keeping the status on the exception means one place (:func:`error_response`)
maps every failure to an answer, and anything *not* a :class:`DsfwError` is
treated as an internal failure -- which, for a firewall, is also a denial.
"""
from __future__ import annotations

import json


class DsfwError(Exception):
    """Base of every error that dsfw answers to a client."""

    status = 500
    prefix = "dsfw: "

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def client_message(self) -> str:
        return self.prefix + self.message


class BadRequest(DsfwError):
    """The request cannot be read unambiguously, so it is not forwarded."""

    status = 400


class Forbidden(DsfwError):
    """The policy (or a fail-closed rule of dsfw itself) said no."""

    status = 403


class NotFound(DsfwError):
    status = 404


class PayloadTooLarge(DsfwError):
    status = 413


class PolicyEngineError(DsfwError):
    """The policy engine could not give an answer: deny, and say why."""

    status = 503


class ShuttingDown(DsfwError):
    """dsfw is draining for a stop and takes no new requests."""

    status = 503


class UpstreamUnavailable(DsfwError):
    """dockerd cannot be reached or broke the exchange."""

    status = 502


def error_body(message: str) -> bytes:
    """The JSON body dockerd itself uses for errors, so clients print it."""
    return json.dumps({"message": message}).encode("utf-8") + b"\n"


def error_response(exc: BaseException) -> tuple[int, str]:
    """Map any exception to ``(status, client message)``; unknown ones to 500."""
    if isinstance(exc, DsfwError):
        return exc.status, exc.client_message()
    return 500, "dsfw: internal error, request denied"
