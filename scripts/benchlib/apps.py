"""The real programs' runs of scripts/bench, in a private network namespace whose kernel
IP counters prove that an SMC run's TCP connections carried only their handshakes:
redis-benchmark against redis-server, iperf3 and sockperf (web.py: nginx and a reverse
proxy with wrk). Each run returns a dict of its figures, "ops" (the operations the
client's tool reported, for syscalls per operation) and "op" (what one is called).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from . import syscalls
from .common import die
import netns  # tests/integration, on the path once .common is imported


class AppRun:
    """One real-program run in the private namespace: servers, a client, the proof, and
    (count_syscalls) the servers' syscalls while the client runs."""

    def __init__(self, lib, smc, count_syscalls=False, env=None):
        self.smc = smc
        self.runtime = tempfile.mkdtemp(prefix="smcpre-bench-")
        self.env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
        self.env["SMCPRE_RUNTIME_DIR"] = self.runtime
        self.env.update(env or {})
        if smc:
            self.env["LD_PRELOAD"] = lib
        self.servers = []
        self.count_syscalls = count_syscalls
        self.syscalls = None  # {name: count} of the servers while the client ran
        self.start_counters = netns.counters()

    def serve(self, argv, port, children=0):
        """Starts a server and waits until it listens on port (and has forked `children`
        worker processes)."""
        server = subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        self.servers.append(server)
        deadline = time.monotonic() + 20
        while not netns.listening(port) or len(syscalls.children(server.pid)) < children:
            if server.poll() is not None or time.monotonic() > deadline:
                self.close()
                die("%s did not start" % argv[0])
            time.sleep(0.02)

    def client(self, argv, timeout):
        """Runs the client to completion (counting the servers' syscalls meanwhile, if
        asked); returns its stdout."""
        counter = None
        if self.count_syscalls:
            counter = syscalls.Counter([q for s in self.servers
                                        for q in [s.pid] + syscalls.children(s.pid)])
        try:
            out = subprocess.run(argv, env=self.env, capture_output=True, text=True,
                                 timeout=timeout)
        except subprocess.TimeoutExpired:
            out = None
        if counter is not None:
            self.syscalls, problem = counter.stop()
            if problem:
                print("scripts/bench: no syscall counts: " + problem, file=sys.stderr)
        if out is None:
            self.close()
            die("%s timed out" % " ".join(argv))
        if out.returncode != 0:
            self.close()
            die("%s failed (exit %d):\n%s" % (" ".join(argv), out.returncode,
                                               out.stderr[-2000:]))
        return out.stdout

    def result(self, figures, ops, op):
        """(figures with the operation count and this run's syscalls, the proof problem
        or None); stops the servers."""
        figures.update(ops=ops, op=op, syscalls=self.syscalls)
        return figures, self.close()

    def close(self):
        """Stops the servers; returns the proof problem of an SMC run, or None."""
        for server in self.servers:
            if server.poll() is None:
                server.terminate()
                try:
                    server.wait(20)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
        self.servers = []
        shutil.rmtree(self.runtime, ignore_errors=True)
        octets, opens = (b - a for a, b in zip(self.start_counters, netns.counters()))
        if self.smc and octets > netns.smc_bound(opens):
            return "%d TCP connections carried %d IP bytes" % (opens, octets)
        return None


def redis_once(lib, smc, pipeline, requests, count_syscalls=False):
    """{"SET": requests/s, "GET": requests/s} of one redis-benchmark run."""
    run = AppRun(lib, smc, count_syscalls)
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
    return run.result(rps, 2 * requests, "request")


def iperf_once(lib, smc, args, seconds, count_syscalls=False):
    """{"gbit": Gbit/s the iperf3 receiver counted} of one run; an operation is one of the
    server's reads (its writes with -R) of a block (128 KiB)."""
    run = AppRun(lib, smc, count_syscalls)
    port = netns.free_port()
    run.serve(["iperf3", "-s", "-1", "-p", str(port)], port)
    out = run.client(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-J", "-t",
                      str(seconds)] + args, seconds + 60)
    report = json.loads(out)
    if report.get("error"):
        run.close()
        die("iperf3: " + report["error"])
    end, block = report["end"], report["start"]["test_start"]["blksize"]
    reverse = "-R" in args
    moved = end["sum_sent" if reverse else "sum_received"]["bytes"]
    return run.result({"gbit": end["sum_received"]["bits_per_second"] / 1e9}, moved / block,
                      "%d KiB %s" % (block // 1024, "write" if reverse else "read"))


SOCKPERF_PERCENTILE = re.compile(r"percentile (\d+)\.000 =\s*([0-9.]+)")
SOCKPERF_RATE = re.compile(r"Message Rate is (\d+)")
SOCKPERF_SENT = re.compile(r"\[Total Run\].*SentMessages=(\d+)|Total of (\d+) messages sent")


def sockperf_once(lib, smc, mode, seconds, count_syscalls=False):
    """sockperf over TCP with 64-byte messages: for ping-pong {"p50": µs, "p99": µs} of the
    one-way latency (half the round trip, as sockperf reports it); for throughput
    {"rate": messages/s}. An operation is a message the server received."""
    run = AppRun(lib, smc, count_syscalls)
    port = netns.free_port()
    run.serve(["sockperf", "server", "--tcp", "-i", "127.0.0.1", "-p", str(port)], port)
    # --mps: sockperf sizes its sequence table for 600k messages/s unless told; over SMC
    # ping-pong goes faster than that and sockperf stops with "_seqN > m_maxSequenceNo"
    # (test_apps.py's sockperf test says the same).
    rate = ["--mps", "10000000"] if mode == "ping-pong" else []
    out = run.client(["sockperf", mode, "--tcp", "-i", "127.0.0.1", "-p", str(port), "-m", "64",
                      "-t", str(seconds)] + rate, seconds + 60)
    if mode == "ping-pong":
        found = {int(p): float(v) for p, v in SOCKPERF_PERCENTILE.findall(out)}
        result = {"p50": found.get(50), "p99": found.get(99)}
    else:
        m = SOCKPERF_RATE.search(out)
        result = {"rate": float(m.group(1)) if m else None}
    sent = SOCKPERF_SENT.search(out)
    if None in result.values() or not sent:
        run.close()
        die("unexpected sockperf output:\n" + out[-2000:])
    return run.result(result, int(sent.group(1) or sent.group(2)), "message")


