#!/usr/bin/env python3
"""The SMC TCP option program (bpf/smc_option.bpf.c, smcpre-bpf; doc/design.md §2.9) on lo.

Each test attaches the program to a cgroup of its own (pinned under a directory of its
own, given to the preload as SMCPRE_BPF_DIR), runs programs inside or outside that cgroup,
and proves what happened from three sides: a tshark capture (the option in SYN and
SYN-ACK, CLC messages or none, the payload bytes), the programs' records (bytes intact,
the kernel's TCP_INFO counters for the path) and smcpre's exit summaries (the option
program's line and the fallback reasons):

  (a) preloaded client and server in the cgroup, with runtime dirs of their own (the
      listener registry cannot tell the client anything): SMC, the option in both SYNs;
  (b) a preloaded client in the cgroup and a plain server: the SYN announces SMC, the
      SYN-ACK does not, and not one CLC byte reaches the server;
  (c) a plain client and a preloaded server: no option either way, plain TCP, intact;
  (d) unmarked processes in the cgroup (plain, or smcpre with SMCPRE_BPF_DIR=none) send
      no option;
  (e) without the program (processes outside the cgroup, or nothing pinned): what smcpre
      did before, by the registry;
and a non-blocking connect (marked only when eligible anyway), a client that cannot
propose after the SYN-ACK announced SMC (it declines), and smcpre-bpf's exit statuses.

Needs root (BPF, cgroups, capturing on lo) and a kernel of 5.10 or later; skips with the
reason otherwise. SMCPRE_BPF names smcpre-bpf (default: tools/ of SMCPRE_LIB's build).
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lo_capture  # noqa: E402
from harness import SmcTestCase, app, main, registry_entries  # noqa: E402
from toolcase import BPF, STAT  # noqa: E402

APPS_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "apps")

SIZE = 256 * 1024
# The SMC option's ExID, "SMCR" in EBCDIC, which also starts (and ends) a CLC message.
EYECATCHER = "e2d4c3d9"
CLC_DECLINE = 4


def cgroup2_mount():
    """The first cgroup2 mount of this mount namespace, or None."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            if right.split()[:1] == ["cgroup2"] and fields[3] == "/":
                return fields[4].replace("\\040", " ")
    return None


def option_line(text):
    """The exit summary's option line ("" if none)."""
    m = re.search(r"^  option +(.*)$", text, re.M)
    return m.group(1) if m else ""


class OptionTest(SmcTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if os.geteuid() != 0:
            raise unittest.SkipTest("attaching a BPF program to a cgroup and capturing on lo "
                                    "need root")
        if not os.path.exists(BPF):
            raise unittest.SkipTest("not built: " + BPF)
        cls.tshark = shutil.which("tshark")
        if cls.tshark is None:
            raise unittest.SkipTest("tshark is not installed (as root: scripts/deps)")
        probe = subprocess.run([BPF, "status", "--pin-dir", "/sys/fs/bpf/smcpre-probe"],
                               capture_output=True, text=True, timeout=60)
        if probe.returncode in (3, 4, 5):
            raise unittest.SkipTest("smcpre-bpf cannot run the program here (exit %d): %s"
                                    % (probe.returncode, probe.stderr.strip()))
        cls.own_mount = None
        cls.mount = cgroup2_mount()
        if cls.mount is None:
            cls.own_mount = tempfile.mkdtemp(prefix="smcpre-cgroup2-")
            subprocess.run(["mount", "-t", "cgroup2", "none", cls.own_mount], check=True)
            cls.mount = cls.own_mount

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "own_mount", None):
            subprocess.run(["umount", cls.own_mount])
            os.rmdir(cls.own_mount)
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.pin_dir = "/sys/fs/bpf/smcpre-test-%d" % os.getpid()
        self.cgroup = os.path.join(self.mount, "smcpre-test-%d" % os.getpid())
        os.makedirs(self.cgroup, exist_ok=True)
        self.addCleanup(self.remove_cgroup)
        self.addCleanup(self.bpf, "detach", "--all", expect_rc=None)
        out = self.bpf("attach", "--cgroup", self.cgroup)
        self.assertIn("attached the SMC option program", out.stdout)
        # The client's own runtime dir: the registry can tell it nothing of the server.
        self.client_dir = tempfile.mkdtemp(prefix="smcpre-it-client-")
        self.addCleanup(shutil.rmtree, self.client_dir, True)

    def remove_cgroup(self):
        for p in self.procs:
            p.kill()
        for _ in range(50):  # a killed process leaves its cgroup a moment later
            try:
                os.rmdir(self.cgroup)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)

    # ---- tools -----------------------------------------------------------------------

    def bpf(self, *args, expect_rc=0, env=None, **kw):
        argv = [BPF] + list(args) + ["--pin-dir", self.pin_dir]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                             env=dict(os.environ, **(env or {})), **kw)
        if expect_rc is not None:
            self.assertEqual(out.returncode, expect_rc, "%s: %s%s" % (
                " ".join(argv), out.stdout, out.stderr))
        return out

    def in_cgroup(self, argv):
        """argv run inside the test's cgroup (its children stay there)."""
        return ["/bin/sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', self.cgroup] + argv

    def env_for(self, preload, own_dir, extra=None):
        env = {"SMCPRE_BPF_DIR": self.pin_dir, "SMCPRE_STATS": "exit"}
        if own_dir:
            env["SMCPRE_RUNTIME_DIR"] = self.client_dir
        env.update(extra or {})
        return env if preload else {}

    def server(self, preload=True, cgroup=True, mode="sink", env=None, argv=None):
        argv = argv or [app("tcpapp"), "server", "--port", "0", "--mode", mode,
                        "--bytes", str(SIZE)]
        p = self.start(self.in_cgroup(argv) if cgroup else argv, preload,
                       self.env_for(preload, False, env), "server")
        m = p.wait_stderr(r"^listening (\d+)$", 20)
        if m is None:
            self.fail("server did not report its port\n" + p.describe())
        return p, int(m.group(1))

    def client(self, port, preload=True, cgroup=True, mode="sink", own_dir=True, env=None,
               argv=None):
        argv = argv(port) if argv else [
            app("tcpapp"), "client", "--host", "127.0.0.1", "--port", str(port), "--mode", mode,
            "--bytes", str(SIZE), "--timeout", "40"]
        return self.start(self.in_cgroup(argv) if cgroup else argv, preload,
                          self.env_for(preload, own_dir, env), "client")

    def fields(self, pcap, display_filter, *names):
        return lo_capture.fields(self, self.tshark, pcap, display_filter, *names)

    def syn_options(self, pcap):
        """{"SYN": [...], "SYN-ACK": [...]}: per SYN sent, the SMC option it carried
        ("e2d4c3d9") or "" for none."""
        out = {"SYN": [], "SYN-ACK": []}
        for ack, exid, data in self.fields(pcap, "tcp.flags.syn == 1", "tcp.flags.ack",
                                           "tcp.options.experimental.exid",
                                           "tcp.options.experimental.data"):
            kind = "SYN-ACK" if ack in ("1", "True") else "SYN"
            out[kind].append((exid.replace("0x", "") + data).lower())
        return out

    @staticmethod
    def port_of(pcap):
        """The server's port, from the capture's file name (lo_capture.start)."""
        return int(re.search(r"capture-(\d+)\.pcapng$", pcap).group(1))

    def payload_hex(self, pcap, dst_port):
        """The payload bytes sent to dst_port, in order, as one hex string."""
        rows = self.fields(pcap, "tcp.dstport == %d && tcp.len > 0" % dst_port, "tcp.payload")
        return "".join(r[0].replace(":", "") for r in rows if r)

    def entries(self, port):
        """The registry entries' kinds for `port` in the server's runtime dir."""
        return [name.split("-")[0] for _, name in registry_entries(self.runtime_dir)
                if name.split("-")[1] == str(port)]

    def captured(self, server=None, client=None, capture=True):
        """A server (self.server's keywords), a capture of its port, a client (self.client's
        keywords); both must finish with intact records. Returns (server, client, server
        records, client records, the capture's file or None); self.listener_entries are
        the listener's registry entries while it listened."""
        srv, port = self.server(**(server or {}))
        self.listener_entries = self.entries(port)
        cap, pcap = (lo_capture.start(self, self.tshark, port, self.runtime_dir) if capture
                     else (None, None))
        cli = self.client(port, **(client or {}))
        self.finish(cli, 60, 0, [srv])
        self.finish(srv, 30, 0, [cli])
        if cap is not None:
            lo_capture.stop(self, cap)
        srec, crec = srv.records(), cli.records()
        self.assert_records_ok(srec, crec, srv, cli)
        return srv, cli, srec, crec, pcap

    # ---- (a) .. (e) ------------------------------------------------------------------

    def test_a_smc_by_the_option_alone(self):
        srv, cli, srec, crec, pcap = self.captured({"mode": "echo"}, {"mode": "echo"})
        self.assertEqual(self.listener_entries, ["tcpopt"], "an armed listener's registry entry")
        self.assert_smc(srec, crec, (srv, cli))
        self.assertEqual(self.syn_options(pcap), {"SYN": [EYECATCHER], "SYN-ACK": [EYECATCHER]})
        types = [t for row in self.fields(pcap, "smc", "smc.clc_msg") for t in row[0].split(",")]
        self.assertIn("1", types, "no CLC Proposal in the capture")
        for p in (srv, cli):
            self.assertEqual(option_line(p.stderr_text()),
                             "program active: 1 handshakes recorded, 1 with the peer's SMC "
                             "option", p.describe())

    def test_b_plain_server_gets_no_clc_byte(self):
        srv, cli, srec, crec, pcap = self.captured({"preload": False})
        self.assert_tcp(srec, crec, (srv, cli))
        self.assertEqual(self.syn_options(pcap), {"SYN": [EYECATCHER], "SYN-ACK": [""]})
        # Exactly the application's bytes: as many as it wrote, none of them CLC.
        sent = self.payload_hex(pcap, self.port_of(pcap))
        self.assertEqual(len(sent) // 2, SIZE, "the server's side of the wire carried %d "
                         "bytes for a %d-byte transfer" % (len(sent) // 2, SIZE))
        self.assertFalse(sent.startswith(EYECATCHER), "a CLC message reached the server")
        self.assertEqual(srec[0]["bytes_received"], SIZE)
        self.assertEqual(self.fields(pcap, "smc", "frame.number"), [])
        text = cli.stderr_text()
        self.assertIn("1 PEERNOSMC (0x03010000)", text)
        self.assertIn("the SYN-ACK did not announce SMC", text)
        self.assertEqual(option_line(text), "program active: 1 handshakes recorded, 0 with the "
                         "peer's SMC option")

    def test_c_plain_client_reaches_a_preloaded_server(self):
        srv, cli, srec, crec, pcap = self.captured({"mode": "echo"},
                                                   {"preload": False, "mode": "echo"})
        self.assert_tcp(srec, crec, (srv, cli))
        self.assertEqual(self.syn_options(pcap), {"SYN": [""], "SYN-ACK": [""]})
        self.assertEqual(len(self.payload_hex(pcap, self.port_of(pcap))) // 2, SIZE)
        text = srv.stderr_text()
        self.assertIn("1 PEERNOSMC (0x03010000)", text)
        self.assertEqual(option_line(text), "program active: 1 handshakes recorded, 0 with the "
                         "peer's SMC option")

    def test_d_unmarked_processes_in_the_cgroup_send_no_option(self):
        srv, port = self.server(preload=False, cgroup=False,
                                argv=[app("tcpapp"), "server", "--port", "0", "--mode", "sink",
                                      "--bytes", str(SIZE), "--conns", "2"])
        cap, pcap = lo_capture.start(self, self.tshark, port, self.runtime_dir)
        plain = self.client(port, preload=False)
        self.finish(plain, 60, 0, [srv])
        off = self.client(port, env={"SMCPRE_BPF_DIR": "none"})
        self.finish(off, 60, 0, [srv])
        self.finish(srv, 30, 0, [plain, off])
        lo_capture.stop(self, cap)
        self.assert_records_ok(srv.records(), plain.records() + off.records(), srv, plain, off)
        self.assertEqual(self.syn_options(pcap), {"SYN": ["", ""], "SYN-ACK": ["", ""]})
        self.assertIn("option program not used (SMCPRE_BPF_DIR=none)", off.stderr_text())
        self.assertEqual(option_line(off.stderr_text()),
                         "program not active (the listener registry and SMCPRE_PEERS decide)")

    def test_e_without_the_program_the_registry_decides(self):
        # Outside the cgroup, the map open: marked sockets the program never sees.
        srv, cli, srec, crec, pcap = self.captured(
            {"cgroup": False, "mode": "echo"},
            {"cgroup": False, "own_dir": False, "mode": "echo"})
        self.assertEqual(self.listener_entries, ["tcp"])
        self.assert_smc(srec, crec, (srv, cli))
        self.assertEqual(self.syn_options(pcap), {"SYN": [""], "SYN-ACK": [""]})
        for p in (srv, cli):
            self.assertEqual(option_line(p.stderr_text()),
                             "program active: 0 handshakes recorded, 0 with the peer's SMC "
                             "option", p.describe())
        # Nothing pinned where the processes look: not active, said once, the same result;
        # and a client the registry cannot help proposes to nobody (PEER_UNKNOWN).
        nothing = {"mode": "echo", "env": {"SMCPRE_BPF_DIR": self.pin_dir + "-nothing"}}
        srv, cli, srec, crec, _ = self.captured(nothing, dict(nothing, own_dir=False), False)
        self.assert_smc(srec, crec, (srv, cli))
        for p in (srv, cli):
            self.assertEqual(p.stderr_text().count("option program not active"), 1, p.describe())
        srv, cli, srec, crec, _ = self.captured(nothing, nothing, False)
        self.assert_tcp(srec, crec, (srv, cli))
        self.assertIn("1 PEER_UNKNOWN", cli.stderr_text())

    def test_armed_listener_hears_no_proposal_from_a_client_the_program_does_not_see(self):
        """Same runtime dir, the client outside the cgroup: its SYN cannot announce SMC, so
        the armed server will not look for CLC, and the registry entry (tcpopt-) tells the
        client not to propose: plain TCP on both ends, the stream intact."""
        srv, cli, srec, crec, pcap = self.captured(
            {"mode": "echo"}, {"cgroup": False, "own_dir": False, "mode": "echo"})
        self.assertEqual(self.listener_entries, ["tcpopt"])
        self.assert_tcp(srec, crec, (srv, cli))
        self.assertEqual(self.syn_options(pcap), {"SYN": [""], "SYN-ACK": [""]})
        self.assertEqual(self.fields(pcap, "smc", "frame.number"), [])
        self.assertIn("1 PEER_UNKNOWN", cli.stderr_text())
        self.assertIn("1 PEERNOSMC", srv.stderr_text())

    # ---- the rest ----------------------------------------------------------------------

    def test_nonblocking_connect_is_marked_only_when_eligible(self):
        """asyncio connects without blocking: a destination the registry knows is marked
        (connect() completes the connection before EINPROGRESS, as for any eligible one)
        and the option decides; one it does not know is neither marked nor waited for."""
        echo = os.path.join(APPS_SRC, "asyncio_echo.py")
        for eligible in (True, False):
            with self.subTest(eligible=eligible):
                srv, cli, srec, crec, pcap = self.captured(
                    {"argv": [sys.executable, echo, "server", "--port", "0", "--conns", "1"]},
                    {"own_dir": not eligible,
                     "argv": lambda port: [sys.executable, echo, "client", "--port", str(port),
                                           "--bytes", str(SIZE)]})
                if eligible:
                    self.assert_smc(srec, crec, (srv, cli))
                    self.assertEqual(self.syn_options(pcap),
                                     {"SYN": [EYECATCHER], "SYN-ACK": [EYECATCHER]})
                else:
                    self.assert_tcp(srec, crec, (srv, cli))
                    self.assertEqual(self.syn_options(pcap), {"SYN": [""], "SYN-ACK": [""]})
                    self.assertIn("1 PEER_UNKNOWN", cli.stderr_text())

    def test_client_without_a_device_declines_an_announced_server(self):
        """The SYN-ACK announced SMC, but the client has no device: the server waits for a
        CLC message (the kernel's would end the connection on data), so it gets a Decline,
        and both go on over TCP, intact."""
        srv, cli, srec, crec, pcap = self.captured(
            {"mode": "echo"}, {"mode": "echo", "env": {"SMCPRE_DEVICE": "none"}})
        self.assert_tcp(srec, crec, (srv, cli))
        self.assertEqual(self.syn_options(pcap), {"SYN": [EYECATCHER], "SYN-ACK": [EYECATCHER]})
        types = [t for row in self.fields(pcap, "smc", "smc.clc_msg") for t in row[0].split(",")]
        self.assertEqual(types, [str(CLC_DECLINE)], "expected the client's Decline alone")
        self.assertIn("NOSMCDEV", cli.stderr_text())
        self.assertIn("PEERDECL", srv.stderr_text())

    def test_smcpre_bpf_statuses(self):
        out = self.bpf("status")
        self.assertRegex(out.stdout, r"program: +loaded, pinned at %s/option_prog"
                         % re.escape(self.pin_dir))
        self.assertIn(self.cgroup, out.stdout)
        self.bpf("status", "--cgroup", self.cgroup)
        self.bpf("status", "--cgroup", self.mount, expect_rc=1)
        out = self.bpf("attach", "--cgroup", self.cgroup)  # again: nothing changes
        self.assertIn("attached to %s already" % self.cgroup, out.stdout)
        # A listening process in the cgroup shows the program active in smcpre-stat.
        srv, port = self.server()
        listing = subprocess.run([STAT, "processes", "--runtime-dir", self.runtime_dir],
                                 capture_output=True, text=True, timeout=30).stdout
        self.assertRegex(listing, r"(?m)^ *%d +tcpapp .* on +\S" % srv.pid, listing)
        srv.kill()
        # An old kernel, and no permission: explained, with statuses of their own.
        out = self.bpf("attach", "--cgroup", self.cgroup, expect_rc=3,
                       env={"SMCPRE_BPF_TEST_RELEASE": "5.4.0-150-generic"})
        self.assertIn("older than 5.10", out.stderr)
        out = self.bpf("status", expect_rc=4, preexec_fn=lambda: os.setuid(65534))
        self.assertIn("run as root", out.stderr)
        # Detached from its last cgroup, it is unloaded: the pins go.
        out = self.bpf("detach", "--cgroup", self.cgroup)
        self.assertIn("unloaded", out.stdout)
        self.assertFalse(os.path.exists(self.pin_dir))
        self.bpf("status", expect_rc=1)


if __name__ == "__main__":
    main()
