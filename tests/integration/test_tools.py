#!/usr/bin/env python3
"""smcpre-run, on live processes under the preload.

The program keeps smcpre-run's pid (exec), LD_PRELOAD gets the library appended (an
existing preload kept, never twice, another copy refused), the tuning variables reach the
program (its environ, and smcpre-stat's view of its pool), an SMC connection between two
programs started by it (proven by TCP_INFO and the log), bad values refused before
anything runs with the variable named (exit 125), env(1)'s exit codes (126, 127), and where
it finds the library: SMCPRE_LIBRARY, the build tree, and an installation made with
`meson install --destdir` (the man pages installed with it). smcpre-systemd's tests are in
test_systemd.py; what both share is in toolcase.py.

Environment (tests/integration/meson.build): SMCPRE_RUN, SMCPRE_SYSTEMD, SMCPRE_STAT (the
executables; default: tools/ of SMCPRE_LIB's build dir), and harness.py's.
"""

import json
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import REPO, app, main  # noqa: E402
from toolcase import (BPF, BUILD, LIB, RUN, STAT, SYSTEMD, ToolTestCase, mapped_files,  # noqa: E402
                      read)

MAN = os.path.join(REPO, "doc", "man")

USAGE = 125  # smcpre-run's own failures, as env(1)


def proc_environ(pid):
    with open("/proc/%d/environ" % pid, "rb") as f:
        entries = f.read().split(b"\0")
    return dict(e.decode().split("=", 1) for e in entries if b"=" in e)


def parse_print_env(text):
    """smcpre-run --print-env's NAME=VALUE lines (values here are never quoted)."""
    return dict(line.split("=", 1) for line in text.splitlines())


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
        for program in ("smcpre-run", "smcpre-systemd", "smcpre-stat", "smcpre-bpf"):
            path = os.path.join(bindir, program)
            self.assertTrue(os.access(path, os.X_OK), path)
        installed_lib = os.path.join(libdir, "libsmcpre.so")
        self.assertTrue(os.path.isfile(installed_lib), installed_lib)
        for page in ("man1/smcpre-run.1", "man1/smcpre-stat.1", "man7/smcpre.7",
                     "man8/smcpre-systemd.8", "man8/smcpre-bpf.8"):
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
        if os.path.exists(BPF):
            text = read(os.path.join(MAN, "smcpre-bpf.8"))
            helptext = self.run_tool([BPF, "--help"]).stdout
            options = set(re.findall(r"^  (--[a-z][a-z-]*)", helptext, re.M))
            self.assertEqual(options, {"--cgroup", "--pin-dir", "--all", "--quiet"}, helptext)
            for option in options:
                self.assertIn(option.replace("-", "\\-"), text, "smcpre-bpf.8: " + option)
        with open(os.path.join(REPO, "config", "settings_table.cpp")) as f:
            variables = set(re.findall(r'^\s*\{"(SMCPRE_[A-Z_]+)",', f.read(), re.M))
        self.assertGreater(len(variables), 20)
        overview = read(os.path.join(MAN, "smcpre.7"))
        for variable in variables:
            self.assertIn(".B " + variable + "\n", overview, "smcpre.7: " + variable)
        groff = shutil.which("groff")
        if groff is None:
            self.skipTest("groff is not installed")
        for page in ("smcpre-run.1", "smcpre-stat.1", "smcpre.7", "smcpre-systemd.8",
                     "smcpre-bpf.8", "smcpre.conf.5"):
            out = self.run_tool([groff, "-t", "-man", "-Tutf8", "-ww", os.path.join(MAN, page)])
            self.assertEqual((out.returncode, out.stderr), (0, ""), page)


def shlex_quote(value):
    """--print-env's quoting: bare when harmless, else single quotes."""
    if value and re.fullmatch(r"[A-Za-z0-9@%+=:,./_-]+", value):
        return value
    return "'" + value.replace("'", "'\\''") + "'"


if __name__ == "__main__":
    main()
