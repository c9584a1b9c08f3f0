"""FirewallResource: what is refused, how, what is logged -- with fake and real engines."""
from __future__ import annotations

import base64
import json
import logging
import os

import structlog
from structlog.testing import capture_logs
from twisted.internet.defer import fail, succeed
from twisted.trial.unittest import SynchronousTestCase

from dsfw.errors import PolicyEngineError
from dsfw.policy import PolicyDecision
from dsfw.policy.embedded import EmbeddedEngine

from tests.test_policy_embedded import temp_dir, write  # noqa: E402
from tests.test_relay import FakeEngine, client, firewall  # noqa: E402

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK"


class FailingEngine(FakeEngine):
    def decide(self, package, doc):
        self.inputs.append((package, doc))
        return fail(PolicyEngineError("policy evaluation of data.docker.authz.allow failed: boom"))


def parse_response(raw: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {k.lower(): v for k, _, v in (line.partition(b": ") for line in lines[1:])}
    return int(lines[0].split(b" ")[1]), headers, body


class ResourceCase(SynchronousTestCase):
    engine_factory = FakeEngine

    def setUp(self):
        self.engine = self.engine_factory(deny={"/secret", "/networks/create"})
        self.make()

    def make(self, **kwargs):
        self.resource, self.dockerd, self.clock = firewall(self.engine, **kwargs)
        self.channel, self.client = client(self.resource, self.clock)

    def send(self, raw: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        self.channel.dataReceived(raw)
        return parse_response(self.client.value())

    def assert_refused(self, raw: bytes, status: int, fragment: str) -> dict:
        code, headers, body = self.send(raw)
        self.assertEqual(code, status, body)
        self.assertEqual(headers[b"content-type"], b"application/json")
        self.assertEqual(int(headers[b"content-length"]), len(body))
        message = json.loads(body)["message"]
        self.assertTrue(message.startswith("dsfw: "), message)
        self.assertIn(fragment, message)
        self.assertEqual(self.dockerd.acquired, 0, "dockerd must not be contacted")
        return json.loads(body)


def post_json(path: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return (b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n" % len(body) + extra + b"\r\n" + body)


class RefusalTests(ResourceCase):
    def test_denied_is_403(self):
        self.assert_refused(b"GET /v1.41/secret HTTP/1.1\r\nHost: x\r\n\r\n", 403, "fake says no")
        self.assertEqual(self.engine.inputs[0][1]["Path"], "/v1.41/secret?")

    def test_engine_failure_is_503(self):
        self.engine = FailingEngine()
        self.make()
        self.assert_refused(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n", 503, "boom")

    def test_bad_json_is_400(self):
        self.assert_refused(post_json(b"/containers/create", b'{"Image": '), 400, "not valid JSON")
        self.assertEqual(self.engine.inputs, [])

    def test_oversized_json_is_413(self):
        self.make(max_json_body=16)
        self.assert_refused(post_json(b"/containers/create", b'{"Image": "%s"}' % (b"a" * 20)),
                            413, "exceeds the limit of 16 bytes")
        self.assertEqual(self.engine.inputs, [])

    def test_limit_itself_is_accepted(self):
        self.make(max_json_body=16)
        body = b'{"Image":"abcd"}'
        self.assertEqual(len(body), 16)
        self.channel.dataReceived(post_json(b"/containers/create", body))
        self.assertEqual(self.dockerd.acquired, 1)

    def test_limit_can_be_raised_above_16_mib(self):
        self.make(max_json_body=24 << 20)
        body = b'{"Image":"busybox","Env":["A=%s"]}' % (b"x" * (17 << 20))
        self.channel.dataReceived(post_json(b"/containers/create", body))
        self.assertEqual(self.dockerd.acquired, 1, self.client.value()[:200])
        self.assertEqual(self.engine.inputs[0][1]["Body"]["Env"][0][:4], "A=xx")

    def test_absolute_form_is_400(self):
        self.assert_refused(b"GET http://docker/v1.41/_ping HTTP/1.1\r\nHost: x\r\n\r\n", 400,
                            "origin-form")

    def test_bad_methods_are_400(self):
        for method in (b"get", b"M-SEARCH"):
            self.make()
            self.assert_refused(method + b" /_ping HTTP/1.1\r\nHost: x\r\n\r\n", 400, "method")
        self.make()  # twisted.web itself refuses a non-ASCII method
        self.assertEqual(self.send(b"G\xc9T /_ping HTTP/1.1\r\nHost: x\r\n\r\n")[0], 400)
        self.assertEqual(self.dockerd.acquired, 0)

    def test_unclean_path_is_400(self):
        self.assert_refused(b"GET /v1.41/containers/../secret HTTP/1.1\r\nHost: x\r\n\r\n", 400,
                            "not clean")

    def test_upgrade_on_plain_endpoint_is_400(self):
        self.assert_refused(b"POST /containers/x/start HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                            b"Upgrade: tcp\r\nContent-Length: 0\r\n\r\n", 400,
                            "does not accept a connection upgrade")

    def test_pipelined_second_denied(self):
        self.channel.dataReceived(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n"
                                  b"GET /secret HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual([doc["PathPlain"] for _, doc in self.engine.inputs], ["/_ping"])
        self.assertEqual(self.dockerd.received(), b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n")
        self.dockerd.answer(OK)
        self.assertEqual([doc["PathPlain"] for _, doc in self.engine.inputs], ["/_ping", "/secret"])
        out = self.client.value()
        first, _, rest = out.partition(b"\r\n\r\nOK")
        self.assertTrue(first.startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertTrue(rest.startswith(b"HTTP/1.1 403 Forbidden\r\n"), rest)
        self.assertEqual(len(self.dockerd.connections), 1)
        self.assertNotIn(b"secret", self.dockerd.received())


class BuildRefusalTests(ResourceCase):
    def test_buildkit_build_refused(self):
        self.assert_refused(b"POST /v1.41/build?version=2 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
                            403, "DOCKER_BUILDKIT=0")
        self.assertEqual(self.engine.inputs, [])

    def test_session_refused(self):
        self.assert_refused(b"POST /session HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                            b"Upgrade: h2c\r\nContent-Length: 0\r\n\r\n", 403, "DOCKER_BUILDKIT=0")

    def test_remote_context_refused(self):
        self.assert_refused(b"POST /build?remote=https%3A%2F%2Fexample.com%2Fr.git HTTP/1.1\r\n"
                            b"Host: x\r\nContent-Length: 0\r\n\r\n", 403, "remote build contexts")


def debug_logging(case: SynchronousTestCase) -> None:
    """Let debug events through for one test, whatever configured structlog before."""
    previous = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
                        cache_logger_on_first_use=False)
    case.addCleanup(structlog.configure, **previous)


class LoggingTests(ResourceCase):
    def setUp(self):
        super().setUp()
        debug_logging(self)

    def test_denial_logged_with_request_id(self):
        with capture_logs() as logs:
            self.channel.dataReceived(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
            self.dockerd.answer(OK)
            self.channel.dataReceived(b"GET /secret HTTP/1.1\r\nHost: x\r\n\r\n")
        decisions = [e for e in logs if e["event"] == "policy.decision"]
        self.assertEqual([(e["allowed"], e["request_id"]) for e in decisions], [(True, 1), (False, 2)])
        self.assertEqual(decisions[1]["reasons"], ["fake says no"])
        refused = [e for e in logs if e["event"] == "request.refused"]
        self.assertEqual([(e["status"], e["request_id"]) for e in refused], [(403, 2)])

    def test_registry_auth_never_logged(self):
        secret = "hunter2-registry-password"
        auth = base64.urlsafe_b64encode(json.dumps(
            {"username": "u", "password": secret}).encode())
        with capture_logs() as logs:
            self.channel.dataReceived(
                b"POST /images/create?fromImage=busybox&tag=1 HTTP/1.1\r\nHost: x\r\n"
                b"X-Registry-Auth: " + auth + b"\r\nContent-Length: 0\r\n\r\n")
            self.dockerd.answer(OK)
            self.channel.dataReceived(b"GET /secret HTTP/1.1\r\nHost: x\r\nX-Registry-Auth: " + auth + b"\r\n\r\n")
        self.assertIn("policy.query", [e["event"] for e in logs])  # debug events were on
        text = repr(logs)
        self.assertNotIn(auth.decode(), text)
        self.assertNotIn(secret, text)
        # the policy itself does see the header
        self.assertEqual(self.engine.inputs[0][1]["Headers"]["X-Registry-Auth"], auth.decode())

    def test_container_env_never_logged(self):
        body = json.dumps({"Image": "busybox", "Env": ["DB_PASSWORD=hunter2-env-value"]}).encode()
        with capture_logs() as logs:
            self.channel.dataReceived(post_json(b"/v1.41/containers/create", body))
        self.assertIn("policy.query", [e["event"] for e in logs])
        self.assertNotIn("hunter2-env-value", repr(logs))

    def test_build_args_never_logged(self):
        # redact.py masks buildargs in the policy input it logs; the raw target must not leak them
        with capture_logs() as logs:
            self.channel.dataReceived(
                b"POST /v1.41/build?buildargs=%7B%22TOKEN%22%3A%22s3cr3t-buildarg%22%7D HTTP/1.1\r\n"
                b"Host: x\r\nContent-Length: 0\r\n\r\n")
        self.assertIn("request.received", [e["event"] for e in logs])
        self.assertNotIn("s3cr3t-buildarg", repr(logs))

    def test_dry_run_relays_denied_request(self):
        self.make(dry_run=True)
        with capture_logs() as logs:
            self.channel.dataReceived(b"GET /secret HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(self.dockerd.received(), b"GET /secret HTTP/1.1\r\nHost: docker\r\n\r\n")
        self.dockerd.answer(OK)
        self.assertTrue(self.client.value().startswith(b"HTTP/1.1 200 OK\r\n"))
        would = [e for e in logs if e["event"] == "policy.dry_run_would_deny"]
        self.assertEqual(len(would), 1)
        self.assertEqual(would[0]["request_id"], 1)
        self.assertIn("fake says no", would[0]["reasons"])

    def test_dry_run_relays_on_engine_failure(self):
        self.engine = FailingEngine()
        self.make(dry_run=True)
        with capture_logs() as logs:
            self.channel.dataReceived(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(self.dockerd.acquired, 1)
        self.assertIn("policy.dry_run_would_deny", [e["event"] for e in logs])


class EmbeddedEngineTests(ResourceCase):
    POLICY = """package docker.authz
import rego.v1

default allow := false
allow if not startswith(input.PathPlain, "/networks/create")
deny contains "no privileged containers" if input.Body.HostConfig.Privileged
"""

    def setUp(self):
        self.engine = EmbeddedEngine(write(os.path.join(temp_dir(self), "p"),
                                           {"authz.rego": self.POLICY}))
        self.make()

    def test_allowed(self):
        self.channel.dataReceived(post_json(b"/v1.41/containers/create",
                                            b'{"image":"busybox","hostconfig":{"privileged":false}}'))
        self.assertEqual(self.dockerd.acquired, 1)

    def test_deny_message_from_policy(self):
        # the key case differs from the canonical one the policy matches on
        self.assert_refused(post_json(b"/v1.41/containers/create",
                                      b'{"image":"busybox","hostconfig":{"privileged":true}}'),
                            403, "no privileged containers")

    def test_allow_false_named(self):
        self.assert_refused(post_json(b"/v1.41/networks/create", b'{"Name":"n"}'), 403,
                            "data.docker.authz.allow (false)")


class EchoingEngine(FakeEngine):
    """Denies with a message and an engine error that quote the input, as careless policies do."""

    def decide(self, package, doc):
        self.inputs.append((package, doc))
        if doc["PathPlain"] == "/fail":
            return fail(PolicyEngineError(f"cannot use {json.dumps(doc['Body'])}"))
        return succeed(PolicyDecision(False, package, (f"env is {doc['Body']['Env']}",), "fake"))


class SecretsInMessagesTests(ResourceCase):
    engine_factory = EchoingEngine

    def setUp(self):
        self.engine = EchoingEngine()
        self.make()

    def test_deny_reasons_and_engine_errors_lose_the_secrets_they_quote(self):
        body = json.dumps({"Image": "busybox", "Env": ["TOKEN=echoed-secret-1"],
                           "password": "echoed-secret-2"}).encode()
        with capture_logs() as logs:
            reply = self.assert_refused(post_json(b"/v1.41/containers/create", body), 403,
                                        "env is ['TOKEN=<redacted>']")
            self.channel, self.client = client(self.resource, self.clock)
            failed = self.assert_refused(post_json(b"/v1.41/fail", body), 503, "cannot use")
        self.assertEqual(self.engine.inputs[0][1]["Body"]["Env"], ["TOKEN=echoed-secret-1"])
        for text in (json.dumps(reply), json.dumps(failed), repr(logs)):
            self.assertNotIn("echoed-secret", text)
        decision = [e for e in logs if e["event"] == "policy.decision"][0]
        self.assertEqual(decision["reasons"], ["env is ['TOKEN=<redacted>']"])


class HeadMemoTests(ResourceCase):
    """Canonical heads are remembered by their bytes: never across different bytes, and bounded."""

    def request(self, raw: bytes) -> dict:
        self.channel.dataReceived(raw)
        self.dockerd.answer(OK)
        return self.engine.inputs[-1][1]

    def test_same_bytes_same_input_different_bytes_never_mixed(self):
        first = self.request(b"GET /v1.41/containers/json?all=1 HTTP/1.1\r\nHost: x\r\n"
                             b"X-Registry-Auth: alice\r\n\r\n")
        again = self.request(b"GET /v1.41/containers/json?all=1 HTTP/1.1\r\nHost: x\r\n"
                             b"X-Registry-Auth: alice\r\n\r\n")
        other = self.request(b"GET /v1.41/containers/json?all=1 HTTP/1.1\r\nHost: x\r\n"
                             b"X-Registry-Auth: bob\r\n\r\n")
        spelled = self.request(b"GET /v1.41/containers/json?all=0 HTTP/1.1\r\nHost: x\r\n"
                               b"X-Registry-Auth: alice\r\n\r\n")
        self.assertEqual(first, again)
        self.assertEqual(first["Headers"]["X-Registry-Auth"], "alice")
        self.assertEqual(other["Headers"]["X-Registry-Auth"], "bob")
        self.assertEqual(spelled["Query"], {"all": ["0"]})
        forwarded = [c.transport.value() for c in self.dockerd.connections]
        self.assertEqual(b"".join(forwarded).count(b"all=1"), 3)

    def test_a_refused_head_is_refused_every_time(self):
        for _ in range(2):
            self.make()
            code, _, body = self.send(b"GET /v1.41/containers/json HTTP/1.1\r\nHost: x\r\n"
                                      b"Content-Type: application/x-www-form-urlencoded\r\n\r\n")
            self.assertEqual(code, 400, body)

    def test_bounded_in_entries_and_long_heads_still_served(self):
        heads = self.resource._heads
        for i in range(heads.max_entries + 50):
            self.request(b"GET /containers/c%d/json HTTP/1.1\r\nHost: x\r\n\r\n" % i)
        self.assertLessEqual(len(heads), heads.max_entries)
        self.make()
        long_value = b"v" * self.resource._heads.max_key
        doc = self.request(b"GET /_ping HTTP/1.1\r\nHost: x\r\nX-Long: " + long_value + b"\r\n\r\n")
        self.assertEqual(doc["Headers"]["X-Long"], long_value.decode())
        self.assertEqual(len(self.resource._heads), 0)
