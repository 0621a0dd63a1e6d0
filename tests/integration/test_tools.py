#!/usr/bin/env python3
"""smcpre-run and smcpre-systemd, on live processes under the preload.

smcpre-run: the program keeps smcpre-run's pid (exec), LD_PRELOAD gets the library
appended (an existing preload kept, never twice, another copy refused), the tuning
variables reach the program (its environ, and smcpre-stat's view of its pool), an SMC
connection between two programs started by it (proven by TCP_INFO and the log), bad
values refused before anything runs with the variable named (exit 125), env(1)'s exit
codes (126, 127), and where it finds the library: SMCPRE_LIBRARY, the build tree, and an
installation made with `meson install --destdir` (the man pages installed with it).

smcpre-systemd: enable/status/disable on a scratch root (--root) holding unit files; the
drop-in's content and quoting, `systemd-analyze verify --root`, a unit's own LD_PRELOAD
kept, templates, foreign files left alone, and the drop-in's environment applied to a live
server that a smcpre-run client reaches over SMC.

Environment (tests/integration/meson.build): SMCPRE_RUN, SMCPRE_SYSTEMD, SMCPRE_STAT (the
executables; default: tools/ of SMCPRE_LIB's build dir), and harness.py's.
"""

import glob
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import MIB, REPO, SmcTestCase, app, main  # noqa: E402

BUILD = os.path.dirname(os.path.dirname(os.path.abspath(harness.LIB)))
RUN = os.environ.get("SMCPRE_RUN") or os.path.join(BUILD, "tools", "smcpre-run")
SYSTEMD = os.environ.get("SMCPRE_SYSTEMD") or os.path.join(BUILD, "tools", "smcpre-systemd")
STAT = os.environ.get("SMCPRE_STAT") or os.path.join(BUILD, "tools", "smcpre-stat")
LIB = os.path.realpath(harness.LIB)
MAN = os.path.join(REPO, "doc", "man")

USAGE = 125  # smcpre-run's own failures, as env(1)


def test_env_options():
    """SMCPRE_TEST_ENV (a whole file run in another mode) as smcpre-run options."""
    out = []
    for pair in filter(None, os.environ.get("SMCPRE_TEST_ENV", "").split(",")):
        key, _, value = pair.partition("=")
        if value == "@last-cpu":
            value = str(max(os.sched_getaffinity(0)))
        out += ["--set", "%s=%s" % (key, value)]
    return out


def proc_environ(pid):
    with open("/proc/%d/environ" % pid, "rb") as f:
        entries = f.read().split(b"\0")
    return dict(e.decode().split("=", 1) for e in entries if b"=" in e)


def mapped_files(pid):
    with open("/proc/%d/maps" % pid) as f:
        return {line.split(None, 5)[5].strip() for line in f if len(line.split(None, 5)) == 6}


def read(path):
    with open(path) as f:
        return f.read()


def parse_print_env(text):
    """smcpre-run --print-env's NAME=VALUE lines (values here are never quoted)."""
    return dict(line.split("=", 1) for line in text.splitlines())


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


class RunTest(ToolTestCase):

    def test_execs_in_the_same_pid_with_the_variables(self):
        script = 'echo "pid=$$"; echo "LD_PRELOAD=$LD_PRELOAD"; env | grep "^SMCPRE_" | sort'
        self.skip_launch_under_sanitizer(["--"])
        p = subprocess.Popen([RUN, "--pool-size", "2K", "--log-file", "rel.log", "--set",
                              "SMCPRE_ENABLE=1", "--", "sh", "-c", script],
                             env=self.tool_env(), cwd=self.scratch, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        stdout, stderr = p.communicate(timeout=20)
        self.assertEqual(p.returncode, 0, stderr)
        out = dict(line.split("=", 1) for line in stdout.splitlines())
        self.assertEqual(int(out["pid"]), p.pid, "not exec'd in smcpre-run's process")
        self.assertEqual(out["LD_PRELOAD"], LIB)
        self.assertEqual(out["SMCPRE_POOL_SIZE"], "2K")
        self.assertEqual(out["SMCPRE_ENABLE"], "1")
        # A relative path is made absolute (the program may chdir); SMCPRE_LIBRARY is
        # smcpre-run's own, not the program's.
        self.assertEqual(out["SMCPRE_LOG_FILE"], os.path.join(self.scratch, "rel.log"))
        self.assertNotIn("SMCPRE_LIBRARY", out)

    def test_smc_connection_between_two_programs_it_started(self):
        srv, cli = self.held_pair(server_options=["--pool-size", "2K"],
                                  client_options=["--rmb-size", "64K"])
        for p in (srv, cli):
            # The program itself holds smcpre-run's pid, and the library is mapped in it.
            self.assertEqual(os.path.realpath("/proc/%d/exe" % p.pid),
                             os.path.realpath(app("tcpapp")))
            self.assertIn(LIB, mapped_files(p.pid), p.describe())
            self.assertEqual(proc_environ(p.pid)["LD_PRELOAD"], LIB)
        self.assertEqual(proc_environ(cli.pid)["SMCPRE_RMB_SIZE"], "64K")
        if os.path.exists(STAT):
            self.assertEqual(self.stat_show(srv.pid)["process"]["pool_size"], 2048)
        self.release(srv, cli)
        self.assert_records_ok(srv.records(), cli.records(), srv, cli)
        self.assert_smc(srv.records(), cli.records(), (srv, cli))

    def test_existing_preload_is_kept_and_not_doubled(self):
        # Bare names: ld.so finds them in its search path, so the program runs cleanly.
        own = "libm.so.6 libdl.so.2"
        env = self.tool_env({"LD_PRELOAD": own})
        p = self.start_held(RUN, [], "server", ["--port", "0", "--mode", "sink"], env)
        self.assertIsNotNone(p.wait_stderr(r"^listening", 15), p.describe())
        self.assertEqual(proc_environ(p.pid)["LD_PRELOAD"], own + ":" + LIB)
        maps = mapped_files(p.pid)
        self.assertIn(LIB, maps)
        self.assertTrue(any(m.endswith("/libm.so.6") for m in maps), maps)
        p.kill()

        # Already there, by the same path or another name of the same file: unchanged.
        link = os.path.join(self.scratch, "link.so")
        os.symlink(LIB, link)
        for existing in (LIB, "libm.so.6:" + LIB + " ", "libm.so.6 " + link):
            out = self.run_tool([RUN, "--print-env"], self.tool_env({"LD_PRELOAD": existing}))
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertEqual(out.stdout.splitlines()[0], "LD_PRELOAD=" + shlex_quote(existing))

        # Another copy of the library: two interposers in one process cannot work.
        other = os.path.join(self.scratch, "libsmcpre.so")
        shutil.copy(LIB, other)
        out = self.run_tool([RUN, "--", "true"], self.tool_env({"LD_PRELOAD": other}))
        self.assertEqual(out.returncode, USAGE)
        self.assertIn("another libsmcpre.so (%s)" % other, out.stderr)

    def test_bad_values_are_refused_before_anything_runs(self):
        marker = os.path.join(self.scratch, "ran")
        program = ["--", "sh", "-c", "touch " + marker]
        cases = [
            (["--pool-size", "0"], "SMCPRE_POOL_SIZE"),
            (["--pool-size=2M"], "SMCPRE_POOL_SIZE"),
            (["--rmb-size", "3K"], "SMCPRE_RMB_SIZE"),
            (["--backlog-cpus", "3-1"], "SMCPRE_BACKLOG_CPUS"),
            (["--device", "mlx5 0"], "SMCPRE_DEVICE"),
            (["--peers", "10.0.0.0/33"], "SMCPRE_PEERS"),
            (["--log", "loud"], "SMCPRE_LOG"),
            (["--spin-us", "-1"], "SMCPRE_SPIN_US"),
            (["--handshake-timeout-ms", "0"], "SMCPRE_HANDSHAKE_TIMEOUT_MS"),
            (["--config", os.path.join(self.scratch, "missing.conf")], "SMCPRE_CONFIG"),
            (["--set", "SMCPRE_ENABLE=maybe"], "SMCPRE_ENABLE"),
            (["--set", "SMCPRE_NO_SUCH=1"], "unknown variable SMCPRE_NO_SUCH"),
            (["--set", "HOME=/"], "no smcpre variable"),
            (["--set", "SMCPRE_LOG"], "expected NAME=VALUE"),
            (["--pool-size"], "--pool-size needs a value"),
            (["--pool"], "unknown option --pool"),
        ]
        for options, expected in cases:
            with self.subTest(options=options):
                args = options if options[-1] in ("--pool-size", "--pool") else options + program
                out = self.run_tool([RUN] + args)
                self.assertEqual(out.returncode, USAGE, out.stderr)
                self.assertIn(expected, out.stderr)
                self.assertTrue(out.stderr.startswith("smcpre-run: "), out.stderr)
                self.assertFalse(os.path.exists(marker), "the program ran")
        # No program at all.
        out = self.run_tool([RUN, "--log", "info"])
        self.assertEqual(out.returncode, USAGE)
        self.assertIn("no PROGRAM", out.stderr)

        # A bad value inherited from the environment is refused too (the library would
        # turn itself off), unless an option replaces it.
        env = self.tool_env({"SMCPRE_RMB_SIZE": "1G"})
        out = self.run_tool([RUN] + program, env)
        self.assertEqual(out.returncode, USAGE)
        self.assertIn('SMCPRE_RMB_SIZE="1G"', out.stderr)
        self.assertFalse(os.path.exists(marker))
        out = self.run_tool([RUN, "--rmb-size", "1M"] + program, env)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertTrue(os.path.exists(marker))

        # A policy file with a bad line: named with its line before the program runs.
        os.unlink(marker)
        policy = os.path.join(self.scratch, "policy.conf")
        with open(policy, "w") as f:
            f.write("# comment\nSMCPRE_RMB_SIZE = 1M\nbogus line here\n")
        os.chmod(policy, 0o644)
        out = self.run_tool([RUN, "--config", policy] + program)
        self.assertEqual(out.returncode, USAGE, out.stderr)
        self.assertIn("%s:3" % policy, out.stderr)
        self.assertFalse(os.path.exists(marker))

    def test_exit_codes_like_env(self):
        # (A PATH entry we may not search makes it 126, as with env(1): a plain PATH.)
        env = self.tool_env({"PATH": "/usr/bin:/bin"})
        out = self.run_tool([RUN, "--", "smcpre-no-such-program"], env)
        self.assertEqual(out.returncode, 127, out.stderr)
        self.assertIn("smcpre-no-such-program", out.stderr)
        out = self.run_tool([RUN, os.path.join(self.scratch, "none", "prog")])
        self.assertEqual(out.returncode, 127, out.stderr)
        not_executable = os.path.join(self.scratch, "script")
        with open(not_executable, "w") as f:
            f.write("#!/bin/sh\nexit 0\n")
        out = self.run_tool([RUN, not_executable])
        self.assertEqual(out.returncode, 126, out.stderr)
        out = self.run_tool([RUN, "sh", "-c", "exit 7"])
        self.assertEqual(out.returncode, 7, out.stderr)
        # Options end at the program: its own options are not smcpre-run's.
        out = self.run_tool([RUN, "sh", "-c", "echo $0", "--pool-size"])
        self.assertEqual((out.returncode, out.stdout.strip()), (0, "--pool-size"), out.stderr)

    def test_help_and_version(self):
        out = self.run_tool([RUN, "--help"])
        self.assertEqual(out.returncode, 0)
        for variable in ("SMCPRE_POOL_SIZE", "SMCPRE_BACKLOG_CPUS", "SMCPRE_CONFIG",
                         "SMCPRE_LIBRARY", "--print-env", "127"):
            self.assertIn(variable, out.stdout)
        out = self.run_tool([RUN, "--version"])
        self.assertRegex(out.stdout, r"^smcpre-run \d+\.\d+")

    def test_library_lookup(self):
        # SMCPRE_LIBRARY, relative: made absolute.
        out = self.run_tool([RUN, "--print-env"], cwd=os.path.dirname(LIB),
                            env=self.tool_env(library=os.path.basename(LIB)))
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(parse_print_env(out.stdout)["LD_PRELOAD"], LIB)
        # SMCPRE_LIBRARY must exist, and be usable in LD_PRELOAD.
        missing = os.path.join(self.scratch, "nope.so")
        out = self.run_tool([RUN, "true"], self.tool_env(library=missing))
        self.assertEqual(out.returncode, USAGE)
        self.assertIn("SMCPRE_LIBRARY=" + missing, out.stderr)
        colon = os.path.join(self.scratch, "a:b.so")
        os.symlink(LIB, colon)
        out = self.run_tool([RUN, "true"], self.tool_env(library=colon))
        self.assertEqual(out.returncode, USAGE)
        self.assertIn("colon", out.stderr)
        # Unset: the build tree beside smcpre-run.
        if os.path.dirname(os.path.dirname(os.path.realpath(RUN))) != BUILD:
            self.skipTest("smcpre-run is not from SMCPRE_LIB's build tree")
        out = self.run_tool([RUN, "--print-env"], self.tool_env(library=None))
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(parse_print_env(out.stdout)["LD_PRELOAD"], LIB)

    def test_installed_tree(self):
        """meson install --destdir: the programs, the library and the man pages in their
        places, and the installed smcpre-run finds the installed library by itself."""
        meson = shutil.which("meson")
        if meson is None or not os.path.isdir(os.path.join(BUILD, "meson-private")):
            self.skipTest("no meson, or %s is no meson build dir" % BUILD)
        if not os.access(os.path.join(BUILD, "meson-logs"), os.W_OK):
            self.skipTest("meson install logs into %s/meson-logs, which we may not write" % BUILD)
        dest = os.path.join(self.scratch, "dest")
        out = self.run_tool([meson, "install", "-C", BUILD, "--destdir", dest, "--no-rebuild",
                             "--quiet"], timeout=120)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        info = json.loads(self.run_tool([meson, "introspect", BUILD, "--buildoptions"]).stdout)
        opts = {o["name"]: o["value"] for o in info}
        root = dest + opts["prefix"]
        bindir = os.path.join(root, opts["bindir"])
        libdir = os.path.join(root, opts["libdir"])
        mandir = os.path.join(root, opts["mandir"])
        for program in ("smcpre-run", "smcpre-systemd", "smcpre-stat"):
            path = os.path.join(bindir, program)
            self.assertTrue(os.access(path, os.X_OK), path)
        installed_lib = os.path.join(libdir, "libsmcpre.so")
        self.assertTrue(os.path.isfile(installed_lib), installed_lib)
        for page in ("man1/smcpre-run.1", "man1/smcpre-stat.1", "man7/smcpre.7",
                     "man8/smcpre-systemd.8"):
            self.assertTrue(os.path.isfile(os.path.join(mandir, page)), page)
        if os.path.exists(os.path.join(MAN, "smcpre.conf.5")):
            self.assertTrue(os.path.isfile(os.path.join(mandir, "man5/smcpre.conf.5")))

        runner = os.path.join(bindir, "smcpre-run")
        out = self.run_tool([runner, "--print-env"], self.tool_env(library=None))
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(parse_print_env(out.stdout)["LD_PRELOAD"], installed_lib)
        # And a live program started by it has that library, talking SMC to a client
        # started by the build tree's smcpre-run.
        srv, cli = self.held_pair(runner, server_env=self.tool_env(library=None))
        self.assertIn(installed_lib, mapped_files(srv.pid))
        self.release(srv, cli)
        self.assert_smc(srv.records(), cli.records(), (srv, cli))

    def test_man_pages_and_help_agree(self):
        """Every option --help lists is in the man page, every variable the settings table
        parses is in smcpre(7), and the pages format without warnings."""
        for tool, page in ((RUN, "smcpre-run.1"), (SYSTEMD, "smcpre-systemd.8")):
            text = read(os.path.join(MAN, page))
            helptext = self.run_tool([tool, "--help"]).stdout
            options = set(re.findall(r"^  (--[a-z][a-z-]*)", helptext, re.M))
            self.assertGreater(len(options), 20, helptext)
            for option in options:
                self.assertIn(option.replace("-", "\\-"), text, "%s: %s" % (page, option))
        with open(os.path.join(REPO, "config", "settings_table.cpp")) as f:
            variables = set(re.findall(r'^\s*\{"(SMCPRE_[A-Z_]+)",', f.read(), re.M))
        self.assertGreater(len(variables), 20)
        overview = read(os.path.join(MAN, "smcpre.7"))
        for variable in variables:
            self.assertIn(".B " + variable + "\n", overview, "smcpre.7: " + variable)
        groff = shutil.which("groff")
        if groff is None:
            self.skipTest("groff is not installed")
        for page in ("smcpre-run.1", "smcpre-stat.1", "smcpre.7", "smcpre-systemd.8"):
            out = self.run_tool([groff, "-t", "-man", "-Tutf8", "-ww", os.path.join(MAN, page)])
            self.assertEqual((out.returncode, out.stderr), (0, ""), page)


def shlex_quote(value):
    """--print-env's quoting: bare when harmless, else single quotes."""
    if value and re.fullmatch(r"[A-Za-z0-9@%+=:,./_-]+", value):
        return value
    return "'" + value.replace("'", "'\\''") + "'"


UNIT = """[Unit]
Description=smcpre-systemd test unit
DefaultDependencies=no

[Service]
ExecStart=/usr/bin/demo-daemon --serve
Environment=OTHER=1 \\
  "LD_PRELOAD=%s"
"""


def environment_lines(text):
    """The drop-in's Environment= assignments as systemd reads the quoting we write:
    one double-quoted word per line, \\\\ and \\" escaped, %% for %."""
    out = {}
    for line in text.splitlines():
        if not line.startswith("Environment="):
            continue
        word = line[len("Environment="):]
        assert word.startswith('"') and word.endswith('"'), line
        value = re.sub(r'\\(.)', r"\1", word[1:-1]).replace("%%", "%")
        name, _, value = value.partition("=")
        out[name] = value
    return out


class SystemdTest(ToolTestCase):

    LIBRARY = "/opt/smcpre/lib/libsmcpre.so"  # the library's path inside the root

    def setUp(self):
        super().setUp()
        self.root = os.path.join(self.scratch, "root")
        self.units = os.path.join(self.root, "etc", "systemd", "system")
        os.makedirs(self.units)
        os.makedirs(os.path.join(self.root, "usr", "bin"))
        shutil.copy("/bin/true", os.path.join(self.root, "usr", "bin", "demo-daemon"))
        os.makedirs(os.path.dirname(self.root + self.LIBRARY))
        shutil.copy(LIB, self.root + self.LIBRARY)

    def write_unit(self, name, preload=None, where=None):
        path = os.path.join(where or self.units, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        text = UNIT % preload if preload else UNIT.replace(' \\\n  "LD_PRELOAD=%s"', "")
        with open(path, "w") as f:
            f.write(text)
        return path

    def dropin(self, unit):
        return os.path.join(self.units, unit + ".d", "smcpre.conf")

    def systemd(self, *args, expect_rc=0, root=True):
        argv = [SYSTEMD] + list(args) + (["--root", self.root] if root else [])
        out = self.run_tool(argv)
        self.assertEqual(out.returncode, expect_rc, "%s: %s%s" % (
            " ".join(argv), out.stdout, out.stderr))
        return out

    def verify(self, unit):
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            self.skipTest("systemd-analyze is not installed (Debian: apt-get install systemd)")
        out = self.run_tool([analyze, "verify", "--root=" + self.root, "--man=no", unit])
        self.assertEqual((out.returncode, out.stdout + out.stderr), (0, ""),
                         "systemd-analyze verify %s" % unit)

    def test_enable_status_disable(self):
        self.write_unit("demo.service", preload="/usr/lib/libown.so")
        out = self.systemd("enable", "demo", "--library", self.LIBRARY, "--pool-size", "32K",
                           "--log", "info", "--backlog-cpus", "none")
        path = self.dropin("demo.service")
        self.assertIn("wrote " + path, out.stdout)
        self.assertIn("systemctl daemon-reload && systemctl restart demo.service", out.stdout)
        self.assertEqual(out.stderr, "")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o644)
        self.assertEqual(os.listdir(os.path.dirname(path)), ["smcpre.conf"])  # no temp file
        text = read(path)
        self.assertTrue(text.startswith("# Generated by smcpre-systemd"), text)
        self.assertIn("smcpre-systemd disable demo.service", text)
        self.assertIn("\n[Service]\n", text)
        self.assertEqual(environment_lines(text), {
            "LD_PRELOAD": "/usr/lib/libown.so:" + self.LIBRARY,
            "SMCPRE_POOL_SIZE": "32K",
            "SMCPRE_LOG": "info",
            "SMCPRE_BACKLOG_CPUS": "none",
        })
        self.verify("demo.service")

        out = self.systemd("status", "demo.service")
        self.assertIn("smcpre is enabled for demo.service by " + path, out.stdout)
        self.assertIn(text, out.stdout)
        self.assertEqual(out.stderr, "")

        # Enabling again replaces the file: the library is not appended twice.
        out = self.systemd("enable", "demo", "--library", self.LIBRARY, "-q")
        self.assertEqual(out.stdout, "")
        self.assertEqual(environment_lines(read(path)),
                         {"LD_PRELOAD": "/usr/lib/libown.so:" + self.LIBRARY})

        out = self.systemd("disable", "demo")
        self.assertIn("removed " + path, out.stdout)
        self.assertFalse(os.path.exists(os.path.dirname(path)), "empty UNIT.d left behind")
        self.assertTrue(os.path.exists(os.path.join(self.units, "demo.service")))
        out = self.systemd("status", "demo", expect_rc=3)
        self.assertIn("not enabled", out.stdout)
        self.systemd("disable", "demo")  # nothing to do: no error
        self.verify("demo.service")

    def test_values_are_quoted_for_systemd(self):
        self.write_unit("demo.service")
        odd = '/var/log/smc "x" \\y %i.log'
        self.systemd("enable", "demo", "--library", self.LIBRARY, "--log-file", odd,
                     "--set", "SMCPRE_PEERS=10.0.0.0/8:5000,*:6379")
        text = read(self.dropin("demo.service"))
        self.assertIn('Environment="SMCPRE_LOG_FILE=/var/log/smc \\"x\\" \\\\y %%i.log"\n',
                      text)
        self.assertEqual(environment_lines(text)["SMCPRE_LOG_FILE"], odd)
        self.assertEqual(environment_lines(text)["LD_PRELOAD"], self.LIBRARY)
        self.verify("demo.service")

    def test_unit_preload_from_drop_ins_and_overrides(self):
        self.write_unit("web-app.service", preload="/usr/lib/libunit.so")
        # A vendor drop-in (lower-priority directory, sorted before smcpre.conf) wins over
        # the unit file; one sorted after smcpre.conf replaces our value: a warning.
        vendor = os.path.join(self.root, "usr", "lib", "systemd", "system", "web-.service.d")
        os.makedirs(vendor)
        with open(os.path.join(vendor, "10-alloc.conf"), "w") as f:
            f.write("[Service]\nEnvironment=LD_PRELOAD=/usr/lib/libjemalloc.so.2\n")
        later = os.path.join(self.units, "web-app.service.d")
        os.makedirs(later)
        with open(os.path.join(later, "zz-log.conf"), "w") as f:
            f.write("[Service]\nEnvironment=SMCPRE_LOG=off\n")
        out = self.systemd("enable", "web-app", "--library", self.LIBRARY, "--log", "info")
        values = environment_lines(read(self.dropin("web-app.service")))
        self.assertEqual(values["LD_PRELOAD"], "/usr/lib/libjemalloc.so.2:" + self.LIBRARY)
        self.assertIn("10-alloc.conf:2", out.stdout)
        self.assertIn("zz-log.conf:2: sets SMCPRE_LOG after smcpre.conf", out.stderr)
        self.verify("web-app.service")
        # disable leaves the other drop-in and its directory alone.
        self.systemd("disable", "web-app")
        self.assertEqual(os.listdir(later), ["zz-log.conf"])

    def test_templates_and_instances(self):
        self.write_unit("worker@.service", preload="/usr/lib/libown.so")
        self.systemd("enable", "worker@blue", "--library", self.LIBRARY)
        values = environment_lines(read(self.dropin("worker@blue.service")))
        self.assertEqual(values["LD_PRELOAD"], "/usr/lib/libown.so:" + self.LIBRARY)
        self.verify("worker@blue.service")
        self.systemd("enable", "worker@.service", "--library", self.LIBRARY)
        self.assertTrue(os.path.exists(self.dropin("worker@.service")))
        self.verify("worker@green.service")

    def test_refusals(self):
        self.write_unit("demo.service")
        for args, rc, expected in [
            (["enable", "a b"], 2, "bad unit name"),
            (["enable", "@x"], 2, "nothing before the @"),
            (["enable", "x" * 250], 2, "longer than 255"),
            (["enable", "demo.socket"], 2, "services only"),
            (["enable"], 2, "needs a UNIT"),
            (["start", "demo"], 2, "unknown command"),
            (["disable", "demo", "--pool-size", "1"], 2, "option of enable"),
            (["enable", "demo", "--pool-size", "0"], 2, "SMCPRE_POOL_SIZE"),
            (["enable", "demo", "--log-file", "rel.log"], 2, "expected an absolute path"),
            (["enable", "demo", "--library", "rel.so"], 2, "not an absolute path"),
            (["enable", "demo", "--library", "/opt/none/libsmcpre.so"], 1, "does not exist"),
            (["enable", "nosuch", "--library", self.LIBRARY], 1, "no unit file for nosuch"),
        ]:
            with self.subTest(args=args):
                out = self.systemd(*args, expect_rc=rc)
                self.assertIn(expected, out.stderr)
        self.assertFalse(os.path.exists(self.dropin("demo.service")))
        self.assertFalse(os.path.exists(os.path.join(self.units, "nosuch.service.d")))
        # A unit that is not there yet (a generator's): with --force.
        self.systemd("enable", "nosuch", "--library", self.LIBRARY, "--force")
        self.assertTrue(os.path.exists(self.dropin("nosuch.service")))
        # A masked unit: only with --force.
        os.symlink("/dev/null", os.path.join(self.units, "masked.service"))
        out = self.systemd("enable", "masked", "--library", self.LIBRARY, expect_rc=1)
        self.assertIn("masked", out.stderr)

        # A policy file is checked inside the root, as the service will read it.
        policy = os.path.join(self.root, "etc", "smcpre-demo.conf")
        with open(policy, "w") as f:
            f.write("tcp * client *:22\nsmc * sideways *:80\n")
        out = self.systemd("enable", "demo", "--library", self.LIBRARY, "--config",
                           "/etc/smcpre-demo.conf", expect_rc=2)
        self.assertIn(policy + ":2", out.stderr)
        self.assertFalse(os.path.exists(self.dropin("demo.service")))
        with open(policy, "w") as f:
            f.write("tcp * client *:22\n")
        self.systemd("enable", "demo", "--library", self.LIBRARY, "--config",
                     "/etc/smcpre-demo.conf")
        self.assertEqual(environment_lines(read(self.dropin("demo.service")))["SMCPRE_CONFIG"],
                         "/etc/smcpre-demo.conf")
        self.systemd("disable", "demo")

        # A smcpre.conf someone else wrote is neither replaced nor removed without --force.
        foreign = self.dropin("demo.service")
        os.makedirs(os.path.dirname(foreign))
        with open(foreign, "w") as f:
            f.write("[Service]\nEnvironment=MINE=1\n")
        out = self.systemd("enable", "demo", "--library", self.LIBRARY, expect_rc=1)
        self.assertIn("not written by smcpre-systemd", out.stderr)
        out = self.systemd("disable", "demo", expect_rc=1)
        self.assertIn("not written by smcpre-systemd", out.stderr)
        self.assertEqual(read(foreign), "[Service]\nEnvironment=MINE=1\n")
        self.systemd("disable", "demo", "--force")
        self.assertFalse(os.path.exists(foreign))

    def test_root_defaults_to_the_installed_library_path(self):
        """With --root and no --library, the drop-in names the configured installation
        path, which must exist inside the root (not on this system)."""
        meson = shutil.which("meson")
        if meson is None or not os.path.isdir(os.path.join(BUILD, "meson-private")):
            self.skipTest("no meson, or %s is no meson build dir" % BUILD)
        info = json.loads(self.run_tool([meson, "introspect", BUILD, "--buildoptions"]).stdout)
        opts = {o["name"]: o["value"] for o in info}
        installed = os.path.join(opts["prefix"], opts["libdir"], "libsmcpre.so")
        self.write_unit("demo.service")
        out = self.systemd("enable", "demo", expect_rc=1)
        self.assertIn(self.root + installed + " does not exist", out.stderr)
        os.makedirs(os.path.dirname(self.root + installed))
        shutil.copy(LIB, self.root + installed)
        self.systemd("enable", "demo", "-q")
        values = environment_lines(read(self.dropin("demo.service")))
        self.assertEqual(values["LD_PRELOAD"], installed)  # without the root

    def test_drop_in_environment_on_a_live_server(self):
        """The drop-in's variables, given to a live server as systemd would give them
        (paths inside the root mapped to it), preload smcpre with its settings: a client
        started by smcpre-run reaches it over SMC."""
        self.write_unit("demo.service", preload="libm.so.6")
        self.systemd("enable", "demo", "--library", self.LIBRARY, "--pool-size", "3K",
                     "--log", "info")
        values = environment_lines(read(self.dropin("demo.service")))
        values["LD_PRELOAD"] = " ".join(
            self.root + e if e.startswith("/") else e for e in values["LD_PRELOAD"].split(":"))
        self.skip_launch_under_sanitizer(["--"])
        srv, cli = self.held_pair(server_argv_prefix=[], server_env=self.env(False, values))
        self.assertIn(self.root + self.LIBRARY, mapped_files(srv.pid))
        if os.path.exists(STAT):
            self.assertEqual(self.stat_show(srv.pid)["process"]["pool_size"], 3072)
        self.release(srv, cli)
        self.assert_smc(srv.records(), cli.records(), (srv, cli))


if __name__ == "__main__":
    main()
