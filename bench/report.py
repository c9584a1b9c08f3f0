"""Medians across rounds, ratios against direct, and the Markdown report."""
import statistics

# (header, key, kind): kind is "num" (median), "ms" (median µs shown in ms),
# "pct" (a fraction shown as %), "added" (median minus direct's median),
# "ratio" (median over direct's median), "sum" (added up over rounds).
COLUMNS = {
    "ping_c1": [("p50 µs", "p50_us", "num"), ("p99 µs", "p99_us", "num"),
                ("added p50 µs", "p50_us", "added"), ("p50 × direct", "p50_us", "ratio"),
                ("client CPU", "client_cpu", "pct"), ("target CPU", "target_cpu", "pct"),
                ("target CPU µs/req", "target_cpu_us", "num")],
    "ping_c16": [("req/s", "rps", "num"), ("× direct", "rps", "ratio"),
                 ("p50 µs", "p50_us", "num"), ("p99 µs", "p99_us", "num"),
                 ("client CPU", "client_cpu", "pct"), ("target CPU", "target_cpu", "pct"),
                 ("target CPU µs/req", "target_cpu_us", "num")],
    "list_c1": [("p50 µs", "p50_us", "num"), ("p99 µs", "p99_us", "num"),
                ("added p50 µs", "p50_us", "added"), ("p50 × direct", "p50_us", "ratio"),
                ("req/s", "rps", "num")],
    "create_delete_c4": [("cycles/s", "rps", "num"), ("× direct", "rps", "ratio"),
                         ("p50 ms", "p50_us", "ms"), ("p99 ms", "p99_us", "ms"),
                         ("target CPU µs/cycle", "target_cpu_us", "num")],
    "upload": [("MB/s", "mb_s", "num"), ("× direct", "mb_s", "ratio"),
               ("peak RSS MB", "peak_rss_mb", "num"), ("CPU s/GB", "cpu_s_per_gb", "num")],
    "download": [("MB/s", "mb_s", "num"), ("× direct", "mb_s", "ratio"),
                 ("peak RSS MB", "peak_rss_mb", "num")],
    "upload_2g": [("MB/s", "mb_s", "num"), ("× direct", "mb_s", "ratio"),
                  ("peak RSS MB", "peak_rss_mb", "num"), ("CPU s/GB", "cpu_s_per_gb", "num")],
    "idle": [("conns", "connections", "num"), ("still open", "alive_after", "num"),
             ("RSS before MB", "rss_before_mb", "num"), ("RSS held MB", "rss_mb", "num"),
             ("added MB", "rss_added_mb", "num"), ("fds before", "fds_before", "num"),
             ("fds held", "fds", "num"), ("ping p50 µs", "p50_us", "num"),
             ("ping p99 µs", "p99_us", "num")],
}


def summarize(rounds):
    """{target: [per-round dicts]} -> {target: {key: median}}, errors added up."""
    out = {}
    for target, runs in rounds.items():
        keys = {k for r in runs for k, v in r.items() if isinstance(v, (int, float))}
        med = {k: statistics.median(r[k] for r in runs if k in r) for k in keys}
        med["errors"] = sum(r.get("errors", 0) for r in runs)
        med["rounds"] = len(runs)
        notes = [r["note"] for r in runs if r.get("note")]
        if notes:
            med["note"] = notes[0]
        out[target] = med
    return out


def _fmt(x):
    if x is None:
        return "–"
    if isinstance(x, str):
        return x
    if float(x).is_integer():
        return f"{int(x):,}"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def _cell(summary, target, key, kind):
    value = summary[target].get(key)
    base = summary.get("direct", {}).get(key)
    if value is None:
        return "–"
    if kind == "ms":
        return _fmt(value / 1000)
    if kind == "pct":
        return f"{value * 100:.0f}%"
    if kind == "added":
        return "–" if base is None or target == "direct" else f"{value - base:+,.0f}"
    if kind == "ratio":
        return "–" if not base else f"{value / base:.2f}"
    return _fmt(value)


def table(name, summary):
    cols = COLUMNS[name] + [("errors", "errors", "num")]
    lines = ["| target | " + " | ".join(c[0] for c in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for target in summary:
        cells = [_cell(summary, target, key, kind) for _, key, kind in cols]
        lines.append(f"| {target} | " + " | ".join(cells) + " |")
    notes = [f"- {t}: {s['note']}" for t, s in summary.items() if s.get("note")]
    return "\n".join(lines + ([""] + notes if notes else []))


def _get(summaries, scenario, target, key):
    return summaries.get(scenario, {}).get(target, {}).get(key)


def goals(summaries, policy=None):
    """dsfw's targets from issue 6, as (goal, measured, verdict) rows; not asserted.

    `policy` is what workloads.policy_benchmark returned, or None.
    """
    rows = []
    d = lambda s, k: _get(summaries, s, "dsfw", k)      # noqa: E731
    r = lambda s, k: _get(summaries, s, "direct", k)    # noqa: E731
    h = lambda s, k: _get(summaries, s, "haproxy", k)   # noqa: E731

    def row(goal, measured, ok):
        rows.append((goal, measured, "n/a" if ok is None else ("met" if ok else "missed")))

    dp, rp, hp = d("ping_c1", "p50_us"), r("ping_c1", "p50_us"), h("ping_c1", "p50_us")
    if None not in (dp, rp, hp):
        added, hadded = dp - rp, hp - rp
        row("added p50 latency at c=1 ≤ 2 × HAProxy's added",
            f"dsfw +{added:.0f} µs, HAProxy +{hadded:.0f} µs ({added / hadded:.1f}×)"
            if hadded > 0 else f"dsfw +{added:.0f} µs, HAProxy +{hadded:.0f} µs",
            added <= 2 * max(hadded, 0))
    else:
        row("added p50 latency at c=1 ≤ 2 × HAProxy's added", "not measured", None)
    for scen, key, goal, limit in (("ping_c16", "rps", "/_ping throughput at c=16 ≥ 0.25 × direct", 0.25),
                                   ("upload", "mb_s", "upload MB/s ≥ 0.8 × direct", 0.8),
                                   ("download", "mb_s", "download MB/s ≥ 0.8 × direct", 0.8)):
        a, b = d(scen, key), r(scen, key)
        if None in (a, b) or not b:
            row(goal, "not measured", None)
        else:
            row(goal, f"{a / b:.3f} × direct ({_fmt(a)} vs {_fmt(b)})", a / b >= limit)
    cycle, hcycle = d("create_delete_c4", "target_cpu_us"), h("create_delete_c4", "target_cpu_us")
    if cycle is None:
        row("create + delete cycle ≤ 800 µs of dsfw CPU", "not measured", None)
    else:
        row("create + delete cycle ≤ 800 µs of dsfw CPU",
            f"{cycle:,.0f} µs" + (f" (HAProxy {hcycle:,.0f} µs)" if hcycle is not None else ""),
            cycle <= 800)
    small, big = d("upload", "peak_rss_mb"), d("upload_2g", "peak_rss_mb")
    if None in (small, big):
        row("peak RSS, 2 GB upload within 50 MB of the small one", "not measured", None)
    else:
        row("peak RSS, 2 GB upload within 50 MB of the small one",
            f"{big:.0f} MB vs {small:.0f} MB ({big - small:+.0f} MB)", big - small <= 50)
    added, held, conns = d("idle", "rss_added_mb"), d("idle", "rss_mb"), d("idle", "connections")
    if added is None:
        row("500 idle connections cost < 50 MB", "not measured", None)
    else:
        row(f"{conns:.0f} idle connections cost < 50 MB",
            f"+{added:.1f} MB (RSS {held:.0f} MB held)", added < 50)
    worst = (policy or {}).get("max_us")
    if worst is None:
        row("policy evaluation < 100 µs", "see the policy section", None)
    else:
        row("policy evaluation < 100 µs", f"{worst:.1f} µs (slowest case)", worst < 100)
    return rows


def goals_table(summaries, policy):
    lines = ["| goal | measured | verdict |", "|---|---|---|"]
    lines += [f"| {g} | {m} | {v} |" for g, m, v in goals(summaries, policy)]
    return "\n".join(lines)
