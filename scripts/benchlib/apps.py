"""The real programs' rows of scripts/bench: redis-benchmark against redis-server and iperf3,
in a private network namespace whose kernel IP counters prove that an SMC run's TCP
connections carried only their handshakes.
"""

import json
import os
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
    values, problems = {}, []
    for rep in range(reps):
        order = (False, True) if rep % 2 == 0 else (True, False)
        done = {}
        for label, fn, key in cases:
            for smc in order:
                print("scripts/bench: rep %d/%d %s %s" % (rep + 1, reps, label,
                                                         "smc" if smc else "tcp"),
                      file=sys.stderr)
                # One redis-benchmark run measures SET and GET: reuse it for both rows.
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
        digits = 0 if "requests" in label else 2
        rows.append((label, fmt(t, digits), fmt(s, digits), "%.2f× (SMC / TCP)" % (s / t)))
    return rows, None, problems
