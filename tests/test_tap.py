"""``twistd dsfw`` options (command line and YAML) and service construction."""
from __future__ import annotations

import os
import signal

from twisted.application.service import MultiService
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from dsfw import tap

from dsfw.ops import logsetup
from dsfw.edge.listening import ProtectedSocketService
from dsfw.policy.watch import PolicyWatcher
from dsfw.edge.resource import DEFAULT_MAX_JSON_BODY

from tests.test_policy_embedded import temp_dir, write  # noqa: E402

POLICY = """package docker.authz
import rego.v1

default allow := true
"""


def parse(argv: list[str]) -> tap.Options:
    options = tap.Options()
    options.parseOptions(argv)
    return options


class OptionsTests(SynchronousTestCase):
    def config(self, text: str) -> str:
        path = os.path.join(temp_dir(self), "dsfw.yaml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def test_original_defaults(self):
        o = parse([])
        self.assertEqual(o["host"], ["/var/run/protected-docker.sock"])
        self.assertEqual(o["target"], "/var/run/docker.sock")
        self.assertEqual(o["policyDir"], "/etc/docker")
        self.assertFalse(o["verbose"])
        self.assertEqual(o["max-json-body"], DEFAULT_MAX_JSON_BODY)

    def test_original_flags(self):
        o = parse(["--host", "/tmp/a.sock", "--target", "/tmp/d.sock", "--policyDir", "/p", "-v"])
        self.assertEqual((o["host"], o["target"], o["policyDir"], o["verbose"]),
                         (["/tmp/a.sock"], "/tmp/d.sock", "/p", 1))

    def test_config_file_sets_options(self):
        path = self.config("host: /tmp/from-file.sock\nverbose: true\nsocket-mode: '0640'\n"
                           "max-json-body: 1024\nopa-timeout: 0.5\ndry-run: true\n")
        o = parse(["--config", path])
        self.assertEqual(o["host"], ["/tmp/from-file.sock"])
        self.assertEqual(o["verbose"], 1)
        self.assertEqual(o["socket-mode"], 0o640)
        self.assertEqual(o["max-json-body"], 1024)
        self.assertEqual(o["opa-timeout"], 0.5)
        self.assertEqual(o["dry-run"], 1)
        self.assertEqual(o["target"], "/var/run/docker.sock")

    def test_command_line_wins(self):
        path = self.config("host: /tmp/from-file.sock\ntarget: /tmp/file-docker.sock\n")
        o = parse(["--host=/tmp/cli.sock", "-c", path])
        self.assertEqual(o["host"], ["/tmp/cli.sock"])
        self.assertEqual(o["target"], "/tmp/file-docker.sock")

    def test_unknown_key(self):
        path = self.config("hots: /tmp/typo.sock\n")
        with self.assertRaises(usage.UsageError) as ctx:
            parse(["--config", path])
        self.assertIn("hots", str(ctx.exception))

    def test_bad_values(self):
        for text in ("max-json-body: -5\n", "max-json-body: lots\n", "socket-mode: '0666'\n",
                     "verbose: maybe\n", "opa-timeout: 0\n", "log-format: xml\n", "- a list\n",
                     "host: [unclosed\n"):
            path = self.config(text)
            self.assertRaises(usage.UsageError, parse, ["--config", path])

    def test_socket_mode_is_octal_however_yaml_types_it(self):
        # YAML 1.1 makes 660 the decimal 660 (0o1224) and 0660 the octal 432:
        # dsfw reads the digits as written, as chmod does.
        for text in ("660", "0660", "'660'", '"0660"', "0o660", "'0o660'"):
            o = parse(["--config", self.config(f"socket-mode: {text}\n")])
            self.assertEqual(o["socket-mode"], 0o660, text)
        self.assertEqual(parse(["--config", self.config("socket-mode: 600\n")])["socket-mode"],
                         0o600)
        self.assertEqual(parse(["--socket-mode", "640"])["socket-mode"], 0o640)

    def test_socket_mode_refuses_what_could_mean_two_modes(self):
        for text in ("432", "0x1b0", "6_60", "660.0", "true", "1e3", "'rw-rw----'", "-660",
                     "06600", "4660", "'0662'", "0666", "[660]"):
            path = self.config(f"socket-mode: {text}\n")
            with self.assertRaises(usage.UsageError, msg=text) as ctx:
                parse(["--config", path])
            self.assertIn("socket-mode", str(ctx.exception), text)
        for cli in ("0x1b0", "999", "0777"):
            self.assertRaises(usage.UsageError, parse, ["--socket-mode", cli])

    def test_null_value_refused(self):
        path = self.config("max-json-body:\n")
        self.assertRaises(usage.UsageError, parse, ["--config", path])

    def test_missing_config_file(self):
        self.assertRaises(usage.UsageError, parse, ["--config", "/nonexistent/dsfw.yaml"])


class StubThreadPool:
    def callInThreadWithCallback(self, *a, **kw):
        raise AssertionError("no work expected in these tests")


class ThreadedMemoryReactor(MemoryReactorClock):
    def getThreadPool(self):
        return StubThreadPool()


class MakeServiceTests(SynchronousTestCase):
    def setUp(self):
        # makeService configures structlog for the process (and caches loggers);
        # tests elsewhere capture logs, so keep the process configuration untouched.
        self.configured = []
        self.patch(logsetup, "configure", lambda **kw: self.configured.append(kw))

    def options(self, policy_files: dict[str, str]) -> tap.Options:
        policy_dir = write(os.path.join(temp_dir(self), "policies"), policy_files)
        host = os.path.join(temp_dir(self), "dsfw.sock")
        return parse(["--policyDir", policy_dir, "--host", host, "--target", "/nonexistent.sock"])

    def test_services(self):
        reactor = ThreadedMemoryReactor()
        options = self.options({"authz.rego": POLICY})
        top = tap.makeService(options, reactor)
        self.assertIsInstance(top, MultiService)
        services = list(top)
        sockets = [s for s in services if isinstance(s, ProtectedSocketService)]
        self.assertEqual([s.path for s in sockets], options["host"])
        self.assertEqual(len([s for s in services if isinstance(s, PolicyWatcher)]), 1)
        self.assertEqual(self.configured, [{"verbose": 0, "fmt": "auto", "log_file": None}])
        self.assertEqual(reactor.unixServers, [])  # nothing listens before startService
        # SIGHUP is wired once the reactor runs, not at construction
        self.assertIn((signal.signal, signal.SIGHUP),
                      [(f, args[0]) for f, args, _ in reactor.whenRunningHooks if args])

    def test_broken_policy_names_file(self):
        reactor = ThreadedMemoryReactor()
        options = self.options({"authz.rego": "package docker.authz\nallow if {{{\n"})
        with self.assertRaises(SystemExit) as ctx:
            tap.makeService(options, reactor)
        self.assertIn("authz.rego", str(ctx.exception.code))
        self.assertIn("dsfw: cannot load policies", str(ctx.exception.code))
