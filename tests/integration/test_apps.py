#!/usr/bin/env python3
"""Real programs nobody here wrote, under the preload on both ends: redis-server
with redis-benchmark and redis-cli, nginx (master + worker processes, sendfile) with curl
and wrk, directly and through a second nginx as a reverse proxy, iperf3, sockperf and
socat. (A Python asyncio server and client run in test_events.py.)

Every case runs twice, under the preload and as plain TCP, and checks that the outputs
agree (file contents, key counts, command counts, stream counts, message accounting).

The path is proven by the kernel, not by smcpre: the tests run in a network namespace of
their own, so its IP counters (IpExt InOctets, Tcp ActiveOpens) see only the test's own
traffic. Over SMC, TCP carries the handshakes only: at most netns.HANDSHAKE_BUDGET bytes per
TCP connection opened. The plain-TCP run of each case must exceed that same bound, which
shows the check can fail.

  test_apps.py            quick sizes (part of the default scripts/test)
  test_apps.py --full     their full sizes (scripts/test --apps)
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import KIB, MIB, SANITIZER_RUNTIME, SMC_ESTABLISHED, SmcTestCase, main  # noqa: E402

# A plain HTTP GET to a file (the status line and headers to a third file if named), for the
# sanitizer build: curl hangs at start under the ASan runtime alone (without smcpre), so
# there Python fetches the file instead.
FETCH = ("import shutil, sys, urllib.request\n"
         "with urllib.request.urlopen(sys.argv[1], timeout=60) as r, open(sys.argv[2], 'wb') as f:\n"
         "    shutil.copyfileobj(r, f, 1 << 20)\n"
         "    if len(sys.argv) > 3:\n"
         "        with open(sys.argv[3], 'w') as h:\n"
         "            h.write('HTTP/1.1 %d %s\\n' % (r.status, r.reason))\n"
         "            h.writelines('%s: %s\\n' % kv for kv in r.getheaders())\n")
from netns import counters, enter_private_netns, free_port, listening, smc_bound  # noqa: E402
from nginx_conf import WORKERS, nginx_argv, worker_uid  # noqa: E402

FULL = "--full" in sys.argv
if FULL:
    sys.argv.remove("--full")

SIZES = {
    # name: (quick, full)
    "redis_requests": (20000, 100000),
    "redis_value": (10 * MIB, 10 * MIB),
    "nginx_file": (100 * MIB, 100 * MIB),
    "wrk_seconds": (3, 5),
    "iperf_seconds": (1, 5),
    "sockperf_seconds": (1, 3),
    "socat_file": (32 * MIB, 256 * MIB),
}


def size(name):
    return SIZES[name][1 if FULL else 0]


class AppsTest(SmcTestCase):

    PROGRAMS = ("redis-server", "redis-benchmark", "redis-cli", "nginx", "curl", "wrk",
                "iperf3", "sockperf", "socat")

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        why_not = enter_private_netns()
        if why_not:
            raise unittest.SkipTest(why_not + ": the path proof reads the namespace's "
                                    "own IP counters")

    def setUp(self):
        super().setUp()
        self.work = tempfile.mkdtemp(prefix="smcpre-apps-")

    def tearDown(self):
        super().tearDown()
        shutil.rmtree(self.work, ignore_errors=True)

    def need(self, *programs):
        missing = [p for p in programs if shutil.which(p) is None and
                   not os.path.exists(os.path.join("/usr/sbin", p))]
        if missing:
            self.skipTest("not installed: %s (scripts/deps installs them)" % ", ".join(missing))

    # ---- running programs -------------------------------------------------------------

    def server(self, argv, port, preload, env=None, name=None, timeout=20):
        p = self.start(argv, preload, env, name or os.path.basename(argv[0]))
        deadline = time.monotonic() + timeout
        while not listening(port):
            if not p.alive() or time.monotonic() > deadline:
                p.kill()
                self.fail("%s did not listen on %d\n%s" % (p.name, port, p.describe()))
            time.sleep(0.02)
        return p

    def run_client(self, argv, preload, env=None, timeout=120, name=None, others=()):
        p = self.start(argv, preload, env, name or os.path.basename(argv[0]))
        self.finish(p, timeout, 0, others)
        return p

    def stop(self, proc, timeout=20):
        if proc.alive():
            proc.popen.terminate()
        if proc.finish(timeout) is None:
            self.fail("%s did not stop\n%s" % (proc.name, proc.describe()))

    # ---- path proofs ------------------------------------------------------------------

    def measured(self, body):
        """Runs body(); returns (its result, IP bytes, TCP connections opened)."""
        octets0, opens0 = counters()
        result = body()
        octets1, opens1 = counters()
        return result, octets1 - octets0, opens1 - opens0

    def assert_path(self, preload, octets, opens, procs):
        bound = smc_bound(opens)
        sys.stderr.write("  %s: %d TCP connections, %d IP bytes (SMC bound %d)\n" % (
            "preload" if preload else "plain TCP", opens, octets, bound))
        self.assertGreater(opens, 0, "no TCP connection was opened")
        if preload:
            self.assertLessEqual(
                octets, bound,
                "%d IP bytes for %d connections: the payload went over TCP, not SMC\n%s"
                % (octets, opens, self.describe_all(procs)))
            for p in procs:
                text = p.stderr_text()
                self.assertNotIn("falls back to TCP", text, p.describe())
        else:
            self.assertGreater(
                octets, bound,
                "plain TCP moved only %d IP bytes over %d connections: the SMC proof "
                "would not catch TCP" % (octets, opens))

    def both_paths(self, run):
        """run(preload) -> (result, procs); returns {True: result over SMC, False: TCP}."""
        results = {}
        for preload in (True, False):
            (result, procs), octets, opens = self.measured(lambda: run(preload))
            self.assert_path(preload, octets, opens, procs)
            if preload:
                for p in procs:
                    self.assertIn(SMC_ESTABLISHED, p.stderr_text(), p.describe())
            results[preload] = result
        return results

    # ---- redis ------------------------------------------------------------------------

    def redis(self, preload):
        port = free_port()
        srv = self.server(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                           "--save", "", "--appendonly", "no", "--dir", self.work],
                          port, preload, name="redis-server")
        return srv, port

    def redis_cli(self, port, args, preload, stdin_path=os.devnull, stdout_path=None):
        """Runs redis-cli to completion; its stdout goes to `stdout_path` if given, else
        is returned in the result."""
        argv = ["redis-cli", "-p", str(port)] + list(args)
        with open(stdin_path, "rb") as fin, \
                open(stdout_path or os.devnull, "wb") as fout:
            out = subprocess.run(argv, env=self.env(preload), stdin=fin,
                                 stdout=fout if stdout_path else subprocess.PIPE,
                                 stderr=subprocess.PIPE, timeout=60)
        self.assertEqual(out.returncode, 0, "%s: %s" % (argv, out.stderr))
        return out

    def test_redis_benchmark(self):
        """redis-benchmark SET/GET with 50 clients, with and without -P 16: every request
        is answered, and the server counted the same commands on both paths."""
        self.need("redis-server", "redis-benchmark", "redis-cli")
        n = size("redis_requests")

        def run(preload):
            srv, port = self.redis(preload)
            results = []
            procs = [srv]
            for pipeline in ("1", "16"):
                bench = self.run_client(
                    ["redis-benchmark", "-p", str(port), "-t", "set,get", "-c", "50",
                     "-n", str(n), "-P", pipeline, "--csv"], preload, others=[srv])
                procs.append(bench)
                rows = [l for l in bench.stdout_lines if l.startswith('"')]
                names = [r.split(",")[0].strip('"') for r in rows[1:]]
                results.append(names)
            info = self.redis_cli(port, ["info", "commandstats"], preload).stdout.decode()
            calls = {m.group(1): int(m.group(2))
                     for m in re.finditer(r"cmdstat_(set|get):calls=(\d+)", info)}
            dbsize = self.redis_cli(port, ["dbsize"], preload).stdout.decode().strip()
            self.stop(srv)
            return (results, calls, dbsize), procs

        got = self.both_paths(run)
        self.assertEqual(got[True], got[False])
        results, calls, _ = got[True]
        self.assertEqual(results, [["SET", "GET"], ["SET", "GET"]])
        self.assertEqual(calls, {"set": 2 * n, "get": 2 * n})

    def test_redis_cli_large_value(self):
        """redis-cli stores a 10 MiB value and reads it back byte for byte."""
        self.need("redis-server", "redis-cli")
        value = os.path.join(self.work, "value")
        with open(value, "wb") as f:
            # Printable, no newline: redis-cli -x sends stdin as is, --raw prints it back
            # followed by one newline.
            f.write(os.urandom(size("redis_value") * 3 // 4).hex().encode()[:size("redis_value")])

        def run(preload):
            srv, port = self.redis(preload)
            self.redis_cli(port, ["-x", "set", "big"], preload, stdin_path=value)
            back = os.path.join(self.work, "back-%d" % preload)
            self.redis_cli(port, ["--raw", "get", "big"], preload, stdout_path=back)
            with open(back, "rb") as f, open(value, "rb") as g:
                same = f.read() == g.read() + b"\n"
            self.stop(srv)
            return same, [srv]

        got = self.both_paths(run)
        self.assertEqual(got, {True: True, False: True})

    # ---- nginx ------------------------------------------------------------------------

    def nginx(self, preload, port, root=None, upstream=None, name="nginx"):
        """nginx serving `root`, or proxying to the port `upstream` (nginx_conf.py)."""
        return self.server(nginx_argv(self.work, name, port, root, upstream), port, preload,
                           name=name)

    def www(self, files):
        """A document root for nginx's workers with files {name: size} of random bytes;
        returns (root, {name: path})."""
        root = os.path.join(self.work, "www")
        os.mkdir(root)
        os.chmod(root, 0o755)
        paths = {}
        for name, nbytes in files.items():
            paths[name] = os.path.join(root, name)
            with open(paths[name], "wb") as f:
                for start in range(0, nbytes, MIB):
                    f.write(os.urandom(min(MIB, nbytes - start)))
            os.chmod(paths[name], 0o644)
        return root, paths

    def fetch(self, url, got, preload, env, others, headers=None):
        """Fetches url into the file got, and the response's status line and headers into
        the file `headers` if given (curl; Python in a sanitizer build)."""
        if SANITIZER_RUNTIME:
            argv = [sys.executable, "-c", FETCH, url, got] + ([headers] if headers else [])
        else:
            argv = (["curl", "-sS", "--fail", "-o", got] +
                    (["-D", headers] if headers else []) + [url])
        return self.run_client(argv, preload, env, others=others)

    def wrk(self, url, conns, seconds, preload, env, others):
        """wrk -c conns against url; returns (its process, requests, bytes read, socket
        errors and non-2xx lines)."""
        wrk = self.run_client(["wrk", "-t", "2" if conns > 1 else "1", "-c", str(conns),
                               "-d", "%ds" % seconds, "--timeout", "30s", url],
                              preload, env, others=others)
        text = "\n".join(wrk.stdout_lines)
        m = re.search(r"(\d+) requests in [\d.]+\w+, ([\d.]+)([KMGT]?B) read", text)
        self.assertIsNotNone(m, text)
        read = float(m.group(2)) * 1024 ** ["B", "KB", "MB", "GB", "TB"].index(m.group(3))
        return wrk, int(m.group(1)), read, re.findall(r"Socket errors:.*|Non-2xx.*", text)

    def test_nginx_curl_and_wrk(self):
        """nginx with two worker processes (fork; they run as nobody when we are root)
        serves a 100 MiB file to curl (sendfile on the SMC socket) and to wrk."""
        self.need("nginx", "curl", "wrk")
        root, files = self.www({"big.bin": size("nginx_file")})
        # The workers' uid must be allowed to attach over shm by the clients.
        client_env = {"SMCPRE_SHM_UIDS": str(worker_uid())}

        def run(preload):
            port = free_port()
            srv = self.nginx(preload, port, root)
            url = "http://127.0.0.1:%d/big.bin" % port
            got = os.path.join(self.work, "got-%d" % preload)
            curl = self.fetch(url, got, preload, client_env, [srv])
            same = subprocess.run(["cmp", "-s", got, files["big.bin"]]).returncode == 0
            os.unlink(got)
            wrk, requests, read, problems = self.wrk(url, 4, size("wrk_seconds"), preload,
                                                     client_env, [srv])
            # Whole files served (a slow machine may finish few in the time given).
            served = requests > 0 and read >= size("nginx_file")
            self.stop(srv)
            return (same, served, problems), [srv, curl, wrk]

        got = self.both_paths(run)
        self.assertEqual(got[True], (True, True, []), "over SMC")
        self.assertEqual(got[True], got[False])

    def test_nginx_proxy(self):
        """A reverse proxy in front of a server: nginx with proxy_pass and upstream
        keepalive before a backend nginx, both preloaded. curl fetches a 4 MiB and a 1 KiB
        file through the proxy (same bytes, same response headers as over TCP) and wrk the
        small one with 4 connections; the proxy reuses its backend connections. Both hops
        move over SMC: the IP counters stay within the handshakes of every connection of
        both hops, and two more runs with one hop on TCP (plain clients; a plain backend)
        show that either hop alone would exceed that bound."""
        self.need("nginx", "curl", "wrk")
        root, files = self.www({"big.bin": 4 * MIB, "small.bin": KIB})
        client_env = {"SMCPRE_SHM_UIDS": str(worker_uid())}
        # The proxy's workers (nobody) look the backend up in the listener registry.
        os.chmod(self.runtime_dir, 0o755)

        def run(clients, proxy, backend, seconds):
            """One run with the clients (curl, wrk), the proxy and the backend preloaded
            or not; returns ((contents equal, headers, wrk served and clean), procs)."""
            bport, pport = free_port(), free_port()
            back = self.nginx(backend, bport, root=root, name="nginx-backend")
            front = self.nginx(proxy, pport, upstream=bport, name="nginx-proxy")
            procs, same, headers = [back, front], [], []
            for name in ("big.bin", "small.bin"):
                got = os.path.join(self.work, "got")
                procs.append(self.fetch("http://127.0.0.1:%d/%s" % (pport, name), got,
                                        clients, client_env, procs[:2], headers=got + ".h"))
                same.append(subprocess.run(["cmp", "-s", got, files[name]]).returncode == 0)
                with open(got + ".h") as f:
                    # Date differs between runs; the rest comes from the backend.
                    headers.append(sorted(l.strip() for l in f
                                          if l.strip() and not l.startswith("Date:")))
                os.unlink(got)
                os.unlink(got + ".h")
            (wrk, requests, _, problems), _, opens = self.measured(lambda: self.wrk(
                "http://127.0.0.1:%d/small.bin" % pport, 4, seconds, clients, client_env,
                procs[:2]))
            procs.append(wrk)
            # Upstream keepalive: wrk's 4 connections, and at most a few to the backend
            # per proxy worker, not one per request.
            self.assertLessEqual(opens, 4 + 4 * WORKERS, "the proxy did not reuse its "
                                 "backend connections\n" + self.describe_all(procs))
            self.stop(front)
            self.stop(back)
            return (same, headers, requests >= 100, problems), procs

        got = self.both_paths(lambda preload: run(preload, preload, preload,
                                                  size("wrk_seconds")))
        self.assertEqual(got[True][0], [True, True], "over SMC")
        self.assertEqual(got[True][2:], (True, []), "over SMC")
        self.assertEqual(got[True], got[False])
        # Either hop left on TCP breaks the bound above, so the bound proves both hops.
        for clients, backend, hop in ((False, True, "client -> proxy"),
                                      (True, False, "proxy -> backend")):
            with self.subTest(tcp_hop=hop):
                (result, procs), octets, opens = self.measured(
                    lambda: run(clients, True, backend, 1))
                sys.stderr.write("  %s on TCP: %d TCP connections, %d IP bytes\n"
                                 % (hop, opens, octets))
                self.assertEqual(result, got[False])
                self.assertGreater(octets, smc_bound(opens), "with %s on TCP the IP counters "
                                   "stay within the SMC bound: the proof would not see it\n%s"
                                   % (hop, self.describe_all(procs)))

    # ---- iperf3 -----------------------------------------------------------------------

    def iperf(self, preload, args):
        port = free_port()
        srv = self.server(["iperf3", "-s", "-1", "-p", str(port)], port, preload,
                          name="iperf3-server")
        cli = self.run_client(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-J", "-t",
                               str(size("iperf_seconds"))] + list(args), preload,
                              others=[srv])
        if srv.finish(20) is None:
            self.fail("iperf3 server did not end\n%s" % srv.describe())
        report = json.loads("\n".join(cli.stdout_lines))
        return report, [srv, cli]

    def test_iperf3(self):
        """iperf3 -P 1, -P 4 and -R: every stream completes, data flows the way asked."""
        self.need("iperf3")
        for args in ([], ["-P", "4"], ["-R"]):
            with self.subTest(args=args):
                def run(preload):
                    report, procs = self.iperf(preload, args)
                    end = report["end"]
                    streams = len(end["streams"])
                    ok = (report.get("error") is None and end["sum_received"]["bytes"] > 0
                          and end["sum_sent"]["bytes"] >= end["sum_received"]["bytes"])
                    reverse = report["start"]["test_start"]["reverse"]
                    return (ok, streams, reverse), procs

                got = self.both_paths(run)
                self.assertEqual(got[True], got[False])
                self.assertEqual(got[True], (True, 4 if "-P" in args else 1,
                                             1 if "-R" in args else 0))

    # ---- sockperf ---------------------------------------------------------------------

    def test_sockperf(self):
        """sockperf ping-pong (every message answered, none dropped, duplicated or out of
        order) and throughput against one sockperf server."""
        self.need("sockperf")

        def run(preload):
            port = free_port()
            srv = self.server(["sockperf", "sr", "--tcp", "-i", "127.0.0.1", "-p",
                               str(port)], port, preload, name="sockperf-server")
            t = str(size("sockperf_seconds"))
            # --mps: sockperf sizes its sequence table for 600k messages/s unless told;
            # over SMC ping-pong goes faster than that and sockperf would stop with
            # "_seqN > m_maxSequenceNo".
            pp = self.run_client(["sockperf", "pp", "--tcp", "-i", "127.0.0.1", "-p",
                                  str(port), "-t", t, "--mps", "10000000"], preload,
                                 others=[srv])
            tp = self.run_client(["sockperf", "tp", "--tcp", "-i", "127.0.0.1", "-p",
                                  str(port), "-t", t, "-m", "1400"], preload, others=[srv])
            pp_text = "\n".join(pp.stdout_lines + pp.stderr_lines)
            tp_text = "\n".join(tp.stdout_lines + tp.stderr_lines)
            m = re.search(r"\[Valid Duration\].*SentMessages=(\d+); ReceivedMessages=(\d+)",
                          pp_text)
            clean = "# dropped messages = 0; # duplicated messages = 0; " \
                    "# out-of-order messages = 0" in pp_text
            sent = re.search(r"Total of (\d+) messages sent", tp_text)
            self.stop(srv)
            return (m is not None and m.group(1) == m.group(2) and int(m.group(1)) > 0,
                    clean, sent is not None and int(sent.group(1)) > 0), [srv, pp, tp]

        got = self.both_paths(run)
        self.assertEqual(got[True], (True, True, True))
        self.assertEqual(got[True], got[False])

    # ---- socat ------------------------------------------------------------------------

    def test_socat_relay(self):
        """A file through socat: source -> relay (TCP-LISTEN to TCP) -> sink, two SMC
        connections in a row; the sink's file equals the source's."""
        self.need("socat")
        data = os.path.join(self.work, "data")
        with open(data, "wb") as f:
            for _ in range(size("socat_file") // MIB):
                f.write(os.urandom(MIB))

        def run(preload):
            sink_port, relay_port = free_port(), free_port()
            out = os.path.join(self.work, "out-%d" % preload)
            sink = self.server(["socat", "-u", "TCP-LISTEN:%d,bind=127.0.0.1" % sink_port,
                                "CREATE:" + out], sink_port, preload, name="socat-sink")
            relay = self.server(["socat", "TCP-LISTEN:%d,bind=127.0.0.1" % relay_port,
                                 "TCP:127.0.0.1:%d" % sink_port], relay_port, preload,
                                name="socat-relay")
            src = self.run_client(["socat", "-u", "OPEN:" + data,
                                   "TCP:127.0.0.1:%d" % relay_port], preload,
                                  others=[sink, relay], name="socat-source")
            for p in (relay, sink):
                self.finish(p, 60, 0, [src])
            same = subprocess.run(["cmp", "-s", out, data]).returncode == 0
            os.unlink(out)
            return same, [sink, relay, src]

        got = self.both_paths(run)
        self.assertEqual(got, {True: True, False: True})


if __name__ == "__main__":
    main()
