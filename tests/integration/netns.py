"""A private network namespace whose kernel counters prove which path bytes took.

Used by test_apps.py and scripts/bench: inside a namespace of our own, the IP and TCP
counters of /proc/thread-self/net see only our programs' traffic, so "this run moved N
bytes over kernel TCP in M connections" is the kernel's word, not smcpre's.
"""

import ctypes
import os
import socket
import subprocess

CLONE_NEWNET = 0x40000000

# IP bytes (headers included) one TCP connection may carry when its payload moved over
# SMC: SYN, SYN-ACK, the CLC Proposal, Accept and Confirm, ACKs, FIN exchange (about 870
# bytes measured).
HANDSHAKE_BUDGET = 2048
# Slack for anything else in the namespace (nothing else is expected to run there).
SLACK = 4096


def enter_private_netns():
    """Moves the calling thread (which must be the one that starts the programs) into a
    new network namespace with only lo, up. Returns None, or why it could not."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        return "cannot create a network namespace: %s (needs root)" % os.strerror(
            ctypes.get_errno())
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=30)
    return None


def _table(path, prefix):
    with open(path) as f:
        lines = [l.split() for l in f if l.startswith(prefix + ":")]
    return dict(zip(lines[0][1:], (int(v) for v in lines[1][1:])))


def counters():
    """(IP bytes received, TCP connections actively opened) in our namespace."""
    ip = _table("/proc/thread-self/net/netstat", "IpExt")
    tcp = _table("/proc/thread-self/net/snmp", "Tcp")
    return ip["InOctets"], tcp["ActiveOpens"]


def smc_bound(opens):
    """The most IP bytes `opens` connections may show if their payload went over SMC."""
    return opens * HANDSHAKE_BUDGET + SLACK


def listening(port):
    """True once a TCP socket listens on `port` (read from /proc: a probe connection would
    be an extra client to the program under test)."""
    for path in ("/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        return True
        except FileNotFoundError:
            pass
    return False


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
