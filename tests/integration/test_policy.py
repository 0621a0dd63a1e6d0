#!/usr/bin/env python3
"""The policy file (SMCPRE_CONFIG, smcpre.conf(5)) in live processes under the preload:
client rules `tcp` and `smc`, server rules `tcp` (the listener unpublished, its accepted
connections declining a forced Proposal with POLICY), rules chosen by program name, a
wildcard listener against server rules, a malformed file (one stderr line with the line
number, TCP for all), and environment variables overriding the file's settings. The path
is proven by the programs' TCP_INFO counters (1 MiB transfers)."""

import errno
import fcntl
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import MIB, SmcTestCase, app, main, registry_ports  # noqa: E402

# The client's log line for the server's Decline with reason POLICY (0x0e070000).
POLICY_DECLINE = r"\bPOLICY\b"


class PolicyTest(SmcTestCase):

    def setUp(self):
        super().setUp()
        self.nfiles = 0

    def policy(self, text):
        """Writes a policy file (mode 0644, ours: smcpre refuses files others may write)
        and returns its path."""
        self.nfiles += 1
        path = os.path.join(self.runtime_dir, "policy-%d.conf" % self.nfiles)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o644)
        return path

    def published(self, port, runtime_dir=None):
        """True if a listener on `port` has a registry entry (a listener removes its own
        when it stops listening)."""
        return port in registry_ports(runtime_dir or self.runtime_dir)

    def run_pair(self, server_env, client_env, server_args=(), host="127.0.0.1",
                 check_published=None):
        """A tcpapp sink server and client moving 1 MiB. `client_env` may be a function of
        the server's port (for rules naming it). `check_published` (True/False): the
        listener's registry entry before the client starts. Returns (server, client,
        server records, client records)."""
        srv, port = self.start_server("tcpapp", ["--mode", "sink", "--bytes", str(MIB)] +
                                      list(server_args), env=server_env)
        if check_published is not None:
            self.assertEqual(self.published(port), check_published,
                             "registry entry of port %d\n%s" % (port, srv.describe()))
        env = client_env(port) if callable(client_env) else client_env
        cli = self.start([app("tcpapp"), "client", "--host", host, "--port", str(port),
                          "--mode", "sink", "--bytes", str(MIB), "--timeout", "50"],
                         True, env, "client")
        self.finish(cli, 60, 0, [srv])
        self.finish(srv, 20, 0, [cli])
        srec, crec = srv.records(), cli.records()
        self.assert_records_ok(srec, crec, srv, cli)
        return srv, cli, srec, crec

    # ---- client rules -------------------------------------------------------------------

    def test_client_rule_tcp(self):
        """`tcp` for the destination keeps a same-host connection to a published smcpre
        listener on TCP: no Proposal at all. A rule for another port changes nothing."""
        none = {"SMCPRE_CONFIG": "none"}
        for matching in (True, False):
            with self.subTest(matching=matching):
                def client_env(port, matching=matching):
                    rule = "tcp tcpapp client 127.0.0.1:%d\n" % (port if matching else port + 1)
                    return {"SMCPRE_CONFIG": self.policy("# client\n" + rule)}
                srv, cli, srec, crec = self.run_pair(none, client_env, check_published=True)
                if matching:
                    # A Proposal would have been accepted (the listener is published).
                    self.assert_tcp(srec, crec, (srv, cli))
                else:
                    self.assert_smc(srec, crec, (srv, cli))

    def test_client_rule_smc(self):
        """`smc` makes a client propose to a server it cannot see in its registry (another
        runtime dir, as a server on another host), as SMCPRE_PEERS would; without the rule
        it stays TCP."""
        other = os.path.join(self.runtime_dir, "elsewhere")
        os.mkdir(other, 0o700)
        server_env = {"SMCPRE_CONFIG": "none", "SMCPRE_RUNTIME_DIR": other}
        for rule in (None, "smc * client 127.0.0.0/8:%d", "smc tcpapp * 127.0.0.1:%d"):
            with self.subTest(rule=rule):
                def client_env(port, rule=rule):
                    text = (rule % port + "\n") if rule else "# no rule\n"
                    return {"SMCPRE_CONFIG": self.policy(text)}
                srv, cli, srec, crec = self.run_pair(server_env, client_env)
                if rule:
                    self.assert_smc(srec, crec, (srv, cli))
                else:
                    self.assert_tcp(srec, crec, (srv, cli))

    def test_first_match_and_exclude(self):
        """The first matching rule decides (a later `smc` for the same port does not), and
        SMCPRE_EXCLUDE comes before any `smc` rule."""
        other = os.path.join(self.runtime_dir, "elsewhere")
        os.mkdir(other, 0o700)
        server_env = {"SMCPRE_CONFIG": "none", "SMCPRE_RUNTIME_DIR": other}
        cases = {
            "tcp first": ("tcp * client *:%(p)d\nsmc * client *:%(p)d\n", {}, False),
            "smc first": ("smc * client *:%(p)d\ntcp * client *:%(p)d\n", {}, True),
            "excluded": ("smc * client *:%(p)d\n", {"SMCPRE_EXCLUDE": "%(p)d"}, False),
        }
        for name, (text, extra, smc) in cases.items():
            with self.subTest(case=name):
                def client_env(port, text=text, extra=extra):
                    env = {k: v % {"p": port} for k, v in extra.items()}
                    env["SMCPRE_CONFIG"] = self.policy(text % {"p": port})
                    return env
                srv, cli, srec, crec = self.run_pair(server_env, client_env)
                if smc:
                    self.assert_smc(srec, crec, (srv, cli))
                else:
                    self.assert_tcp(srec, crec, (srv, cli))

    # ---- server rules -------------------------------------------------------------------

    def test_server_rule_tcp(self):
        """`tcp` for a listener: it is not published (a same-host client does not propose),
        and a client forced to propose (SMCPRE_PEERS) is declined with POLICY by the
        accepted socket, which follows its listener: both stay TCP, bytes intact."""
        server_env = {"SMCPRE_CONFIG": self.policy("tcp tcpapp server 127.0.0.1:*\n")}
        srv, cli, srec, crec = self.run_pair(server_env, {"SMCPRE_CONFIG": "none"},
                                             check_published=False)
        self.assert_tcp(srec, crec, (srv, cli))
        srv, cli, srec, crec = self.run_pair(
            server_env, lambda port: {"SMCPRE_CONFIG": "none", "SMCPRE_PEERS": "*:%d" % port},
            check_published=False)
        self.assert_tcp(srec, crec, (srv, cli))
        self.assertIsNotNone(cli.wait_stderr(POLICY_DECLINE, 1),
                             "the client was not declined with POLICY\n"
                             + self.describe_all(srv, cli))

    def test_server_rules_on_wildcard_listener(self):
        """A listener on 0.0.0.0 matches rules whose subnet contains 0.0.0.0 (`*`,
        0.0.0.0/0), not 127.0.0.0/8 although its clients come from there."""
        cases = (("tcp tcpapp server 127.0.0.0/8:*\n", True),
                 ("tcp tcpapp server 0.0.0.0/0:*\n", False),
                 ("tcp tcpapp server *\n", False))
        for text, smc in cases:
            with self.subTest(rule=text.strip()):
                srv, cli, srec, crec = self.run_pair(
                    {"SMCPRE_CONFIG": self.policy(text)}, {"SMCPRE_CONFIG": "none"},
                    server_args=("--bind", "0.0.0.0"), check_published=smc)
                if smc:
                    self.assert_smc(srec, crec, (srv, cli))
                else:
                    self.assert_tcp(srec, crec, (srv, cli))

    # ---- program names ------------------------------------------------------------------

    def test_program_name_rules(self):
        """Rules apply to the programs their glob names (the short program name, here
        tcpapp) and to no other."""
        for program, tcp in (("tcpapp", True), ("tcp?pp", True), ("tcp*", True),
                             ("other", False), ("tcpapp2", False), ("TCPAPP", False)):
            with self.subTest(program=program):
                conf = self.policy("tcp %s client *\n" % program)
                srv, cli, srec, crec = self.run_pair({"SMCPRE_CONFIG": "none"},
                                                     {"SMCPRE_CONFIG": conf})
                if tcp:
                    self.assert_tcp(srec, crec, (srv, cli))
                else:
                    self.assert_smc(srec, crec, (srv, cli))

    # ---- the file as a whole ------------------------------------------------------------

    def test_malformed_file(self):
        """A malformed line: one stderr line naming the file and the line (even with
        logging off), and that process runs as plain TCP; the good lines before it are not
        applied."""
        conf = self.policy("# fine so far\nSMCPRE_RMB_SIZE=1M\nsmc tcpapp both *\n")
        expected = ("smcpre: %s:3: expected the role client, server or *, not \"both\"; "
                    "smcpre disabled" % conf)
        bad = {"SMCPRE_CONFIG": conf, "SMCPRE_LOG": None}
        for side in ("server", "client"):
            with self.subTest(bad_on=side):
                none = {"SMCPRE_CONFIG": "none"}
                srv, cli, srec, crec = self.run_pair(bad if side == "server" else none,
                                                     bad if side == "client" else none)
                self.assert_tcp(srec, crec, (srv, cli))
                p = srv if side == "server" else cli
                lines = [l for l in p.stderr_text().splitlines() if l.startswith("smcpre: ")]
                self.assertEqual(lines, [expected], p.describe())

    def test_missing_file_named_by_smcpre_config(self):
        """SMCPRE_CONFIG naming a file that does not exist is an error (the user asked for
        it): reported, TCP."""
        missing = os.path.join(self.runtime_dir, "no-such.conf")
        srv, cli, srec, crec = self.run_pair({"SMCPRE_CONFIG": "none"},
                                             {"SMCPRE_CONFIG": missing, "SMCPRE_LOG": None})
        self.assert_tcp(srec, crec, (srv, cli))
        self.assertIn("smcpre: %s: no such file (named by SMCPRE_CONFIG); smcpre disabled"
                      % missing, cli.stderr_text())

    def test_environment_overrides_file(self):
        """The file's SMCPRE_DEVICE=none keeps the server on TCP; SMCPRE_DEVICE=shm in the
        environment overrides it (the file's other settings still apply), and the debug
        listing says where each setting came from."""
        conf = self.policy("SMCPRE_DEVICE = none\nSMCPRE_RMB_SIZE = 64K\n")
        srv, cli, srec, crec = self.run_pair({"SMCPRE_CONFIG": conf}, {"SMCPRE_CONFIG": "none"})
        self.assert_tcp(srec, crec, (srv, cli))
        srv, cli, srec, crec = self.run_pair(
            {"SMCPRE_CONFIG": conf, "SMCPRE_DEVICE": "shm", "SMCPRE_LOG": "debug"},
            {"SMCPRE_CONFIG": "none"})
        self.assert_smc(srec, crec, (srv, cli))
        text = srv.stderr_text()
        for line in ("policy file: %s (0 rules for this program)" % conf,
                     "setting SMCPRE_DEVICE=shm (from the environment)",
                     "setting SMCPRE_RMB_SIZE=64K (from %s:2)" % conf):
            self.assertIn("debug: " + line, text, srv.describe())
        self.assertNotIn("SMCPRE_DEVICE=none", text, srv.describe())


if __name__ == "__main__":
    main()
