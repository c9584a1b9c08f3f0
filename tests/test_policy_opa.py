"""The OPA REST client against dsfw.testing.opa, over real loopback and UNIX sockets.

No OPA binary can be installed here; the test server speaks OPA's documented
Data API and evaluates with the embedded engine.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from dsfw.errors import PolicyEngineError
from dsfw.policy import AUTHZ
from dsfw.policy.opa import OpaEngine

from dsfw.testing.opa import OpaDataResource  # noqa: E402
from tests.test_policy_embedded import temp_dir, write  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SHIPPED = os.path.join(os.path.dirname(HERE), "policies")

AUTHZ_POLICY = """package docker.authz
import rego.v1

default allow := false
allow if input.Path != "/forbidden"
deny contains "no privileged containers" if input.Privileged == true
deny contains "mounts must be a list" if { some m in input.Mounts; m == "/" }
"""


class Hanging(Resource):
    """Takes requests and never answers them."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.arrived: Deferred = Deferred()

    def render(self, request):
        if not self.arrived.called:
            self.arrived.callback(request)
        return NOT_DONE_YET


class Fixed(Resource):
    """Answers every request with one status and body."""

    isLeaf = True

    def __init__(self, status: int, body: bytes):
        super().__init__()
        self.status, self.body = status, body

    def render(self, request):
        request.setResponseCode(self.status)
        return self.body


class PolicyTestCase(TestCase):
    def mktemp(self) -> str:
        return os.path.join(temp_dir(self), "d")


class OpaClientTests(PolicyTestCase):
    def serve_unix(self, resource: Resource) -> str:
        """Serve ``resource`` on a fresh UNIX socket; return the unix:// url."""
        path = os.path.join(os.path.abspath(self.mktemp()) + ".sock")
        port = reactor.listenUNIX(path, Site(resource))
        self.addCleanup(port.stopListening)
        return "unix://" + path

    def serve_tcp(self, resource: Resource) -> str:
        port = reactor.listenTCP(0, Site(resource), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return f"http://127.0.0.1:{port.getHost().port}"

    def opa(self, url: str, **kwargs) -> OpaEngine:
        engine = OpaEngine(reactor, url, **kwargs)
        self.addCleanup(engine.close)
        return engine

    def policy_dir(self, text: str = AUTHZ_POLICY) -> str:
        return write(self.mktemp(), {"authz.rego": text})

    @inlineCallbacks
    def assert_fails(self, engine: OpaEngine, *fragments: str, input_doc: dict | None = None):
        with self.assertRaises(PolicyEngineError) as e:
            yield engine.decide(AUTHZ, input_doc or {"Path": "/x"})
        for fragment in fragments:
            self.assertIn(fragment, e.exception.message)
        return e.exception

    @inlineCallbacks
    def test_allow_over_unix_socket(self):
        engine = self.opa(self.serve_unix(OpaDataResource(self.policy_dir())))
        decision = yield engine.decide(AUTHZ, {"Path": "/containers/json"})
        self.assertTrue(decision.allowed)
        self.assertEqual(decision.engine, "opa")
        decision = yield engine.decide(AUTHZ, {"Path": "/forbidden"})
        self.assertFalse(decision.allowed)
        # the OPA stand-in traces failures as OPA's explain=fails does: file and row
        self.assertEqual(decision.message(), "request denied by policy data.docker.authz.allow "
                         "(false): data.docker.authz.allow at authz.rego:5 failed at line 5")

    @inlineCallbacks
    def test_denial_without_opa_trace_says_so(self):
        resource = OpaDataResource(self.policy_dir())
        resource.explain = False  # an OPA (or a proxy in front) that drops explain=fails
        engine = self.opa(self.serve_unix(resource))
        decision = yield engine.decide(AUTHZ, {"Path": "/forbidden"})
        self.assertEqual(decision.message(), "request denied by policy data.docker.authz.allow "
                         "(false): the OPA server gave no explanation (its API dropped explain=fails)")
        explanation = yield engine.explain(AUTHZ, {"Path": "/forbidden"})
        self.assertEqual(explanation.bodies, ())

    @inlineCallbacks
    def test_deny_messages_over_loopback_tcp(self):
        server = OpaDataResource(self.policy_dir())
        engine = self.opa(self.serve_tcp(server))
        decision = yield engine.decide(AUTHZ, {"Path": "/containers/create", "Privileged": True})
        self.assertFalse(decision.allowed)
        self.assertEqual(decision.reasons, ("no privileged containers",))
        self.assertEqual(server.requests, [(b"POST", b"/v1/data/docker/authz")])

    @inlineCallbacks
    def test_the_original_policy_through_opa(self):
        engine = self.opa(self.serve_unix(OpaDataResource(SHIPPED)))
        denied = yield engine.decide(AUTHZ, {"Path": "/v1.39/networks/create?"})
        allowed = yield engine.decide(AUTHZ, {"Path": "/v1.39/containers/json?"})
        self.assertFalse(denied.allowed)
        self.assertTrue(allowed.allowed)

    @inlineCallbacks
    def test_connection_is_reused(self):
        engine = self.opa(self.serve_unix(OpaDataResource(self.policy_dir())))
        for _ in range(3):
            decision = yield engine.decide(AUTHZ, {"Path": "/x"})
            self.assertTrue(decision.allowed)

    @inlineCallbacks
    def test_timeout(self):
        hanging = Hanging()
        clock = Clock()
        engine = self.opa(self.serve_unix(hanging), timeout=2, clock=clock)
        d = engine.decide(AUTHZ, {"Path": "/x"})
        yield hanging.arrived
        self.assertNoResult(d)
        clock.advance(1.9)
        self.assertNoResult(d)
        clock.advance(0.1)
        failure = self.failureResultOf(d, PolicyEngineError)
        self.assertIn("no answer within 2 s", failure.value.message)

    @inlineCallbacks
    def test_refused_tcp(self):
        port = reactor.listenTCP(0, Site(Resource()), interface="127.0.0.1")
        number = port.getHost().port
        yield port.stopListening()
        engine = self.opa(f"http://127.0.0.1:{number}")
        yield self.assert_fails(engine, "connection refused", f"127.0.0.1:{number}")

    @inlineCallbacks
    def test_missing_unix_socket(self):
        engine = self.opa("unix://" + os.path.abspath(self.mktemp()))
        yield self.assert_fails(engine, "cannot connect")

    @inlineCallbacks
    def test_evaluation_error_is_a_500(self):
        engine = self.opa(self.serve_unix(OpaDataResource(self.policy_dir())))
        yield self.assert_fails(
            engine, "OPA answered 500", "internal_error", "expects array/set/object",
            input_doc={"Path": "/x", "Mounts": None},
        )

    @inlineCallbacks
    def test_plain_500(self):
        engine = self.opa(self.serve_unix(Fixed(500, b"kaputt")))
        yield self.assert_fails(engine, "OPA answered 500", "kaputt")

    @inlineCallbacks
    def test_redirect_is_reported_as_a_redirect_and_not_followed(self):
        target = OpaDataResource(self.policy_dir())
        target_url = self.serve_tcp(target)

        class Redirect(Resource):
            isLeaf = True

            def render(self, request):
                request.setResponseCode(307)
                request.setHeader(b"location", (target_url + "/v1/data/docker/authz").encode())
                return b""
        engine = self.opa(self.serve_unix(Redirect()))
        error = yield self.assert_fails(engine, "OPA answered 307", "redirect to " + target_url,
                                        "does not follow redirects")
        self.assertNotIn("connection lost", error.message)
        self.assertEqual(target.requests, [])  # the input never went to the other address

    @inlineCallbacks
    def test_an_answer_over_the_limit_is_an_engine_error(self):
        big = b'{"result": {"allow": true, "pad": "' + b"x" * 3000 + b'"}}'
        engine = self.opa(self.serve_unix(Fixed(200, big)), max_answer=2048)
        yield self.assert_fails(engine, "exceeds the limit of 2048 bytes")

        class Chunked(Resource):  # no Content-Length: the limit holds while it arrives
            isLeaf = True

            def render(self, request):
                for _ in range(40):
                    request.write(b" " * 100)
                request.write(b'{"result": {"allow": true}}')
                request.finish()
                return NOT_DONE_YET
        engine = self.opa(self.serve_tcp(Chunked()), max_answer=2048)
        yield self.assert_fails(engine, "exceeds the limit of 2048 bytes")
        fitting = self.opa(self.serve_unix(Fixed(200, b'{"result": {"allow": true}}')),
                           max_answer=2048)
        decision = yield fitting.decide(AUTHZ, {"Path": "/x"})
        self.assertTrue(decision.allowed)

    @inlineCallbacks
    def test_deny_messages_are_bounded(self):
        reasons = [f"bind /data/{i:06d}/{'y' * 2000} refused" for i in range(500)]
        engine = self.opa(self.serve_unix(Fixed(200, json.dumps(
            {"result": {"allow": True, "deny": reasons}}).encode())), max_answer=4 << 20)
        decision = yield engine.decide(AUTHZ, {"Path": "/x"})
        self.assertFalse(decision.allowed)
        self.assertLess(len(decision.message()), 10_000)
        self.assertTrue(decision.reasons[0].startswith("bind /data/000000/yyy"))
        self.assertIn("more characters", decision.reasons[0])
        self.assertTrue(decision.reasons[-1].startswith("... and 49"), decision.reasons[-1])

    @inlineCallbacks
    def test_malformed_json(self):
        engine = self.opa(self.serve_unix(Fixed(200, b'{"result": tru')))
        yield self.assert_fails(engine, "malformed JSON")

    @inlineCallbacks
    def test_answer_that_is_not_an_object(self):
        engine = self.opa(self.serve_unix(Fixed(200, b"[true]")))
        yield self.assert_fails(engine, "malformed JSON")

    @inlineCallbacks
    def test_result_that_is_not_a_package(self):
        engine = self.opa(self.serve_unix(Fixed(200, b'{"result": true}')))
        yield self.assert_fails(engine, "unexpected result")

    @inlineCallbacks
    def test_undefined_result(self):
        other = write(self.mktemp(), {"x.rego": "package elsewhere\nallow := true\n"})
        engine = self.opa(self.serve_unix(OpaDataResource(other)))
        yield self.assert_fails(engine, "undefined result", "data.docker.authz")

    @inlineCallbacks
    def test_non_boolean_allow_denies(self):
        server = OpaDataResource(self.policy_dir("package docker.authz\nallow := 1\n"))
        engine = self.opa(self.serve_unix(server))
        decision = yield engine.decide(AUTHZ, {})
        self.assertFalse(decision.allowed)
        self.assertIn("non-boolean value 1", decision.message())

    @inlineCallbacks
    def test_token_required_and_missing(self):
        server = OpaDataResource(self.policy_dir(), token="s3cret")
        engine = self.opa(self.serve_unix(server))
        error = yield self.assert_fails(engine, "OPA answered 401", "unauthorized")
        self.assertNotIn("s3cret", error.message)

    @inlineCallbacks
    def test_token_from_file(self):
        token_file = write(self.mktemp(), {"token": "s3cret\n"}) + "/token"
        server = OpaDataResource(self.policy_dir(), token="s3cret")
        engine = self.opa(self.serve_unix(server), token_file=token_file)
        decision = yield engine.decide(AUTHZ, {"Path": "/x"})
        self.assertTrue(decision.allowed)

    def test_unreadable_token_file_fails_at_start(self):
        with self.assertRaises(ValueError):
            OpaEngine(reactor, "http://127.0.0.1:8181", token_file=self.mktemp())

    def test_bad_urls(self):
        for url in ("ftp://x", "unix://", "127.0.0.1:8181"):
            with self.assertRaises(ValueError, msg=url):
                OpaEngine(reactor, url)

    def test_invalid_package_fails_without_a_request(self):
        engine = OpaEngine(reactor, "http://127.0.0.1:1")
        self.failureResultOf(engine.decide("../../v1/policies", {}), PolicyEngineError)
        self.failureResultOf(engine.decide(AUTHZ, {"x": object()}), PolicyEngineError)


class OpaServerTests(PolicyTestCase):
    """The test server itself answers as OPA's Data API documents."""

    def setUp(self):
        root = write(self.mktemp(), {"authz.rego": AUTHZ_POLICY, "users/data.json": '{"admins": ["a"]}'})
        self.treq = StubTreq(OpaDataResource(root, token="t"))
        self.auth = {b"Authorization": [b"Bearer t"]}

    @inlineCallbacks
    def call(self, method: str, path: str, body: bytes | None = None, headers=None):
        response = yield self.treq.request(
            method, "http://opa" + path, data=body, headers=headers if headers is not None else self.auth
        )
        content = yield response.content()
        return response.code, json.loads(content)

    @inlineCallbacks
    def test_post_rule(self):
        code, doc = yield self.call("POST", "/v1/data/docker/authz/allow", b'{"input": {"Path": "/x"}}')
        self.assertEqual((code, doc), (200, {"result": True}))

    @inlineCallbacks
    def test_get_with_input_and_data(self):
        code, doc = yield self.call("GET", "/v1/data/users/admins")
        self.assertEqual((code, doc), (200, {"result": ["a"]}))
        code, doc = yield self.call("GET", "/v1/data/docker/authz/allow?input=%7B%22Path%22%3A%22%2Fforbidden%22%7D")
        self.assertEqual(doc, {"result": False})

    @inlineCallbacks
    def test_undefined_is_an_empty_object(self):
        code, doc = yield self.call("POST", "/v1/data/no/such/thing", b'{"input": {}}')
        self.assertEqual((code, doc), (200, {}))

    @inlineCallbacks
    def test_bad_json_is_400(self):
        code, doc = yield self.call("POST", "/v1/data/docker/authz", b"{nope")
        self.assertEqual(code, 400)
        self.assertEqual(doc["code"], "invalid_parameter")

    @inlineCallbacks
    def test_missing_token_is_401(self):
        code, doc = yield self.call("POST", "/v1/data/docker/authz", b"{}", headers={})
        self.assertEqual((code, doc["code"]), (401, "unauthorized"))

    @inlineCallbacks
    def test_other_paths_are_404(self):
        code, doc = yield self.call("GET", "/v1/policies")
        self.assertEqual((code, doc["code"]), (404, "resource_not_found"))


class StandaloneOpaServerTests(PolicyTestCase):
    """``python3 -m dsfw.testing.opa`` as its own process, as end-to-end tests use it."""

    @inlineCallbacks
    def test_process_on_unix_socket(self):
        sock = os.path.abspath(self.mktemp()) + ".sock"
        proc = subprocess.Popen(
            [sys.executable, "-m", "dsfw.testing.opa", "--policyDir", SHIPPED, "--listen", "unix:" + sock],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

        def stop():
            proc.terminate()
            proc.wait(10)
            proc.stdout.close()
            proc.stderr.close()

        self.addCleanup(stop)
        self.assertEqual(proc.stdout.readline().strip(), "listening")
        engine = OpaEngine(reactor, "unix://" + sock)
        self.addCleanup(engine.close)
        denied = yield engine.decide(AUTHZ, {"Path": "/networks/create?"})
        allowed = yield engine.decide(AUTHZ, {"Path": "/containers/json?"})
        self.assertFalse(denied.allowed)
        self.assertTrue(allowed.allowed)
