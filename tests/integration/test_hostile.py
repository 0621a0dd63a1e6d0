#!/usr/bin/env python3
"""Hostile peers: raw Python clients and servers (no preload) that send incomplete CLC
messages to a preloaded application. Bytes that do not make a complete CLC message are
the application's, delivered in order, exactly as plain TCP would deliver them; a peer
that stalls or closes mid-message never holds an application thread without end."""

import fcntl
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import SmcTestCase, app, main, publish_as_listener  # noqa: E402

EYECATCHER = bytes([0xE2, 0xD4, 0xC3, 0xD9])  # "SMCR" in EBCDIC
# An Accept's frame: eyecatcher, type 2, length 68, version 1 (first contact), then its
# body and the trailer eyecatcher. Only the first 66 bytes are ever sent.
ACCEPT = EYECATCHER + b"\x02\x00\x44\x18" + bytes(range(1, 57)) + EYECATCHER
DATA = b"application data after a truncated Accept\n" * 50


def recv_clc(sock):
    """One CLC message's bytes (as far as its header's length says, and no byte past
    it), or what came before EOF."""
    data = recv_exactly(sock, 8)
    if len(data) < 8:
        return data
    return data + recv_exactly(sock, int.from_bytes(data[5:7], "big") - 8)


def recv_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def cpu_seconds(pid):
    """User plus system CPU time of a process (all its threads)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class HostileTest(SmcTestCase):

    # ---- a partial CLC from a client ------------------------------------------------

    def test_eyecatcher_then_eof(self):
        """A client connects, waits until the server's blocking read has started on an
        empty socket, sends only the eyecatcher and ends its side. The preloaded echo
        server treats the 4 bytes as data (echoes them, then sees EOF) at once, the same
        with a full close, leaves no thread spinning, and keeps serving."""
        srv, port = self.start_server("tcpapp", ["--mode", "echo", "--raw", "--conns", "3"])
        # Half-close: the echo comes back, exactly the 4 bytes, then EOF.
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            time.sleep(0.5)
            s.sendall(EYECATCHER)
            s.shutdown(socket.SHUT_WR)
            got = b""
            start = time.monotonic()
            s.settimeout(10)
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    got += chunk
            except socket.timeout:
                self.fail("no echo and no EOF within 10 s (got %r)\n%s"
                          % (got, srv.describe()))
            self.assertEqual(got, EYECATCHER, srv.describe())
            # The handshake timeout (2 s by default) must not be what ended the wait.
            self.assertLess(time.monotonic() - start, 1.8, srv.describe())
        finally:
            s.close()
        # Full close: nobody reads the echo; the server must still end the connection.
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        time.sleep(0.5)
        s.sendall(EYECATCHER)
        s.close()
        time.sleep(1.5)
        self.assertTrue(srv.alive(), srv.describe())
        before = cpu_seconds(srv.pid)
        time.sleep(1.0)
        used = cpu_seconds(srv.pid) - before
        self.assertLess(used, 0.3, "the server used %.2f s of CPU in 1 s while idle\n%s"
                        % (used, srv.describe()))
        # And a plain echo still works on the third connection.
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            s.sendall(b"hello")
            s.shutdown(socket.SHUT_WR)
            got = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
            self.assertEqual(got, b"hello", srv.describe())
        except socket.timeout:
            self.fail("the server stopped serving\n" + srv.describe())
        finally:
            s.close()
        # The second connection's echo may meet a reset (its client closed without
        # reading), as it would under plain TCP: the exit status is not the point here.
        self.finish(srv, 20, None)

    # ---- an event loop with strangers' half-made handshakes ---------------------------

    def capture_proposal(self):
        """The Proposal a preloaded client really sends, read by a raw listener that is
        published as if it ran smcpre (and then closes without answering)."""
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        lsock.settimeout(20)
        entry = publish_as_listener(self.runtime_dir, lsock)
        fcntl.flock(entry, fcntl.LOCK_SH)
        cli = self.start([app("tcpapp"), "client", "--host", "127.0.0.1", "--port",
                          str(lsock.getsockname()[1]), "--mode", "sink", "--bytes", "1",
                          "--timeout", "20"], True, name="proposer")
        try:
            conn, _ = lsock.accept()
            conn.settimeout(10)
            data = recv_clc(conn)
            conn.close()
        finally:
            lsock.close()
            entry.close()
        self.finish(cli, 30, None)
        self.assertTrue(data.startswith(EYECATCHER + b"\x01"), "no Proposal: %r" % data[:16])
        return data[:int.from_bytes(data[5:7], "big")]

    def test_event_loop_never_stalls(self):
        """A single-threaded asyncio echo server under the preload, probed by a plain
        client's round trips while 5 connections send only the eyecatcher and 5 send a
        valid Proposal and never confirm (handshake timeout 3 s). No call of the server
        waits for them: the probe's slowest round trip stays far below the timeout (it was
        2-8 s). At the deadline, with no call of the application on those connections, the
        Proposals get a Decline (HANDSHAKE_TIMEOUT) and the 4 bytes reach the application
        as data (it echoes them); afterwards the server is idle."""
        proposal = self.capture_proposal()
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "apps",
                              "asyncio_echo.py")
        srv = self.start([sys.executable, script, "server", "--port", "0", "--conns", "1000"],
                         True, name="server", env={"SMCPRE_HANDSHAKE_TIMEOUT_MS": "3000"})
        m = srv.wait_stderr(r"^listening (\d+)$", 20)
        self.assertIsNotNone(m, srv.describe())
        port = int(m.group(1))
        latencies, stop = [], threading.Event()

        def probe():
            with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                while not stop.is_set():
                    start = time.monotonic()
                    s.sendall(b"p" * 64)
                    if len(recv_exactly(s, 64)) != 64:
                        raise AssertionError("probe: EOF")
                    latencies.append(time.monotonic() - start)
                    time.sleep(0.002)

        prober = threading.Thread(target=probe, daemon=True)
        prober.start()
        time.sleep(0.3)
        partial = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in range(5)]
        proposers = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in range(5)]
        try:
            for s in partial:
                s.sendall(EYECATCHER)
            for s in proposers:
                s.sendall(proposal)
            started = time.monotonic()
            # The eyecatchers come back as data once the deadline passed (3 s).
            for s in partial:
                s.settimeout(10)
                self.assertEqual(recv_exactly(s, 4), EYECATCHER, srv.describe())
            self.assertGreater(time.monotonic() - started, 2.5, srv.describe())
            # Each Proposal: the Accept, then the Decline at the deadline.
            for s in proposers:
                s.settimeout(10)
                got = recv_clc(s)
                got += recv_clc(s)
                self.assertEqual(got[4], 2, "no Accept: %r\n%s" % (got[:16], srv.describe()))
                decline = got[68:]
                self.assertEqual(decline[:5], EYECATCHER + b"\x04",
                                 "no Decline after the Accept: %r\n%s" % (decline[:16],
                                                                          srv.describe()))
                self.assertEqual(decline[16:20], b"\x0e\x02\x00\x00", srv.describe())
        finally:
            stop.set()
            prober.join(20)
            for s in partial + proposers:
                s.close()
        self.assertGreater(len(latencies), 100, srv.describe())
        latencies.sort()
        p99 = latencies[len(latencies) * 99 // 100]
        self.assertLess(latencies[-1], 0.5,
                        "the event loop stalled: slowest probe %.3f s, p99 %.4f s, median "
                        "%.5f s over %d\n%s" % (latencies[-1], p99, latencies[len(latencies) // 2],
                                                len(latencies), srv.describe()))
        before = cpu_seconds(srv.pid)
        time.sleep(1.0)
        used = cpu_seconds(srv.pid) - before
        self.assertLess(used, 0.3, "the server used %.2f s of CPU in 1 s while idle\n%s"
                        % (used, srv.describe()))
        print("probe: %d round trips, median %.5f s, p99 %.4f s, max %.4f s"
              % (len(latencies), latencies[len(latencies) // 2], p99, latencies[-1]),
              file=sys.stderr)


    # ---- a truncated Accept from a server -------------------------------------------

    def truncated_accept_server(self, delay):
        """A raw server, published as if it ran smcpre, that answers the Proposal with
        66 of an Accept's 68 bytes, then after `delay` seconds sends DATA and closes."""
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
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.settimeout(5)
                result["first"] = recv_clc(conn)
                conn.sendall(ACCEPT[:66])
                time.sleep(delay)
                conn.sendall(DATA)
                conn.shutdown(socket.SHUT_WR)
                conn.settimeout(20)
                while conn.recv(4096):  # drain until the client closes
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

    def test_truncated_accept_then_data(self):
        """The client's application receives the 66 bytes and the data after them, in
        order, whether the data follows at once (the length then spans into the data) or
        only after the client's handshake timeout (300 ms)."""
        for name, delay in (("data at once", 0.05), ("data after the timeout", 0.45)):
            with self.subTest(variant=name):
                port, t, result = self.truncated_accept_server(delay)
                out = os.path.join(self.runtime_dir, "dump-%d" % port)
                cli = self.start([app("tcpapp"), "client", "--host", "127.0.0.1", "--port",
                                  str(port), "--mode", "source", "--dump", out,
                                  "--timeout", "30"], True, name="client",
                                 env={"SMCPRE_HANDSHAKE_TIMEOUT_MS": "300"})
                self.finish(cli, 40)
                t.join(30)
                self.assertIsNone(result["error"], cli.describe())
                self.assertTrue(result["first"].startswith(EYECATCHER),
                                "the client did not propose SMC to a published port: %r\n%s"
                                % (result["first"][:16], cli.describe()))
                with open(out, "rb") as f:
                    got = f.read()
                self.assertEqual(got, ACCEPT[:66] + DATA,
                                 "the application did not get exactly the server's bytes "
                                 "(%d of %d)\n%s" % (len(got), 66 + len(DATA), cli.describe()))


if __name__ == "__main__":
    main()
