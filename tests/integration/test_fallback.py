#!/usr/bin/env python3
"""Fallback: whenever SMC cannot be used the connection is plain TCP carrying exactly the
application's bytes -- plain peers on either side, a server without a device, a garbage
server that answers the Proposal with non-CLC bytes, a client sending malformed CLC, a
server that speaks first, smcpre disabled, and a bad configuration value."""

import fcntl
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import MIB, SmcTestCase, app, main, publish_as_listener  # noqa: E402

EYECATCHER = bytes([0xE2, 0xD4, 0xC3, 0xD9])  # "SMCR" in EBCDIC


class FallbackTest(SmcTestCase):

    def check_tcp(self, mode, nbytes, **kw):
        srv, cli, srec, crec = self.transfer(mode, nbytes, **kw)
        self.assert_tcp(srec, crec, (srv, cli))
        return srv, cli

    def test_plain_server_preloaded_client(self):
        for mode in ("sink", "source", "echo"):
            with self.subTest(mode=mode):
                self.check_tcp(mode, MIB + 1, server_preload=False)

    def test_preloaded_server_plain_client(self):
        for mode in ("sink", "source", "echo"):
            with self.subTest(mode=mode):
                self.check_tcp(mode, MIB + 1, client_preload=False)

    def test_server_without_device(self):
        """SMCPRE_DEVICE=none on the server: the client's Proposal is declined (or never
        made) and both continue on TCP."""
        for mode in ("sink", "source"):
            with self.subTest(mode=mode):
                self.check_tcp(mode, MIB, server_env={"SMCPRE_DEVICE": "none"})

    def test_disabled(self):
        for side in ("both", "client", "server"):
            with self.subTest(disabled=side):
                off = {"SMCPRE_ENABLE": "0"}
                self.check_tcp("echo", MIB,
                               server_env=off if side in ("both", "server") else None,
                               client_env=off if side in ("both", "client") else None)

    def test_bad_env_value(self):
        """A bad value: exactly one stderr line naming the variable (even with logging
        off), and that process runs as plain TCP."""
        bad = {"SMCPRE_RMB_SIZE": "garbage", "SMCPRE_LOG": None}
        for side in ("server", "client"):
            with self.subTest(bad_on=side):
                srv, cli = self.check_tcp(
                    "sink", MIB, server_env=bad if side == "server" else None,
                    client_env=bad if side == "client" else None)
                p = srv if side == "server" else cli
                lines = [l for l in p.stderr_text().splitlines() if "SMCPRE_RMB_SIZE" in l]
                self.assertEqual(len(lines), 1, "expected one line naming SMCPRE_RMB_SIZE\n"
                                 + p.describe())

    def test_server_writes_first(self):
        """A server-speaks-first protocol (greeting before reading): correct bytes whether
        the connection ends up on SMC or TCP."""
        for mode in ("sink", "source", "echo"):
            for server_preload in (True, False):
                with self.subTest(mode=mode, server_preload=server_preload):
                    self.transfer(mode, MIB + 5, ["--write-first"], ["--write-first"],
                                  server_preload=server_preload)

    # ---- a garbage server ------------------------------------------------------------

    def garbage_server(self, garbage):
        """A Python server published in the registry (as if it ran smcpre) that answers
        whatever arrives with `garbage` and closes. Returns (port, thread, result) where
        result['first'] receives the first bytes the client sent."""
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        lsock.settimeout(30)
        port = lsock.getsockname()[1]
        entry = publish_as_listener(self.runtime_dir, lsock)
        fcntl.flock(entry, fcntl.LOCK_SH)  # a live listener holds LOCK_SH
        result = {"first": b"", "error": None}

        def serve():
            try:
                conn, _ = lsock.accept()
                conn.settimeout(3)
                # Read what the client sends first (its Proposal): the header gives the
                # length; stop early if the client sends nothing more.
                data = b""
                try:
                    while len(data) < 8 or len(data) < int.from_bytes(data[5:7], "big"):
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                except socket.timeout:
                    pass
                result["first"] = data
                conn.settimeout(20)
                conn.sendall(garbage)
                conn.shutdown(socket.SHUT_WR)
                # Drain until the client closes, so that closing never resets the
                # connection while our garbage is still in flight.
                while conn.recv(4096):
                    pass
                conn.close()
            except OSError as e:
                result["error"] = repr(e)
            finally:
                lsock.close()
                entry.close()

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        return port, t, result

    def test_garbage_server(self):
        """The Proposal is answered with non-CLC bytes: the preloaded client falls back and
        its application receives exactly those bytes, then EOF."""
        variants = {
            "long text": b"220 this is not SMC at all\r\n" + bytes(range(256)) * 40,
            "short (less than a CLC header)": b"hi\n",
            "binary": bytes((i * 37 + 11) % 256 for i in range(5000)),
        }
        for name, garbage in variants.items():
            with self.subTest(garbage=name):
                port, t, result = self.garbage_server(garbage)
                out = os.path.join(self.runtime_dir, "dump-%d" % port)
                cli = self.start([app("tcpapp"), "client", "--host", "127.0.0.1", "--port",
                                  str(port), "--mode", "source", "--dump", out,
                                  "--timeout", "30"], True, name="client")
                self.finish(cli, 40)
                t.join(30)
                self.assertIsNone(result["error"], cli.describe())
                self.assertTrue(result["first"].startswith(EYECATCHER),
                                "the client did not propose SMC to a published port: %r\n%s"
                                % (result["first"][:16], cli.describe()))
                with open(out, "rb") as f:
                    got = f.read()
                self.assertEqual(got, garbage, "the application did not get exactly the "
                                 "server's bytes\n" + cli.describe())
                rec = cli.records()[0]
                self.assertTrue(rec["ok"], cli.describe())
                self.assertGreaterEqual(rec["tcp_bytes_received"], len(garbage))

    # ---- a malformed client ----------------------------------------------------------

    def test_malformed_clc_from_client(self):
        """A client whose first bytes carry the CLC eyecatcher but are not a valid CLC
        message: the preloaded server neither crashes nor hangs, and serves a proper SMC
        client afterwards."""
        e = EYECATCHER
        variants = [
            ("eyecatcher only", e, 0),
            ("length 0", e + b"\x01\x00\x00\x10", 0),
            ("length 65535, truncated", e + b"\x01\xff\xff\x10" + bytes(20), 0),
            ("unknown type 9", e + b"\x09\x00\x34\x10" + bytes(range(40)) + e, 0),
            ("proposal with bad trailer", e + b"\x01\x00\x34\x10" + b"\xaa" * 40 + b"XXXX", 0),
            ("proposal, ip area offset past the end",
             e + b"\x01\x00\x34\x10" + bytes(30) + b"\xff\xf0" + bytes(8) + e, 0),
            ("proposal, version 0", e + b"\x01\x00\x34\x00" + bytes(40) + e, 0),
            ("accept sent by a client", e + b"\x02\x00\x44\x18" + bytes(56) + e, 0),
            ("decline sent first", e + b"\x04\x00\x1c\x10" + bytes(16) + e, 0),
            ("half a header, then a stall", e + b"\x01", 1.5),
        ]
        srv, port = self.start_server(
            "tcpapp", ["--mode", "echo", "--raw", "--conns", str(len(variants) + 1)],
            env={"SMCPRE_HANDSHAKE_TIMEOUT_MS": "500"})
        for name, payload, stall in variants:
            with self.subTest(variant=name):
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                try:
                    s.sendall(payload)
                    if stall:
                        time.sleep(stall)
                    s.sendall(b"then plain bytes")
                    s.shutdown(socket.SHUT_WR)
                    deadline = time.monotonic() + 10
                    while time.monotonic() < deadline:
                        if not s.recv(65536):
                            break
                    else:
                        self.fail("server neither answered nor closed within 10 s\n"
                                  + srv.describe())
                except socket.timeout:
                    self.fail("server hung on %s\n%s" % (name, srv.describe()))
                except ConnectionResetError:
                    pass  # a reset is an acceptable way to refuse garbage
                finally:
                    s.close()
                self.assertTrue(srv.alive(), "server died on %s\n%s" % (name, srv.describe()))
        cli = self.start([app("tcpapp"), "client", "--host", "127.0.0.1", "--port", str(port),
                          "--mode", "echo", "--bytes", str(MIB)], True, name="client")
        self.finish(cli, 60, 0, [srv])
        self.finish(srv, 20, None, [cli])
        last = [r for r in srv.records() if r["conn"] == len(variants)]
        self.assertEqual(len(last), 1, srv.describe())
        self.assert_records_ok(last, cli.records(), srv, cli)
        self.assert_smc(last, cli.records(), (srv, cli))


if __name__ == "__main__":
    main()
