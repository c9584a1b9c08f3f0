"""input.Target: which object a path names, the cache, the resolver, the forwarded ID."""
from __future__ import annotations

import json

import pytest

from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import SynchronousTestCase

from dsfw import routes
from dsfw.scope.cache import MISS, TargetCache
from dsfw.scope.named import forwarded_by_id, named_object, push_reference
from dsfw.scope.scoping import Scope
from dsfw.scope.target import OWNER_UID_LABEL, TargetLookupFailed, TargetResolver, identity, owner_of

from tests.test_relay import FakeDockerd, FakeEngine, client, firewall

CID = "c" * 64
OTHER = "d" * 64


def http_json(status: int, doc) -> bytes:
    body = json.dumps(doc).encode()
    return b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (
        status, len(body)) + body


def container_answer(cid=CID, name="web", labels=None):
    return {"Id": cid, "Name": "/" + name, "Image": "sha256:" + "e" * 64,
            "Config": {"Image": "busybox", "Labels": labels or {}},
            "HostConfig": {"Binds": ["/srv:/srv"], "Privileged": False}}


def named(method, path):
    return named_object(method, routes.match(method, path))


class NamedObjectTests(SynchronousTestCase):
    def test_object_routes(self):
        cases = {
            ("GET", "/containers/web/json"): ("container", "web", True),
            ("POST", "/containers/web/exec"): ("container", "web", True),
            ("DELETE", "/containers/web"): ("container", "web", True),
            ("DELETE", "/containers/json"): ("container", "json", True),  # a container named json
            ("POST", "/exec/abc/start"): ("exec", "abc", True),
            ("GET", "/images/registry.example.com/a/b:1/json"): ("image", "registry.example.com/a/b:1", True),
            ("DELETE", "/images/busybox:latest"): ("image", "busybox:latest", False),
            ("POST", "/images/busybox/push"): ("image", "busybox", False),
            ("GET", "/volumes/create"): ("volume", "create", True),  # GET reads a volume named create
            ("POST", "/networks/n1/connect"): ("network", "n1", True),
            ("POST", "/services/s1/update"): ("service", "s1", True),
            ("GET", "/plugins/vieux/sshfs:latest/json"): ("plugin", "vieux/sshfs:latest", True),
            ("DELETE", "/containers/web/checkpoints/cp1"): ("container", "web", True),
        }
        for (method, path), want in cases.items():
            found = named(method, path)
            self.assertEqual((found.kind, found.ref, found.rewrite), want, (method, path))

    def test_collections_name_nothing(self):
        for method, path in [("GET", "/containers/json"), ("POST", "/containers/create"),
                             ("POST", "/containers/prune"), ("GET", "/images/json"),
                             ("POST", "/volumes/create"), ("GET", "/volumes"),
                             ("POST", "/networks/create"), ("GET", "/plugins/privileges"),
                             ("GET", "/events"), ("POST", "/build"), ("GET", "/images/get"),
                             ("GET", "/distribution/busybox/json"), ("GET", "/nothing/here")]:
            self.assertIsNone(named(method, path), (method, path))

    def test_path_with_id(self):
        self.assertEqual(named("GET", "/images/busybox/json").path_with("sha256:ab"),
                         "/images/sha256:ab/json")
        self.assertEqual(named("DELETE", "/containers/web/checkpoints/cp1").path_with(CID),
                         f"/containers/{CID}/checkpoints/cp1")


class CacheTests(SynchronousTestCase):
    def target(self, ident, **extra):
        return {"Kind": "container", "ID": ident, "Name": "n", "Labels": {}, **extra}

    def test_bounded_in_bytes(self):
        cache = TargetCache(max_bytes=4000)
        for i in range(100):
            cache.put("container", f"n{i}", self.target(f"{i:064d}"), cache.generation)
        self.assertLessEqual(cache.size, 4000)
        self.assertGreater(len(cache), 0)
        self.assertIs(cache.get("container", "n0"), MISS)  # least recently used went first
        self.assertIsNot(cache.get("container", "n99"), MISS)

    def test_event_forgets_objects_containing_the_id(self):
        cache = TargetCache()
        cache.put("container", "web", self.target(CID), 0)
        cache.put("exec", "e1", {"Kind": "exec", "ID": "e1", "Container": self.target(CID)}, 0)
        cache.put("container", "other", self.target(OTHER), 0)
        cache.event("container", "die", CID)
        self.assertIs(cache.get("container", "web"), MISS)
        self.assertIs(cache.get("exec", "e1"), MISS)
        self.assertIsNot(cache.get("container", "other"), MISS)

    def test_name_moving_events_forget_the_kind(self):
        cache = TargetCache()
        cache.put("container", "cc", self.target(CID), 0)  # an ID prefix
        cache.put("volume", "v", {"Kind": "volume", "ID": "v"}, 0)
        cache.event("container", "create", OTHER)  # a new container may be named "cc"
        self.assertIs(cache.get("container", "cc"), MISS)
        self.assertIsNot(cache.get("volume", "v"), MISS)

    def test_answer_older_than_an_event_is_not_stored(self):
        cache = TargetCache()
        generation = cache.generation
        cache.event("container", "rename", CID)
        cache.put("container", "web", self.target(CID), generation)
        self.assertIs(cache.get("container", "web"), MISS)


class IdentityTests(SynchronousTestCase):
    def test_container(self):
        doc = identity("container", container_answer(
            labels={"dsfw.owner.uid": "1000", "dsfw.owner.user": "alice", "x": "y"}))
        self.assertEqual(doc["Kind"], "container")
        self.assertEqual(doc["Name"], "web")
        self.assertEqual(doc["Image"], "busybox")
        self.assertEqual(doc["Owner"], {"Uid": 1000, "User": "alice"})
        self.assertEqual(doc["HostConfig"]["Binds"], ["/srv:/srv"])

    def test_stored_host_config_in_the_one_spelling(self):
        """Stored with a client's spellings (made on dockerd's socket): shown like a create body."""
        answer = container_answer()
        answer["HostConfig"] = {"Binds": ["/etc/:/e", "//tmp/./x:/x:ro"], "CapAdd": ["cap_sys_admin"],
                                "SecurityOpt": ["seccomp:unconfined", "no-new-privileges"],
                                "Mounts": None}
        doc = identity("container", answer)
        self.assertEqual(doc["HostConfig"]["Binds"], ["/etc:/e", "/tmp/x:/x:ro"])
        self.assertEqual(doc["HostConfig"]["CapAdd"], ["SYS_ADMIN"])
        self.assertEqual(doc["HostConfig"]["SecurityOpt"],
                         ["seccomp=unconfined", "no-new-privileges=true"])
        self.assertNotIn("HostConfigError", doc)

    def test_stored_host_config_without_one_spelling_is_marked(self):
        answer = container_answer()
        answer["HostConfig"] = {"Privileged": True, "SecurityOpt": ["label:disable"]}
        doc = identity("container", answer)
        self.assertEqual(doc["HostConfig"]["SecurityOpt"], ["label:disable"])
        self.assertIn("label=", doc["HostConfigError"])
        answer["HostConfig"] = None
        self.assertEqual(identity("container", answer)["HostConfig"], {})

    def test_swarm_kinds_read_the_spec(self):
        doc = identity("service", {"ID": "s1", "Spec": {"Name": "api", "Labels": {"a": "b"}}})
        self.assertEqual((doc["ID"], doc["Name"], doc["Labels"], doc["Owner"]),
                         ("s1", "api", {"a": "b"}, None))

    def test_not_an_object_fails(self):
        self.assertRaises(TargetLookupFailed, identity, "volume", [])


class ResolverTests(SynchronousTestCase):
    def setUp(self):
        from twisted.internet.testing import MemoryReactorClock
        self.dockerd = FakeDockerd()
        self.clock = MemoryReactorClock()
        self.trusted = True
        self.resolver = TargetResolver(self.dockerd, self.clock, trusted=lambda: self.trusted)

    def resolve(self, kind, ref):
        return ensureDeferred(self.resolver.resolve(kind, ref))

    def test_cached_while_trusted(self):
        d = self.resolve("container", "web")
        self.assertEqual(self.dockerd.received(), b"GET /containers/web/json HTTP/1.1\r\nHost: docker\r\n\r\n")
        self.dockerd.answer(http_json(200, container_answer()))
        self.assertEqual(self.successResultOf(d)["ID"], CID)
        self.assertEqual(self.successResultOf(self.resolve("container", "web"))["ID"], CID)
        self.assertEqual(self.dockerd.acquired, 1)

    def test_not_cached_while_events_are_down(self):
        self.trusted = False
        for _ in range(2):
            d = self.resolve("container", "web")
            self.dockerd.answer(http_json(200, container_answer()))
            self.successResultOf(d)
        self.assertEqual(self.dockerd.acquired, 2)

    def test_missing_is_none(self):
        d = self.resolve("network", "nope")
        self.dockerd.answer(http_json(404, {"message": "network nope not found"}))
        self.assertIsNone(self.successResultOf(d))
        d = self.resolve("service", "nope")
        self.dockerd.answer(http_json(503, {"message": "This node is not a swarm manager."}))
        self.assertIsNone(self.successResultOf(d))

    def test_other_answers_fail_closed(self):
        d = self.resolve("container", "web")
        self.dockerd.answer(http_json(500, {"message": "boom"}))
        failure = self.failureResultOf(d, TargetLookupFailed)
        self.assertIn("dockerd answered 500", failure.value.message)
        self.assertIn("boom", failure.value.message)

    def test_exec_carries_its_container(self):
        d = self.resolve("exec", "e1")
        self.dockerd.answer(http_json(200, {"ID": "e1", "ContainerID": CID,
                                            "ProcessConfig": {"entrypoint": "sh"}}))
        self.dockerd.answer(http_json(200, container_answer(labels={"dsfw.owner.uid": "7"})))
        target = self.successResultOf(d)
        self.assertEqual((target["Kind"], target["Container"]["ID"], target["Owner"]["Uid"]),
                         ("exec", CID, 7))


class ForwardedByIdTests(SynchronousTestCase):
    """The request dockerd receives names the object the policy saw, by its full ID."""

    def setUp(self):
        from twisted.internet.testing import MemoryReactorClock
        self.engine = FakeEngine()
        self.dockerd = FakeDockerd()
        scope = Scope(TargetResolver(self.dockerd, MemoryReactorClock(), trusted=lambda: True),
                      self.engine)
        self.resource, _, self.clock = firewall(self.engine, self.dockerd, scope=scope)
        self.channel, self.client = client(self.resource, self.clock)

    def test_stop_is_forwarded_by_id(self):
        self.channel.dataReceived(b"POST /v1.41/containers/web/stop HTTP/1.1\r\nHost: x\r\n"
                                  b"Content-Length: 0\r\n\r\n")
        self.dockerd.answer(http_json(200, container_answer()))
        sent = b"".join(c.transport.value() for c in self.dockerd.connections)
        self.assertIn(b"\r\n\r\nPOST /v1.41/containers/%s/stop HTTP/1.1\r\n" % CID.encode(), sent)
        doc = self.engine.inputs[0][1]
        self.assertEqual(doc["Path"], "/v1.41/containers/web/stop?")
        self.assertEqual(doc["Target"]["ID"], CID)

    def test_failed_lookup_denies(self):
        self.channel.dataReceived(b"POST /containers/web/stop HTTP/1.1\r\nHost: x\r\n"
                                  b"Content-Length: 0\r\n\r\n")
        self.dockerd.answer(http_json(500, {"message": "boom"}))
        head, _, body = self.client.value().partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 502 "), head)
        self.assertIn("dsfw: dockerd answered 500 when dsfw looked up container 'web'",
                      json.loads(body)["message"])
        self.assertEqual(self.engine.inputs, [])
        self.assertEqual(len(self.dockerd.connections), 1)
        self.assertNotIn(b"/stop", self.dockerd.received())

    def test_a_null_target_is_answered_never_forwarded(self):
        self.channel.dataReceived(b"POST /v1.41/containers/web/stop HTTP/1.1\r\nHost: x\r\n"
                                  b"Content-Length: 0\r\n\r\n")
        self.dockerd.answer(http_json(404, {"message": "No such container: web"}))
        head, _, body = self.client.value().partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 404 "), head)
        self.assertEqual(body, b'{"message":"No such container: web"}\n')
        self.assertIsNone(self.engine.inputs[0][1]["Target"])  # the policy decided on null
        self.assertNotIn(b"/stop", self.dockerd.received())

    def test_rmi_of_an_id_prefix_goes_by_id_and_a_moved_name_is_refused(self):
        image = {"Id": "sha256:" + "ab" * 32, "RepoTags": ["x:latest"], "Config": {}}
        self.channel.dataReceived(b"DELETE /v1.41/images/abab HTTP/1.1\r\nHost: x\r\n\r\n")
        self.dockerd.answer(http_json(200, image))
        self.assertIn(b"DELETE /v1.41/images/sha256:" + b"ab" * 32 + b" HTTP/1.1",
                      self.dockerd.received())
        self.dockerd.answer(http_json(200, []))
        channel, client_ = client(self.resource, self.clock)
        channel.dataReceived(b"DELETE /v1.41/images/x HTTP/1.1\r\nHost: x\r\n\r\n")
        self.dockerd.answer(http_json(200, image))  # decided on this image; just before relaying:
        asking = next(i for i, c in enumerate(self.dockerd.connections)
                      if c.transport.value().endswith(b"GET /images/x/json HTTP/1.1\r\n"
                                                      b"Host: docker\r\n\r\n") and c._state != "idle")
        self.dockerd.answer(http_json(200, {**image, "Id": "sha256:" + "cd" * 32}), asking)
        head, _, body = client_.value().partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 409 "), head)
        self.assertIn("names another object than the one the policy judged",
                      json.loads(body)["message"])
        self.assertNotIn(b"DELETE /v1.41/images/x ", self.dockerd.received())

    def test_a_push_of_every_tag_is_decided_then_refused(self):
        self.channel.dataReceived(b"POST /v1.41/images/x/push HTTP/1.1\r\nHost: x\r\n"
                                  b"X-Registry-Auth: e30=\r\nContent-Length: 0\r\n\r\n")
        head, _, body = self.client.value().partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 403 "), head)
        self.assertIn("a push of every tag of a repository", json.loads(body)["message"])
        self.assertNotIn("Target", self.engine.inputs[0][1])  # the policy decided first
        self.assertEqual(self.dockerd.connections, [])

    def test_connect_names_its_container_by_id_and_a_missing_one_is_answered(self):
        network = {"Id": "n" * 64, "Name": "n1", "Labels": {}}
        body = b'{"Container":"web"}'
        request = (b"POST /v1.41/networks/n1/connect HTTP/1.1\r\nHost: x\r\nContent-Type: "
                   b"application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        self.channel.dataReceived(request)
        self.dockerd.answer(http_json(200, network))
        self.dockerd.answer(http_json(200, container_answer()))
        sent = b"".join(c.transport.value() for c in self.dockerd.connections)
        self.assertIn(b"POST /v1.41/networks/" + b"n" * 64 + b"/connect HTTP/1.1", sent)
        self.assertIn(b'\r\n\r\n{"Container":"%s"}' % CID.encode(), sent)
        self.assertEqual(self.engine.inputs[0][1]["Container"]["ID"], CID)
        self.dockerd.answer(http_json(200, {}))
        self.resource._scope.resolver.cache.clear()
        channel, client_ = client(self.resource, self.clock)
        channel.dataReceived(request)
        self.dockerd.answer(http_json(200, network))
        self.dockerd.answer(http_json(404, {"message": "No such container: web"}))
        self.assertEqual(client_.value().partition(b"\r\n\r\n")[2],
                         b'{"message":"No such container: web"}\n')
        after = b"".join(c.transport.value() for c in self.dockerd.connections)
        self.assertEqual(after.count(b"/connect HTTP/1.1"), 1)  # not forwarded again


class ByNameTests(SynchronousTestCase):
    def test_save_missing_answers(self):
        from dsfw.scope.missing import save_missing
        from dsfw.scope.target import Absent
        self.assertEqual(save_missing("x:1", None).body(), b'{"message":"reference does not exist"}\n')
        self.assertEqual(save_missing("localhost:5000/x", None).message, "No such image: localhost:5000/x")
        bad = save_missing("UP", Absent(400, "no such image: UP: invalid reference format"))
        self.assertEqual((bad.status, bad.message), (500, "invalid reference format"))

    def test_destinations(self):
        from dsfw.input.path import canonical_target
        from dsfw.scope.named import destinations

        def of(method, template, target):
            return destinations(method, template, canonical_target(target))
        self.assertEqual(of("POST", "/images/{name}/tag", b"/images/x/tag?repo=a:1&tag=2"), ["a:2"])
        self.assertEqual(of("POST", "/commit", b"/commit?container=c&repo=r"), ["r:latest"])
        self.assertEqual(of("POST", "/build", b"/build?t=a&t=b:1&t=a"), ["a:latest", "b:1"])
        self.assertEqual(of("POST", "/images/create", b"/images/create?fromSrc=-&repo=x"),
                         ["x:latest"])
        self.assertEqual(of("POST", "/images/create", b"/images/create?fromImage=b&tag=1"),
                         ["docker.io/library/b:1"])
        self.assertEqual(of("POST", "/images/create", b"/images/create?fromImage=b"), [])

    def test_push_reference(self):
        self.assertEqual(push_reference("x", "v1"), "x:v1")
        self.assertEqual(push_reference("x:1", "v2"), "x:v2")
        self.assertEqual(push_reference("localhost:5000/x", "t"), "localhost:5000/x:t")
        self.assertEqual(push_reference("localhost:5000/x:1", None), "localhost:5000/x:1")
        self.assertIsNone(push_reference("localhost:5000/x", None))  # every tag
        self.assertIsNone(push_reference("x", ""))

    def test_id_prefixes_by_id(self):
        image = {"ID": "sha256:" + "ab" * 32, "Names": ["abab:latest"]}
        rmi = named("DELETE", "/images/abab")
        save = named("GET", "/images/abab/get")
        self.assertTrue(forwarded_by_id(rmi, image))  # dockerd's isImageIDPrefix
        self.assertFalse(forwarded_by_id(save, image))  # a repository's tags are saved
        self.assertTrue(forwarded_by_id(save, {**image, "Names": ["other:1"]}))
        self.assertFalse(forwarded_by_id(named("DELETE", "/images/busybox"), image))
        self.assertFalse(forwarded_by_id(named("POST", "/images/abab/push"), image))


class EventWatcherTests(SynchronousTestCase):
    def setUp(self):
        from twisted.internet.testing import MemoryReactorClock
        from dsfw.scope.events import EventWatcher
        self.clock = MemoryReactorClock()
        self.dockerd = FakeDockerd()
        self.cache = TargetCache()
        self.watcher = EventWatcher(self.dockerd, self.clock, self.cache)
        self.watcher.startService()

    def stream_head(self):
        self.dockerd.answer(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                            b"Transfer-Encoding: chunked\r\n\r\n")

    def chunk(self, event: dict):
        line = json.dumps(event).encode() + b"\n"
        self.dockerd.answer(b"%x\r\n%s\r\n" % (len(line), line))

    def test_events_invalidate_and_trust_follows_the_connection(self):
        self.assertEqual(self.dockerd.received(), b"GET /events HTTP/1.1\r\nHost: docker\r\n\r\n")
        self.assertFalse(self.watcher.trusted())
        self.stream_head()
        self.assertTrue(self.watcher.trusted())
        self.cache.put("container", "web", {"Kind": "container", "ID": CID}, self.cache.generation)
        self.chunk({"Type": "container", "Action": "start", "Actor": {"ID": OTHER}})
        self.assertIsNot(self.cache.get("container", "web"), MISS)
        self.chunk({"Type": "container", "Action": "die", "Actor": {"ID": CID}})
        self.assertIs(self.cache.get("container", "web"), MISS)

    def test_reconnects_with_backoff_and_clears_the_cache(self):
        self.stream_head()
        self.cache.put("container", "web", {"Kind": "container", "ID": CID}, self.cache.generation)
        self.dockerd.connections[-1].transport.loseConnection()
        self.assertFalse(self.watcher.trusted())
        self.assertIs(self.cache.get("container", "web"), MISS)
        self.assertEqual(len(self.dockerd.connections), 1)
        self.clock.advance(0.1)
        self.assertEqual(len(self.dockerd.connections), 2)
        self.dockerd.connections[-1].transport.loseConnection()  # fails before the head
        self.clock.advance(0.1)
        self.assertEqual(len(self.dockerd.connections), 2, "the second wait is longer")
        self.clock.advance(0.1)
        self.assertEqual(len(self.dockerd.connections), 3)
        self.stream_head()
        self.assertTrue(self.watcher.trusted())

    def test_stop_closes_the_stream(self):
        self.stream_head()
        self.watcher.stopService()
        self.assertFalse(self.watcher.trusted())
        self.clock.advance(60)
        self.assertEqual(len(self.dockerd.connections), 1)


@pytest.mark.parametrize("uid, expected", [("1000", 1000), ("0", 0), ("\u00b2", "\u00b2"),
                                           ("\u0663", "\u0663"), ("-1", "-1"), ("1_0", "1_0")])
def test_owner_uid_is_a_number_only_in_ascii_digits(uid, expected):
    """An owner label made beside dsfw is a string unless it is plain ASCII digits."""
    assert owner_of({OWNER_UID_LABEL: uid}) == {"Uid": expected, "User": None}
