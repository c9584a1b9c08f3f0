"""The ``dsfw`` console script: policy tools that run without the daemon.

``dsfw test``   run a policy directory's ``test_`` rules (``opa test`` style);
``dsfw eval``   show the input and decision dsfw would produce for one request;
``dsfw record`` list (and re-decide) decisions a daemon recorded with ``--record-dir``.

The daemon itself is ``twistd dsfw`` (see README.md). Exit statuses:
0 all passed / allowed, 1 a failure or denial, 2 an error (bad input or
options, a policy that does not load or evaluate).
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence, TextIO

from dsfw.errors import DsfwError

EXIT_OK, EXIT_DENIED, EXIT_ERROR = 0, 1, 2

RECORD_HELP = """\
List the decisions a running dsfw recorded, and optionally decide them again
with another policy directory (to see what a policy change would change).

Recording is enabled on the daemon:

    twistd dsfw --record-dir DIR [other options]

It then writes one JSON file per decision into DIR:
{"input": ..., "decision": {"package", "allowed", "revision"}, "reasons": [...], "time": ...},
with credentials redacted (registry credentials, Env values, swarm tokens
and keys, secret payloads, driver options, build args wherever the Dockerfile
uses them, credentials in URLs; see docs/input.md). Replay one with
`dsfw eval --policyDir P --input DIR/FILE.json`.
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dsfw", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("test", help="run the test_ rules of a policy directory",
                       description="Run every rule named test_* in every package of a policy "
                       "directory, loaded exactly as dsfw loads it (data files included). "
                       "A test passes only if its rule is true.")
    t.add_argument("--policyDir", default="/etc/docker", help="policy directory (default %(default)s)")
    t.add_argument("-v", "--verbose", action="store_true", help="list every test, not only failures")
    t.add_argument("-r", "--run", metavar="REGEX", help="only tests whose path (data.pkg.test_x) matches")

    e = sub.add_parser("eval", help="decide one request offline",
                       description="Build the policy input for one request as dsfw would, print it "
                       "and the decisions of data.docker.authz (and data.docker.build for builds). "
                       "Exit 0 allowed, 1 denied, 2 error.")
    e.add_argument("--policyDir", required=True)
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--method", help="HTTP method, with --path")
    src.add_argument("--input", metavar="FILE",
                     help="an input document, or a decision recorded with twistd dsfw --record-dir")
    e.add_argument("--path", help="request target, e.g. /v1.41/containers/create?name=x")
    e.add_argument("--body", metavar="FILE", help="JSON request body")
    e.add_argument("--header", action="append", default=[], metavar="NAME:VALUE")
    e.add_argument("--peer", metavar="UID[:GID]", help="the caller, as SO_PEERCRED would report it")
    e.add_argument("--dockerfile", metavar="FILE", help="also decide data.docker.build on this Dockerfile")
    e.add_argument("-q", "--quiet", action="store_true", help="do not print the input document")
    e.add_argument("--explain", action="store_true",
                   help="print the trace of every allow rule body: each statement, and whether it "
                   "held, failed or was not reached")

    lr = sub.add_parser("learn", help="generate a least-privilege policy from recordings",
                        description="Write a policy directory that allows exactly what a dsfw "
                        "--record-dir recorded (routes per caller, values narrowed through the "
                        "policy library), with a Rego test per recorded request; then decide every "
                        "recording with it. Exit 0 when all are allowed, 1 when some are still "
                        "refused, 2 on error.")
    lr.add_argument("directory", help="the daemon's --record-dir")
    lr.add_argument("--output", "-o", required=True, help="the new policy directory (must not exist or be empty)")
    lr.add_argument("--library", help="the policy library to configure (default: policies/library "
                    "of this checkout)")

    r = sub.add_parser("record", help="list or re-decide recorded decisions",
                       description=RECORD_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("directory", help="the daemon's --record-dir")
    r.add_argument("--policyDir", help="decide every recording again with this policy directory")
    return p


def _load_engine(policy_dir: str):
    from dsfw.policy.embedded import EmbeddedEngine
    return EmbeddedEngine(policy_dir)


def _test(args, out: TextIO, err: TextIO) -> int:
    from dsfw.cli import policytest as cli_test
    from dsfw.policy.loader import PolicyLoadError, load_policy_dir
    try:
        policy = load_policy_dir(args.policyDir)
    except PolicyLoadError as e:
        err.write(f"dsfw test: {e}\n")
        return EXIT_ERROR
    results = list(cli_test.run_tests(policy, args.run))
    return cli_test.report(results, out, args.verbose)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _eval(args, out: TextIO, err: TextIO) -> int:
    from dsfw.cli import eval as cli_eval
    recorded = None
    build = None
    if args.input:
        if args.path or args.body or args.header or args.peer:
            raise cli_eval.InputError("--input replaces --path, --body, --header and --peer")
        doc, recorded = cli_eval.load_input_file(args.input)
        if args.dockerfile:
            raise cli_eval.InputError("--dockerfile goes with --method/--path, not --input")
        if "Dockerfile" in doc:  # a recorded build decision carries its build fields
            build = {}
    else:
        if not args.path:
            raise cli_eval.InputError("--method needs --path")
        body = _read(args.body) if args.body else b""
        peer = cli_eval.peer_of(args.peer) if args.peer else None
        doc, req = cli_eval.request_input(args.method, args.path, body, args.header, peer)
        if args.dockerfile:
            try:
                build = cli_eval.build_fields(req, _read(args.dockerfile))
            except DsfwError as e:  # a Dockerfile error may quote a build arg's value
                raise cli_eval.InputError(_without_secrets(doc, e.client_message())) from None
    engine = _load_engine(args.policyDir)
    shown = {**doc, **(build or {})}
    out = cli_eval.ScrubbedOutput(out, shown)  # reasons and traces may quote the input
    if not args.quiet:
        cli_eval.print_input(shown, out)
    try:
        verdict = cli_eval.decide(engine, doc, build)
    except DsfwError as e:  # an evaluation error may quote the input
        raise cli_eval.InputError(_without_secrets(shown, e.client_message())) from None
    if recorded is not None:
        out.write(f"recorded: data.{recorded.get('package')}: "
                  f"{'allowed' if recorded.get('allowed') else 'denied'}\n")
    cli_eval.print_verdict(verdict, out)
    if args.explain:
        cli_eval.print_explanations(engine, doc, build, out)
    return EXIT_OK if verdict.allowed else EXIT_DENIED


def _learn(args, out: TextIO, err: TextIO) -> int:
    from dsfw.cli import learn
    try:
        return learn.run(args.directory, args.output, args.library, out)
    except learn.LearnError as e:
        err.write(f"dsfw learn: {e}\n")
        return EXIT_ERROR


def _without_secrets(doc, message: str) -> str:
    from dsfw.input.redact import scrub_messages
    return scrub_messages(doc, (message,))[0]


def _record(args, out: TextIO, err: TextIO) -> int:
    import os
    from dsfw.cli import eval as cli_eval
    if not os.path.isdir(args.directory):
        raise cli_eval.InputError(f"{args.directory} is not a directory")
    engine = _load_engine(args.policyDir) if args.policyDir else None
    return cli_eval.replay_directory(engine, args.directory, out)


def _quiet_logs(err: TextIO) -> None:
    """The engine's info lines (policy.loaded) are noise here; warnings go to stderr.

    Only when nothing configured structlog yet, so an embedding program keeps its set-up.
    """
    import logging

    import structlog
    if not structlog.is_configured():
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(err),
                            wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    _quiet_logs(sys.stderr)
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # argparse: --help is 0, a usage error 2
        return int(e.code or 0)
    from dsfw.policy.loader import PolicyLoadError
    try:
        return {"test": _test, "eval": _eval, "learn": _learn,
                "record": _record}[args.command](args, out, err)
    except (PolicyLoadError, DsfwError, ValueError, OSError) as e:
        # ValueError covers cli_eval.InputError and dsfw's BadRequest-like refusals
        message = e.client_message() if isinstance(e, DsfwError) else str(e)
        err.write(f"dsfw {args.command}: {message}\n")
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
