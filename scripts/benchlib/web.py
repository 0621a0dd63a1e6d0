"""scripts/bench's web rows: nginx serving a 1 KiB file to wrk, directly and through a
reverse proxy (a second nginx with proxy_pass and upstream keepalive), in the private
network namespace of apps.py. The nginx configurations are test_apps.py's
(tests/integration/nginx_conf.py).
"""

import os
import re

from .apps import AppRun
from .common import die
import netns  # tests/integration, on the path once .common is imported
from nginx_conf import WORKERS, nginx_argv, worker_uid

FILE = "1k.bin"
WRK_P50 = re.compile(r"^\s*50%\s+([\d.]+)(us|ms|s)\s*$", re.M)
WRK_REQUESTS = re.compile(r"(\d+) requests in ")
WRK_RATE = re.compile(r"^Requests/sec:\s*([\d.]+)", re.M)
WRK_ERRORS = re.compile(r"Socket errors:.*|Non-2xx or 3xx responses:.*")
UNIT_US = {"us": 1, "ms": 1e3, "s": 1e6}


def web_run(lib, smc, count_syscalls):
    """An AppRun whose clients may attach to the workers' uid over shm, with a document
    root holding FILE (1 KiB)."""
    run = AppRun(lib, smc, count_syscalls, {"SMCPRE_SHM_UIDS": str(worker_uid())})
    root = os.path.join(run.runtime, "www")
    os.mkdir(root)
    with open(os.path.join(root, FILE), "wb") as f:
        f.write(os.urandom(1024))
    os.chmod(root, 0o755)
    os.chmod(os.path.join(root, FILE), 0o644)
    return run, root


def wrk(run, port, conns, seconds):
    """{"p50": µs, "rate": requests/s} of wrk -c conns fetching FILE; an operation is a
    request."""
    out = run.client(["wrk", "-t", "1", "-c", str(conns), "-d", "%ds" % seconds, "--latency",
                      "--timeout", "10s", "http://127.0.0.1:%d/%s" % (port, FILE)],
                     seconds + 60)
    p50, requests, rate = WRK_P50.search(out), WRK_REQUESTS.search(out), WRK_RATE.search(out)
    errors = WRK_ERRORS.findall(out)
    if errors or not (p50 and requests and rate):
        run.close()
        die("wrk: %s\n%s" % ("; ".join(errors) or "unexpected output", out[-2000:]))
    return run.result({"p50": float(p50.group(1)) * UNIT_US[p50.group(2)],
                       "rate": float(rate.group(1))}, int(requests.group(1)), "request")


def nginx_once(lib, smc, seconds, count_syscalls=False):
    """nginx (2 workers) serving FILE to wrk -t 1 -c 1."""
    run, root = web_run(lib, smc, count_syscalls)
    port = netns.free_port()
    run.serve(nginx_argv(run.runtime, "nginx", port, root=root), port, WORKERS)
    return wrk(run, port, 1, seconds)


PROXY_CONNS = 4


def proxy_once(lib, smc, seconds, count_syscalls=False):
    """wrk -t 1 -c PROXY_CONNS through a reverse proxy (nginx, 2 workers, upstream
    keepalive) to a backend nginx (2 workers) serving FILE; the syscalls are both nginx
    instances'."""
    run, root = web_run(lib, smc, count_syscalls)
    backend, port = netns.free_port(), netns.free_port()
    run.serve(nginx_argv(run.runtime, "backend", backend, root=root), backend, WORKERS)
    run.serve(nginx_argv(run.runtime, "proxy", port, upstream=backend), port, WORKERS)
    return wrk(run, port, PROXY_CONNS, seconds)
