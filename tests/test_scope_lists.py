"""Filtered lists and events: dockerd's items kept as written, decided in one evaluation,
remembered per item.

The property tests hold the whole list path (split, keys, item memo, answer
memo, one batched evaluation, splice) and the event path (line keys, item
memo) to what deciding each item alone with ``input.Item`` gives, on the
library's ownership and labelscope policies and on a policy whose
``visible`` fails for some items.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from dsfw.edge.upstream import ResponseHead
from dsfw.errors import PolicyEngineError, UpstreamUnavailable
from dsfw.input.path import canonical_target
from dsfw.input.request import CanonicalRequest, input_document
from dsfw.policy import AUTHZ
from dsfw.policy.embedded import EmbeddedEngine
from dsfw.scope.filter import (MAX_INLINE_KEY, EventLine, ItemMemo, ListAnswer, event_item,
                               list_item, remove_fields)
from dsfw.scope.scoping import Scope
from dsfw.scope.target import TargetResolver

from tests.test_relay import FakeDockerd
from tests.test_policy_embedded import temp_dir

LIBRARY = Path(__file__).resolve().parents[1] / "policies" / "library"
JSON_HEAD = ResponseHead(200, b"OK", ((b"Content-Type", b"application/json"),))


class ListAnswerTests(SynchronousTestCase):
    def test_visible_items_keep_dockerds_bytes(self):
        first = b'{"Id":"a", "Labels":{"x":"\\u003cb\\u003e"},"Names":["/a"]}'
        body = b'[ ' + first + b' , {"Id":"b"}]\n'
        listing = ListAnswer("container", body)
        self.assertEqual(listing.write([True, False]), b"[" + first + b"]\n")
        self.assertEqual(listing.write([False, False]), b"[]\n")
        self.assertEqual(listing.write(None), b"[" + first + b',{"Id":"b"}]\n')

    def test_null_and_volume_holders(self):
        self.assertEqual(ListAnswer("container", b"null\n").write(None), b"null\n")
        self.assertIsNone(ListAnswer("container", b"null").items)
        body = b'{"Volumes":[{"Name":"v1"},{"Name":"v2","Labels":null}],"Warnings":["w"]}\n'
        listing = ListAnswer("volume", body)
        self.assertEqual([listing.item(i)["Name"] for i in range(len(listing.keys()))], ["v1", "v2"])
        self.assertEqual(listing.write([False, True]),
                         b'{"Volumes":[{"Name":"v2","Labels":null}],"Warnings":["w"]}\n')
        held = b'{"Volumes":null,"Warnings":null}'
        self.assertEqual(ListAnswer("volume", held).write(None), held)

    def test_what_is_not_a_json_list_fails_closed(self):
        for kind, body in (("container", b'[{"Id":"a"}'), ("container", b'[{"Id":"\xff"}]'),
                           ("container", b'[{"Id":"\xed\xa0\x80"}]'), ("container", b'[1] x'),
                           ("container", b'{"Id":"a"}'), ("container", b'"a"'),
                           ("volume", b'{"Volumes":{"a":1}}'), ("image", b'[{"Id":"a",}]'),
                           ("container", b'[{"Id":"\\ud800"}]')):
            with self.assertRaises(UpstreamUnavailable, msg=body):
                ListAnswer(kind, body)

    def test_keys_name_what_the_policy_sees(self):
        def keys(*entries):
            return ListAnswer("container", json.dumps(list(entries)).encode()).keys()
        a = {"Id": "a", "Names": ["/a"], "Labels": {"k": "v"}, "Status": "Up 1 second"}
        same, other = keys(a, {**a, "Status": "Up 2 seconds", "Ports": []}), keys(a, {**a, "Labels": {}})
        self.assertEqual(same[0], same[1])
        self.assertNotEqual(other[0], other[1])
        self.assertEqual(len(set(keys(1, None, "1", [1], {}))), 5, "non-objects are keyed whole")
        long = keys({"Id": "x", "Labels": {"k": "v" * MAX_INLINE_KEY}})[0]
        self.assertEqual((len(long), long[:1]), (33, b"#"))

    def test_items_of_odd_entries(self):
        listing = ListAnswer("container", b'[1,{"Id":"c","Names":["/web"],"Labels":null}]')
        listing.keys()
        self.assertEqual(listing.item(0), list_item("container", 1))
        self.assertEqual(listing.item(1), list_item("container", {"Id": "c", "Names": ["/web"]}))
        self.assertEqual(listing.item(1)["Name"], "web")

    def test_removed_fields(self):
        listing = ListAnswer("container", b'[{"Id":"a","Labels":{"x":"1"},"Mounts":[{"Source":"/s"}]}]')
        self.assertEqual(json.loads(listing.write([True], ("Labels", "Mounts.Source"))),
                         [{"Id": "a", "Mounts": [{}]}])
        # an item without the fields stays as dockerd wrote it; one with them, in any
        # spelling of their names, loses them
        kept = b'{"Id":"a", "Labels":{"x":"\\u003c"}, "Command":"Config"}'
        escaped = b'{"Id":"b","\\u0043onfig":{"Env":["S=1"],"Image":"x"}}'
        plain = b'{"Id":"c","Config":{"Env":["S=1"]}}'
        out = ListAnswer("container", b"[" + b",".join((kept, escaped, plain)) + b"]").write(
            [True, True, True], ("Config.Env",))
        self.assertEqual(out, b"[" + kept + b',{"Id":"b","Config":{"Image":"x"}},{"Id":"c","Config":{}}]\n')


class EventLineTests(SynchronousTestCase):
    def test_keys_name_what_the_policy_sees(self):
        start = {"status": "start", "id": "c", "Type": "container", "Action": "start",
                 "Actor": {"ID": "c", "Attributes": {"name": "web", "k": "v"}}, "time": 1, "timeNano": 1}

        def key(event):
            return EventLine(json.dumps(event).encode()).key
        self.assertEqual(key(start), key({**start, "time": 2, "timeNano": 2, "status": "x"}))
        self.assertNotEqual(key(start), key({**start, "Action": "die"}))
        self.assertNotEqual(key(start), key({**start, "Actor": {"ID": "c", "Attributes": {"name": "web"}}}))
        line = EventLine(json.dumps(start).encode())
        self.assertEqual(line.item(), event_item(start))
        self.assertEqual(EventLine(b'"junk"').item(), event_item("junk"))
        self.assertNotEqual(EventLine(b'"junk"').key, EventLine(b'"junk2"').key)

    def test_what_is_not_json_fails_closed(self):
        for line in (b'{"Type":"container"', b'{"Type":"\xff"}', b'[1,', b'{"Type":"a"} x', b"nope"):
            with self.assertRaises(UpstreamUnavailable, msg=line):
                EventLine(line)


class ItemMemoTests(SynchronousTestCase):
    def test_bounded_and_keyed_by_request(self):
        memo = ItemMemo(max_bytes=4000)
        memo.remember(b"alice", [(b"a", True), (b"b", False)])
        self.assertEqual(memo.lookup(b"alice", [b"b", b"a", b"c"]), [False, True, None])
        self.assertEqual(memo.lookup(b"bob", [b"a"]), [None])
        self.assertEqual((memo.get(b"alice", b"a"), memo.get(b"alice", b"c"), memo.get(b"bob", b"a")),
                         (True, None, None))
        for i in range(10):
            memo.remember(b"bob%d" % i, [(b"k" * 200, True)])
            self.assertLessEqual(memo.bytes, 4000)
        self.assertEqual(memo.lookup(b"alice", [b"a"]), [None], "the least recent request went first")
        memo.remember(b"carol", [(b"%d" % i, True) for i in range(100)])
        self.assertLessEqual(memo.bytes, 4000)
        self.assertEqual(memo.lookup(b"carol", [b"1"]), [None], "one request alone over the bound")


# -- the list path against one evaluation per item -----------------------------

class Sink:
    """What the relay's sink receives from a filter."""

    def __init__(self):
        self.head, self.body, self.done, self.failure = None, b"", False, None

    def head_received(self, head):
        self.head = head

    def body_received(self, data):
        self.body += data

    def body_finished(self):
        self.done = True

    def failed(self, reason):
        self.failure = reason


LIST = CanonicalRequest("GET", canonical_target(b"/v1.41/containers/json?all=1"),
                        (("User-Agent", "Docker-Client/28"),))
EVENTS = CanonicalRequest("GET", canonical_target(b"/v1.41/events"), (("User-Agent", "Docker-Client/28"),))
PEERS = [None, {"Uid": 1000, "Gid": 1000, "Pid": 7, "User": "alice", "Group": "alice"},
         {"Uid": 1001, "Gid": 1001, "Pid": 8, "User": "bob", "Group": "bob"},
         {"Uid": 1002, "Gid": 990, "Pid": 9, "User": "root2", "Group": "docker-admins"}]
FAILING = '''package docker.authz
import rego.v1
default allow := true
visible := true if input.Item.Labels.show == "yes"
visible := false if input.Item.Labels.boom
'''


def _library(directory: str, files: list[str], settings_: dict) -> str:
    os.makedirs(directory)
    for name in files:
        shutil.copy(LIBRARY / name, os.path.join(directory, name))
    with open(os.path.join(directory, "data.yaml"), "w") as f:
        json.dump({"library": {"enabled": True, **settings_}}, f)
    return directory


_label = st.sampled_from(["dsfw.owner.uid", "dsfw.owner.user", "traefik.enable", "team", "show",
                          "boom", "a<b>&", "é"])
_value = st.sampled_from(["1000", "1001", "1002", "0", "true", "false", "yes", "", "alice"]) | st.text(max_size=4)
_entry = st.fixed_dictionaries({
    "Id": st.text("0123456789abcdef", min_size=1, max_size=8),
    "Names": st.lists(st.text(max_size=5).map(lambda s: "/" + s), max_size=2),
    "Image": st.sampled_from(["busybox", "localbusybox:latest"]),
    "ImageID": st.just("sha256:" + "9" * 64),
    "Labels": st.none() | st.dictionaries(_label, _value, max_size=4),
    "State": st.sampled_from(["running", "exited"]),
    "Status": st.sampled_from(["Up 1 second", "Up 2 seconds", "Exited (0) 3 minutes ago"]),
    "Ports": st.just([]),
})
_answer = st.lists(_entry, max_size=12)
_event = st.fixed_dictionaries({
    "Type": st.sampled_from(["container", "image", "network", "daemon"]),
    "Action": st.sampled_from(["start", "die", "kill", "tag"]),
    "Actor": st.fixed_dictionaries({"ID": st.text("0123456789abcdef", max_size=3),
                                    "Attributes": st.dictionaries(_label, _value, max_size=4)}),
    "scope": st.just("local"),
    "time": st.integers(0, 9),
}).map(lambda e: e if e["Type"] != "network" else {**e, "Actor": {**e["Actor"], "ID": ""}})


class VisibilityPropertyTests(SynchronousTestCase):
    """Lists filtered by dsfw equal, byte for byte, the items each alone shown visible."""

    def setUp(self):
        self.engines = self.make_engines()
        self.scopes = {name: Scope(TargetResolver(FakeDockerd(), MemoryReactorClock(),
                                                  trusted=lambda: True), engine)
                       for name, engine in self.engines.items()}

    def make_engines(self) -> dict[str, EmbeddedEngine]:
        base = temp_dir(self)
        failing = os.path.join(base, "failing")
        os.makedirs(failing)
        with open(os.path.join(failing, "authz.rego"), "w") as f:
            f.write(FAILING)
        dirs = {
            "ownership": _library(os.path.join(base, "ownership"),
                                  ["common.rego", "allow_all.rego", "ownership.rego"],
                                  {"ownership": {"exempt": {"groups": ["docker-admins"]},
                                                 "shared": ["image"]}}),
            "labelscope": _library(os.path.join(base, "labelscope"), ["common.rego", "labelscope.rego"],
                                   {"labelscope": {"labels": ["traefik.enable=true", "team"]}}),
            "failing": failing,
        }
        return {name: EmbeddedEngine(d) for name, d in dirs.items()}

    def filtered(self, scope, engine, doc, body: bytes, request=LIST) -> Sink:
        decision = engine.evaluate(AUTHZ, doc)
        self.assertTrue(decision.filters and decision.deterministic)
        sink = Sink()
        answer = scope.answer_filter(decision, doc, request)(sink, None)
        answer.head_received(JSON_HEAD)
        for i in range(0, len(body), 7):
            answer.body_received(body[i:i + 7])
        answer.body_finished()
        return sink

    @staticmethod
    def one_by_one(engine, doc, items) -> list[bool] | None:
        """Each item decided alone; None when any evaluation fails."""
        try:
            return [engine.rule_value(f"data.{AUTHZ}.visible", {**doc, "Item": i}) is True
                    for i in items]
        except PolicyEngineError:
            return None

    def check(self, scope, engine, doc, entries, ascii_: bool) -> None:
        written = [json.dumps(e, separators=(",", ":"), ensure_ascii=ascii_).encode() for e in entries]
        sink = self.filtered(scope, engine, doc, b"[" + b",".join(written) + b"]\n")
        expected = self.one_by_one(engine, doc, [list_item("container", e) for e in entries])
        if expected is None:
            self.assertIsNotNone(sink.failure, "an evaluation error fails the answer")
            self.assertTrue(sink.failure.check(PolicyEngineError))
            self.assertEqual(sink.body, b"")
            return
        self.assertIsNone(sink.failure)
        remove = engine.evaluate(AUTHZ, doc).remove
        # labelscope removes Config.Env: entries without it stay dockerd's bytes
        self.assertTrue(all(remove_fields(copy.deepcopy(e), remove) == e for e in entries))
        self.assertEqual(sink.body, b"[" + b",".join(w for w, shown in zip(written, expected)
                                                     if shown) + b"]\n")

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(policy=st.sampled_from(["ownership", "labelscope", "failing"]),
           peer=st.sampled_from(PEERS), first=_answer, later=_answer, ascii_=st.booleans(),
           data=st.data())
    def test_batched_and_remembered_equal_one_by_one(self, policy, peer, first, later, ascii_, data):
        engine, scope = self.engines[policy], self.scopes[policy]
        doc = input_document(LIST, peer)
        self.check(scope, engine, doc, first, ascii_)
        # the list changed: statuses moved on, some items left, some came
        moved = [{**e, "Status": "Up 9 seconds"} for e in first if data.draw(st.booleans())]
        second = moved + later
        self.check(scope, engine, doc, second, ascii_)
        self.check(scope, engine, doc, second, ascii_)  # unchanged: the answer memo

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(policy=st.sampled_from(["ownership", "labelscope", "failing"]),
           peer=st.sampled_from(PEERS), events=st.lists(_event, max_size=12), ascii_=st.booleans())
    def test_events_remembered_equal_one_by_one(self, policy, peer, events, ascii_):
        engine, scope = self.engines[policy], self.scopes[policy]
        doc = input_document(EVENTS, peer)
        lines = [json.dumps(e, separators=(",", ":"), ensure_ascii=ascii_).encode() for e in events]
        for _ in range(2):  # the second time, every item is remembered
            sink = self.filtered(scope, engine, doc, b"".join(line + b"\n" for line in lines), EVENTS)
            expected = b""
            for line, event in zip(lines, events):
                shown = self.one_by_one(engine, doc, [event_item(event)])
                if shown is None:  # the stream is cut at the event that failed
                    self.assertEqual(sink.body, expected)
                    self.assertTrue(sink.failure.check(PolicyEngineError))
                    break
                expected += line + b"\n" if shown[0] else b""
            else:
                self.assertIsNone(sink.failure)
                self.assertEqual(sink.body, expected)
