"""Packet captures on lo for the integration tests (test_capture.py, test_option.py):
tshark started for one port and stopped, and fields of the capture read back with
Wireshark's SMC dissector on."""

import os
import signal
import subprocess
import time

# Decode options: the heuristic SMC dissector is on by default; say so explicitly, and try
# heuristics before port-based dissectors (a random port may belong to another protocol).
DECODE = ["--enable-heuristic", "smc_tcp", "-o", "tcp.try_heuristic_first:TRUE"]


def start(test, tshark, port, directory, interface="lo"):
    """Captures TCP port `port` on `interface` into a file in `directory`, with `test`'s
    process bookkeeping (harness.SmcTestCase). Returns (the tshark process, the file)."""
    pcap = os.path.join(directory, "capture-%d.pcapng" % port)
    cap = test.start([tshark, "-i", interface, "-f", "tcp port %d" % port, "-w", pcap], False,
                     name="tshark")
    # "Capturing on" comes before dumpcap really captures; tshark 4 reports "Capture
    # started" once it does. Older versions lack that line: give them a moment.
    if cap.wait_stderr(r"Capture started", 30) is None:
        if cap.wait_stderr(r"Capturing on", 1) is None:
            test.fail("tshark did not start capturing\n" + cap.describe())
        time.sleep(2)
    return cap, pcap


def stop(test, cap):
    time.sleep(0.5)  # let the last segments (FIN/ACK) reach the capture
    os.kill(cap.popen.pid, signal.SIGINT)
    test.finish(cap, 30, None)


def fields(test, tshark, pcap, display_filter, *names):
    """The capture's packets that match `display_filter`, each as the list of `names`."""
    out = subprocess.run(
        [tshark, "-r", pcap] + DECODE + ["-Y", display_filter, "-T", "fields"]
        + [a for n in names for a in ("-e", n)],
        capture_output=True, text=True, timeout=60)
    test.assertEqual(out.returncode, 0, out.stderr)
    return [line.split("\t") for line in out.stdout.splitlines() if line.strip()]
