"""What every part of scripts/bench uses: the repository root, the build, the log line that
proves an SMC connection, the error exit and number formatting.
"""

import os
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
