"""What every part of scripts/bench uses: the repository root, the build, the log line that
proves an SMC connection, the error exit, number formatting and table rows.
"""

import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# tests/integration/netns.py (the private network namespace of the real programs' runs).
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
SMC_ESTABLISHED = "connection SMC established"
SMC_TCP_LIMIT = 4096  # kernel TCP payload bytes an SMC connection may show (handshake)


def die(msg):
    print("scripts/bench: " + msg, file=sys.stderr)
    sys.exit(1)


def build():
    try:
        out = subprocess.run([os.path.join(ROOT, "scripts", "build")], cwd=ROOT, check=True,
                             stdout=subprocess.PIPE, timeout=1800, text=True).stdout
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        die("build failed: %s" % e)
    build_dir = out.strip().splitlines()[-1]
    return os.path.join(ROOT, build_dir)


def fmt(x, digits):
    return "%.*f" % (digits, x)


def spread(values, digits):
    return "%s–%s" % (fmt(min(values), digits), fmt(max(values), digits))


def row(label, tcp, smc, lower_is_better, digits):
    """A table row from the runs' values of both paths, paired by repetition: the medians,
    the ratio of the medians (the larger over the smaller when smcpre does better), and
    the spread: each path's lowest and highest run and the range of the repetitions'
    ratios."""
    t, s = statistics.median(tcp), statistics.median(smc)
    if lower_is_better:
        ratio = "%.2f× (TCP / SMC latency)" % (t / s)
        each = [a / b for a, b in zip(tcp, smc)]
    else:
        ratio = "%.2f× (SMC / TCP throughput)" % (s / t)
        each = [b / a for a, b in zip(tcp, smc)]
    return (label, fmt(t, digits), fmt(s, digits), ratio, "TCP %s, SMC %s; ratio %s×" % (
        spread(tcp, digits), spread(smc, digits), spread(each, 2)))
