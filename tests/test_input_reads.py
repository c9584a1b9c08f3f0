"""Which input fields a policy set can read, and what dsfw then skips fetching.

dsfw looks up the objects a request names (``input.Target`` and the other
fields scoping adds) only for a policy set that can read them.  The analysis
must never miss a read: a policy whose reads it cannot follow counts as
reading everything.
"""
from __future__ import annotations

import json
import os

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from dsfw.policy._regorus import regorus
from dsfw.policy.embedded import EmbeddedEngine
from dsfw.policy.input_reads import fields_read, input_fields, input_words
from dsfw.scope.scoping import SCOPE_FIELDS, Scope
from dsfw.scope.target import TargetResolver

from tests.test_relay import FakeDockerd, client, firewall
from tests.test_scope_target import CID, container_answer, http_json

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def reads(*sources: str, v0: bool = False):
    engine = regorus.Engine()
    engine.set_rego_v0(v0)
    for i, source in enumerate(sources):
        engine.add_policy(f"p{i}.rego", source)
    return input_fields(engine)


V1 = "package p\nimport rego.v1\n"


@pytest.mark.parametrize("body,fields", [
    ('allow if input.Method == "GET"', {"Method"}),
    ('allow if input["Target"].Owner.Uid == 0', {"Target"}),
    ('allow if object.get(input, "Peer", {}).Uid == 0', {"Peer"}),
    ('allow if { x := input.Body.HostConfig; x.Privileged == false; input.Query.all }',
     {"Body", "Query"}),
    ('deny contains m if { some b in input.BindMounts; m := b }', {"BindMounts"}),
    ('allow if { data.p.helper with input.Item as input.Target }', {"Item", "Target"}),
    ('test_allow if { allow with input as {"Method": "GET"} }\nallow if input.Method == "GET"',
     {"Method"}),
    ('f(x) := x.Uid\nallow if f(input.Peer) == 0', {"Peer"}),
    ('allow := true', set()),
])
def test_reads_that_name_their_field(body, fields):
    assert reads(V1 + body) == frozenset(fields)


@pytest.mark.parametrize("body", [
    'allow if { some k, v in input; k == "Target" }',
    'allow if { x := input; x.Target }',
    'allow if count(input) > 1',
    'allow if { k := "Tar"; input[concat("", [k, "get"])] }',
    'allow if { some k; input[k] }',
    'allow if object.get(input, ["Target", "ID"], "") != ""',
    'allow if json.marshal(input) != ""',
    'allow if { walk(input, [p, v]); v == "x" }',
    'allow if object.keys(input) == set()',
    'allow if input == {}',
    'allow if { every k, v in input { k != "" } }',
    'allow if input with input.Method as "GET"',
    'allow if data.q.f(input)',
    'allow if print(input)',
])
def test_any_other_use_of_input_may_read_anything(body):
    assert reads(V1 + body) is None


def test_a_bare_import_of_input_may_read_anything_and_an_aliased_field_counts():
    assert reads(V1 + "import input\nallow if input.Method") is None
    assert reads(V1 + "import input.Target as t\nallow if t.ID") == frozenset({"Target"})


@pytest.mark.parametrize("body", [
    'allow if input["\\u0054arget"].ID',  # regorus looks the key up as spelled
    'allow if object.get(input, "T\\u0061rget", {}).ID',
    'allow if input["Tar\\tget"]',
])
def test_a_key_spelled_with_an_escape_may_read_anything(body):
    assert reads(V1 + body) is None


@pytest.mark.parametrize("sources", [
    (V1 + 'object.get(o, _, _) := o.Target\nallow if object.get(input, "Method", 1)',),
    (V1 + 'import data.q as object\nallow if object.get(input, "Method", 1)',
     "package q\nimport rego.v1\nget(o, _, _) := o.Target\n"),
    (V1 + 'import data.lib.object\nallow if object.get(input, "Method", 1)',),
])
def test_object_get_counts_only_when_nothing_else_can_be_named_object(sources):
    assert reads(*sources) is None


def test_the_tree_must_show_every_input_word_of_the_source():
    assert input_words('x := "input" # input\ny := input.a\nz := `input`\nw := data.input') == 2
    engine = regorus.Engine()
    engine.add_policy("p.rego", V1 + 'allow if input.Method\ndeny contains 1 if input.Target.x\n')
    modules = json.loads(engine.get_ast_as_json())
    assert input_fields(engine) == frozenset({"Method", "Target"})

    class Dropped:  # a tree that leaves a rule out (a construct it does not serialize)
        def get_ast_as_json(self):
            modules[0]["ast"]["rules"].pop()
            return json.dumps(modules)
    assert input_fields(Dropped()) is None


def test_every_module_counts():
    assert reads(V1 + 'allow if input.Method', "package q\nimport rego.v1\n"
                 "deny contains 1 if input.Target.Labels.x") == frozenset({"Method", "Target"})
    assert reads(V1 + 'allow if input.Method', "package q\nx := input") is None


def test_rego_v0_reads():
    assert reads('package p\nallow { input.Path == "/x"; not input.Body.Privileged }',
                 v0=True) == frozenset({"Path", "Body"})


def test_a_tree_it_cannot_follow_is_read_as_reading_anything():
    class Broken:
        def get_ast_as_json(self):
            raise RuntimeError("no tree")
    assert input_fields(Broken()) is None
    assert fields_read([{"Var": {"value": "input"}}]) is None


def test_the_shipped_policies_and_the_library():
    engine = EmbeddedEngine(os.path.join(REPO, "policies"))
    assert engine.input_fields() == frozenset({"Path", "PathPlain", "Peer", "Dockerfile"})
    library = EmbeddedEngine(os.path.join(REPO, "policies", "library"))
    assert library.input_fields() is None  # it decides visibility (ownership)


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


class ScopeSkipsWhatThePolicyCannotReadTests(SynchronousTestCase):
    """With a policy that cannot read input.Target, nothing is looked up in dockerd."""

    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        write(os.path.join(self.dir, "authz.rego"),
              'package docker.authz\nimport rego.v1\nallow if not startswith(input.Path, "/x")\n')
        self.engine = EmbeddedEngine(self.dir)
        self.seen = []
        decide = self.engine.decide
        self.engine.decide = lambda package, doc: (self.seen.append(doc), decide(package, doc))[1]

    def start(self, full_inputs=False):
        self.dockerd = FakeDockerd()
        scope = Scope(TargetResolver(self.dockerd, MemoryReactorClock(), trusted=lambda: True),
                      self.engine, full_inputs=full_inputs)
        self.resource, _, self.clock = firewall(self.engine, self.dockerd, scope=scope)
        self.channel, self.client = client(self.resource, self.clock)

    def sent(self) -> bytes:
        return b"".join(c.transport.value() for c in self.dockerd.connections)

    def delete(self, ref=b"web"):
        self.channel.dataReceived(b"DELETE /v1.41/containers/%s?force=1 HTTP/1.1\r\nHost: x\r\n\r\n"
                                  % ref)

    def test_a_delete_is_decided_and_forwarded_as_written_without_a_lookup(self):
        self.start()
        self.delete()
        self.assertEqual(self.sent().count(b"HTTP/1.1\r\n"), 1)
        self.assertIn(b"DELETE /v1.41/containers/web?force=1 HTTP/1.1", self.sent())
        self.assertNotIn(b"/json", self.sent())
        self.assertNotIn("Target", self.seen[0])

    def test_a_policy_that_reads_the_target_gets_it_and_the_request_goes_by_id(self):
        write(os.path.join(self.dir, "authz.rego"),
              'package docker.authz\nimport rego.v1\nallow if input.Target.Name == "web"\n')
        self.assertTrue(self.engine.reload())
        self.start()
        self.delete()
        self.dockerd.answer(http_json(200, container_answer()))
        self.assertEqual(self.seen[0]["Target"]["ID"], CID)
        self.assertIn(b"DELETE /v1.41/containers/%s?force=1 " % CID.encode(), self.sent())

    def test_a_target_read_the_analysis_cannot_name_is_looked_up(self):
        """Reads hidden behind an escaped key, a rule named object.get or input whole."""
        for rules in ('deny contains "no" if input["\\u0054arget"].Name == "web"\n',
                      'object.get(o, _, _) := o.Target.Name\n'
                      'deny contains "no" if object.get(input, "Method", "") == "web"\n',
                      'deny contains "no" if { some k, v in input; k == "Target"; v.Name == "web" }\n'):
            write(os.path.join(self.dir, "authz.rego"), 'package docker.authz\nimport rego.v1\n'
                  'allow if input.Path != ""\n' + rules)
            self.assertTrue(self.engine.reload())
            self.seen.clear()
            self.start()
            self.delete()
            self.dockerd.answer(http_json(200, container_answer()))
            self.assertIn(b"/json", self.sent(), rules)
            self.assertEqual(self.seen[0]["Target"]["ID"], CID)

    def test_recorded_or_logged_inputs_are_whole(self):
        self.start(full_inputs=True)
        self.delete()
        self.dockerd.answer(http_json(200, container_answer()))
        self.assertEqual(self.seen[0]["Target"]["ID"], CID)

    def test_a_push_of_every_tag_is_still_refused(self):
        self.start()
        self.channel.dataReceived(b"POST /v1.41/images/x/push HTTP/1.1\r\nHost: x\r\n"
                                  b"X-Registry-Auth: e30=\r\nContent-Length: 0\r\n\r\n")
        head = self.client.value().partition(b"\r\n\r\n")[0]
        self.assertTrue(head.startswith(b"HTTP/1.1 403 "), head)

    def test_a_policy_changed_between_scoping_and_the_decision_is_refused(self):
        self.start()
        decide = self.engine.decide

        def reload_first(package, doc):
            write(os.path.join(self.dir, "authz.rego"), 'package docker.authz\nimport rego.v1\n'
                  'allow if input.Target.Name == "web"\nallow if input.Path != ""\n')
            self.assertTrue(self.engine.reload())
            return decide(package, doc)
        self.engine.decide = reload_first
        self.delete()
        head, _, body = self.client.value().partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 5"), head)
        self.assertIn("the policy changed", json.loads(body)["message"])
        self.assertNotIn(b"DELETE", self.sent())

    def test_the_shipped_policy_needs_no_lookup(self):
        self.engine = EmbeddedEngine(os.path.join(REPO, "policies"))
        self.seen = []
        self.start()
        self.delete(CID.encode())
        self.assertNotIn(b"/json", self.sent())
        self.assertEqual(self.engine.input_fields() & SCOPE_FIELDS, frozenset())
        self.assertIn(b"DELETE /v1.41/containers/%s?force=1 " % CID.encode(), self.sent())


class EngineSeesWhatThePolicyReadsTests(SynchronousTestCase):
    """regorus is handed the fields the policy can read; decisions are remembered by them."""

    def engine(self, rules: str) -> EmbeddedEngine:
        path = self.mktemp()
        os.makedirs(path)
        write(os.path.join(path, "authz.rego"), "package docker.authz\nimport rego.v1\n" + rules)
        return EmbeddedEngine(path)

    def test_inputs_differing_only_in_unread_fields_share_a_decision(self):
        engine = self.engine('allow if input.Method == "GET"\n')
        first = engine.evaluate("docker.authz", {"Method": "GET", "Path": "/a", "Target": {"ID": "1"}})
        again = engine.evaluate("docker.authz", {"Method": "GET", "Path": "/b", "Target": {"ID": "2"}})
        self.assertTrue(first.allowed and again.allowed)
        self.assertEqual(engine.cache_stats()["hits"], 1)
        self.assertFalse(engine.evaluate("docker.authz", {"Method": "POST", "Path": "/a"}).allowed)

    def test_a_policy_that_reads_the_whole_input_sees_all_of_it(self):
        engine = self.engine('allow if count(input) == 3\n')
        self.assertTrue(engine.evaluate("docker.authz", {"Method": "GET", "Path": "/a", "X": 1}).allowed)
        self.assertFalse(engine.evaluate("docker.authz", {"Method": "GET", "Path": "/a"}).allowed)

    def test_a_field_read_anywhere_reaches_every_rule(self):
        engine = self.engine('allow if input.Method == "GET"\n'
                             'deny contains "no" if data.docker.authz.helper\n'
                             'helper if input.Body.Privileged\n')
        decision = engine.evaluate("docker.authz", {"Method": "GET", "Body": {"Privileged": True}})
        self.assertEqual(decision.reasons, ("no",))

    def test_a_denial_is_explained_from_the_fields_read(self):
        engine = self.engine('allow if input.Method == "GET"\n')
        decision = engine.evaluate("docker.authz", {"Method": "PUT", "Path": "/a"})
        self.assertIn("input.Method", decision.message())
