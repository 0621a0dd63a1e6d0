#!/usr/bin/env python3
"""Hostile peers: raw Python clients and servers (no preload) that send incomplete CLC
messages to a preloaded application. Bytes that do not make a complete CLC message are
the application's, delivered in order, exactly as plain TCP would deliver them; a peer
that stalls or closes mid-message never holds an application thread without end."""

import concurrent.futures
import fcntl
import os
import random
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

    def first_message_of(self, start_client):
        """Starts a preloaded client with start_client(port) against a raw listener that
        is published as if it ran smcpre; returns (the first CLC message the client sent,
        its process). The listener reads it and closes without answering."""
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        lsock.settimeout(20)
        entry = publish_as_listener(self.runtime_dir, lsock)
        fcntl.flock(entry, fcntl.LOCK_SH)
        proc = start_client(lsock.getsockname()[1])
        try:
            conn, _ = lsock.accept()
            conn.settimeout(10)
            data = recv_clc(conn)
            conn.close()
        finally:
            lsock.close()
            entry.close()
        self.assertTrue(data.startswith(EYECATCHER + b"\x01"),
                        "no Proposal: %r\n%s" % (data[:16], proc.describe()))
        return data, proc

    def capture_proposal(self):
        """The Proposal a preloaded client really sends."""
        data, cli = self.first_message_of(lambda port: self.start(
            [app("tcpapp"), "client", "--host", "127.0.0.1", "--port", str(port), "--mode",
             "sink", "--bytes", "1", "--timeout", "20"], True, name="proposer"))
        self.finish(cli, 30, None)
        return data

    def test_event_loop_never_stalls(self):
        """A single-threaded asyncio echo server under the preload, probed by a plain
        client's round trips while 5 connections send only the eyecatcher and 4 send a
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
        prober = threading.Thread(target=self.probe, args=(port, latencies, stop), daemon=True)
        prober.start()
        time.sleep(0.3)
        partial = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in range(5)]
        # Identities of their own: one client's unconfirmed first contacts would follow
        # one another (each waits for the one before).
        proposals = [proposal[:8] + bytes([0x55, i]) + proposal[10:] for i in range(4)]
        proposers = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in range(4)]
        try:
            for s in partial:
                s.sendall(EYECATCHER)
            for s, data in zip(proposers, proposals):
                s.sendall(data)
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
        self.check_probe(latencies, srv)
        self.assert_idle(srv)

    # ---- thousands of mutated CLC messages --------------------------------------------

    @staticmethod
    def mutate(rng, message):
        """One random corruption of a CLC message: bits, bytes, its length field, its
        type, a truncation, a tail of garbage, or a few fixed absurd shapes."""
        m = bytearray(message)
        kind = rng.randrange(9)
        if kind == 0:
            for _ in range(rng.randint(1, 4)):
                i = rng.randrange(len(m))
                m[i] ^= 1 << rng.randrange(8)
        elif kind == 1:
            for _ in range(rng.randint(1, 8)):
                m[rng.randrange(len(m))] = rng.randrange(256)
        elif kind == 2:
            m[5:7] = rng.choice([0, 1, 7, 8, 12, len(m) - 1, len(m) + 1, 0x7fff, 0xffff,
                                 rng.randrange(65536)]).to_bytes(2, "big")
        elif kind == 3:
            m[4] = rng.randrange(256)
        elif kind == 4:
            m = m[:rng.randrange(1, len(m))]
        elif kind == 5:
            m += bytes(rng.randrange(256) for _ in range(rng.randint(1, 300)))
        elif kind == 6:
            m[7] = rng.randrange(256)  # version and flags
        elif kind == 7:
            m = bytearray(EYECATCHER[:rng.randint(1, 4)])
        else:
            # The offsets and counts in the body (IP prefix offset, prefix count, ...).
            for i in range(8, len(m) - 4, rng.randint(2, 9)):
                if rng.random() < 0.3:
                    m[i] = rng.choice([0, 0xff, 0x7f, 0x80, rng.randrange(256)])
        return bytes(m)

    @staticmethod
    def strip_clc(data, types):
        """Removes whole CLC messages of the given types from the start of data."""
        while (len(data) >= 8 and data[:4] == EYECATCHER and data[4] in types):
            length = int.from_bytes(data[5:7], "big")
            if length < 12 or len(data) < length or data[length - 4:length] != EYECATCHER:
                break
            data = data[length:]
        return data

    @staticmethod
    def process_vitals(pid):
        with open("/proc/%d/status" % pid) as f:
            threads = int(next(l for l in f if l.startswith("Threads:")).split()[1])
        return threads, len(os.listdir("/proc/%d/fd" % pid))

    def test_mutated_proposals(self):
        """10,000 connections to a preloaded asyncio echo server, each sending one
        mutated Proposal (16 at a time) and ending its side. Every connection gets back
        only CLC messages (Accept, Decline) and then exactly the bytes of what it sent
        that were not taken as one CLC message, in order; meanwhile a plain client's
        round trips never stall; afterwards the server has its threads and descriptors
        of before and is idle."""
        proposal = self.capture_proposal()
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "apps",
                              "asyncio_echo.py")
        srv = self.start([sys.executable, script, "server", "--port", "0", "--conns",
                          "100000"], True, name="server",
                         env={"SMCPRE_HANDSHAKE_TIMEOUT_MS": "500", "SMCPRE_LOG": "error"})
        m = srv.wait_stderr(r"^listening (\d+)$", 20)
        self.assertIsNotNone(m, srv.describe())
        port = int(m.group(1))
        rng = random.Random(15)
        cases = [self.mutate(rng, proposal) for _ in range(10000)]
        # A first Proposal makes the server's device, pool and threads (its vitals).
        self.assertEqual(self.talk(port, proposal)[:5], EYECATCHER + b"\x02", srv.describe())
        time.sleep(0.5)
        vitals = self.process_vitals(srv.pid)
        latencies, stop = [], threading.Event()
        prober = threading.Thread(target=self.probe, args=(port, latencies, stop), daemon=True)
        prober.start()
        bad = []
        started = time.monotonic()
        try:
            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                for sent, got in zip(cases, pool.map(lambda c: self.talk(port, c), cases)):
                    rest = self.strip_clc(got, (2, 4))
                    taken = len(sent) - len(rest)
                    ok = sent.endswith(rest) and (taken == 0 or (
                        sent[:4] == EYECATCHER and sent[taken - 4:taken] == EYECATCHER))
                    if not ok:
                        bad.append((sent.hex(), got.hex()))
        finally:
            stop.set()
            prober.join(20)
        elapsed = time.monotonic() - started
        self.assertEqual(bad[:3], [], "%d of %d connections got wrong bytes\n%s"
                         % (len(bad), len(cases), srv.describe()))
        self.assertTrue(srv.alive(), srv.describe())
        self.check_probe(latencies, srv)
        time.sleep(1.0)  # the last handshakes' deadlines (0.5 s) pass
        threads, fds = self.process_vitals(srv.pid)
        self.assertEqual(threads, vitals[0], "threads left behind\n" + srv.describe())
        self.assertLessEqual(fds, vitals[1] + 2, "descriptors left behind (%d, were %d)\n%s"
                             % (fds, vitals[1], srv.describe()))
        self.assert_idle(srv)
        print("mutated Proposals: %d connections in %.1f s" % (len(cases), elapsed),
              file=sys.stderr)

    def capture_and_connect(self, server_port):
        """A preloaded client process that sends its Proposal to a raw listener (captured
        and returned), then connects to the server for real (an active link group with
        its identity there) and holds that connection open until the test ends."""
        script = ("import socket, sys\n"
                  "a = socket.create_connection(('127.0.0.1', %d), timeout=20)\n"
                  "a.recv(1)\n"
                  "a.close()\n"
                  "b = socket.create_connection(('127.0.0.1', %d), timeout=20)\n"
                  "b.sendall(b'x')\n"
                  "assert b.recv(1) == b'x'\n"
                  "print('ready', flush=True)\n"
                  "sys.stdin.read()\n")
        proposal, holder = self.first_message_of(lambda port: self.start(
            [sys.executable, "-c", script % (port, server_port)], True, name="holder",
            stdin_pipe=True))
        deadline = time.monotonic() + 20
        while "ready" not in holder.stdout_lines and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertIn("ready", holder.stdout_lines, holder.describe())
        return proposal, holder

    def test_pending_handshakes_capped(self):
        """Proposals that are never confirmed, from one address: 12 with identities of
        their own (each a new link group) get 4 Accepts and 8 Declines PENDING_FULL; 140
        with the identity of a client that has a link group with the server get 128
        Accepts and 12 Declines PENDING_FULL. At the deadline (3 s) every Accepted one
        gets its Decline HANDSHAKE_TIMEOUT without a call of the application. The server
        keeps its threads; a second round leaves it with the descriptors the first did
        (the RMB memory areas, a few memfds that grow geometrically to the peak, stay for
        reuse); it is idle afterwards."""
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "apps",
                              "asyncio_echo.py")
        srv = self.start([sys.executable, script, "server", "--port", "0", "--conns", "1000",
                          "--nofile", "20000"], True, name="server",
                         env={"SMCPRE_HANDSHAKE_TIMEOUT_MS": "3000"})
        m = srv.wait_stderr(r"^listening (\d+)$", 20)
        self.assertIsNotNone(m, srv.describe())
        port = int(m.group(1))
        with open("/proc/%d/limits" % srv.pid) as f:
            nofile = int(next(l for l in f if l.startswith("Max open files")).split()[3])
        if nofile < 8000:
            self.skipTest("the RLIMIT_NOFILE (%d) leaves smcpre too few descriptors" % nofile)
        proposal, holder = self.capture_and_connect(port)
        time.sleep(0.3)
        threads = self.process_vitals(srv.pid)[0]
        strangers = [proposal[:8] + bytes([0x55, i]) + proposal[10:] for i in range(12)]
        after = []
        for round_ in (1, 2):
            for name, sent, want in (("new link groups", strangers, (4, 8)),
                                     ("one link group", [proposal] * 140, (128, 12))):
                with self.subTest(name, round=round_):
                    self.unconfirmed_proposals(srv, port, sent, want)
            time.sleep(0.5)
            links = [os.readlink("/proc/%d/fd/%s" % (srv.pid, f))
                     for f in os.listdir("/proc/%d/fd" % srv.pid)]
            areas = sum(1 for link in links if "smcpre-mr" in link)
            after.append((self.process_vitals(srv.pid)[0], len(links) - areas))
            # RMB memory areas grow geometrically (4 MiB, 8 MiB, ...) to the peak and
            # stay, hole-punched: 128 pending RMBs of 512 KiB need 5 or 6 of them.
            self.assertLessEqual(areas, 7, "RMB memory areas: %d\n%s" % (areas, srv.describe()))
        self.assertEqual(after[0][0], threads, "threads left behind\n" + srv.describe())
        self.assertEqual(after[1], after[0], "threads or descriptors grew (%s, then %s)\n%s"
                         % (after[0], after[1], srv.describe()))
        self.assert_idle(srv)
        holder.close_stdin()
        self.finish(holder, 20)

    def unconfirmed_proposals(self, srv, port, sent, want):
        """Sends each Proposal on a connection of its own and never confirms: `want` is
        (Accepts, Declines PENDING_FULL); every Accept is followed by a Decline
        HANDSHAKE_TIMEOUT within the deadline."""
        conns = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in sent]
        try:
            for s, data in zip(conns, sent):
                s.sendall(data)
            first = [recv_clc(s) for s in conns]
            accepts = sum(1 for f in first if f[:5] == EYECATCHER + b"\x02")
            full = sum(1 for f in first if f[:5] == EYECATCHER + b"\x04"
                       and f[16:20] == b"\x0e\x0c\x00\x00")
            self.assertEqual((accepts, full), want, srv.describe())
            started = time.monotonic()
            for s, f in zip(conns, first):
                if f[4] == 2:
                    self.assertEqual(recv_clc(s)[16:20], b"\x0e\x02\x00\x00", srv.describe())
            self.assertLess(time.monotonic() - started, 4.5, srv.describe())
        finally:
            for s in conns:
                s.close()

    @staticmethod
    def talk(port, data):
        """Sends data on a new connection, ends the sending side, returns all that comes
        back until EOF."""
        with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            got = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return got
                got += chunk

    @staticmethod
    def probe(port, latencies, stop):
        """A plain client's 64-byte round trips until stop, their times into latencies."""
        with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while not stop.is_set():
                start = time.monotonic()
                s.sendall(b"p" * 64)
                if len(recv_exactly(s, 64)) != 64:
                    raise AssertionError("probe: EOF")
                latencies.append(time.monotonic() - start)
                time.sleep(0.002)

    def check_probe(self, latencies, srv):
        self.assertGreater(len(latencies), 100, srv.describe())
        latencies.sort()
        p99 = latencies[len(latencies) * 99 // 100]
        summary = "probe: %d round trips, median %.5f s, p99 %.4f s, max %.4f s" % (
            len(latencies), latencies[len(latencies) // 2], p99, latencies[-1])
        self.assertLess(latencies[-1], 0.5, "the event loop stalled: %s\n%s"
                        % (summary, srv.describe()))
        print(summary, file=sys.stderr)

    def assert_idle(self, srv):
        before = cpu_seconds(srv.pid)
        time.sleep(1.0)
        used = cpu_seconds(srv.pid) - before
        self.assertLess(used, 0.3, "the server used %.2f s of CPU in 1 s while idle\n%s"
                        % (used, srv.describe()))

    def test_mutated_accepts(self):
        """A raw server, published as if it ran smcpre, answers 1,000 Proposals of a
        preloaded client with mutated Accepts, each followed by data and its close. The
        client application gets, on every connection, exactly the bytes that were not
        taken as one CLC message, the data included, in order, and never hangs."""
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(64)
        lsock.settimeout(60)
        entry = publish_as_listener(self.runtime_dir, lsock)
        fcntl.flock(entry, fcntl.LOCK_SH)
        count, rng, sent = 1000, random.Random(16), []

        def serve():
            try:
                for i in range(count):
                    conn, _ = lsock.accept()
                    with conn:
                        conn.settimeout(10)
                        proposal = recv_clc(conn)
                        reply = (self.mutate(rng, ACCEPT) if proposal[:4] == EYECATCHER
                                 else b"") + b"data %d\n" % i
                        sent.append(reply)
                        conn.sendall(reply)
                        conn.shutdown(socket.SHUT_WR)
                        while conn.recv(4096):  # until the client closes
                            pass
            except OSError as e:
                sent.append(repr(e).encode())
            finally:
                lsock.close()
                entry.close()

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        client = ("import socket, sys\n"
                  "for i in range(%d):\n"
                  "    s = socket.create_connection(('127.0.0.1', %d), timeout=20)\n"
                  "    got = b''\n"
                  "    while True:\n"
                  "        c = s.recv(65536)\n"
                  "        if not c: break\n"
                  "        got += c\n"
                  "    s.close()\n"
                  "    print(got.hex(), flush=True)\n") % (count, lsock.getsockname()[1])
        cli = self.start([sys.executable, "-c", client], True, name="client",
                         env={"SMCPRE_HANDSHAKE_TIMEOUT_MS": "300", "SMCPRE_LOG": "error"})
        self.finish(cli, 240)
        t.join(30)
        got = [bytes.fromhex(line) for line in cli.stdout_lines]
        self.assertEqual(len(got), count, cli.describe())
        bad = []
        for reply, received in zip(sent, got):
            taken = len(reply) - len(received)
            if not reply.endswith(received) or not received.endswith(b"\n") or (
                    taken > 0 and reply[taken - 4:taken] != EYECATCHER):
                bad.append((reply.hex(), received.hex()))
        self.assertEqual(bad[:3], [], "%d of %d connections got wrong bytes\n%s"
                         % (len(bad), count, cli.describe()))


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
