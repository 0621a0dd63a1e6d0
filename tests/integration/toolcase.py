"""What test_tools.py (smcpre-run) and test_systemd.py (smcpre-systemd) share: where the
tools are, a test case that runs them with a clean environment in a scratch directory, and
two programs held alive after a transfer so that the tools can look at them.

Environment (tests/integration/meson.build): SMCPRE_RUN, SMCPRE_SYSTEMD, SMCPRE_STAT,
SMCPRE_BPF (the executables; default: tools/ of SMCPRE_LIB's build dir), and harness.py's.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import MIB, SmcTestCase, app  # noqa: E402

BUILD = os.path.dirname(os.path.dirname(os.path.abspath(harness.LIB)))
RUN = os.environ.get("SMCPRE_RUN") or os.path.join(BUILD, "tools", "smcpre-run")
SYSTEMD = os.environ.get("SMCPRE_SYSTEMD") or os.path.join(BUILD, "tools", "smcpre-systemd")
STAT = os.environ.get("SMCPRE_STAT") or os.path.join(BUILD, "tools", "smcpre-stat")
BPF = os.environ.get("SMCPRE_BPF") or os.path.join(BUILD, "tools", "smcpre-bpf")
LIB = os.path.realpath(harness.LIB)


def test_env_options():
    """SMCPRE_TEST_ENV (a whole file run in another mode) as smcpre-run options."""
    out = []
    for pair in filter(None, os.environ.get("SMCPRE_TEST_ENV", "").split(",")):
        key, _, value = pair.partition("=")
        if value == "@last-cpu":
            value = str(max(os.sched_getaffinity(0)))
        out += ["--set", "%s=%s" % (key, value)]
    return out


def mapped_files(pid):
    with open("/proc/%d/maps" % pid) as f:
        return {line.split(None, 5)[5].strip() for line in f if len(line.split(None, 5)) == 6}


def read(path):
    with open(path) as f:
        return f.read()


class ToolTestCase(SmcTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        missing = [p for p in (RUN, SYSTEMD) if not os.path.exists(p)]
        if missing:
            raise unittest.SkipTest("not built: " + ", ".join(missing))

    def setUp(self):
        super().setUp()
        self.scratch = tempfile.mkdtemp(prefix="smcpre-tools-")

    def tearDown(self):
        super().tearDown()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def tool_env(self, extra=None, library=LIB):
        """A tool's environment: no SMCPRE_* of the caller, no LD_PRELOAD; this test's
        runtime dir; SMCPRE_LIBRARY as given (None: unset)."""
        extra = dict(extra or {})
        extra.setdefault("SMCPRE_LIBRARY", library)
        return self.env(False, extra)

    def skip_launch_under_sanitizer(self, argv):
        """A program the tools launch gets LD_PRELOAD with libsmcpre.so alone, as a user's
        does; an ASan build of the library refuses to run without its runtime in front
        (the harness adds it only where it sets LD_PRELOAD itself). The tools' parsing
        and printing still run (--print-env, errors, unit files)."""
        if harness.SANITIZER_RUNTIME and "--" in argv:
            self.skipTest("launching through the tools needs a build without sanitizers")

    def run_tool(self, argv, env=None, cwd=None, timeout=30):
        self.skip_launch_under_sanitizer(argv)
        return subprocess.run(argv, env=env if env is not None else self.tool_env(), cwd=cwd,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              timeout=timeout)

    def start_held(self, runner, options, role, args, env=None, name=None):
        """tcpapp ROLE ... --hold started through `runner` (a smcpre-run) with `options`."""
        argv = [runner, "--log", "info"] + test_env_options() + list(options) + [
            "--", app("tcpapp"), role] + list(args) + ["--hold", "--timeout", "60"]
        self.skip_launch_under_sanitizer(argv)
        return self.start(argv, False, env if env is not None else self.tool_env(),
                          name or role, stdin_pipe=True)

    def held_pair(self, runner=RUN, server_options=(), client_options=(), server_env=None,
                  server_argv_prefix=None, nbytes=MIB):
        """A sink transfer between a server and a client that stay alive when done; the
        server is started through `runner` unless server_argv_prefix (a full argv head)
        says otherwise. Returns (server, client) once both printed 'done'."""
        sargs = ["--port", "0", "--mode", "sink", "--bytes", str(nbytes)]
        if server_argv_prefix is None:
            srv = self.start_held(runner, server_options, "server", sargs, server_env)
        else:
            srv = self.start(server_argv_prefix + [app("tcpapp"), "server"] + sargs +
                             ["--hold", "--timeout", "60"], False, server_env, "server",
                             stdin_pipe=True)
        m = srv.wait_stderr(r"^listening (\d+)$", 15)
        self.assertIsNotNone(m, "server did not listen\n" + srv.describe())
        cli = self.start_held(RUN, client_options, "client",
                              ["--host", "127.0.0.1", "--port", m.group(1), "--mode", "sink",
                               "--bytes", str(nbytes)])
        for p in (srv, cli):
            self.assertIsNotNone(p.wait_stderr(r"^done$", 60),
                                 "no 'done'\n" + self.describe_all(srv, cli))
        return srv, cli

    def stat_show(self, pid):
        out = self.run_tool([STAT, "show", "--json", "--runtime-dir", self.runtime_dir,
                             str(pid)])
        self.assertEqual(out.returncode, 0, "smcpre-stat: %s%s" % (out.stdout, out.stderr))
        return json.loads(out.stdout)["processes"][0]
