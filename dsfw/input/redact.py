"""What may be logged or recorded of a policy input: credentials never are.

The policy sees everything (a policy may check a registry or an env var);
logs and recordings see registry credentials, ``Authorization`` headers,
container environment values, ``/auth`` passwords and secret payloads
replaced by a marker.  Environment *names* stay, so a recorded input still
shows which variables a request set.
"""
from __future__ import annotations

import copy
from typing import Any

MARK = "<redacted>"
SECRET_HEADERS = frozenset({"X-Registry-Auth", "X-Registry-Config", "Authorization"})
_SECRET_BODY_KEYS = frozenset({"password", "identitytoken", "registrytoken", "auth", "data"})


def _redact_env(env: Any) -> Any:
    if not isinstance(env, list):
        return env
    return [f"{e.split('=', 1)[0]}={MARK}" if isinstance(e, str) else MARK for e in env]


def _redact_body(value: Any) -> Any:
    """Env lists anywhere in a body, and credential-looking keys, are masked."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k == "Env":
                out[k] = _redact_env(v)
            elif k.lower() in _SECRET_BODY_KEYS and isinstance(v, str):
                out[k] = MARK
            else:
                out[k] = _redact_body(v)
        return out
    if isinstance(value, list):
        return [_redact_body(v) for v in value]
    return value


def redact_query(query: dict[str, Any]) -> dict[str, Any]:
    """Query parameters safe to log: build arguments often carry tokens."""
    if "buildargs" not in query:
        return query
    return {**query, "buildargs": [MARK]}


def redact_input(doc: dict[str, Any]) -> dict[str, Any]:
    """A copy of an input document that is safe to write to a log or a file."""
    shown = dict(doc)
    headers = doc.get("Headers")
    if isinstance(headers, dict):
        shown["Headers"] = {k: (MARK if k in SECRET_HEADERS else v) for k, v in headers.items()}
    if "Body" in doc:
        shown["Body"] = _redact_body(copy.deepcopy(doc["Body"]))
    query = doc.get("Query")
    if isinstance(query, dict) and "buildargs" in query:
        shown["Query"] = redact_query(query)
        path = doc.get("Path", "")
        if "buildargs=" in path:
            base, _, q = path.partition("?")
            shown["Path"] = base + "?" + "&".join(
                ("buildargs=" + MARK if p.startswith("buildargs=") else p) for p in q.split("&"))
    return shown
