"""Shared helpers for smcpre's integration tests (Python 3 standard library only).

Every test gets its own SMCPRE_RUNTIME_DIR (so the host-wide listener registry of one test
never leaks into another), starts the test programs from tests/apps with or without
LD_PRELOAD=libsmcpre.so, bounds every wait with a timeout (a stuck process group is killed
and the test fails, it never hangs), and collects the JSON lines the programs print.

The path a connection took is proven independently of smcpre's own claims: the programs
report the kernel's TCP_INFO counters of their socket. Over SMC the kernel TCP connection
carries only the CLC handshake (~200 bytes); over TCP it carries the whole payload.

Environment (set by tests/integration/meson.build):
  SMCPRE_LIB   path of libsmcpre.so      (default: <repo>/build/preload/libsmcpre.so)
  SMCPRE_APPS  directory of the programs (default: <repo>/build/tests/apps)
  SMCPRE_TEST_ENV  K=V,K=V settings for every preloaded program (a file run in another
                   mode); the value @last-cpu stands for the highest CPU we may use

A sanitizer build of libsmcpre.so (scripts/test --sanitize) is found by its dependencies.
The programs stay uninstrumented, as a user's are, so the runtime must be loaded before
anything else: preload_value() puts it first in LD_PRELOAD. Reports go to files in the
test's runtime dir, and a test fails at its end when any appeared (take_sanitizer_reports).
"""

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
LIB = os.environ.get("SMCPRE_LIB") or os.path.join(REPO, "build", "preload", "libsmcpre.so")
APPS = os.environ.get("SMCPRE_APPS") or os.path.join(REPO, "build", "tests", "apps")

# Kernel TCP payload bytes an SMC connection may show (the CLC handshake is ~200 bytes).
SMC_TCP_LIMIT = 4096
# Transfers at least this large prove the path by TCP_INFO alone.
PROOF_MIN = 64 * 1024
# smcpre's info-level log line for a connection that moved onto SMC (both sides).
SMC_ESTABLISHED = "connection SMC established"

KIB = 1024


def raise_fd_limit(at_most=65536):
    """Raises this process's soft RLIMIT_NOFILE (inherited by every program a test starts)
    as far as the hard limit allows, up to `at_most`. smcpre holds at most 1/16 of the
    limit (NO_FDS beyond it): at a login shell's 1024, a client of 50 polled connections
    (redis-benchmark -c 50) would run partly on TCP, and a test that proves the SMC path
    would fail for a reason that is not its subject. test_fds sets its own limits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = at_most if hard == resource.RLIM_INFINITY else min(hard, at_most)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


raise_fd_limit()
MIB = 1024 * 1024


def cpu_seconds(pid):
    """User plus system CPU time of a process (all its threads), from /proc."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sanitizer_runtime(lib=LIB):
    """The AddressSanitizer runtime libsmcpre.so was linked with, or None (a normal
    build). ThreadSanitizer builds run only the unit suite (scripts/test --tsan)."""
    try:
        out = subprocess.run(["ldd", lib], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"^\s*libasan\.so\S*\s+=>\s+(\S+)", out, re.M)
    return m.group(1) if m else None


SANITIZER_RUNTIME = sanitizer_runtime() if os.path.exists(LIB) else None
# Leaks are checked in our own programs (tests/apps), which free what they allocate; an
# interpreter or a server of a distribution leaves its own at exit, which are not ours.
SANITIZER_LEAK_SUPPRESSIONS = os.path.join(HERE, "lsan.supp")


def preload_value(lib=LIB):
    """LD_PRELOAD for a program under smcpre: the sanitizer runtime first when the library
    needs one (ASan refuses to start behind another library), then the library."""
    return SANITIZER_RUNTIME + ":" + lib if SANITIZER_RUNTIME else lib


def sanitizer_env(report_dir):
    """ASAN_OPTIONS/UBSAN_OPTIONS/LSAN_OPTIONS of a preloaded program in a sanitizer build:
    every report to a file under report_dir (the program's own stderr is the test's
    subject), UBSan's reports fatal. Empty in a normal build."""
    if not SANITIZER_RUNTIME:
        return {}
    os.makedirs(report_dir, exist_ok=True)
    prefix = os.path.join(report_dir, "report")
    return {
        "ASAN_OPTIONS": "log_path=%s:abort_on_error=0:detect_leaks=1" % prefix,
        "UBSAN_OPTIONS": "log_path=%s:halt_on_error=1:print_stacktrace=1" % prefix,
        "LSAN_OPTIONS": "suppressions=%s:print_suppressions=0" % SANITIZER_LEAK_SUPPRESSIONS,
    }


def take_sanitizer_reports(report_dir):
    """The text of every sanitizer report under report_dir (removed as read)."""
    texts = []
    if os.path.isdir(report_dir):
        for name in sorted(os.listdir(report_dir)):
            path = os.path.join(report_dir, name)
            with open(path, errors="replace") as f:
                text = f.read()
            os.unlink(path)
            # A file may hold only LeakSanitizer's notes about threads it could not stop
            # (a program exiting while its threads still run); those are no findings.
            if re.search(r"ERROR: |runtime error: |WARNING: ThreadSanitizer", text):
                texts.append("=== %s\n%s" % (name, text))
    return texts


def app(name):
    return os.path.join(APPS, name)


def registry_entries(runtime_dir):
    """The listener registry's entries (config/registry.h), every user's subtree:
    [(uid, "tcp-<port>-<inode>")], sorted."""
    top = os.path.join(runtime_dir, "listeners")
    out = []
    if os.path.isdir(top):
        for uid in os.listdir(top):
            sub = os.path.join(top, uid)
            if uid.isdigit() and os.path.isdir(sub):
                out += [(int(uid), name) for name in os.listdir(sub)]
    return sorted(out)


def registry_ports(runtime_dir):
    """The ports with an entry in the listener registry, sorted."""
    return sorted({int(name.split("-")[1]) for _, name in registry_entries(runtime_dir)})


def publish_as_listener(runtime_dir, lsock):
    """Makes a listening socket of ours look like an smcpre listener: its registry entry,
    as the library writes it (<runtime_dir>/listeners/<uid>/tcp-<port>-<inode>). Returns
    the entry's open file (the library holds LOCK_SH on it while it listens)."""
    top = os.path.join(runtime_dir, "listeners")
    os.makedirs(top, exist_ok=True)
    os.chmod(top, 0o1777)
    sub = os.path.join(top, str(os.geteuid()))
    os.makedirs(sub, exist_ok=True)
    os.chmod(sub, 0o711)
    name = "tcp-%d-%d" % (lsock.getsockname()[1], os.fstat(lsock.fileno()).st_ino)
    entry = open(os.path.join(sub, name), "w")
    os.chmod(entry.name, 0o600)
    return entry


class Proc:
    """A child process in its own process group; stdout and stderr are collected by
    threads so that neither pipe can fill up and block the child."""

    def __init__(self, argv, env, name, stdin_pipe=False):
        self.name = name
        self.argv = argv
        self.stdout_lines = []
        self.stderr_lines = []
        self._cond = threading.Condition()
        self.popen = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self._readers = [
            threading.Thread(target=self._pump, args=(self.popen.stdout, self.stdout_lines),
                             daemon=True),
            threading.Thread(target=self._pump, args=(self.popen.stderr, self.stderr_lines),
                             daemon=True),
        ]
        for t in self._readers:
            t.start()

    def _pump(self, pipe, lines):
        for raw in iter(pipe.readline, b""):
            with self._cond:
                lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._cond.notify_all()
        pipe.close()
        with self._cond:
            self._cond.notify_all()

    @property
    def pid(self):
        return self.popen.pid

    def wait_stderr(self, pattern, timeout):
        """Waits for a stderr line matching `pattern`; returns the match or None (on
        timeout or when the process ended first)."""
        return self._wait_line(self.stderr_lines, self._readers[1], pattern, timeout)

    def wait_stdout(self, pattern, timeout):
        """wait_stderr for stdout."""
        return self._wait_line(self.stdout_lines, self._readers[0], pattern, timeout)

    def _wait_line(self, lines, reader, pattern, timeout):
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in lines[seen:]:
                    m = rx.search(line)
                    if m:
                        return m
                seen = len(lines)
                left = deadline - time.monotonic()
                if left <= 0 or (self.popen.poll() is not None and not reader.is_alive()):
                    return None
                self._cond.wait(min(left, 0.1))

    def finish(self, timeout):
        """Waits for exit; kills the process group and returns None on timeout."""
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        for t in self._readers:
            t.join(5)
        return self.popen.returncode

    def alive(self):
        return self.popen.poll() is None

    def close_stdin(self):
        """Lets a program started with stdin_pipe (waiting with --hold) exit."""
        if self.popen.stdin is not None and not self.popen.stdin.closed:
            self.popen.stdin.close()

    def kill(self):
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait(10)
        self.close_stdin()
        for t in self._readers:
            t.join(5)

    def records(self):
        out = []
        for line in list(self.stdout_lines):
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def stderr_text(self):
        with self._cond:
            return "\n".join(self.stderr_lines)

    def describe(self, tail=40):
        with self._cond:
            err = self.stderr_lines[-tail:]
            out = self.stdout_lines[-tail:]
            # A debug log's tail is often the aftermath (flushed work requests); the first
            # warnings before it usually say what went wrong.
            head = self.stderr_lines[:len(self.stderr_lines) - len(err)]
            first = [l for l in head if re.search(r" (warning|error|critical): ", l)][:10]
        text = "--- %s: %s (exit %s)\n    stdout: %s\n" % (
            self.name, " ".join(self.argv), self.popen.returncode,
            "\n            ".join(out) or "(none)")
        if first:
            text += "    first warnings:\n      %s\n" % "\n      ".join(first)
        return text + "    stderr:\n      %s" % ("\n      ".join(err) or "(none)")


class SmcTestCase(unittest.TestCase):
    """Base class: a runtime dir per test, process bookkeeping, path assertions."""

    # Default log level for preloaded processes: info shows connection outcomes, which
    # makes failures readable and lets small transfers prove their path by log.
    log_level = "info"

    @classmethod
    def setUpClass(cls):
        missing = [p for p in (LIB, app("tcpapp")) if not os.path.exists(p)]
        if missing:
            raise unittest.SkipTest("not built: " + ", ".join(missing))

    def setUp(self):
        self.runtime_dir = tempfile.mkdtemp(prefix="smcpre-it-")
        self.procs = []

    def tearDown(self):
        for p in self.procs:
            p.kill()
        reports = take_sanitizer_reports(self.sanitizer_dir())
        shutil.rmtree(self.runtime_dir, ignore_errors=True)
        shutil.rmtree(self.sanitizer_dir(), ignore_errors=True)
        if reports:
            self.fail("sanitizer reports from preloaded programs:\n" + "\n".join(reports))

    def sanitizer_dir(self):
        """Where the preloaded programs of this test write sanitizer reports (beside the
        runtime dir, whose content some tests check)."""
        return self.runtime_dir + "-sanitizer"

    # ---- processes ------------------------------------------------------------------

    def env(self, preload, extra=None):
        """The environment of a test program: the caller's minus every SMCPRE_* variable
        (a developer's own settings must not change what a test means, and smcpre would
        warn about SMCPRE_LIB/SMCPRE_APPS, which are ours)."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("SMCPRE_") and k != "LD_PRELOAD"}
        env["SMCPRE_RUNTIME_DIR"] = self.runtime_dir
        # A host's /etc/smcpre.conf must not change what a test means either.
        env["SMCPRE_CONFIG"] = "none"
        if preload:
            env["LD_PRELOAD"] = preload_value()
            env.update(sanitizer_env(self.sanitizer_dir()))
            env["SMCPRE_LOG"] = self.log_level
            # A whole file run again with some setting (meson: transfer_backlog, ...).
            for pair in filter(None, os.environ.get("SMCPRE_TEST_ENV", "").split(",")):
                key, _, value = pair.partition("=")
                if value == "@last-cpu":
                    value = str(max(os.sched_getaffinity(0)))
                env[key] = value
        for k, v in (extra or {}).items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        return env

    def start(self, argv, preload, env=None, name=None, stdin_pipe=False):
        p = Proc(argv, self.env(preload, env), name or os.path.basename(argv[0]), stdin_pipe)
        self.procs.append(p)
        return p

    def start_server(self, program, args, preload=True, env=None, name="server", timeout=15,
                     stdin_pipe=False):
        """Starts a server on port 0 and returns (proc, port) once it prints
        'listening <port>'."""
        p = self.start([app(program), "server", "--port", "0"] + list(args), preload, env, name,
                       stdin_pipe)
        m = p.wait_stderr(r"^listening (\d+)$", timeout)
        if m is None:
            p.kill()
            self.fail("server did not report its port within %ss\n%s" % (timeout, p.describe()))
        return p, int(m.group(1))

    def finish(self, proc, timeout, expect_rc=0, others=()):
        """Waits for `proc`; fails (with every process's output) on timeout or a wrong
        exit status."""
        rc = proc.finish(timeout)
        if rc is None:
            self.fail("%s did not finish within %ss (killed)\n%s" % (
                proc.name, timeout, self.describe_all(proc, others)))
        if expect_rc is not None and rc != expect_rc:
            self.fail("%s exited %s, expected %s\n%s" % (
                proc.name, rc, expect_rc, self.describe_all(proc, others)))
        return rc

    def release(self, *procs):
        """Lets programs waiting with --hold exit (closes their stdin) and waits for each
        to exit 0."""
        for p in procs:
            p.close_stdin()
        for p in procs:
            self.finish(p, 30, 0, procs)

    def describe_all(self, *procs_and_lists):
        seen, parts = set(), []
        for item in procs_and_lists:
            for p in (item if isinstance(item, (list, tuple)) else [item]):
                if p is not None and id(p) not in seen:
                    seen.add(id(p))
                    parts.append(p.describe())
        return "\n".join(parts)

    def transfer(self, mode, nbytes, server_args=(), client_args=(), server_preload=True,
                 client_preload=True, server_env=None, client_env=None, timeout=90,
                 server_knows_size=True, host="127.0.0.1", start_timeout=15):
        """One tcpapp server + client run; returns (server, client, server_records,
        client_records) after checking both exited 0 and every record is ok. The client
        connects to `host` (the server's --bind, if given in server_args, must match)."""
        sargs = ["--mode", mode] + list(server_args)
        if server_knows_size or mode == "source":
            sargs += ["--bytes", str(nbytes)]
        srv, port = self.start_server("tcpapp", sargs, server_preload, server_env,
                                      timeout=start_timeout)
        cli = self.start([app("tcpapp"), "client", "--host", host, "--port", str(port),
                          "--mode", mode, "--bytes", str(nbytes),
                          "--timeout", str(timeout - 5)] + list(client_args),
                         client_preload, client_env, "client")
        self.finish(cli, timeout, 0, [srv])
        self.finish(srv, 20, 0, [cli])
        srec, crec = srv.records(), cli.records()
        self.assert_records_ok(srec, crec, srv, cli)
        return srv, cli, srec, crec

    # ---- assertions -----------------------------------------------------------------

    def assert_records_ok(self, srec, crec, *procs):
        self.assertTrue(srec and crec, "missing JSON output\n" + self.describe_all(*procs))
        for r in srec + crec:
            self.assertTrue(r.get("ok"), "not ok: %s\n%s" % (r, self.describe_all(*procs)))

    @staticmethod
    def moved(r):
        return max(r.get("bytes_sent", 0), r.get("bytes_received", 0))

    def assert_smc(self, srec, crec, procs=(), by_log=True):
        """Both ends used SMC: the kernel TCP connection carried at most SMC_TCP_LIMIT
        payload bytes in each direction. A transfer smaller than PROOF_MIN cannot prove
        that by itself; then (by_log) both processes must have logged SMC_ESTABLISHED."""
        small = False
        for r in srec + crec:
            for key in ("tcp_bytes_received", "tcp_bytes_acked"):
                self.assertLess(
                    r[key], SMC_TCP_LIMIT,
                    "%s %s=%d although %d bytes moved: this connection used TCP, not SMC\n%s"
                    % (r["role"], key, r[key], self.moved(r), self.describe_all(*procs)))
            if self.moved(r) < PROOF_MIN:
                small = True
        if small and by_log:
            for p in procs:
                self.assertTrue(SMC_ESTABLISHED in p.stderr_text(),
                                "%s: small transfer, and no '%s' log line\n%s"
                                % (p.name, SMC_ESTABLISHED, self.describe_all(*procs)))

    def assert_tcp(self, srec, crec, procs=()):
        """The payload went over kernel TCP: every byte an end received was received by
        its kernel TCP socket too."""
        for r in srec + crec:
            if r["bytes_received"] > 0:
                self.assertGreaterEqual(
                    r["tcp_bytes_received"], r["bytes_received"],
                    "%s received %d bytes but its TCP socket only %d: not plain TCP\n%s"
                    % (r["role"], r["bytes_received"], r["tcp_bytes_received"],
                       self.describe_all(*procs)))


def main():
    unittest.main(verbosity=2)
