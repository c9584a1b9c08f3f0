"""``twistd dsfw``: options and service construction.

This is the only module that touches the global reactor, and only when
``makeService`` is not given one; everything below it takes the reactor and
clock as arguments so tests can use ``MemoryReactorClock``.
"""
from __future__ import annotations

import re
import signal

import structlog
from twisted.application.service import MultiService, Service
from twisted.python import usage

from twisted.internet.defer import ensureDeferred

from dsfw.ops import logsetup
from dsfw.ops.admin import AdminEndpoints
from dsfw.ops.decisionlog import DEFAULT_BUFFER_BYTES, DecisionLog
from dsfw.ops.heap import heap_trimmer
from dsfw.ops.metrics import Metrics
from dsfw.build.context import ContextLimits
from dsfw.build.gate import DEFAULT_MAX_SPOOL, BuildGate, BuildOptions
from dsfw.edge._twisted import start_without_tls
from dsfw.edge.hosts import HostSyntaxError, ListenAddress, TlsFiles, parse_host
from dsfw.edge.listening import (DEFAULT_MAX_CONNECTIONS, ConnectionLimit,
                                 ProtectedSocketService, fit_fd_limit)
from dsfw.edge.peer import peer_identity
from dsfw.policy.bundle import DEFAULT_MAX_BYTES, BundleVerifier
from dsfw.policy.bundle_service import DEFAULT_POLL_INTERVAL, BundleService, local_path
from dsfw.policy.embedded import EmbeddedEngine, PolicyLoadError
from dsfw.policy.watch import DEFAULT_INTERVAL, PolicyWatcher
from dsfw.ops.recorder import InputRecorder
from dsfw.offload.client import (DEFAULT_MAX_WAITING_BYTES, DEFAULT_THRESHOLD, DEFAULT_TIMEOUT,
                                 BodyWorker)
from dsfw.edge.relay import Relay
from dsfw.edge.resource import DEFAULT_MAX_JSON_BODY, DEFAULT_MAX_STREAM_BODY, FirewallResource
from dsfw.edge.server import IDLE_TIMEOUT, FirewallSite
from dsfw.edge.upstream import DockerPool
from dsfw.scope.cache import TargetCache
from dsfw.scope.events import EventWatcher
from dsfw.scope.scoping import Scope
from dsfw.scope.target import TargetResolver

log = structlog.get_logger("dsfw")

DEFAULT_HOST = "/var/run/protected-docker.sock"


_OCTAL_MODE = re.compile(r"^(?:0o?)?([0-7]{1,4})$")


class _YamlInt(int):
    """A YAML integer that remembers how it was written (``660`` or ``0660``)."""

    text = ""


def _load_config(f):
    """A YAML config file read with PyYAML's safe loader, keeping the source text of integers.

    YAML 1.1 reads ``660`` as decimal 660 (0o1224) and ``0660`` as octal 432;
    only the text tells what an operator wrote, so modes are read from it.
    PyYAML is loaded here, with ``--config``: a daemon without one never needs it.
    """
    import yaml

    class ConfigLoader(yaml.SafeLoader):
        def construct_yaml_int(self, node):
            value = _YamlInt(super().construct_yaml_int(node))
            value.text = node.value
            return value

    ConfigLoader.add_constructor("tag:yaml.org,2002:int", ConfigLoader.construct_yaml_int)
    try:
        return yaml.load(f, Loader=ConfigLoader)
    except yaml.YAMLError as e:
        raise ValueError(e) from e


def _octal(value) -> int:
    """A permission mode, always read as octal digits: ``660``, ``0660`` and ``0o660`` alike.

    A YAML integer is read from its digits as written (``socket-mode: 660`` is
    0o660, as with chmod), never as the number YAML made of them.  Anything
    else that could mean two modes (``0x1b0``, ``6_60``, ``432`` meant as
    decimal, digits 8 or 9, floats, booleans) is refused rather than guessed at.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise usage.UsageError(f"--socket-mode {value!r} is not an octal mode such as 0660")
    if isinstance(value, int):
        text = getattr(value, "text", None)
        if not text:
            raise usage.UsageError("--socket-mode must be written as octal digits, e.g. 0660")
    else:
        text = value.strip()
    match = _OCTAL_MODE.match(text)
    if match is None:
        raise usage.UsageError(f"--socket-mode {text!r} is not an octal mode such as 0660 "
                               "(1 to 4 digits 0-7)")
    mode = int(match.group(1), 8)
    if mode & 0o002:
        raise usage.UsageError("--socket-mode must not make the socket world-writable")
    if mode & 0o7000:
        raise usage.UsageError("--socket-mode sets setuid, setgid or sticky bits, which mean "
                               "nothing on a socket")
    return mode


def _positive(kind):
    def coerce(value):
        number = kind(value)
        if number <= 0:
            raise ValueError("must be positive")
        return number
    coerce.coerceDoc = "Must be positive."
    return coerce


class Options(usage.Options):
    """The original firewall's options (same names and defaults), plus dsfw's own.

    Every option can also be set in a YAML file given with ``--config``
    (keys are the long option names); the command line wins over the file,
    and an unknown key is an error rather than a silently ignored typo.
    """

    optFlags = [
        ["verbose", "v", "Print debug logging: every request, policy input and decision."],
        ["dry-run", None, "Decide and log what would be denied, but relay everything."],
        ["allow-buildkit", None, "Relay BuildKit builds, whose Dockerfile dsfw cannot inspect."],
        ["allow-remote-context", None, "Relay builds of remote= contexts dsfw cannot inspect."],
        ["tls", None, "Serve tcp:// hosts with TLS (implied by --tlsverify)."],
        ["tlsverify", None, "Serve tcp:// hosts with TLS and accept only clients whose "
                            "certificate is signed by --tlscacert."],
        ["tls-insecure-loopback", None, "Allow a loopback tcp:// host without client-certificate "
                                        "verification (anyone on the machine gets in)."],
    ]
    optParameters = [
        ["config", "c", None, "YAML file carrying any of these options."],
        ["target", None, "/var/run/docker.sock", "The docker socket to connect to."],
        ["policyDir", None, "/etc/docker", "The directory containing the OPA (Rego) policies."],
        ["socket-mode", None, "0660", "Permissions of the listening socket (octal).", _octal],
        ["socket-group", None, None, "Group owning the listening socket (name or gid)."],
        ["max-json-body", None, DEFAULT_MAX_JSON_BODY, "Largest JSON request body, in bytes.",
         _positive(int)],
        ["max-stream-body", None, DEFAULT_MAX_STREAM_BODY,
         "Largest archive, image or plugin tarball body relayed to dockerd, in bytes "
         "(413 beyond, while it arrives).", _positive(int)],
        ["max-context-size", None, ContextLimits.max_input_bytes,
         "Largest build context accepted, in bytes.", _positive(int)],
        ["max-build-spool", None, DEFAULT_MAX_SPOOL,
         "Bytes all builds together may keep on disk while their Dockerfile is not yet "
         "in (503 beyond).", _positive(int)],
        ["policy-reload-interval", None, DEFAULT_INTERVAL,
         "Seconds between checks of the policy directory for changes.", _positive(float)],
        ["opa-url", None, None,
         "Ask this OPA server (http://127.0.0.1:8181 or unix:///path) instead of the embedded engine."],
        ["opa-timeout", None, 2.0, "Seconds to wait for OPA before denying.", _positive(float)],
        ["opa-token-file", None, None, "File holding a bearer token for OPA."],
        ["log-format", None, "auto",
         "Log format: console, json, or auto (console on a terminal, JSON lines otherwise)."],
        ["log-file", None, None,
         "Append dsfw's event log (decisions...) to this file instead of stdout; "
         "reopened on SIGHUP."],
        ["record-dir", None, None,
         "Write each policy decision (input with credentials hidden, decision, reasons) "
         "as a JSON file into this directory, for `dsfw eval --input` and `dsfw record`."],
        ["target-cache-size", None, 8 << 20,
         "Bytes of resolved objects (input.Target) to remember while dockerd's "
         "event stream is connected.", _positive(int)],
        ["max-connections", None, DEFAULT_MAX_CONNECTIONS,
         "Client connections served at once; more are answered 503 until one closes "
         "(the open-file limit is raised to fit, or this is lowered).", _positive(int)],
        ["tlscacert", None, TlsFiles.ca, "CA certificate(s) client certificates must chain to."],
        ["tlscert", None, TlsFiles.cert, "dsfw's TLS certificate (then any intermediates)."],
        ["tlskey", None, TlsFiles.key, "dsfw's TLS private key."],
        ["bundle-url", None, None,
         "Take policies from this OPA bundle (http://, https:// or file://) instead of "
         "--policyDir; polled with ETag."],
        ["bundle-file", None, None, "Take policies from this local OPA bundle (.tar.gz)."],
        ["bundle-poll-interval", None, DEFAULT_POLL_INTERVAL,
         "Seconds between bundle checks (each drawn from 0.8x-1.2x).", _positive(float)],
        ["bundle-verification-key", None, None,
         "PEM public key (RSA or ECDSA) every bundle must be signed with (.signatures.json)."],
        ["bundle-verification-key-id", None, "",
         "Key id the bundle signature must name (OPA's keyid); any if empty."],
        ["bundle-max-size", None, DEFAULT_MAX_BYTES,
         "Largest bundle accepted, compressed and unpacked, in bytes.", _positive(int)],
        ["decision-log-url", None, None,
         "POST every decision, in OPA's decision-log format (gzip JSON batches), to this URL."],
        ["decision-log-buffer-size", None, DEFAULT_BUFFER_BYTES,
         "Bytes of decision events kept while the collector is slow or down (oldest dropped).",
         _positive(int)],
        ["body-worker-threshold", None, DEFAULT_THRESHOLD,
         "JSON bodies of at least this many bytes are parsed and decided in a worker "
         "process, so other clients are not held up (0: always in dsfw's own process).", int],
        ["body-worker-timeout", None, DEFAULT_TIMEOUT,
         "Seconds the body worker may take on one step before the request is denied "
         "and the worker replaced.", _positive(float)],
        ["body-worker-queue", None, DEFAULT_MAX_WAITING_BYTES,
         "Bytes of large bodies that may wait for the body worker; more are refused (503).",
         _positive(int)],
        ["drain-timeout", None, 10.0,
         "On stop, seconds to let in-flight requests and attach/exec sessions finish.",
         _positive(float)],
    ]

    def __init__(self):
        super().__init__()
        self["host"] = []

    def opt_host(self, value: str) -> None:
        """Where to listen: a UNIX socket path (unix://PATH) or tcp://IP:PORT; may be repeated
        [default: /var/run/protected-docker.sock]."""
        try:
            parse_host(value)
        except HostSyntaxError as e:
            raise usage.UsageError(str(e))
        self["host"].append(value)

    opt_H = opt_host

    def parseOptions(self, options=None):
        self._argv = list(options) if options is not None else None
        return super().parseOptions(options)

    def _given_on_command_line(self, name: str) -> bool:
        argv = self._argv
        if argv is None:
            import sys
            argv = sys.argv
        short = {long: s for long, s, *_ in self.optParameters + self.optFlags if s}
        for arg in argv:
            if arg == f"--{name}" or arg.startswith(f"--{name}="):
                return True
            if name in short and arg.startswith(f"-{short[name]}"):
                return True
            if name == "host" and arg.startswith("-H"):
                return True
        return False

    def _apply_config(self, path: str) -> None:
        try:
            with open(path, encoding="utf-8") as f:
                data = _load_config(f) or {}
        except (OSError, ValueError) as e:
            raise usage.UsageError(f"cannot read config file {path}: {e}")
        if not isinstance(data, dict):
            raise usage.UsageError(f"config file {path} must be a mapping of option names")
        params = {p[0]: p for p in self.optParameters}
        flags = {f[0] for f in self.optFlags}
        for key, value in data.items():
            if key == "host" and not self._given_on_command_line(key):
                for host in value if isinstance(value, list) else [value]:
                    if not isinstance(host, str):
                        raise usage.UsageError(f"config file {path}: host must be text or a list")
                    self.opt_host(host)
                continue
            if key == "config" or (key not in params and key not in flags and key != "host"):
                raise usage.UsageError(f"config file {path}: unknown option {key!r}")
            if self._given_on_command_line(key):
                continue
            if key in flags:
                if not isinstance(value, bool):
                    raise usage.UsageError(f"config file {path}: {key} must be true or false")
                self[key] = int(value)
                continue
            if value is None:
                raise usage.UsageError(f"config file {path}: {key} needs a value")
            coerce = params[key][4] if len(params[key]) > 4 else None
            try:
                self[key] = coerce(value) if coerce else value
            except (ValueError, TypeError, usage.UsageError) as e:
                raise usage.UsageError(f"config file {path}: bad value for {key}: {e}")

    def postOptions(self) -> None:
        if self["config"]:
            self._apply_config(self["config"])
        if isinstance(self["socket-mode"], str):  # the default is not coerced by usage
            self["socket-mode"] = _octal(self["socket-mode"])
        if self["log-format"] not in logsetup.FORMATS:
            raise usage.UsageError("--log-format must be 'auto', 'console' or 'json'")
        if not self["host"]:
            self["host"] = [DEFAULT_HOST]
        sources = [o for o in ("bundle-url", "bundle-file", "opa-url") if self[o]]
        if len(sources) > 1:
            raise usage.UsageError(f"--{sources[0]} and --{sources[1]} exclude each other")
        if self["bundle-verification-key"] and not (self["bundle-url"] or self["bundle-file"]):
            raise usage.UsageError("--bundle-verification-key needs --bundle-url or --bundle-file")
        for address in map(parse_host, self["host"]):
            if address.kind != "tcp" or self["tlsverify"]:
                continue
            if not (address.is_loopback and self["tls-insecure-loopback"]):
                raise usage.UsageError(
                    f"{address} would let clients in without a verified certificate: give "
                    "--tlsverify (with --tlscacert, --tlscert, --tlskey), or, on a loopback "
                    "address only, --tls-insecure-loopback")

    def listen_addresses(self) -> list[ListenAddress]:
        return [parse_host(h) for h in self["host"]]

    def may_use_tls(self) -> bool:
        """Whether anything configured could speak TLS: a ``tcp://`` host or any URL.

        Any URL, not only ``https://`` ones: an ``http://`` server may redirect.
        """
        return (any(a.kind != "unix" for a in self.listen_addresses())
                or any(self[o] for o in ("opa-url", "bundle-url", "decision-log-url")))


def make_site(resource, reactor, max_connections: int | None = None) -> FirewallSite:
    """The site serving the firewall resource over dsfw's own HTTP/1.1 protocol.

    A connection that sends nothing for ``IDLE_TIMEOUT`` s between (or inside)
    requests is closed; the timer is off while dsfw decides and while an
    answer streams (logs -f, events).  Beyond ``max_connections`` open ones,
    new clients get a 503 (:class:`~dsfw.edge.listening.ConnectionLimit`).
    """
    return FirewallSite(resource, reactor, timeout=IDLE_TIMEOUT,
                        connections=ConnectionLimit(max_connections) if max_connections else None)


class _Lifecycle(Service):
    """Start-up log line, and closing what holds connections on stop."""

    def __init__(self, options: Options, engine, pool: DockerPool, resource: FirewallResource):
        self._options = options
        self._engine = engine
        self._pool = pool
        self._resource = resource

    def startService(self) -> None:
        super().startService()
        o = self._options
        log.info("dsfw.started",
                 message=f"Docker Firewall: {o['target']} -> {', '.join(o['host'])}, "
                         f"Policy Dir: {o['policyDir']}",
                 engine=self._engine.name, revision=self._engine.revision(),
                 dry_run=bool(o["dry-run"]))

    async def _stop(self) -> None:
        inflight = self._resource.inflight
        log.info("dsfw.stopping", in_flight=len(inflight),
                 drain_timeout=self._options["drain-timeout"])
        await inflight.drain(self._options["drain-timeout"])
        self._pool.close()
        await self._engine.close()
        log.info("dsfw.stopped")

    def stopService(self):
        super().stopService()
        return ensureDeferred(self._stop())


def _make_bundle(options: Options, reactor, engine: EmbeddedEngine) -> BundleService:
    """The bundle poller; a local bundle file is loaded now, so a broken one stops start-up."""
    verifier = None
    try:
        if options["bundle-verification-key"]:
            with open(options["bundle-verification-key"], "rb") as f:
                verifier = BundleVerifier(f.read(), options["bundle-verification-key-id"])
        service = BundleService(reactor, engine, options["bundle-url"] or options["bundle-file"],
                                interval=options["bundle-poll-interval"], verifier=verifier,
                                max_bytes=options["bundle-max-size"])
        if local_path(service.source) is not None:
            service.load_now()
    except (OSError, ValueError, PolicyLoadError) as e:
        raise SystemExit(f"dsfw: cannot use the policy bundle: {e}")
    return service


def _make_engine(options: Options, reactor):
    if options["opa-url"]:
        from dsfw.policy.opa import OpaEngine
        try:
            return OpaEngine(reactor, options["opa-url"], timeout=options["opa-timeout"],
                             token_file=options["opa-token-file"])
        except ValueError as e:
            raise SystemExit(f"dsfw: bad OPA settings: {e}")
    try:
        return EmbeddedEngine(options["policyDir"])
    except PolicyLoadError as e:
        raise SystemExit(f"dsfw: cannot load policies: {e}")


def _listeners(options: Options, reactor, site) -> list[Service]:
    """One service per ``--host``; TCP ones with TLS unless explicitly insecure on loopback."""
    tls_options = None
    listeners: list[Service] = []
    for address in options.listen_addresses():
        if address.kind == "unix":
            listeners.append(ProtectedSocketService(
                reactor, address.path, site, mode=options["socket-mode"],
                group=options["socket-group"]))
            continue
        # pyOpenSSL and cryptography load with the first TCP host, never for UNIX ones.
        from dsfw.edge.tls import TcpListenerService, TlsSetupError, server_options
        use_tls = options["tlsverify"] or options["tls"]
        if use_tls and tls_options is None:
            files = TlsFiles(options["tlscacert"], options["tlscert"], options["tlskey"])
            try:
                tls_options = server_options(files, verify_clients=bool(options["tlsverify"]))
            except TlsSetupError as e:
                raise SystemExit(f"dsfw: cannot set up TLS: {e}")
        listeners.append(TcpListenerService(reactor, address, site,
                                            tls_options if use_tls else None))
    return listeners


def makeService(options: Options, reactor=None) -> MultiService:
    if reactor is None:
        if not options.may_use_tls():
            start_without_tls()
        from twisted.internet import reactor
    try:
        logsetup.configure(verbose=options["verbose"], fmt=options["log-format"],
                           log_file=options["log-file"])
    except OSError as e:
        raise SystemExit(f"dsfw: cannot open --log-file: {e}")
    bundle = None
    if options["bundle-url"] or options["bundle-file"]:
        engine = EmbeddedEngine(None)
        bundle = _make_bundle(options, reactor, engine)
    else:
        engine = _make_engine(options, reactor)
    pool = DockerPool(reactor, options["target"])
    relay = Relay(reactor, pool)
    limits = ContextLimits(max_input_bytes=options["max-context-size"])
    gate = BuildGate(reactor, reactor.getThreadPool(), BuildOptions(
        allow_buildkit=bool(options["allow-buildkit"]),
        allow_remote_context=bool(options["allow-remote-context"]), limits=limits,
        max_spool_bytes=options["max-build-spool"]))
    metrics = Metrics()
    cache = TargetCache(options["target-cache-size"])
    watcher = EventWatcher(pool, reactor, cache)
    scope = Scope(TargetResolver(pool, reactor, cache, trusted=watcher.trusted), engine,
                  full_inputs=bool(options["record-dir"] or options["decision-log-url"]))
    decision_log = None
    if options["decision-log-url"]:
        decision_log = DecisionLog(reactor, options["decision-log-url"],
                                   bundle_name=bundle.name if bundle else None,
                                   dry_run=bool(options["dry-run"]),
                                   max_buffer_bytes=options["decision-log-buffer-size"])
        metrics.add_source(decision_log.metrics_lines)
    body_worker = None
    if options["body-worker-threshold"] > 0:
        body_worker = BodyWorker(reactor, engine, threshold=options["body-worker-threshold"],
                                 timeout=options["body-worker-timeout"],
                                 max_waiting_bytes=options["body-worker-queue"],
                                 drain_timeout=options["drain-timeout"])
    resource = FirewallResource(
        engine, relay, gate, max_json_body=options["max-json-body"],
        max_stream_body=options["max-stream-body"], peer_identity=peer_identity,
        dry_run=bool(options["dry-run"]), clock=reactor, metrics=metrics,
        verbose=bool(options["verbose"]),
        recorder=InputRecorder(options["record-dir"], reactor.seconds)
        if options["record-dir"] else None, decision_log=decision_log,
        admin_endpoints=AdminEndpoints(pool, engine, metrics, reactor,
                                       bundle_status=bundle.status if bundle else None),
        scope=scope, body_worker=body_worker)
    site = make_site(resource, reactor, fit_fd_limit(options["max-connections"]))

    top = MultiService()
    for listener in _listeners(options, reactor, site):
        listener.setServiceParent(top)
    if decision_log is not None:  # before _Lifecycle: it stops after requests drained
        decision_log.setServiceParent(top)
    _Lifecycle(options, engine, pool, resource).setServiceParent(top)
    if body_worker is not None:
        body_worker.setServiceParent(top)
    watcher.setServiceParent(top)
    trimmer = heap_trimmer(reactor)
    if trimmer is not None:
        trimmer.setServiceParent(top)
    if bundle is not None:
        bundle.setServiceParent(top)
    else:
        PolicyWatcher(engine, reactor, options["policy-reload-interval"]).setServiceParent(top)

    def on_sighup() -> None:
        logsetup.reopen_log_file()
        engine.reload()
        if bundle is not None:
            bundle.poll_now()

    # SIGHUP reopens --log-file and reloads policies; the handler only schedules work.
    reactor.callWhenRunning(signal.signal, signal.SIGHUP,
                            lambda *a: reactor.callFromThread(on_sighup))
    return top
