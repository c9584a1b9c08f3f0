"""Claiming the protected socket path, and the mode the socket ends up with."""
from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile

import pytest

from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from dsfw.edge.listening import ProtectedSocketService, SocketInUse, claim_socket_path, group_id
from dsfw.tap import Options


def temp_path(case, name: str = "dsfw.sock") -> str:
    directory = tempfile.mkdtemp(prefix="dsfw-listen-")
    case.addCleanup(shutil.rmtree, directory, True)
    return os.path.join(directory, name)


class ClaimTests(SynchronousTestCase):
    def test_absent_is_fine(self):
        path = temp_path(self)
        claim_socket_path(path)
        self.assertFalse(os.path.exists(path))

    def test_stale_socket_removed(self):
        path = temp_path(self)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        s.close()  # bound, never listening: what a crashed process leaves
        self.assertTrue(stat.S_ISSOCK(os.lstat(path).st_mode))
        claim_socket_path(path)
        self.assertFalse(os.path.exists(path))

    def test_live_listener_refused(self):
        path = temp_path(self)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(s.close)
        s.bind(path)
        s.listen(5)
        with self.assertRaises(SocketInUse) as ctx:
            claim_socket_path(path)
        self.assertIn("another process is listening", str(ctx.exception))
        self.assertTrue(os.path.exists(path))

    def test_regular_file_refused(self):
        path = temp_path(self)
        with open(path, "w") as f:
            f.write("precious")
        with self.assertRaises(SocketInUse):
            claim_socket_path(path)
        with open(path) as f:
            self.assertEqual(f.read(), "precious")

    def test_symlink_to_socket_not_followed(self):
        path = temp_path(self)
        target = path + ".real"
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(s.close)
        s.bind(target)
        s.listen(1)
        os.symlink(target, path)
        with self.assertRaises(SocketInUse):
            claim_socket_path(path)
        self.assertTrue(os.path.exists(target))


class ServiceTests(TestCase):
    timeout = 10

    def service(self, **kwargs) -> ProtectedSocketService:
        path = temp_path(self)
        service = ProtectedSocketService(reactor, path, Factory.forProtocol(Protocol), **kwargs)
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def mode(self, service) -> int:
        return stat.S_IMODE(os.lstat(service.path).st_mode)

    def test_default_mode_0660(self):
        service = self.service()
        self.assertTrue(stat.S_ISSOCK(os.lstat(service.path).st_mode))
        self.assertEqual(self.mode(service), 0o660)

    def test_given_mode(self):
        self.assertEqual(self.mode(self.service(mode=0o600)), 0o600)

    def test_world_writable_mode_refused(self):
        path = temp_path(self)
        with self.assertRaises(ValueError):
            ProtectedSocketService(reactor, path, Factory.forProtocol(Protocol), mode=0o666)
        self.assertFalse(os.path.exists(path))

    def test_group_by_id(self):
        gid = os.getgid()
        service = self.service(group=str(gid))
        self.assertEqual(os.lstat(service.path).st_gid, gid)

    def test_stale_socket_replaced_live_one_refused(self):
        service = self.service()
        second = ProtectedSocketService(reactor, service.path, Factory.forProtocol(Protocol))
        self.assertRaises(SocketInUse, second.startService)
        self.assertEqual(self.mode(service), 0o660)

    def test_accepts_connections_and_stop_removes(self):
        service = self.service()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(2)
        s.connect(service.path)
        s.close()
        d = service.stopService()
        d.addCallback(lambda _: self.assertFalse(os.path.exists(service.path)))
        return d


class SocketModeOptionTests(SynchronousTestCase):
    def test_world_writable_rejected(self):
        for mode in ("0666", "0662", "777"):
            self.assertRaises(usage.UsageError, Options().parseOptions, ["--socket-mode", mode])

    def test_group_mode_accepted(self):
        o = Options()
        o.parseOptions(["--socket-mode", "0640"])
        self.assertEqual(o["socket-mode"], 0o640)

    def test_default(self):
        o = Options()
        o.parseOptions([])
        self.assertEqual(o["socket-mode"], 0o660)


def test_group_given_in_non_ascii_digits_is_a_name():
    """``--socket-group ²`` is looked up as a name (and is unknown), not crashed on by int()."""
    assert group_id("1234") == 1234
    with pytest.raises(KeyError):
        group_id("\u00b2")
