#!/usr/bin/env python3
"""dsfw's benchmark: one command, every reference started and stopped by itself.

    python3 bench/run.py            # full run, writes bench/RESULTS.md
    python3 bench/run.py --quick    # smoke mode: short, small, checks it still works

See docs/benchmarks.md for what each number means.
"""
import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

import rawhttp
import report
import targets
import workloads

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke mode: small counts and sizes, no 2 GB upload, 2 rounds")
    p.add_argument("--targets", default=None,
                   help="comma list from %s (default: all that can run here)"
                   % ",".join(targets.ALL_TARGETS))
    p.add_argument("--only", default=None, help="comma list of scenarios to run")
    p.add_argument("--skip", default="", help="comma list of scenarios to skip "
                   "(names: %s, policy)" % ",".join(s.name for s in workloads.SCENARIOS))
    p.add_argument("--rounds", type=int, default=None,
                   help="rounds for the request scenarios (default 5, quick 2)")
    p.add_argument("--bulk-rounds", type=int, default=None,
                   help="rounds for uploads/downloads (default 3, quick 1)")
    p.add_argument("--output", default=None,
                   help="Markdown report (default bench/RESULTS.md; none with --quick)")
    p.add_argument("--json", default=None, help="also write every number as JSON here")
    p.add_argument("--docker-socket", default="/var/run/docker.sock")
    p.add_argument("--dsfw-command", default=targets.DSFW_COMMAND,
                   help="how dsfw is started, from the repo root (default: %(default)s)")
    args = p.parse_args(argv)
    if args.rounds is None:
        args.rounds = 2 if args.quick else 5
    if args.bulk_rounds is None:
        args.bulk_rounds = 1 if args.quick else 3
    if args.output is None and not args.quick:
        args.output = os.path.join(HERE, "RESULTS.md")
    return args


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def choose_targets(args):
    """Requested targets must be able to run; by default, the ones that can are used."""
    names = args.targets.split(",") if args.targets else list(targets.ALL_TARGETS)
    chosen, skipped = [], {}
    for name in names:
        if name not in targets.KINDS:
            sys.exit(f"unknown target {name!r}; choose from {', '.join(targets.ALL_TARGETS)}")
        why = targets.missing_tool(name)
        if why and args.targets:
            sys.exit(f"target {name} cannot run: {why}")
        if why:
            skipped[name] = why
            log(f"skipping target {name}: {why}")
        else:
            chosen.append(name)
    if "direct" not in chosen:
        chosen.insert(0, "direct")  # every ratio is against it
    return chosen, skipped


def machine_info(docker_socket, started):
    def cmd(*argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
        except OSError:
            return ""

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), platform.machine())
    mem_kb = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal"))
    try:
        import twisted
        twisted_version = twisted.__version__
    except ImportError:
        twisted_version = "not installed"
    version = json.loads(rawhttp.request(docker_socket, "GET", "/version").head)
    info = {"cores": os.cpu_count(), "cpu": cpu, "memory_gb": round(mem_kb / 2**20, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "twisted": twisted_version, "dockerd": version.get("Version"),
            "docker_api": version.get("ApiVersion"),
            "load_average": " ".join(open("/proc/loadavg").read().split()[:3])}
    for t in started:
        v = t.version()
        if v:
            info[t.name] = v
    return info


def run_all(args, ctx, started, scenarios):
    results = {}
    for scen in scenarios:
        rounds = args.bulk_rounds if scen.bulk else args.rounds
        log(f"{scen.name}: set-up")
        scen.setup(ctx)
        try:
            results[scen.name] = {t.name: [] for t in started}
            for i in range(rounds):
                for t in started:  # interleaved: A B C D, A B C D, ...
                    t0 = time.monotonic()
                    try:
                        r = scen.run(ctx, t)
                    except Exception as e:  # a failing target must not sink the others
                        r = {"errors": 1, "note": f"{type(e).__name__}: {e}"[:300]}
                    results[scen.name][t.name].append(r)
                    log(f"{scen.name} round {i + 1}/{rounds} {t.name}: "
                        f"{time.monotonic() - t0:.1f}s "
                        + ", ".join(f"{k}={v:.1f}" for k, v in r.items()
                                    if k in ("p50_us", "rps", "mb_s", "peak_rss_mb",
                                             "rss_added_mb", "errors")))
        finally:
            scen.teardown(ctx)
    return results


def render(args, info, summaries, skipped, policy, started_at, duration):
    command = "python3 bench/run.py" + "".join(" " + shlex.quote(a) for a in sys.argv[1:])
    out = [f"# dsfw benchmark results{' (quick mode)' if args.quick else ''}", "",
           f"- date: {started_at:%Y-%m-%d %H:%M} UTC, took {duration:.0f} s",
           f"- command (from the repo root): `{command}`",
           f"- machine: {info['cores']} cores ({info['cpu']}), {info['memory_gb']} GB, "
           f"Linux {info['kernel']}, load average {info['load_average']} at the start",
           f"- software: Python {info['python']}, Twisted {info['twisted']}, "
           f"dockerd {info['dockerd']} (API {info['docker_api']})"
           + "".join(f", {k} {info[k]}" for k in ("socat", "haproxy", "dsfw") if k in info),
           f"- rounds: {args.rounds} for request scenarios, {args.bulk_rounds} for "
           "transfers; targets interleaved in each round; every number is the median "
           "over rounds, errors are added up",
           "- what each number means: docs/benchmarks.md", ""]
    for name, tgt in skipped.items():
        out.append(f"- target {name} not run: {tgt}")
    if skipped:
        out.append("")
    if summaries and "dsfw" in next(iter(summaries.values())):
        out += ["## dsfw against its targets (issue 6; reported, not asserted)", "",
                report.goals_table(summaries, policy), ""]
    for scen in workloads.SCENARIOS:
        if scen.name in summaries:
            title = scen.title
            if scen.name in ("upload", "download"):
                title += f", {args.bulk_mb} MB"
            out += [f"## {scen.name}: {title}", "", report.table(scen.name, summaries[scen.name]), ""]
    if policy is not None:
        out += ["## policy evaluation alone (`python3 bench/bench_policy.py`)", "",
                "```", policy["output"], "```", ""]
    return "\n".join(out)


def main(argv=None):
    args = parse_args(argv if argv is not None else sys.argv[1:])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 500 idle conns, and the targets
    if not os.path.exists(args.docker_socket):
        sys.exit(f"no docker socket at {args.docker_socket}: the benchmark needs dockerd")
    base = workloads.BASE_IMAGE
    if rawhttp.request(args.docker_socket, "GET", f"/images/{base}/json").status != 200:
        sys.exit(f"image {base} is missing: make one with `docker import` of a busybox "
                 "rootfs (see docs/benchmarks.md)")
    if not shutil.which("gcc"):
        sys.exit("gcc is needed to build bench/loadgen.c")
    targets.Dsfw.command_template = args.dsfw_command
    names, skipped = choose_targets(args)
    only = set(args.only.split(",")) if args.only else None
    skip = set(filter(None, args.skip.split(",")))
    scenarios = [s for s in workloads.SCENARIOS
                 if (only is None or s.name in only) and s.name not in skip
                 and not (s.full_only and args.quick)]
    run_policy = (only is None or "policy" in only) and "policy" not in skip

    started_at = datetime.datetime.now(datetime.timezone.utc)
    t_start = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="dsfw-bench-")
    started = []
    try:
        loadgen = os.path.join(workdir, "loadgen")
        subprocess.run(["gcc", "-O2", "-Wall", "-o", loadgen, os.path.join(HERE, "loadgen.c")],
                       check=True)
        ctx = workloads.Context(loadgen, workdir, args.docker_socket, args.quick)
        args.bulk_mb = ctx.bulk_size // workloads.MB
        for name in names:
            t = targets.KINDS[name](workdir, args.docker_socket)
            log(f"starting {name}")
            t.start()
            started.append(t)
        info = machine_info(args.docker_socket, started)
        results = run_all(args, ctx, started, scenarios)
        policy = None
        if run_policy:
            log("policy evaluation: bench/bench_policy.py")
            policy = workloads.policy_benchmark(targets.REPO, args.quick)
    finally:
        for t in started:
            if t.proc and t.proc.poll() is not None:
                log(f"{t.name} had exited with {t.proc.returncode}: {t.log_tail(800)}")
            t.stop()
        try:
            workloads.remove_bench_containers(workloads.Context(None, workdir,
                                                                args.docker_socket, False))
        except OSError:
            pass
        shutil.rmtree(workdir, ignore_errors=True)

    summaries = {name: report.summarize(r) for name, r in results.items()}
    text = render(args, info, summaries, skipped, policy, started_at, time.monotonic() - t_start)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
        log(f"wrote {args.output}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"quick": args.quick, "run": workloads.RUN, "machine": info, "rounds": results,
                       "summary": summaries, "goals": report.goals(summaries, policy),
                       "policy": policy}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
