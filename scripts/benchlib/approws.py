"""The real programs' rows of scripts/bench: which runs make them (apps.py, web.py), plain
TCP and smcpre alternated in every repetition, medians, spreads and ratios, and the table
of the servers' syscalls per operation (--syscalls).
"""

import shutil
import statistics
import sys

from . import syscalls
from .apps import iperf_once, redis_once, sockperf_once
from .common import row
from .web import PROXY_CONNS, nginx_once, proxy_once
import netns  # tests/integration, on the path once .common is imported

# The groups of rows --only selects (besides tcpbench), and the programs each needs.
FAMILIES = {
    "redis": ("redis-server", "redis-benchmark"),
    "iperf3": ("iperf3",),
    "sockperf": ("sockperf",),
    "nginx": ("nginx", "wrk"),
    "proxy": ("nginx", "wrk"),
}
HIGHER, LOWER = False, True  # row(): lower_is_better


def measurements(lib, seconds, quick, count):
    """[(family, name, run(smc) -> (figures, proof problem), [(row label, figure, lower
    is better)])]: each run measures all its rows at once."""
    # Runs of a few seconds: shorter ones measure connection set-up more than requests.
    requests = {1: 50000 if quick else 200000, 16: 500000 if quick else 2000000}
    secs = max(1, int(seconds))
    found = [("redis", "redis-benchmark -c 50 -P %d" % p,
              lambda smc, p=p: redis_once(lib, smc, p, requests[p], count),
              [(": %s (requests/s)" % op, op, HIGHER) for op in ("SET", "GET")])
             for p in (1, 16)]
    found += [("iperf3", "iperf3 " + (" ".join(a) or "-P 1"),
               lambda smc, a=a: iperf_once(lib, smc, a, secs, count),
               [(" (Gbit/s)", "gbit", HIGHER)])
              for a in ([], ["-P", "4"], ["-R"])]
    found += [("sockperf", "sockperf ping-pong 64 B",
               lambda smc: sockperf_once(lib, smc, "ping-pong", secs, count),
               [(": one-way latency, %s (µs)" % k, k, LOWER) for k in ("p50", "p99")]),
              ("sockperf", "sockperf throughput 64 B",
               lambda smc: sockperf_once(lib, smc, "throughput", secs, count),
               [(" (messages/s)", "rate", HIGHER)])]
    found += [("nginx", "nginx 1 KiB file, wrk -c 1",
               lambda smc: nginx_once(lib, smc, secs, count),
               [(": latency, p50 (µs)", "p50", LOWER), (" (requests/s)", "rate", HIGHER)]),
              ("proxy", "nginx proxy -> nginx, 1 KiB file, wrk -c %d" % PROXY_CONNS,
               lambda smc: proxy_once(lib, smc, secs, count),
               [(": latency, p50 (µs)", "p50", LOWER), (" (requests/s)", "rate", HIGHER)])]
    return found


def app_rows(lib, reps, seconds, quick, only, count_syscalls):
    """The real programs' rows of the families in `only`: (rows, syscall rows, notes on
    what was skipped, proof problems). Syscall rows are empty unless count_syscalls."""
    notes, chosen = [], []
    for family in (f for f in FAMILIES if f in only):
        missing = [p for p in FAMILIES[family] if not shutil.which(p)]
        if missing:
            notes.append("%s skipped, not installed: %s" % (family, ", ".join(missing)))
        else:
            chosen.append(family)
    if not chosen:
        return [], [], notes, []
    why_not = netns.enter_private_netns()
    if why_not:
        return [], [], notes + ["real programs skipped: " + why_not], []
    keeper = None
    if count_syscalls:
        keeper, why_not = syscalls.start()
        if why_not:
            print("scripts/bench: no syscall counts: " + why_not, file=sys.stderr)
            notes.append("syscalls not counted: " + why_not)
            count_syscalls = False
    cases = [m for m in measurements(lib, seconds, quick, False) if m[0] in chosen]
    counted, problems = {}, []
    try:
        runs, problems = alternate(cases, reps, "")
        if count_syscalls:
            # Runs of their own: counting slows every context switch of the servers (a
            # perf counter per tracepoint), and TCP, which sleeps and wakes per message,
            # far more than SMC (nginx wrk -c 1: TCP's p50 1.7x, smcpre's 1.2x).
            counted, more = alternate([m for m in measurements(lib, seconds, quick, True)
                                       if m[0] in chosen], 1, "counting syscalls ")
            problems += more
    finally:
        if keeper:
            keeper.close()
    rows = []
    for _, name, _, labels in cases:
        for label, key, lower in labels:
            digits = 0 if "requests" in label or "messages" in label else 2
            rows.append(row(name + label, [f[key] for f in runs[(name, False)]],
                            [f[key] for f in runs[(name, True)]], lower, digits))
    return rows, syscall_rows(cases, counted) if count_syscalls else [], notes, problems


def alternate(cases, reps, what):
    """Runs every case reps times over each path; returns ({(name, smc): [figures of
    each repetition]}, proof problems)."""
    runs, problems = {}, []  # (name, smc) -> [figures of each repetition]
    for rep in range(reps):
        # Alternate which path goes first, so slow drift of the machine hits both alike.
        order = (False, True) if rep % 2 == 0 else (True, False)
        for _, name, run, _ in cases:
            for smc in order:
                print("scripts/bench: %srep %d/%d %s %s" % (
                    what, rep + 1, reps, name, "smc" if smc else "tcp"), file=sys.stderr)
                figures, problem = run(smc)
                runs.setdefault((name, smc), []).append(figures)
                if problem:
                    problems.append("%s%s rep %d: %s" % (what, name, rep + 1, problem))
    return runs, problems


def syscall_rows(cases, runs):
    """Per measurement: the operation, the servers' syscalls per operation over TCP and
    over SMC (the median and lowest-highest run when there are several), and SMC's four
    most frequent syscalls."""
    out = []
    for _, name, _, _ in cases:
        each, tops = {}, {}
        for smc in (False, True):
            counted = [(f["syscalls"], f["ops"]) for f in runs[(name, smc)]
                       if f["syscalls"] and f["ops"]]
            if counted:
                each[smc], tops[smc] = syscalls.per_op(counted)
        if len(each) < 2:
            out.append((name, runs[(name, False)][0]["op"], "n/a", "n/a", ""))
            continue
        cells = [small(statistics.median(each[smc])) + (
            " (%s–%s)" % (small(min(each[smc])), small(max(each[smc])))
            if len(each[smc]) > 1 else "") for smc in (False, True)]
        out.append((name, runs[(name, False)][0]["op"], cells[0], cells[1],
                    ", ".join("%s %s" % (n, small(v)) for n, v in tops[True])))
    return out


def small(x):
    """A count per operation, which may be far below 1 (per 64-byte message)."""
    return "%.2f" % x if x >= 0.1 or x == 0 else "%.3f" % x if x >= 0.001 else "<0.001"
