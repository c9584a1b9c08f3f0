"""Filtered answers and stamped labels, against a fake dockerd (no sockets)."""
from __future__ import annotations

import json

from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from dsfw.errors import BadRequest
from dsfw.input.path import canonical_target
from dsfw.input.request import CanonicalRequest
from dsfw.policy import PolicyDecision
from dsfw.scope.filter import event_item, list_item, remove_fields
from dsfw.scope.labels import stamp
from dsfw.scope.missing import familiar_image
from dsfw.scope.scoping import Scope
from dsfw.scope.target import TargetResolver

from tests.test_relay import FakeDockerd, FakeEngine, client, firewall


class ScopedEngine(FakeEngine):
    """Allows all; shows items whose Labels carry owner=me; decisions carry the scoping fields."""

    def __init__(self, labels=None, remove=(), filters=True, pending=False):
        super().__init__()
        self.labels, self.remove, self.filters = labels, tuple(remove), filters
        self.pending = pending  # answer visibility later, as OPA does
        self.waiting: list[tuple[Deferred, list]] = []
        self.asked: list[list] = []

    deterministic = False

    def decide(self, package, doc):
        self.inputs.append((package, doc))
        return succeed(PolicyDecision(True, package, (), "fake", "r1", labels=self.labels,
                                      remove=self.remove, filters=self.filters,
                                      deterministic=self.deterministic))

    def visible(self, package, doc, items):
        self.asked.append(items)
        flags = [i.get("Labels", {}).get("owner") == "me" for i in items]
        if not self.pending:
            return succeed(flags)
        d = Deferred()
        self.waiting.append((d, flags))
        return d

    def release(self):
        while self.waiting:
            d, flags = self.waiting.pop(0)
            d.callback(flags)


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


class FilteredAnswerTests(SynchronousTestCase):
    def make(self, engine):
        self.engine = engine
        self.dockerd = FakeDockerd()
        scope = Scope(TargetResolver(self.dockerd, MemoryReactorClock(), trusted=lambda: True), engine)
        self.resource, _, self.clock = firewall(engine, self.dockerd, scope=scope)
        self.channel, self.client = client(self.resource, self.clock)

    def get(self, path: bytes):
        self.channel.dataReceived(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")

    def response(self):
        head, _, body = self.client.value().partition(b"\r\n\r\n")
        return head, body

    def test_list_keeps_visible_items_and_dockerd_length_framing(self):
        self.make(ScopedEngine())
        items = [{"Id": "a", "Names": ["/a"], "Labels": {"owner": "me"}},
                 {"Id": "b", "Names": ["/b"], "Labels": {"owner": "you"}},
                 {"Id": "c", "Names": ["/c"], "Labels": {"owner": "me"}}]
        body = json.dumps(items).encode() + b"\n"
        self.get(b"/v1.41/containers/json?all=1")
        self.dockerd.answer(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                            b"Content-Length: %d\r\n\r\n" % len(body) + body)
        head, out = self.response()
        self.assertEqual([i["Id"] for i in json.loads(out)], ["a", "c"])
        self.assertIn(b"Content-Length: %d" % len(out), head)
        self.assertEqual(self.engine.asked[0][0]["Name"], "a")  # the Target shape: no leading /

    def test_chunked_list_stays_chunked_and_waits_for_an_async_engine(self):
        self.make(ScopedEngine(pending=True))
        body = json.dumps({"Volumes": [{"Name": "v1", "Labels": {"owner": "me"}},
                                       {"Name": "v2", "Labels": None}], "Warnings": None}).encode()
        self.get(b"/volumes")
        self.dockerd.answer(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                            b"Transfer-Encoding: chunked\r\n\r\n" + chunked(body[:10], body[10:]))
        self.assertEqual(self.client.value(), b"", "nothing before the policy answered")
        self.engine.release()
        head, out = self.response()
        self.assertIn(b"Transfer-Encoding: chunked", head)
        decoded = out.split(b"\r\n")[1]
        self.assertEqual([v["Name"] for v in json.loads(decoded)["Volumes"]], ["v1"])

    def list_once(self, items) -> list:
        body = json.dumps(items).encode() + b"\n"
        self.client.clear()
        self.get(b"/containers/json")
        self.dockerd.answer(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                            b"Content-Length: %d\r\n\r\n" % len(body) + body)
        return [i["Id"] for i in json.loads(self.response()[1])]

    def test_unchanged_answers_are_remembered_for_deterministic_policies(self):
        items = [{"Id": "a", "Labels": {"owner": "me"}}, {"Id": "b", "Labels": {}}]
        changed = [{**items[0], "Status": "Up 2 seconds"}, items[1],
                   {"Id": "c", "Labels": {"owner": "me"}}, {"Id": "b", "Labels": {"owner": "me"}}]
        for deterministic, asked in ((True, [["a", "b"], ["c", "b"]]),
                                     (False, [["a", "b"], ["a", "b"], ["a", "b", "c", "b"]])):
            engine = ScopedEngine()
            engine.deterministic = deterministic
            self.make(engine)
            self.assertEqual(self.list_once(items), ["a"])
            self.assertEqual(self.list_once(items), ["a"])
            # a changed list: only items whose input.Item is new are decided
            self.assertEqual(self.list_once(changed), ["a", "c", "b"])
            self.assertEqual([[i["ID"] for i in one] for one in engine.asked], asked, deterministic)

    def test_errors_pass_unchanged(self):
        self.make(ScopedEngine())
        self.get(b"/containers/json")
        self.dockerd.answer(b"HTTP/1.1 500 Oops\r\nContent-Type: application/json\r\n"
                            b"Content-Length: 17\r\n\r\n{\"message\":\"x\"}\n\n")
        head, out = self.response()
        self.assertTrue(head.startswith(b"HTTP/1.1 500 "))
        self.assertEqual(out, b"{\"message\":\"x\"}\n\n")

    def test_inspect_fields_removed(self):
        self.make(ScopedEngine(remove=["Config.Env", "Mounts.Source"], filters=False))
        self.get(b"/containers/web/json")
        doc = {"Id": "c" * 64, "Name": "/web", "Config": {"Env": ["A=1"], "Image": "b", "Labels": {}},
               "Mounts": [{"Source": "/s", "Destination": "/d"}]}
        answer = json.dumps(doc).encode()
        self.dockerd.answer(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                            b"Content-Length: %d\r\n\r\n" % len(answer) + answer)  # the lookup
        self.dockerd.answer(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                            b"Content-Length: %d\r\n\r\n" % len(answer) + answer)  # the request
        _, out = self.response()
        shown = json.loads(out)
        self.assertNotIn("Env", shown["Config"])
        self.assertEqual(shown["Mounts"], [{"Destination": "/d"}])

    def test_hidden_object_is_dockerds_404(self):
        self.make(ScopedEngine())
        self.get(b"/containers/web/json")
        doc = json.dumps({"Id": "c" * 64, "Name": "/web", "Config": {"Labels": {"owner": "you"}}}).encode()
        self.dockerd.answer(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                            b"Content-Length: %d\r\n\r\n" % len(doc) + doc)
        head, out = self.response()
        self.assertTrue(head.startswith(b"HTTP/1.1 404 "), head)
        self.assertEqual(out, b'{"message":"No such container: web"}\n')
        self.assertEqual(len(self.dockerd.connections), 1, "only the lookup reached dockerd")

    def test_events_stream_line_by_line(self):
        self.make(ScopedEngine())
        self.get(b"/events")
        self.dockerd.answer(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                            b"Transfer-Encoding: chunked\r\n\r\n")
        mine = json.dumps({"Type": "container", "Action": "start",
                           "Actor": {"ID": "a", "Attributes": {"name": "a", "owner": "me"}}}).encode()
        theirs = json.dumps({"Type": "container", "Action": "start",
                             "Actor": {"ID": "b", "Attributes": {"name": "b", "owner": "you"}}}).encode()
        self.dockerd.answer(b"%x\r\n%s\n\r\n" % (len(theirs) + 1, theirs))
        self.dockerd.answer(b"%x\r\n%s\n%s\r\n" % (len(mine) + 1 + 5, mine, mine[:5]))
        head, out = self.response()
        self.assertIn(b"Transfer-Encoding: chunked", head)
        self.assertIn(mine + b"\n", out)
        self.assertNotIn(b'"b"', out)
        self.dockerd.answer(b"%x\r\n%s\n\r\n" % (len(mine) - 5 + 1, mine[5:]))
        self.assertEqual(self.client.value().count(mine + b"\n"), 2)

    def events(self, *lines: bytes) -> None:
        self.dockerd.answer(b"".join(b"%x\r\n%s\n\r\n" % (len(line) + 1, line) for line in lines))

    @staticmethod
    def event(ident: str, owner: str, time: int = 1) -> bytes:
        return json.dumps({"Type": "container", "Action": "start", "time": time, "Actor": {
            "ID": ident, "Attributes": {"name": ident, "owner": owner}}}).encode()

    def test_events_keep_their_order_while_an_async_engine_decides(self):
        self.make(ScopedEngine(pending=True))
        self.get(b"/events")
        self.dockerd.answer(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                            b"Transfer-Encoding: chunked\r\n\r\n")
        a, b, c = self.event("a", "me"), self.event("b", "you"), self.event("c", "me")
        self.events(a, b)
        self.events(c)
        self.assertNotIn(b'"a"', self.response()[1], "nothing before the policy answered")
        self.assertEqual(len(self.engine.waiting), 1, "one event decided at a time")
        self.engine.release()
        out = self.response()[1]
        self.assertLess(out.index(a), out.index(c))
        self.assertNotIn(b, out)

    def test_repeated_events_are_remembered_for_deterministic_policies(self):
        for deterministic, asked in ((True, 2), (False, 4)):
            engine = ScopedEngine()
            engine.deterministic = deterministic
            self.make(engine)
            self.get(b"/events")
            self.dockerd.answer(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                b"Transfer-Encoding: chunked\r\n\r\n")
            # the same container starting again: only the time differs, so does not the item
            self.events(self.event("a", "me", 1), self.event("b", "you", 1))
            self.events(self.event("a", "me", 2), self.event("b", "you", 2))
            out = self.response()[1]
            self.assertIn(self.event("a", "me", 2), out)
            self.assertNotIn(b'"b"', out)
            self.assertEqual(len(engine.asked), asked, deterministic)

    def test_failed_visibility_mid_stream_cuts_the_client(self):
        class Failing(ScopedEngine):
            def visible(self, package, doc, items):
                from twisted.internet.defer import fail
                from dsfw.errors import PolicyEngineError
                return fail(PolicyEngineError("boom"))
        self.make(Failing())
        self.get(b"/events")
        self.dockerd.answer(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                            b"Transfer-Encoding: chunked\r\n\r\n")
        line = b'{"Type":"container","Actor":{"ID":"a"}}\n'
        self.dockerd.answer(b"%x\r\n%s\r\n" % (len(line), line))
        self.assertTrue(self.client.disconnecting, "the client's connection is cut")
        self.assertNotIn(line, self.client.value())


class ItemTests(SynchronousTestCase):
    def test_list_items_have_the_target_shape(self):
        item = list_item("container", {"Id": "x", "Names": ["/web"], "Image": "busybox",
                                       "Labels": {"dsfw.owner.uid": "5"}})
        self.assertEqual((item["Name"], item["Names"], item["Owner"]), ("web", ["web"], {"Uid": 5, "User": None}))
        image = list_item("image", {"Id": "sha256:1", "RepoTags": None, "Labels": None})
        self.assertEqual((image["Names"], image["Labels"]), ([], {}))
        self.assertEqual(list_item("secret", {"ID": "s", "Spec": {"Name": "n"}})["Name"], "n")

    def test_event_items(self):
        item = event_item({"Type": "container", "Action": "die",
                           "Actor": {"ID": "c", "Attributes": {"name": "web", "dsfw.owner.uid": "7"}}})
        self.assertEqual((item["Kind"], item["Name"], item["Owner"]["Uid"], item["Action"]),
                         ("container", "web", 7, "die"))
        self.assertEqual(event_item("junk")["Kind"], "")

    def test_remove_fields(self):
        doc = {"A": {"B": 1, "C": 2}, "L": [{"B": 1}, {"B": 2, "D": 3}]}
        self.assertEqual(remove_fields(doc, ("A.B", "L.B", "X.Y")), {"A": {"C": 2}, "L": [{}, {"D": 3}]})

    def test_familiar_image_names(self):
        self.assertEqual(familiar_image("busybox"), "busybox:latest")
        self.assertEqual(familiar_image("docker.io/library/busybox:1"), "busybox:1")
        self.assertEqual(familiar_image("localhost:5000/a"), "localhost:5000/a:latest")
        self.assertEqual(familiar_image("sha256:abc"), "sha256:abc")


def request(method: str, target: bytes, body=None) -> CanonicalRequest:
    t = canonical_target(target)
    json_body = json.dumps(body).encode() if body is not None else None
    return CanonicalRequest(method, t, (), body=body, json_body=json_body)


class StampTests(SynchronousTestCase):
    OWNER = {"dsfw.owner.uid": "1000"}

    def test_client_values_are_overridden_in_every_spelling(self):
        req = request("POST", b"/containers/create",
                      {"Image": "b", "Labels": {"dsfw.owner.uid": "0", "a": "1"}, "labels": {"b": "2"}})
        body = json.loads(stamp(req, self.OWNER).json_body)
        self.assertEqual(body["Labels"], {"dsfw.owner.uid": "1000", "a": "1", "b": "2"})
        self.assertNotIn("labels", body)

    def test_services_stamp_their_containers_too(self):
        req = request("POST", b"/services/create", {"Name": "s", "TaskTemplate": {"ContainerSpec": {"Image": "b"}}})
        body = json.loads(stamp(req, self.OWNER).json_body)
        self.assertEqual(body["Labels"], self.OWNER)
        self.assertEqual(body["TaskTemplate"]["ContainerSpec"]["Labels"], self.OWNER)

    def test_volume_without_body(self):
        req = request("POST", b"/volumes/create")
        self.assertEqual(json.loads(stamp(req, self.OWNER).json_body), {"Labels": self.OWNER})

    def test_build_labels_query(self):
        req = request("POST", b"/build?t=x&labels=%7B%22dsfw.owner.uid%22%3A%220%22%2C%22k%22%3A%22v%22%7D&labels=zz")
        out = stamp(req, self.OWNER)
        self.assertEqual(json.loads(out.target.param("labels")), {"dsfw.owner.uid": "1000", "k": "v"})
        self.assertEqual([k for k, _ in out.target.query].count("labels"), 1)
        self.assertRaises(BadRequest, stamp, request("POST", b"/build?labels=nojson"), self.OWNER)

    def test_prunes_are_restricted_to_the_labels(self):
        from urllib.parse import quote
        both = {"label": {"dsfw.owner.uid=1000": True, "x=1": True}, "until": {"1h": True}}
        for given in ('{"label":["x=1","dsfw.owner.uid=0"],"until":["1h"]}',
                      '{"label":{"x=1":true,"dsfw.owner.uid=0":false},"until":{"1h":true}}'):
            out = stamp(request("POST", f"/containers/prune?filters={quote(given)}&filters=zz".encode()),
                        self.OWNER)
            self.assertEqual([k for k, _ in out.target.query], ["filters"])
            filters = json.loads(out.target.param("filters"))
            # dockerd ANDs label filters: the client's own can only narrow the caller's objects
            self.assertEqual(filters["until"], both["until"])
            self.assertIn("dsfw.owner.uid=1000", filters["label"])
        out = stamp(request("POST", b"/volumes/prune"), self.OWNER)
        self.assertEqual(json.loads(out.target.param("filters")), {"label": {"dsfw.owner.uid=1000": True}})
        for bad in (b"/images/prune?filters=nojson", b"/images/prune?filters=%5B%5D",
                    b"/networks/prune?filters=%7B%22label%22%3A%22x%22%7D"):
            self.assertRaises(BadRequest, stamp, request("POST", bad), self.OWNER)

    def test_other_routes_unchanged(self):
        req = request("POST", b"/containers/web/start")
        self.assertIs(stamp(req, self.OWNER), req)


class NamedVolumeTests(SynchronousTestCase):
    def test_named_volumes_of_a_create(self):
        from dsfw.scope.scoping import named_volumes
        req = request("POST", b"/containers/create", {"Image": "b", "HostConfig": {
            "Binds": ["data:/d", "/srv:/s:ro", "data:/again", "logs:/l:rw"],
            "Mounts": [{"Type": "volume", "Source": "cache", "Target": "/c"},
                       {"Type": "bind", "Source": "/x", "Target": "/x"},
                       {"Type": "volume", "Source": "", "Target": "/anon"}]}})
        self.assertEqual(named_volumes(req), ["data", "logs", "cache"])
        self.assertEqual(named_volumes(request("POST", b"/containers/create", {"Image": "b"})), [])
        self.assertEqual(named_volumes(request("POST", b"/volumes/create", {"Name": "x"})), [])
