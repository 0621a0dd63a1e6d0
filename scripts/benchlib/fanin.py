"""scripts/bench --fanin: tests/apps/fanin over kernel TCP, smcpre inline and smcpre backlog,
each run's SMC proof and counters (smcpre-stat), and the two Markdown tables.
"""

import collections
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from .common import SMC_ESTABLISHED, die, fmt


FANIN_MODES = ("tcp", "inline", "backlog")
# Log lines (SMCPRE_LOG=info) of a connection that ended up on TCP (core/smc_socket.cpp,
# core/handshake.cpp).
FALLBACK_MARKS = ("falls back to TCP", "will use TCP")


class HeldProcess:
    """A fanin process run with --hold. A thread reads its stderr and counts instead of
    keeping (1024 connections log 1024 lines): SMC proof lines, fallbacks, the announced
    port, "done", and the last lines for error messages."""

    def __init__(self, argv, env):
        self.smc = 0
        self.fallbacks = 0
        self.fallback_line = None
        self.tail = collections.deque(maxlen=20)
        self.port = None
        self.said_done = False           # finished and holding
        self.ready = threading.Event()  # port announced, or stderr closed
        self.done = threading.Event()   # "done" printed, or stderr closed
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True)
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self):
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if SMC_ESTABLISHED in line:
                self.smc += 1
                continue
            self.tail.append(line)
            if any(m in line for m in FALLBACK_MARKS) or line.endswith(": TCP"):
                self.fallbacks += 1
                self.fallback_line = self.fallback_line or line
            elif line == "done":
                self.said_done = True
                self.done.set()
            elif self.port is None and line.startswith("listening "):
                self.port = int(line.split()[1])
                self.ready.set()
        self.ready.set()
        self.done.set()

    def finish(self, timeout):
        """Closes stdin (the end of --hold) and waits for the exit (kills after timeout)."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._thread.join(5)
        return self.proc.returncode

    def log_tail(self):
        return "\n".join(self.tail)


def smc_counters(stat, env, pid):
    """{rnr, exhausted, low_water, workers} of one live process from `smcpre-stat show
    --json`, or None when that fails (the tool may be missing or older)."""
    try:
        out = subprocess.run([stat, "show", "--json", str(pid)], env=env, capture_output=True,
                             text=True, timeout=20)
        if out.returncode != 0:
            return None
        procs = [p for p in json.loads(out.stdout)["processes"] if p.get("pid") == pid]
        if len(procs) != 1:
            return None
        links, counters = procs[0].get("links") or [], procs[0]["process"]
        return {"rnr": sum(int(l["rnr_events"]) for l in links),
                "exhausted": int(counters["pool_exhausted"]),
                "low_water": min((int(l["rq_low_water"]) for l in links), default=None),
                # The worker table rather than process.backlog_workers: one row per live
                # worker, so it also says whether the mode took effect.
                "workers": len(procs[0].get("workers") or [])}
    except (OSError, subprocess.TimeoutExpired, ValueError, KeyError, TypeError,
            AttributeError):
        return None


def merge_counters(a, b):
    """Both processes' counters as one run's, or None if either is unknown."""
    if a is None or b is None:
        return None
    lows = [x["low_water"] for x in (a, b) if x["low_water"] is not None]
    return {"rnr": a["rnr"] + b["rnr"], "exhausted": a["exhausted"] + b["exhausted"],
            "low_water": min(lows) if lows else None,
            "workers": max(a["workers"], b["workers"])}


def fanin_once(fanin, stat, lib, mode, conns, reverse, consumer, seconds):
    """One fanin run. Returns (client JSON or None, counters or None, problem or None); a
    problem is a failure, or an SMC run that cannot be proven to have used SMC."""
    runtime = tempfile.mkdtemp(prefix="smcpre-bench-")
    procs = []
    try:
        env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "SMCPRE_LOG_FILE")}
        env["SMCPRE_RUNTIME_DIR"] = runtime
        if mode != "tcp":
            env["LD_PRELOAD"] = lib
            env["SMCPRE_LOG"] = "info"
            if mode == "inline":
                env["SMCPRE_BACKLOG_CPUS"] = "none"
            elif env.get("SMCPRE_BACKLOG_CPUS", "none") == "none":
                # Backlog mode even where the default is inline (fewer than 4 CPUs): one
                # worker on the highest-numbered CPU, as the default places it.
                env["SMCPRE_BACKLOG_CPUS"] = str(max(os.sched_getaffinity(0)))
        limit = int(seconds) + 120  # setup of 1024 connections and the drain included
        srv = HeldProcess([fanin, "server", "--port", "0", "--hold", "--timeout", str(limit)], env)
        procs.append(srv)
        srv.ready.wait(15)
        if srv.port is None:
            return None, None, "server did not start: " + srv.log_tail()[-1500:]
        argv = [fanin, "client", "--host", "127.0.0.1", "--port", str(srv.port), "--conns",
                str(conns), "--seconds", str(seconds), "--consumer", consumer, "--hold",
                "--timeout", str(limit)] + (["--reverse"] if reverse else [])
        cli = HeldProcess(argv, env)
        procs.append(cli)
        deadline = time.monotonic() + limit + 10
        # Until both hold, or one has exited (failed): the other would wait for it forever.
        while (not (srv.said_done and cli.said_done) and time.monotonic() < deadline and
               all(p.proc.poll() is None for p in procs)):
            srv.done.wait(0.05)
            cli.done.wait(0.05)
        # Both holding: the client printed its JSON line before "done".
        alive = srv.said_done and cli.said_done and all(p.proc.poll() is None for p in procs)
        line = cli.proc.stdout.readline().decode() if alive else ""
        counters = None
        if alive and mode != "tcp":
            stat_env = {k: v for k, v in env.items() if k != "LD_PRELOAD"}
            counters = merge_counters(smc_counters(stat, stat_env, srv.proc.pid),
                                      smc_counters(stat, stat_env, cli.proc.pid))
        codes = [p.finish(20 if alive else 0) for p in procs]
        procs = []
        try:
            record = json.loads(line) if line.startswith("{") else None
        except ValueError:
            record = None
        if record is None or codes != [0, 0]:
            return None, None, "failed (exit codes server %s, client %s):\n%s\n%s" % (
                codes[0], codes[1], cli.log_tail()[-1500:], srv.log_tail()[-1500:])
        if mode != "tcp":
            for side, p in (("server", srv), ("client", cli)):
                if p.fallbacks:
                    return record, counters, "%s: %d fallbacks to TCP (%s)" % (
                        side, p.fallbacks, p.fallback_line)
                if p.smc < conns + 1:
                    return record, counters, "%s logged '%s' %d times, not %d" % (
                        side, SMC_ESTABLISHED, p.smc, conns + 1)
        return record, counters, None
    finally:
        for p in procs:
            p.proc.kill()
            p.finish(5)
        shutil.rmtree(runtime, ignore_errors=True)


def fanin_main(args, build_dir, lib):
    fanin = os.path.join(build_dir, "tests", "apps", "fanin")
    stat = os.path.join(build_dir, "tools", "smcpre-stat")
    if not os.path.exists(fanin):
        die("not built: " + fanin)
    reps = args.reps or (1 if args.quick else 3)
    seconds = args.seconds or (1.0 if args.quick else 1.5)
    if args.fanin_conns:
        try:
            conns_list = [int(x) for x in args.fanin_conns.split(",")]
        except ValueError:
            conns_list = []
        if not conns_list or min(conns_list) < 1:
            die("--fanin-conns wants positive numbers separated by commas")
    else:
        conns_list = [1, 16, 256] if args.quick else [1, 16, 64, 256, 1024]
    if reps < 1 or seconds <= 0:
        die("--reps and --seconds must be positive")

    cases = [(n, rev, cons) for n in conns_list for rev in (False, True)
             for cons in ("fast", "slow")]
    results = collections.defaultdict(list)   # (case, mode) -> client records
    counters = collections.defaultdict(list)  # (case, mode) -> counters (None: n/a)
    problems = []
    started = time.monotonic()
    for rep in range(reps):
        # Rotate which path goes first, so that slow drift of the machine hits all alike.
        order = FANIN_MODES[rep % 3:] + FANIN_MODES[:rep % 3]
        for case in cases:
            n, rev, cons = case
            for mode in order:
                what = "%d conns %s %s %s" % (n, "reverse" if rev else "forward", cons, mode)
                print("scripts/bench: rep %d/%d fanin %s" % (rep + 1, reps, what),
                      file=sys.stderr)
                record, c, problem = fanin_once(fanin, stat, lib, mode, n, rev, cons, seconds)
                if problem:
                    problems.append("%s rep %d: %s" % (what, rep + 1, problem))
                if record is not None:
                    results[(case, mode)].append(record)
                if mode != "tcp":
                    counters[(case, mode)].append(c)

    def med(case, mode, key):
        values = [r[key] for r in results[(case, mode)] if r.get(key) is not None]
        return statistics.median(values) if values else None

    def counter(case, mode, key, pick):
        runs = counters[(case, mode)]
        if not runs or any(c is None for c in runs):
            return "n/a"
        values = [c[key] for c in runs if c[key] is not None]
        return "%d" % pick(values) if values else "n/a"

    def num(x, digits):
        return "fail" if x is None else fmt(x, digits)

    def ratio(a, b):
        return "%.2f×" % (a / b) if a is not None and b else "–"

    rmb = os.environ.get("SMCPRE_RMB_SIZE", "524288 (default)")
    print("### Fan-in: N connections into (forward) or out of (reverse) one epoll loop")
    print()
    print("SMC runs with SMCPRE_RMB_SIZE=%s. Throughput in Gbit/s delivered to the receiving "
          "application; probe: p99 of a 64-byte round trip on a separate connection, in µs; "
          "RNR: events on both processes' links." % rmb)
    print()
    print("| conns | direction | consumer | TCP | inline | backlog | backlog/inline | "
          "backlog/TCP | p99 TCP | p99 inline | p99 backlog | RNR inline | RNR backlog |")
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for case in cases:
        n, rev, cons = case
        g = {m: med(case, m, "gbit_per_s") for m in FANIN_MODES}
        p99 = {m: med(case, m, "probe_p99_us") for m in FANIN_MODES}
        print("| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            n, "reverse" if rev else "forward", cons, num(g["tcp"], 2), num(g["inline"], 2),
            num(g["backlog"], 2), ratio(g["backlog"], g["inline"]), ratio(g["backlog"], g["tcp"]),
            num(p99["tcp"], 0), num(p99["inline"], 0), num(p99["backlog"], 0),
            counter(case, "inline", "rnr", statistics.median),
            counter(case, "backlog", "rnr", statistics.median)))
    print()
    print("| conns | direction | consumer | pool exhausted inline | pool exhausted backlog | "
          "lowest RQ fill inline | lowest RQ fill backlog | workers inline | workers backlog |")
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|")
    for case in cases:
        n, rev, cons = case
        print("| %d | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            n, "reverse" if rev else "forward", cons,
            counter(case, "inline", "exhausted", statistics.median),
            counter(case, "backlog", "exhausted", statistics.median),
            counter(case, "inline", "low_water", min), counter(case, "backlog", "low_water", min),
            counter(case, "inline", "workers", max), counter(case, "backlog", "workers", max)))
    print()
    print("Medians of %d runs each (%.1f s runs, the first tenth not counted; 16 KiB writes; "
          "slow consumer: 4 KiB reads and 1 µs of work per KiB; probe every 1 ms); pool "
          "exhausted: refills that found the receive pool empty (median); lowest RQ fill: the "
          "fewest receive buffers posted on any link in any run; %d CPUs, Linux %s; %.0f s "
          "in all." % (reps, seconds, os.cpu_count() or 0, os.uname().release,
                       time.monotonic() - started))
    if problems:
        print("**INVALID or FAILED**: %d runs: %s" % (len(problems), "; ".join(problems)))
        return 1
    print("All %d smcpre runs used SMC: both processes logged \"%s\" at least N+1 times "
          "and no fallback to TCP." % (2 * reps * len(cases), SMC_ESTABLISHED))
    return 0
