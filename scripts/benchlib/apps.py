"""The real programs' rows of scripts/bench: redis-benchmark against redis-server, iperf3
and sockperf (when installed), in a private network namespace whose kernel IP counters prove that an SMC run's TCP
connections carried only their handshakes.
"""

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from .common import die, fmt
import netns  # tests/integration, on the path once .common is imported


class AppRun:
    """One real-program run in the private namespace: a server, clients, the proof."""

    def __init__(self, lib, smc):
        self.smc = smc
        self.runtime = tempfile.mkdtemp(prefix="smcpre-bench-")
        self.env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
        self.env["SMCPRE_RUNTIME_DIR"] = self.runtime
        if smc:
            self.env["LD_PRELOAD"] = lib
        self.server = None
        self.start_counters = netns.counters()

    def serve(self, argv, port):
        self.server = subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       start_new_session=True)
        deadline = time.monotonic() + 20
        while not netns.listening(port):
            if self.server.poll() is not None or time.monotonic() > deadline:
                self.close()
                die("%s did not start" % argv[0])
            time.sleep(0.02)

    def client(self, argv, timeout):
        try:
            out = subprocess.run(argv, env=self.env, capture_output=True, text=True,
                                 timeout=timeout)
        except subprocess.TimeoutExpired:
            self.close()
            die("%s timed out" % " ".join(argv))
        if out.returncode != 0:
            self.close()
            die("%s failed (exit %d):\n%s" % (" ".join(argv), out.returncode,
                                               out.stderr[-2000:]))
        return out.stdout

    def close(self):
        """Stops the server; returns the proof problem of an SMC run, or None."""
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(20)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()
        shutil.rmtree(self.runtime, ignore_errors=True)
        octets, opens = (b - a for a, b in zip(self.start_counters, netns.counters()))
        if self.smc and octets > netns.smc_bound(opens):
            return "%d TCP connections carried %d IP bytes" % (opens, octets)
        return None


def redis_once(lib, smc, pipeline, requests):
    """{"SET": requests/s, "GET": requests/s} of one redis-benchmark run."""
    run = AppRun(lib, smc)
    port = netns.free_port()
    run.serve(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", run.runtime], port)
    out = run.client(["redis-benchmark", "-p", str(port), "-t", "set,get", "-c", "50",
                      "-n", str(requests), "-P", str(pipeline), "--csv"], 300)
    rps = {}
    for line in out.splitlines()[1:]:
        fields = [f.strip('"') for f in line.split(",")]
        if len(fields) >= 2 and fields[0] in ("SET", "GET"):
            rps[fields[0]] = float(fields[1])
    if set(rps) != {"SET", "GET"}:
        run.close()
        die("unexpected redis-benchmark output:\n" + out[-2000:])
    return rps, run.close()


def iperf_once(lib, smc, args, seconds):
    """Gbit/s the iperf3 receiver counted in one run."""
    run = AppRun(lib, smc)
    port = netns.free_port()
    run.serve(["iperf3", "-s", "-1", "-p", str(port)], port)
    out = run.client(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-J", "-t",
                      str(seconds)] + args, seconds + 60)
    report = json.loads(out)
    if report.get("error"):
        run.close()
        die("iperf3: " + report["error"])
    return report["end"]["sum_received"]["bits_per_second"] / 1e9, run.close()


SOCKPERF_PERCENTILE = re.compile(r"percentile (\d+)\.000 =\s*([0-9.]+)")
SOCKPERF_RATE = re.compile(r"Message Rate is (\d+)")


def sockperf_once(lib, smc, mode, seconds):
    """sockperf over TCP with 64-byte messages: for ping-pong {"p50": µs, "p99": µs} of the
    one-way latency (half the round trip, as sockperf reports it); for throughput
    {"rate": messages/s}."""
    run = AppRun(lib, smc)
    port = netns.free_port()
    run.serve(["sockperf", "server", "--tcp", "-i", "127.0.0.1", "-p", str(port)], port)
    out = run.client(["sockperf", mode, "--tcp", "-i", "127.0.0.1", "-p", str(port), "-m", "64",
                      "-t", str(seconds)], seconds + 60)
    if mode == "ping-pong":
        found = {int(p): float(v) for p, v in SOCKPERF_PERCENTILE.findall(out)}
        result = {"p50": found.get(50), "p99": found.get(99)}
    else:
        m = SOCKPERF_RATE.search(out)
        result = {"rate": float(m.group(1)) if m else None}
    if None in result.values():
        run.close()
        die("unexpected sockperf output:\n" + out[-2000:])
    return result, run.close()


def app_rows(lib, reps, seconds, quick):
    """The real programs' rows, or ([], why not)."""
    missing = [p for p in ("redis-server", "redis-benchmark", "iperf3") if not shutil.which(p)]
    if missing:
        return [], "not installed: " + ", ".join(missing), []
    why_not = netns.enter_private_netns()
    if why_not:
        return [], why_not, []
    # Runs of a few seconds: shorter ones measure connection set-up more than requests.
    requests = {1: 50000 if quick else 200000, 16: 500000 if quick else 2000000}
    cases = [("redis-benchmark -c 50 -P %d: %s (requests/s)" % (p, op),
              lambda smc, p=p: redis_once(lib, smc, p, requests[p]), op)
             for p in (1, 16) for op in ("SET", "GET")]
    iperf_seconds = max(1, int(seconds))
    cases += [("iperf3 %s(Gbit/s)" % (" ".join(a) + " " if a else "-P 1 "),
               lambda smc, a=a: iperf_once(lib, smc, a, iperf_seconds), None)
              for a in ([], ["-P", "4"], ["-R"])]
    if shutil.which("sockperf"):
        cases += [("sockperf ping-pong 64 B: one-way latency, %s (µs)" % key,
                   lambda smc: sockperf_once(lib, smc, "ping-pong", iperf_seconds), key)
                  for key in ("p50", "p99")]
        cases += [("sockperf throughput 64 B (messages/s)",
                   lambda smc: sockperf_once(lib, smc, "throughput", iperf_seconds), "rate")]
    values, problems = {}, []
    for rep in range(reps):
        order = (False, True) if rep % 2 == 0 else (True, False)
        done = {}
        for label, fn, key in cases:
            for smc in order:
                print("scripts/bench: rep %d/%d %s %s" % (rep + 1, reps, label,
                                                         "smc" if smc else "tcp"),
                      file=sys.stderr)
                # One redis-benchmark (or sockperf ping-pong) run measures several rows.
                cache_key = (label.split(":")[0], smc)
                if key is not None and cache_key in done:
                    result, problem = done[cache_key], None
                else:
                    result, problem = fn(smc)
                    done[cache_key] = result
                    if problem:
                        problems.append("%s rep %d: %s" % (label, rep + 1, problem))
                values.setdefault((label, smc), []).append(result[key] if key else result)
    rows = []
    for label, _, _ in cases:
        t = statistics.median(values[(label, False)])
        s = statistics.median(values[(label, True)])
        digits = 0 if "requests" in label or "messages" in label else 2
        if "latency" in label:
            ratio = "%.2f× (TCP / SMC latency)" % (t / s)
        else:
            ratio = "%.2f× (SMC / TCP)" % (s / t)
        rows.append((label, fmt(t, digits), fmt(s, digits), ratio))
    return rows, None, problems
