"""The embedded engine: loading a policy directory, deciding, reloading."""
from __future__ import annotations

import os
import shutil
import tempfile

from structlog.testing import capture_logs
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from dsfw.errors import PolicyEngineError
from dsfw.policy import AUTHZ, BUILD
from dsfw.policy.embedded import EmbeddedEngine, PolicyLoadError
from dsfw.policy.watch import PolicyWatcher

SHIPPED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "policies")

V1_AUTHZ = """package docker.authz
import rego.v1

default allow := false
allow if not startswith(input.Path, "/secrets")
deny contains "no privileged containers" if input.Body.HostConfig.Privileged
"""


def write(root: str, files: dict[str, str]) -> str:
    """Create ``files`` (relative path -> text) below ``root``; return ``root``."""
    for rel, text in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    return root


def temp_dir(case: SynchronousTestCase) -> str:
    """A fresh directory outside the source tree, removed after ``case``.

    (trial's ``mktemp`` is relative to the working directory, which under
    pytest is the checkout.)
    """
    path = tempfile.mkdtemp(prefix="dsfw-policy-")
    case.addCleanup(shutil.rmtree, path, True)
    return path


class EmbeddedTestCase(SynchronousTestCase):
    def mktemp(self) -> str:
        return os.path.join(temp_dir(self), "d")

    def engine(self, files: dict[str, str]) -> EmbeddedEngine:
        return EmbeddedEngine(write(self.mktemp(), files))

    def decide(self, engine: EmbeddedEngine, input_doc: dict, package: str = AUTHZ):
        return self.successResultOf(engine.decide(package, input_doc))

    def decide_fails(self, engine: EmbeddedEngine, input_doc: dict, package: str = AUTHZ) -> str:
        failure = self.failureResultOf(engine.decide(package, input_doc), PolicyEngineError)
        return failure.value.message


class ShippedPolicyTests(EmbeddedTestCase):
    """The original firewall's examples, loaded from policies/ unmodified."""

    def setUp(self):
        self.e = EmbeddedEngine(SHIPPED)

    def test_original_authz_is_rego_v0_with_re_match(self):
        with open(os.path.join(SHIPPED, "authz.rego"), encoding="utf-8") as f:
            source = f.read()
        self.assertIn("re_match(", source)
        self.assertIn("allow {", source)

    def test_network_creation_denied_versioned_and_not(self):
        for path in ("/v1.39/networks/create?", "/networks/create?", "/v1.41/networks/create"):
            decision = self.decide(self.e, {"Method": "POST", "Path": path})
            self.assertFalse(decision.allowed, path)
            self.assertEqual(
                decision.message(), "request denied by policy data.docker.authz.allow (undefined): "
                "data.docker.authz.allow at authz.rego:7 failed at line 8: not createNetwork"
            )

    def test_other_requests_allowed_versioned_and_not(self):
        for path in ("/v1.39/containers/json?", "/containers/json?", "/_ping"):
            decision = self.decide(self.e, {"Method": "GET", "Path": path})
            self.assertTrue(decision.allowed, path)
            self.assertEqual(decision.engine, "embedded")
            self.assertEqual(decision.revision, self.e.revision())

    def test_dsfw_health_for_everyone_metrics_for_root(self):
        alice = {"Uid": 1000, "Gid": 1000, "User": "alice", "Group": "dev", "Pid": 1}
        root = {**alice, "Uid": 0, "User": "root"}

        def decide(path, peer):
            doc = {"Method": "GET", "Path": path + "?", "PathPlain": path}
            return self.decide(self.e, {**doc, "Peer": peer} if peer else doc)
        self.assertTrue(decide("/_dsfw/health", alice).allowed)
        self.assertTrue(decide("/_dsfw/metrics", root).allowed)
        for peer in (alice, None):
            decision = decide("/_dsfw/metrics", peer)
            self.assertFalse(decision.allowed)
            self.assertEqual(decision.message(), "dsfw metrics are reserved to root")

    def test_build_of_node_denied(self):
        for line in ("FROM node", "FROM node:18", "from node AS build",
                     "FROM --platform=linux/amd64 docker.io/library/node@sha256:ab"):
            decision = self.decide(self.e, {"Dockerfile": ["FROM alpine", line]}, BUILD)
            self.assertFalse(decision.allowed, line)
        for lines in (["FROM alpine"], ["FROM nodejs"], ["FROM busybox", "RUN echo FROM node"]):
            self.assertTrue(self.decide(self.e, {"Dockerfile": lines}, BUILD).allowed, lines)


class LoadingTests(EmbeddedTestCase):
    def test_v0_and_v1_files_side_by_side(self):
        e = self.engine({
            "authz.rego": V1_AUTHZ,
            "legacy/build.rego": 'package docker.build\nallow { not input.NoCache }\n',
        })
        self.assertTrue(self.decide(e, {"Path": "/containers/json"}).allowed)
        self.assertFalse(self.decide(e, {"Path": "/secrets"}).allowed)
        self.assertTrue(self.decide(e, {}, BUILD).allowed)
        self.assertFalse(self.decide(e, {"NoCache": True}, BUILD).allowed)

    def test_test_files_are_loaded(self):
        e = self.engine({
            "authz.rego": "package docker.authz\nallow if data.docker.helpers.ok\n",
            "helpers_test.rego": "package docker.helpers\nok := true\ntest_ok if ok\n",
        })
        self.assertTrue(self.decide(e, {}).allowed)

    def test_data_files_go_under_their_directory(self):
        e = self.engine({
            "authz.rego": (
                "package docker.authz\n"
                "allow if {\n"
                "  input.User in data.users.admins\n"
                "  data.limits.max == 3\n"
                "  data.site.name == \"lab\"\n"
                "  data.deep.er.flag\n"
                "}\n"
            ),
            "users/data.json": '{"admins": ["alice"]}',
            "limits/data.yaml": "max: 3\n",
            "data.yml": "site:\n  name: lab\n",
            "deep/er/other.json": '{"flag": true}',
        })
        self.assertTrue(self.decide(e, {"User": "alice"}).allowed)
        self.assertFalse(self.decide(e, {"User": "bob"}).allowed)

    def test_data_objects_from_two_files_merge(self):
        e = self.engine({
            "authz.rego": "package docker.authz\nallow if { data.cfg.a == 1; data.cfg.b == 2 }\n",
            "cfg/a.json": '{"a": 1}',
            "cfg/b.yaml": "b: 2\n",
        })
        self.assertTrue(self.decide(e, {}).allowed)

    def test_conflicting_data_names_both_files(self):
        root = write(self.mktemp(), {"cfg/a.json": '{"a": 1}', "cfg/b.json": '{"a": 2}'})
        with self.assertRaises(PolicyLoadError) as e:
            EmbeddedEngine(root)
        self.assertIn("a.json", str(e.exception))
        self.assertIn("b.json", str(e.exception))
        self.assertIn("cfg.a", str(e.exception))

    def test_malformed_data_file_is_named(self):
        root = write(self.mktemp(), {"cfg/data.json": "{nope"})
        with self.assertRaises(PolicyLoadError) as e:
            EmbeddedEngine(root)
        self.assertIn(os.path.join("cfg", "data.json"), str(e.exception))

    def test_broken_policy_at_start_names_file_and_line(self):
        root = write(self.mktemp(), {
            "ok.rego": V1_AUTHZ,
            "sub/broken.rego": "package docker.x\n\nallow if {\n  input.a ==\n}\n",
        })
        with self.assertRaises(PolicyLoadError) as e:
            EmbeddedEngine(root)
        self.assertTrue(
            str(e.exception).startswith(os.path.join(root, "sub", "broken.rego") + ":5:1: "),
            str(e.exception),
        )

    def test_missing_directory(self):
        with self.assertRaises(PolicyLoadError):
            EmbeddedEngine(self.mktemp())

    def test_hidden_files_are_skipped(self):
        e = self.engine({"authz.rego": V1_AUTHZ, ".#authz.rego": "garbage {"})
        self.assertTrue(self.decide(e, {"Path": "/x"}).allowed)

    def test_no_authz_allow_warns_and_denies_everything(self):
        with capture_logs() as logs:
            e = self.engine({"build.rego": "package docker.build\nallow := true\n"})
        self.assertIn("policy.no_authz_allow", [entry["event"] for entry in logs])
        decision = self.decide(e, {"Path": "/_ping"})
        self.assertFalse(decision.allowed)
        self.assertEqual(decision.reasons, ("request denied by policy data.docker.authz.allow "
                                            "(undefined): no rule data.docker.authz.allow with a body "
                                            "is defined",))

    def test_no_warning_when_authz_allow_exists(self):
        with capture_logs() as logs:
            self.engine({"authz.rego": V1_AUTHZ})
        self.assertNotIn("policy.no_authz_allow", [entry["event"] for entry in logs])

    def test_revision_is_a_stable_content_hash(self):
        a = self.engine({"authz.rego": V1_AUTHZ})
        b = self.engine({"authz.rego": V1_AUTHZ})
        c = self.engine({"authz.rego": V1_AUTHZ + "\n# changed\n"})
        self.assertEqual(a.revision(), b.revision())
        self.assertNotEqual(a.revision(), c.revision())
        self.assertEqual(len(a.revision()), 12)


class DecisionTests(EmbeddedTestCase):
    def test_deny_messages_override_allow(self):
        e = self.engine({"authz.rego": V1_AUTHZ})
        decision = self.decide(e, {"Path": "/containers/create", "Body": {"HostConfig": {"Privileged": True}}})
        self.assertFalse(decision.allowed)
        self.assertEqual(decision.reasons, ("no privileged containers",))
        self.assertEqual(decision.message(), "no privileged containers")

    def test_v0_deny_set_messages(self):
        e = self.engine({"authz.rego": (
            "package docker.authz\nallow = true\n"
            'deny[msg] { input.a; msg := "a is set" }\n'
            'deny[msg] { input.b; msg := "b is set" }\n'
        )})
        self.assertEqual(self.decide(e, {"a": 1, "b": 1}).reasons, ("a is set", "b is set"))
        self.assertTrue(self.decide(e, {}).allowed)

    def test_false_allow_names_the_rule(self):
        e = self.engine({"authz.rego": V1_AUTHZ})
        self.assertEqual(
            self.decide(e, {"Path": "/secrets"}).reasons,
            ("request denied by policy data.docker.authz.allow (false): data.docker.authz.allow at "
             'authz.rego:5 failed at line 5: not startswith(input.Path, "/secrets")',),
        )

    def test_non_boolean_allow_is_a_denial(self):
        for value in ("1", '"yes"', "[true]", '{"a": true}'):
            e = self.engine({"authz.rego": f"package docker.authz\nallow := {value}\n"})
            decision = self.decide(e, {})
            self.assertFalse(decision.allowed, value)
            self.assertIn("non-boolean value", decision.message())

    def test_evaluation_error_fails_closed(self):
        e = self.engine({"authz.rego": (
            "package docker.authz\nallow if { some b in input.Binds; b == \"/x\" }\n"
        )})
        message = self.decide_fails(e, {"Binds": None})
        self.assertIn("data.docker.authz.allow", message)
        self.assertIn("expects array/set/object", message)
        self.assertFalse(self.decide(e, {"Binds": ["/y"]}).allowed)

    def test_conflicting_rule_values_fail_closed(self):
        e = self.engine({"authz.rego": "package docker.authz\nallow := true if input.a\nallow := false if input.b\n"})
        self.assertIn("conflicts", self.decide_fails(e, {"a": 1, "b": 1}))

    def test_error_in_deny_fails_closed_even_if_allowed(self):
        e = self.engine({"authz.rego": (
            "package docker.authz\nallow := true\n"
            'deny contains "bad mount" if { some m in input.Mounts; m == "/" }\n'
        )})
        self.decide_fails(e, {"Mounts": None})

    def test_undefined_package_is_denied(self):
        e = self.engine({"authz.rego": V1_AUTHZ})
        decision = self.decide(e, {}, "docker.build")
        self.assertFalse(decision.allowed)
        self.assertEqual(decision.message(), "request denied by policy data.docker.build.allow "
                         "(undefined): no rule data.docker.build.allow with a body is defined")

    def test_invalid_package_name_fails(self):
        e = self.engine({"authz.rego": V1_AUTHZ})
        self.decide_fails(e, {}, 'docker.authz; data["x"]')

    def test_unencodable_input_fails(self):
        e = self.engine({"authz.rego": V1_AUTHZ})
        self.decide_fails(e, {"Body": {"x": object()}})
        self.decide_fails(e, {"Path": "/x", "Body": {"HostConfig": {1j: True}}})

    def test_fields_no_rule_reads_are_not_handed_over(self):
        e = self.engine({"authz.rego": V1_AUTHZ})  # reads Path and Body only
        self.assertTrue(self.decide(e, {"Path": "/x", "Other": object()}).allowed)
        e = self.engine({"authz.rego": V1_AUTHZ + "allow if count(input) > 5\n"})  # reads all
        self.decide_fails(e, {"Path": "/x", "Other": object()})

    def test_deprecated_builtins_in_a_v0_policy(self):
        e = self.engine({"authz.rego": (
            "package docker.authz\n"
            "allow {\n"
            '  re_match("^/v[0-9.]+/containers", input.Path)\n'
            "  any([false, input.ok])\n"
            "  count(set_diff({1, 2}, {2})) == 1\n"
            '  net.cidr_overlap("10.0.0.0/8", "10.1.2.3")\n'
            "}\n"
        )})
        self.assertTrue(self.decide(e, {"Path": "/v1.41/containers/json", "ok": True}).allowed)
        self.assertFalse(self.decide(e, {"Path": "/v1.41/containers/json", "ok": False}).allowed)


class ReloadTests(EmbeddedTestCase):
    GOOD = "package docker.authz\nallow := true\n"
    GOOD2 = "package docker.authz\nallow := false\n"
    BROKEN = "package docker.authz\nallow {{{ \n"

    def setUp(self):
        self.root = write(self.mktemp(), {"authz.rego": self.GOOD})
        self.e = EmbeddedEngine(self.root)
        self.clock = Clock()
        self.watcher = PolicyWatcher(self.e, self.clock, interval=5)
        self.watcher.startService()
        self.addCleanup(self.watcher.stopService)
        self.tick = 0

    def edit(self, text: str) -> None:
        path = os.path.join(self.root, "authz.rego")
        write(self.root, {"authz.rego": text})
        self.tick += 10  # mtimes can be equal within a fast test: make each edit visible
        os.utime(path, ns=(self.tick * 10**9, self.tick * 10**9))

    def allowed(self) -> bool:
        return self.decide(self.e, {}).allowed

    def test_good_broken_good(self):
        first = self.e.revision()
        self.assertTrue(self.allowed())

        self.edit(self.BROKEN)
        with capture_logs() as logs:
            self.clock.advance(5)
        failed = [entry for entry in logs if entry["event"] == "policy.reload_failed"]
        self.assertEqual(len(failed), 1)
        self.assertIn("authz.rego", failed[0]["error"])
        self.assertEqual(failed[0]["file"], os.path.join(self.root, "authz.rego"))
        self.assertEqual(failed[0]["log_level"], "error")
        self.assertTrue(self.allowed(), "the last good policy stays in force")
        self.assertEqual(self.e.revision(), first)

        with capture_logs() as logs:
            self.clock.advance(5)
        self.assertEqual(logs, [], "an unchanged broken file is reported once")

        self.edit(self.GOOD2)
        with capture_logs() as logs:
            self.clock.advance(5)
        self.assertIn("policy.reloaded", [entry["event"] for entry in logs])
        self.assertFalse(self.allowed())
        self.assertNotEqual(self.e.revision(), first)

    def test_nothing_happens_before_the_interval(self):
        self.edit(self.GOOD2)
        self.clock.advance(4)
        self.assertTrue(self.allowed())
        self.clock.advance(1)
        self.assertFalse(self.allowed())

    def test_new_data_file_is_picked_up(self):
        self.edit("package docker.authz\nallow := data.switch.on\n")
        self.clock.advance(5)
        self.assertFalse(self.allowed())
        write(self.root, {"switch/data.json": '{"on": true}'})
        self.clock.advance(5)
        self.assertTrue(self.allowed())

    def test_reload_on_demand(self):
        self.edit(self.GOOD2)
        self.assertTrue(self.e.reload())
        self.assertFalse(self.allowed())
        self.edit(self.BROKEN)
        with capture_logs() as logs:
            self.assertFalse(self.e.reload())
        self.assertEqual([entry["event"] for entry in logs], ["policy.reload_failed"])
        self.assertFalse(self.allowed())

    def test_stopped_watcher_stops_polling(self):
        self.watcher.stopService()
        self.edit(self.GOOD2)
        self.clock.advance(50)
        self.assertTrue(self.allowed())
        self.assertEqual(self.clock.getDelayedCalls(), [])
