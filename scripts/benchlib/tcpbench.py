"""tcpbench runs for scripts/bench: one server and one client, plain TCP or under the
preload, and the proof that an SMC run really used SMC (both log lines, TCP_INFO).
"""

import json
import os
import shutil
import subprocess
import tempfile
import threading

from .common import SMC_ESTABLISHED, SMC_TCP_LIMIT, die


class Server:
    """tcpbench server for one connection; stderr collected by a thread."""

    def __init__(self, argv, env):
        self.lines = []
        self.port = None
        self._ready = threading.Event()
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self):
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            if self.port is None and line.startswith("listening "):
                self.port = int(line.split()[1])
                self._ready.set()
        self._ready.set()

    def wait_port(self, timeout):
        self._ready.wait(timeout)
        return self.port

    def finish(self, timeout):
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._thread.join(5)
        return "\n".join(self.lines)


def run_once(tcpbench, lib, smc, client_args, timeout):
    """One server + client run. Returns (result dict, proof problem or None)."""
    runtime = tempfile.mkdtemp(prefix="smcpre-bench-")
    try:
        env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
        env["SMCPRE_RUNTIME_DIR"] = runtime
        if smc:
            env["LD_PRELOAD"] = lib
            env["SMCPRE_LOG"] = "info"
        srv = Server([tcpbench, "server", "--port", "0", "--conns", "1"], env)
        port = srv.wait_port(15)
        if port is None:
            srv.finish(1)
            die("tcpbench server did not start:\n" + "\n".join(srv.lines[-20:]))
        try:
            cli = subprocess.run([tcpbench, "client", "--host", "127.0.0.1", "--port", str(port),
                                  "--timeout", str(int(timeout))] + client_args,
                                 env=env, capture_output=True, text=True, timeout=timeout + 10)
        except subprocess.TimeoutExpired:
            srv.finish(1)
            die("tcpbench client timed out: %s" % " ".join(client_args))
        srv_log = srv.finish(15)
        records = [json.loads(l) for l in cli.stdout.splitlines() if l.startswith("{")]
        if cli.returncode != 0 or len(records) != 1:
            die("tcpbench client failed (%s, exit %d):\n%s%s" % (
                "SMC" if smc else "TCP", cli.returncode, cli.stderr[-3000:], srv_log[-2000:]))
        r = records[0]
        problem = None
        if smc:
            tcp_bytes = max(r["tcp_bytes_received"], r["tcp_bytes_acked"])
            if SMC_ESTABLISHED not in cli.stderr or SMC_ESTABLISHED not in srv_log:
                problem = "no '%s' log line" % SMC_ESTABLISHED
            elif tcp_bytes >= SMC_TCP_LIMIT:
                problem = "the TCP connection carried %d bytes" % tcp_bytes
        return r, problem
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
