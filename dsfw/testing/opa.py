"""A stand-in for OPA's REST Data API, backed by dsfw's embedded regorus engine.

No OPA binary can be installed on the machines dsfw is tested on, so the OPA
client is tested against this: the documented Data API, with the same policy
loading as the embedded engine.

- ``POST /v1/data/{path}`` with ``{"input": ...}`` (the body and ``input`` are
  optional) -> ``200 {"result": <document>}``, or ``200 {}`` when the document
  is undefined;
- ``GET /v1/data/{path}`` (``?input=<json>`` optional) -> the same;
- a body that is not JSON, or not an object -> ``400 {"code": "invalid_parameter", ...}``;
- a token configured and no matching ``Authorization: Bearer`` -> ``401 {"code": "unauthorized", ...}``;
- an evaluation error -> ``500 {"code": "internal_error", ...}``;
- ``POST /v1/query`` with ``{"query": ..., "input": ...}`` (OPA's Query API) ->
  ``200 {"result": [<bindings>, ...]}``;
- any other path -> ``404 {"code": "resource_not_found", ...}``.

In process: ``Site(OpaDataResource(policy_dir, token=...))`` on any endpoint.
As a process::

    python3 python -m dsfw.testing.opa --policyDir policies --listen unix:/tmp/opa.sock
    python3 python -m dsfw.testing.opa --policyDir policies --listen tcp:8181 [--token-file F]

(``tcp:PORT`` listens on 127.0.0.1 only.) It prints ``listening`` once ready.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any
from urllib.parse import unquote

from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from dsfw.policy.loader import load_policy_dir
from dsfw.policy.rego_source import describe_regorus_error



def _error(request: Request, status: int, code: str, message: str) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps({"code": code, "message": message}).encode() + b"\n"


def data_query(segments: list[str]) -> str:
    """``["docker", "authz"]`` -> ``data["docker"]["authz"]`` (any key is quotable)."""
    return "data" + "".join(f"[{json.dumps(s)}]" for s in segments)


class OpaDataResource(Resource):
    """The root of an OPA-like server; only ``/v1/data/...`` is served."""

    isLeaf = True

    def __init__(self, policy_dir: str, token: str | None = None):
        super().__init__()
        self.policy = load_policy_dir(policy_dir)
        self.token = token
        self.explain = True  # answer ?explain=fails with trace events, as OPA does
        self.requests: list[tuple[bytes, bytes]] = []  # (method, path), for tests

    def _authorized(self, request: Request) -> bool:
        if self.token is None:
            return True
        header = request.getHeader(b"authorization") or b""
        return header == f"Bearer {self.token}".encode("utf-8")

    def _segments(self, request: Request) -> list[str] | None:
        path = request.path.decode("utf-8", "replace")
        if path != "/v1/data" and not path.startswith("/v1/data/"):
            return None
        return [unquote(s) for s in path[len("/v1/data"):].split("/") if s]

    def _input(self, request: Request) -> tuple[bool, Any]:
        """(has input, input) from the body (POST) or ``?input=`` (GET); ValueError if bad."""
        if request.method == b"GET":
            raw = request.args.get(b"input", [None])[0]
            return (False, None) if raw is None else (True, json.loads(raw))
        body = request.content.read() if request.content is not None else b""
        if not body.strip():
            return False, None
        doc = json.loads(body)
        if not isinstance(doc, dict):
            raise ValueError("request body must be a JSON object")
        return ("input" in doc), doc.get("input")

    def render(self, request: Request) -> bytes:
        self.requests.append((request.method, request.path))
        if not self._authorized(request):
            return _error(request, 401, "unauthorized", "missing or invalid bearer token")
        if request.path == b"/v1/query" and request.method == b"POST":
            return self._query(request)
        segments = self._segments(request)
        if segments is None:
            return _error(request, 404, "resource_not_found", "not found")
        if request.method not in (b"GET", b"POST"):
            return _error(request, 405, "method_not_allowed", "method not allowed")
        try:
            has_input, input_doc = self._input(request)
        except (ValueError, UnicodeDecodeError) as e:
            return _error(request, 400, "invalid_parameter", f"body contains malformed input document: {e}")
        engine = self.policy.engine
        try:
            engine.set_input_json(json.dumps(input_doc if has_input else {}))
            answer = json.loads(engine.eval_query_as_json(data_query(segments)))
        except Exception as e:  # regorus: RuntimeError
            return _error(request, 500, "internal_error", describe_regorus_error(e))
        results = answer.get("result") or []
        request.setHeader(b"content-type", b"application/json")
        reply: dict[str, Any] = {}
        if results:
            reply["result"] = results[0]["expressions"][0]["value"]
        if request.args.get(b"explain") == [b"fails"] and self.explain and len(segments) > 1:
            reply["explanation"] = self._fail_events(segments, input_doc if has_input else {})
        return json.dumps(reply).encode() + b"\n"

    def _query(self, request: Request) -> bytes:
        """OPA's Query API: every result's variable bindings."""
        try:
            doc = json.loads(request.content.read())
            query, input_doc = doc["query"], doc.get("input", {})
        except (ValueError, KeyError, TypeError) as e:
            return _error(request, 400, "invalid_parameter", f"malformed query request: {e}")
        try:
            self.policy.engine.set_input_json(json.dumps(input_doc))
            answer = json.loads(self.policy.engine.eval_query_as_json(query))
        except Exception as e:
            return _error(request, 500, "internal_error", describe_regorus_error(e))
        request.setHeader(b"content-type", b"application/json")
        results = [r.get("bindings", {}) for r in answer.get("result") or []]
        return json.dumps({"result": results}).encode() + b"\n"

    def _fail_events(self, segments: list[str], input_doc: Any) -> list[dict[str, Any]]:
        """OPA's trace events of kind ``Fail`` for the last segment's rule, in OPA's JSON shape.

        Real OPA traces every expression; this stand-in reports the first failed
        statement of each rule body (dsfw's own explainer finds it), which is
        what dsfw reads from a real trace: ``op``, ``location.file/row/col``.
        """
        package, rule = ".".join(segments[:-1]), segments[-1]
        explanation = self.policy.explainer.explain(package, rule, json.dumps(input_doc))
        events = []
        for body in explanation.bodies:
            step = body.failed_step()
            if step is not None:
                events.append({"op": "Fail", "query_id": 1, "type": "expr",
                               "location": {"file": body.file, "row": step.line, "col": 1}})
        return events


def listen_description(listen: str) -> str:
    """``unix:/path`` or ``tcp:PORT`` -> a server endpoint string bound to loopback."""
    if listen.startswith("unix:"):
        return "unix:" + listen[len("unix:"):].replace(":", r"\:")
    if listen.startswith("tcp:"):
        return f"tcp:{int(listen[len('tcp:'):])}:interface=127.0.0.1"
    raise SystemExit(f"--listen must be unix:/path or tcp:PORT, not {listen!r}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policyDir", required=True)
    parser.add_argument("--listen", required=True, help="unix:/path or tcp:PORT (127.0.0.1)")
    parser.add_argument("--token-file", help="require 'Authorization: Bearer <contents>'")
    args = parser.parse_args(argv)

    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    token = None
    if args.token_file:
        with open(args.token_file, encoding="utf-8") as f:
            token = f.read().strip()
    site = Site(OpaDataResource(args.policyDir, token))
    d = serverFromString(reactor, listen_description(args.listen)).listen(site)

    def ready(port: Any) -> None:
        print("listening", flush=True)

    def failed(f: Any) -> None:
        print(f"cannot listen: {f.getErrorMessage()}", file=sys.stderr, flush=True)
        reactor.stop()

    d.addCallbacks(ready, failed)
    reactor.run()


if __name__ == "__main__":
    main()
