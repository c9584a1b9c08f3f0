"""``twistd dsfw``: options and service construction.

This is the only module that touches the global reactor, and only when
``makeService`` is not given one; everything below it takes the reactor and
clock as arguments so tests can use ``MemoryReactorClock``.
"""
from __future__ import annotations

import signal

import structlog
from twisted.application.service import MultiService, Service
from twisted.python import usage
from twisted.web.http import HTTPChannel
from twisted.web.server import Site

from dsfw import logsetup
from dsfw.listening import ProtectedSocketService
from dsfw.policy.embedded import EmbeddedEngine, PolicyLoadError
from dsfw.relay import Relay
from dsfw.resource import DEFAULT_MAX_JSON_BODY, FirewallResource
from dsfw.upstream import DockerPool

log = structlog.get_logger("dsfw")


def _octal(value: str) -> int:
    mode = int(value, 8)
    if mode & 0o002:
        raise usage.UsageError("--socket-mode must not make the socket world-writable")
    return mode


class Options(usage.Options):
    """The original firewall's options (same names and defaults), plus dsfw's own."""

    optFlags = [
        ["verbose", "v", "Print debug logging: every request, policy input and decision."],
    ]
    optParameters = [
        ["host", None, "/var/run/protected-docker.sock", "The docker socket to listen on."],
        ["target", None, "/var/run/docker.sock", "The docker socket to connect to."],
        ["policyDir", None, "/etc/docker", "The directory containing the OPA (Rego) policies."],
        ["socket-mode", None, "0660", "Permissions of the listening socket (octal).", _octal],
        ["socket-group", None, None, "Group owning the listening socket (name or gid)."],
        ["max-json-body", None, DEFAULT_MAX_JSON_BODY, "Largest JSON request body, in bytes.", int],
        ["log-format", None, "console", "Log format: console or json."],
    ]

    def postOptions(self) -> None:
        if isinstance(self["socket-mode"], str):  # the default is not coerced by usage
            self["socket-mode"] = _octal(self["socket-mode"])
        if self["log-format"] not in ("console", "json"):
            raise usage.UsageError("--log-format must be 'console' or 'json'")
        if self["max-json-body"] <= 0:
            raise usage.UsageError("--max-json-body must be positive")


class DsfwChannel(HTTPChannel):
    """HTTP/1.1 channel with header limits that fit real Docker clients.

    Registry credentials (``X-Registry-Config``) can exceed twisted.web's
    16 kB default; Go's server allows 1 MB of headers, so dsfw does too.
    """

    totalHeadersSize = 1 << 20
    MAX_LENGTH = 1 << 20


class _StartupLog(Service):
    def __init__(self, options: Options):
        self._options = options

    def startService(self) -> None:
        super().startService()
        o = self._options
        log.info("dsfw.started", message=f"Docker Firewall: {o['target']} -> {o['host']}, "
                 f"Policy Dir: {o['policyDir']}")


def makeService(options: Options, reactor=None) -> MultiService:
    if reactor is None:
        from twisted.internet import reactor
    logsetup.configure(verbose=options["verbose"], fmt=options["log-format"])
    try:
        engine = EmbeddedEngine(options["policyDir"])
    except PolicyLoadError as e:
        raise SystemExit(f"dsfw: cannot load policies: {e}")
    pool = DockerPool(reactor, options["target"])
    relay = Relay(reactor, pool)
    resource = FirewallResource(engine, relay, reactor, max_json_body=options["max-json-body"])
    site = Site(resource, reactor=reactor)
    site.protocol = DsfwChannel
    site.displayTracebacks = False
    site.noisy = False
    site.log = lambda request: None  # dsfw logs its own decision per request

    top = MultiService()
    ProtectedSocketService(reactor, options["host"], site, mode=options["socket-mode"],
                           group=options["socket-group"]).setServiceParent(top)
    _StartupLog(options).setServiceParent(top)

    class _PoolCloser(Service):
        def stopService(self):
            pool.close()
            return super().stopService()

    _PoolCloser().setServiceParent(top)
    reload = getattr(engine, "reload", None)
    if reload is not None:
        reactor.callWhenRunning(signal.signal, signal.SIGHUP,
                                lambda *a: reactor.callFromThread(reload))
    return top
