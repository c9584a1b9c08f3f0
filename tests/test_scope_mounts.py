"""Host paths judged again at start, restart and archive, from the stored container."""
from __future__ import annotations

import os

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from dsfw.input.derived import stored_mount_facts
from dsfw.scope.scoping import Scope
from dsfw.scope.target import TargetResolver

from tests.test_relay import FakeDockerd, FakeEngine, client, firewall
from tests.test_scope_target import CID, container_answer, http_json


def test_stored_mounts_give_the_facts_as_resolved_now(tmp_path):
    link = tmp_path / "x"
    os.symlink("/etc", link)
    mounts = [{"Type": "bind", "Source": str(link), "Destination": "/data"},
              {"Type": "volume", "Name": "v", "Driver": "local", "Destination": "/v"},
              {"Type": "volume", "Name": "plain", "Driver": "local", "Destination": "/p"},
              {"Type": "tmpfs", "Destination": "/t"}, "junk"]
    volumes = {"v": {"Driver": "local", "Options": {"type": "proc", "device": "proc"}},
               "plain": {"Driver": "local", "Options": None}}
    facts = stored_mount_facts(mounts, volumes)
    assert facts["BindMounts"] == ["/etc"]
    assert facts["SymlinkMounts"] == [{"Path": str(link), "Resolved": "/etc"}]
    assert [(v["Name"], v["Type"]) for v in facts["LocalVolumes"]] == [("v", "proc")]
    assert facts["VolumeDrivers"] == ["local"]
    assert stored_mount_facts(None, {}) == {"BindMounts": [], "SymlinkMounts": [],
                                           "LocalVolumes": [], "VolumeDrivers": []}


class StartJudgesStoredMountsTests(SynchronousTestCase):
    def setUp(self):
        self.engine = FakeEngine()
        self.dockerd = FakeDockerd()
        scope = Scope(TargetResolver(self.dockerd, MemoryReactorClock(), trusted=lambda: False),
                      self.engine)
        self.resource, _, self.clock = firewall(self.engine, self.dockerd, scope=scope)
        self.channel, self.client = client(self.resource, self.clock)

    def sent(self) -> bytes:
        return b"".join(c.transport.value() for c in self.dockerd.connections)

    def stored(self):
        answer = container_answer()
        answer["Mounts"] = [
            {"Type": "bind", "Source": "/", "Destination": "/host"},
            {"Type": "volume", "Name": "data", "Driver": "local", "Destination": "/d"}]
        return answer

    def test_start_restart_and_archive_see_what_dockerd_will_mount(self):
        for head in (b"POST /v1.41/containers/web/start HTTP/1.1\r\nContent-Length: 0",
                     b"POST /containers/web/restart HTTP/1.1\r\nContent-Length: 0",
                     b"GET /v1.41/containers/web/archive?path=/d HTTP/1.1",
                     b"HEAD /v1.41/containers/web/archive?path=/d HTTP/1.1"):
            self.setUp()  # a fresh firewall and dockerd for each request
            self.channel.dataReceived(head + b"\r\nHost: x\r\n\r\n")
            self.dockerd.answer(http_json(200, self.stored()))
            self.assertTrue(self.sent().endswith(b"GET /volumes/data HTTP/1.1\r\nHost: docker\r\n\r\n"))
            self.dockerd.answer(http_json(200, {"Name": "data", "Driver": "local", "Options": {
                "type": "none", "o": "bind", "device": "/etc"}}))
            doc = self.engine.inputs[0][1]
            self.assertEqual(doc["BindMounts"], ["/", "/etc"], head)
            self.assertEqual(doc["LocalVolumes"][0]["Device"], "/etc")
            self.assertEqual(doc["Target"]["ID"], CID)
            method = head.split(b" ")[0]
            self.assertRegex(self.sent(), rb"\r\n\r\n%s (/v1\.41)?/containers/%s/" % (method, CID.encode()))
            self.dockerd.answer(b"HTTP/1.1 204 No Content\r\n\r\n")

    def test_other_container_requests_do_not_look_at_mounts(self):
        self.channel.dataReceived(b"POST /containers/web/stop HTTP/1.1\r\nHost: x\r\n"
                                  b"Content-Length: 0\r\n\r\n")
        self.dockerd.answer(http_json(200, self.stored()))
        doc = self.engine.inputs[0][1]
        self.assertEqual(doc["BindMounts"], [])
