"""Syscalls per operation for scripts/bench --syscalls: perf stat on the syscall tracepoints
(syscalls:sys_enter_*) of a server's processes, their threads and the children and threads
they start, counting from just before the client starts until it has exited.
"""

import os
import select
import shutil
import subprocess
import sys
import tempfile
import time

TRACEFS = "/sys/kernel/tracing"
PREFIX = "syscalls:sys_enter_"


def perf():
    return shutil.which("perf") or "/usr/bin/perf"


def parse(text):
    """{syscall name: count} from `perf stat -x,` output (events counted zero times, or
    not at all, left out)."""
    counts = {}
    for line in text.splitlines():
        fields = line.split(",")
        if len(fields) >= 3 and fields[2].startswith(PREFIX) and fields[0].isdigit():
            if int(fields[0]):
                counts[fields[2][len(PREFIX):]] = int(fields[0])
    return counts


def unavailable():
    """None if perf can count syscalls here, else why not. Mounts tracefs if it is not
    (the tracepoints live there), saying so."""
    if not os.path.exists(perf()):
        return "perf is not installed (linux-perf)"
    if not any(os.path.isdir(os.path.join(d, "events", "syscalls"))
               for d in (TRACEFS, "/sys/kernel/debug/tracing")):
        print("scripts/bench: mounting tracefs on %s for the syscall tracepoints" % TRACEFS,
              file=sys.stderr)
        out = subprocess.run(["mount", "-t", "tracefs", "nodev", TRACEFS], capture_output=True,
                             text=True)
        if out.returncode != 0:
            return "tracefs is not mounted and mounting it on %s failed: %s" % (
                TRACEFS, out.stderr.strip() or "exit %d" % out.returncode)
    try:
        out = subprocess.run([perf(), "stat", "-x,", "-e", PREFIX + "read", "true"],
                             capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "perf stat timed out"
    if out.returncode != 0 or "read" not in parse(out.stderr):
        return "perf cannot count %sread: %s" % (PREFIX, (out.stderr.strip().splitlines()
                                                          or ["exit %d" % out.returncode])[-1])
    return None


class Keeper:
    """Holds the syscall tracepoints registered (perf stat on all of them, attached to an
    idle process) so that each run's perf stat opens its counters in milliseconds: the
    first registration of each of the ~350 tracepoints waits for the kernel (about 14 s
    for all of them here)."""

    def __init__(self):
        self.idle = subprocess.Popen(["sleep", "infinity"], start_new_session=True)
        self.counter = Counter([self.idle.pid], timeout=120)

    def close(self):
        self.counter.stop()
        self.idle.kill()
        self.idle.wait()


def start():
    """(a Keeper, None) if perf can count syscalls here, else (None, why not)."""
    why_not = unavailable()
    if why_not:
        return None, why_not
    print("scripts/bench: registering the syscall tracepoints (perf stat, ~15 s)",
          file=sys.stderr)
    keeper = Keeper()
    if keeper.counter.problem:
        keeper.close()
        return None, "perf stat on %s* did not start" % PREFIX
    return keeper, None


def children(pid):
    """The pids whose parent is pid."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid:
                found.append(int(entry))
    return found


class Counter:
    """perf stat -p on the given processes (every thread, and what they start later: perf
    counters are inherited), started disabled and enabled through its control FIFO, so
    that counting begins only once every counter is open."""

    def __init__(self, pids, timeout=30):
        self.dir = tempfile.mkdtemp(prefix="smcpre-bench-perf-")
        ctl, ack = os.path.join(self.dir, "ctl"), os.path.join(self.dir, "ack")
        self.out = os.path.join(self.dir, "out")
        os.mkfifo(ctl)
        os.mkfifo(ack)
        self.ack = os.open(ack, os.O_RDONLY | os.O_NONBLOCK)
        self.ctl = None
        self.proc = subprocess.Popen(
            [perf(), "stat", "-x,", "-D", "-1", "--control", "fifo:%s,%s" % (ctl, ack),
             "-o", self.out, "-e", PREFIX + "*", "-p", ",".join(str(p) for p in pids)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while self.ctl is None and self.proc.poll() is None and time.monotonic() < deadline:
            try:  # fails (ENXIO) until perf has opened its end
                self.ctl = os.open(ctl, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                time.sleep(0.01)
        self.problem = None if self.command("enable", deadline) else "perf did not start"

    def command(self, word, deadline):
        """Sends a control command; True once perf acknowledged it."""
        if self.ctl is None:
            return False
        os.write(self.ctl, (word + "\n").encode())
        got = b""
        while b"ack" not in got and self.proc.poll() is None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.ack], [], [], left)[0]:
                return False
            got += os.read(self.ack, 64)
        return b"ack" in got

    def stop(self):
        """Stops counting; returns ({syscall name: count}, None) or (None, the problem)."""
        try:
            if self.problem is None and self.proc.poll() is None:
                self.command("disable", time.monotonic() + 10)
            if self.proc.poll() is None:
                self.proc.send_signal(2)  # SIGINT: perf stat prints its counts and exits
            try:
                _, err = self.proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                _, err = self.proc.communicate()
            try:
                with open(self.out) as f:
                    counts = parse(f.read())
            except OSError:
                counts = {}
            if self.problem is None and not counts:
                self.problem = "perf stat counted nothing: %s" % err.decode(
                    "utf-8", "replace").strip()[-300:]
            return (None, self.problem) if self.problem else (counts, None)
        finally:
            for fd in (self.ctl, self.ack):
                if fd is not None:
                    os.close(fd)
            shutil.rmtree(self.dir, ignore_errors=True)


def per_op(runs):
    """From [(counts, ops)] of one measurement's runs: ([syscalls per op of each run],
    the four most frequent syscalls as [(name, per op)] over all runs together)."""
    totals, ops, each = {}, 0, []
    for counts, n in runs:
        each.append(sum(counts.values()) / n)
        ops += n
        for name, c in counts.items():
            totals[name] = totals.get(name, 0) + c
    top = sorted(totals.items(), key=lambda kv: -kv[1])[:4]
    return each, [(name, c / ops) for name, c in top]
