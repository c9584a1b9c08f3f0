"""The scoping rules (labels, remove, visible) through both engines: embedded and OPA's REST APIs."""
from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.server import Site

from dsfw.errors import PolicyEngineError
from dsfw.policy import AUTHZ
from dsfw.policy.embedded import EmbeddedEngine
from dsfw.policy.opa import OpaEngine

from dsfw.testing.opa import OpaDataResource
from tests.test_policy_embedded import temp_dir, write

SCOPED = r'''package docker.authz
import rego.v1

default allow := true
deny contains "no" if input.Path == "/denied"

labels := {"dsfw.owner.uid": sprintf("%d", [input.Peer.Uid])} if input.Peer

remove contains "Config.Env"

default visible := false
visible if input.Item.Labels["dsfw.owner.uid"] == sprintf("%d", [input.Peer.Uid])
'''
PLAIN = '''package docker.authz
import rego.v1
default allow := true
'''
PEER = {"Path": "/containers/json", "Peer": {"Uid": 1000}}
ITEMS = [{"Labels": {"dsfw.owner.uid": "1000"}}, {"Labels": {}},
         {"Labels": {"dsfw.owner.uid": "1001"}}, {"Labels": {"dsfw.owner.uid": "1000"}}]


class EmbeddedScopeTests(SynchronousTestCase):
    def engine(self, text: str) -> EmbeddedEngine:
        return EmbeddedEngine(write(os.path.join(temp_dir(self), "p"), {"authz.rego": text}))

    def test_rules_found_at_load_and_evaluated(self):
        engine = self.engine(SCOPED)
        decision = engine.evaluate(AUTHZ, PEER)
        self.assertTrue(decision.allowed)
        self.assertEqual(decision.labels, {"dsfw.owner.uid": "1000"})
        self.assertEqual(decision.remove, ("Config.Env",))
        self.assertTrue(decision.filters)
        self.assertEqual(engine.visible_items(AUTHZ, PEER, ITEMS), [True, False, False, True])
        self.assertEqual(engine.visible_items(AUTHZ, PEER, []), [])

    def test_denied_requests_get_no_labels(self):
        decision = self.engine(SCOPED).evaluate(AUTHZ, {**PEER, "Path": "/denied"})
        self.assertFalse(decision.allowed)
        self.assertIsNone(decision.labels)

    def test_without_the_rules_nothing_is_filtered(self):
        engine = self.engine(PLAIN)
        decision = engine.evaluate(AUTHZ, PEER)
        self.assertEqual((decision.labels, decision.remove, decision.filters), (None, (), False))
        self.assertEqual(engine.visible_items(AUTHZ, PEER, ITEMS), [True] * 4)

    def test_misshapen_values_fail_closed(self):
        for rule in ('labels := {"a": 1}', 'labels := ["a"]', 'remove := "Config.Env"',
                     'remove := {"Config..Env"}'):
            engine = self.engine(PLAIN + rule + "\n")
            self.assertRaises(PolicyEngineError, engine.evaluate, AUTHZ, PEER)

    def test_visible_errors_fail_closed(self):
        engine = self.engine(PLAIN + 'visible := x if x := 1 / count(input.Item.Labels)\n'
                                     'visible := true if input.Item.Labels.a\n')
        self.assertRaises(PolicyEngineError, engine.visible_items, AUTHZ, PEER,
                          [{"Labels": {"a": "1"}}])


class OpaScopeTests(TestCase):
    def opa(self, text: str) -> OpaEngine:
        directory = write(os.path.join(temp_dir(self), "p"), {"authz.rego": text})
        path = os.path.join(temp_dir(self), "opa.sock")
        port = reactor.listenUNIX(path, Site(OpaDataResource(directory)))
        self.addCleanup(port.stopListening)
        engine = OpaEngine(reactor, "unix://" + path)
        self.addCleanup(engine.close)
        return engine

    @inlineCallbacks
    def test_same_answers_as_embedded(self):
        engine = self.opa(SCOPED)
        decision = yield engine.decide(AUTHZ, PEER)
        self.assertEqual(decision.labels, {"dsfw.owner.uid": "1000"})
        self.assertEqual(decision.remove, ("Config.Env",))
        self.assertTrue(decision.filters)
        flags = yield engine.visible(AUTHZ, PEER, ITEMS)
        self.assertEqual(flags, [True, False, False, True])

    @inlineCallbacks
    def test_without_the_rules_nothing_is_filtered(self):
        decision = yield self.opa(PLAIN).decide(AUTHZ, PEER)
        self.assertEqual((decision.labels, decision.remove, decision.filters), (None, (), False))


class VisibilityCacheTests(SynchronousTestCase):
    def test_bounded_and_keyed_by_request_and_item(self):
        from dsfw.policy.decision_cache import VisibilityCache
        cache = VisibilityCache(max_bytes=2000)
        alice, bob = cache.request_key(b'{"Peer":1}'), cache.request_key(b'{"Peer":2}')
        cache.put(alice, b'{"ID":"a"}', True)
        self.assertIs(cache.get(alice, b'{"ID":"a"}'), True)
        self.assertIsNone(cache.get(bob, b'{"ID":"a"}'))
        for i in range(200):
            cache.put(alice, b'{"ID":"%d"}' % i, False)
        self.assertLessEqual(cache.bytes, 2000)
        self.assertIsNone(cache.get(alice, b'{"ID":"0"}'))

    def test_repeated_answers_agree_with_fresh_ones(self):
        engine = EmbeddedScopeTests.engine(self, SCOPED)
        first = engine.visible_items(AUTHZ, PEER, ITEMS)
        again = engine.visible_items(AUTHZ, PEER, ITEMS[::-1])
        self.assertEqual(again, first[::-1])
        other = engine.visible_items(AUTHZ, {**PEER, "Peer": {"Uid": 1001}}, ITEMS)
        self.assertEqual(other, [False, False, True, False])
