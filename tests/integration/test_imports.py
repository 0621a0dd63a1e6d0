#!/usr/bin/env python3
"""Which socket-related libc symbols do real programs import, and is each one handled?

For redis (server, benchmark, cli), nginx, iperf3 (and its libiperf), sockperf, socat, wrk
and curl (and libcurl), `nm -D --undefined-only` lists the libc imports; every one in the
socket-related family (the `family` patterns of libc_imports.txt) must have a verdict in
that table: `hooked` (then libsmcpre.so must export it: preload/exports.map's global list
and the built library), `harmless: <why>`, or `gap: <why>` (printed as a finding, not a
failure). The table per program is printed, so the test output is the list wanted
for. Two imports get a closer look:
  - syscall(): the syscall numbers passed to it are read from the disassembly; a socket,
    I/O or process call made that way would bypass every hook.
  - dlsym(): a program that imports dlsym but none of socket/connect/accept resolves its
    socket calls by name at run time (sockperf); the names it carries are checked like
    imports.
A program that is not installed is skipped (scripts/deps installs them).
"""

import os
import platform
import re
import shutil
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
TABLE = os.path.join(HERE, "libc_imports.txt")
EXPORTS_MAP = os.path.join(REPO, "preload", "exports.map")
LIB = os.environ.get("SMCPRE_LIB") or os.path.join(REPO, "build", "preload", "libsmcpre.so")

# label -> (path, or (program, library name) for a shared library found with ldd)
PROGRAMS = {
    "redis-server": "/usr/bin/redis-server",
    "redis-benchmark": "/usr/bin/redis-benchmark",
    "redis-cli": "/usr/bin/redis-cli",
    "nginx": "/usr/sbin/nginx",
    "iperf3": "/usr/bin/iperf3",
    "libiperf": ("/usr/bin/iperf3", "libiperf.so.0"),
    "sockperf": "/usr/bin/sockperf",
    "socat": "/usr/bin/socat",
    "wrk": "/usr/bin/wrk",
    "curl": "/usr/bin/curl",
    "libcurl": ("/usr/bin/curl", "libcurl.so.4"),
}

# x86-64 syscall numbers that may be passed to syscall(): none moves socket data or
# changes fds, processes or signals behind smcpre's back.
HARMLESS_SYSCALLS = {
    125: "capget", 126: "capset", 186: "gettid", 202: "futex", 206: "io_setup",
    207: "io_destroy", 208: "io_getevents", 209: "io_submit", 210: "io_cancel",
    318: "getrandom", 39: "getpid", 110: "getppid", 228: "clock_gettime", 96: "gettimeofday",
    203: "sched_setaffinity", 204: "sched_getaffinity", 309: "getcpu",
}


def load_table(path=TABLE):
    """Returns (family regexes, {name or name@program: (kind, reason)})."""
    family, verdicts = [], {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, _, rest = line.partition(" ")
            rest = rest.strip()
            if key == "family":
                family.append(re.compile(rest))
                continue
            kind, _, reason = rest.partition(":")
            kind, reason = kind.strip(), reason.strip()
            if kind not in ("hooked", "harmless", "gap") or (kind != "hooked") != bool(reason):
                raise ValueError("%s:%d: bad verdict %r" % (path, number, rest))
            if key in verdicts:
                raise ValueError("%s:%d: %s classified twice" % (path, number, key))
            verdicts[key] = (kind, reason)
    return family, verdicts


def exported_hooks(path=EXPORTS_MAP):
    """The names in the global list of a linker version script."""
    with open(path) as f:
        text = re.sub(r"/\*.*?\*/", "", f.read(), flags=re.S)
    m = re.search(r"global:(.*?)local:", text, re.S)
    if m is None:
        raise ValueError("%s: no global/local lists" % path)
    return {n.strip() for n in m.group(1).split(";") if n.strip()}


def in_family(name, family):
    return not name.startswith("_Z") and any(rx.search(name) for rx in family)


def verdict(name, program, verdicts):
    return verdicts.get("%s@%s" % (name, program)) or verdicts.get(name)


def nm_symbols(path, defined=False):
    """Dynamic symbols (undefined imports, or defined exports) as {name: version}."""
    args = ["nm", "-D", "--defined-only" if defined else "--undefined-only", path]
    out = subprocess.run(args, capture_output=True, text=True, timeout=60, check=True).stdout
    symbols = {}
    for line in out.splitlines():
        if not line.strip():
            continue
        name, _, version = line.split()[-1].partition("@")
        symbols[name] = version.lstrip("@")
    return symbols


def libc_imports(path):
    """The C symbols a binary imports from glibc (versioned GLIBC_*)."""
    return {n for n, v in nm_symbols(path).items() if v.startswith("GLIBC_")}


def resolve(spec):
    """A program's path, or a library's path as its program's ldd resolves it; None if
    not installed."""
    if isinstance(spec, str):
        return spec if os.path.exists(spec) else None
    program, library = spec
    if not os.path.exists(program) or shutil.which("ldd") is None:
        return None
    out = subprocess.run(["ldd", program], capture_output=True, text=True, timeout=60).stdout
    for line in out.splitlines():
        m = re.match(r"\s*%s\s+=>\s+(\S+)" % re.escape(library), line)
        if m and os.path.exists(m.group(1)):
            return m.group(1)
    return None


def dlsym_names(path, libc_exports):
    """The libc function names among a binary's strings: what a program that resolves its
    socket calls with dlsym() can look up. Every suffix counts, as the linker stores a
    string that ends another only once ("fork" inside "vfork")."""
    with open(path, "rb") as f:
        data = f.read()
    names = set()
    for m in re.finditer(rb"(?<=\0)[A-Za-z_][A-Za-z0-9_]{1,40}(?=\0)", data):
        text = m.group().decode()
        names.update(text[i:] for i in range(len(text)))
    return names & libc_exports


def syscall_numbers(path):
    """For every call to syscall@plt: the constant loaded into %edi/%rdi before it (the
    syscall number), or None if it is not a constant within the few instructions before.
    x86-64 only."""
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", path], capture_output=True,
                         text=True, timeout=300, check=True).stdout
    numbers, recent = [], []
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) < 2:
            if not line.strip() or line.endswith(">:"):
                recent = []  # a new function: nothing carries over
            continue
        insn = parts[-1].strip()
        if re.match(r"call\s+\S+\s+<syscall@plt>", insn):
            number = None
            for prev in reversed(recent):
                if re.search(r",%[er]di$", prev) or re.match(r"xor\s+%edi,%edi", prev):
                    m = re.match(r"mov[lq]?\s+\$0x([0-9a-f]+),%[er]di$", prev)
                    number = int(m.group(1), 16) if m else (0 if prev.startswith("xor") else None)
                    break
            numbers.append(number)
        recent = (recent + [insn])[-12:]
    return numbers


class ImportsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        if shutil.which("nm") is None:
            raise unittest.SkipTest("nm (binutils) is not installed")
        cls.family, cls.verdicts = load_table()
        cls.hooks = exported_hooks()
        cls.lib_exports = set(nm_symbols(LIB, defined=True)) if os.path.exists(LIB) else None

    def check_names(self, program, names, origin, verdicts=None):
        """Prints the verdict of each family member in `names`; returns the problems."""
        problems, rows = [], []
        for name in sorted(n for n in names if in_family(n, self.family)):
            v = verdict(name, program, self.verdicts if verdicts is None else verdicts)
            if v is None:
                problems.append("%s: %s is not classified in libc_imports.txt" % (program, name))
                rows.append((name, "UNCLASSIFIED"))
                continue
            kind, reason = v
            if kind == "hooked":
                if name not in self.hooks:
                    problems.append("%s: %s is 'hooked' but not in exports.map" % (program, name))
                elif self.lib_exports is not None and name not in self.lib_exports:
                    problems.append("%s: %s is 'hooked' but libsmcpre.so does not export it"
                                    % (program, name))
            rows.append((name, kind + (": " + reason if reason else "")))
        print("\n== %s (%s): %d socket-related libc symbols%s" % (
            program, origin, len(rows), "" if rows else " (none)"), file=sys.stderr)
        for name, text in rows:
            print("   %-18s %s" % (name, text), file=sys.stderr)
        gaps = [r for r in rows if r[1].startswith("gap:")]
        for name, text in gaps:
            print("   GAP (not interposed, can break SMC): %s" % name, file=sys.stderr)
        return problems

    def check_program(self, label):
        path = resolve(PROGRAMS[label])
        if path is None:
            self.skipTest("%s is not installed (scripts/deps installs it)" % label)
        imports = libc_imports(path)
        problems = self.check_names(label, imports, path)
        # Socket calls resolved by name at run time count as imports.
        if "dlsym" in imports and not imports & {"socket", "connect", "accept", "accept4"}:
            libc = resolve((path, "libc.so.6"))
            self.assertIsNotNone(libc, "%s: where is its libc?" % label)
            names = dlsym_names(path, set(nm_symbols(libc, defined=True)))
            self.assertIn("recvfrom", names, "%s imports dlsym, but where are its socket calls?"
                          % label)
            problems += self.check_names(label, names, "names resolved with dlsym")
        self.assertEqual(problems, [], "\n".join(problems))

    def test_redis_server(self):
        self.check_program("redis-server")

    def test_redis_benchmark(self):
        self.check_program("redis-benchmark")

    def test_redis_cli(self):
        self.check_program("redis-cli")

    def test_nginx(self):
        self.check_program("nginx")

    def test_iperf3(self):
        self.check_program("iperf3")
        self.check_program("libiperf")

    def test_sockperf(self):
        self.check_program("sockperf")

    def test_socat(self):
        self.check_program("socat")

    def test_wrk(self):
        self.check_program("wrk")

    def test_curl(self):
        self.check_program("curl")
        self.check_program("libcurl")

    def test_syscall_numbers(self):
        """Programs that import syscall() pass it harmless numbers only."""
        if platform.machine() != "x86_64":
            self.skipTest("syscall numbers are checked on x86-64 only")
        if shutil.which("objdump") is None:
            self.skipTest("objdump (binutils) is not installed")
        checked = 0
        for label, spec in sorted(PROGRAMS.items()):
            path = resolve(spec)
            if path is None or "syscall" not in libc_imports(path):
                continue
            with self.subTest(program=label):
                numbers = syscall_numbers(path)
                self.assertTrue(numbers, "%s imports syscall but never calls it?" % label)
                names = [HARMLESS_SYSCALLS.get(n, "UNKNOWN(%s)" % n) for n in numbers]
                print("\n== %s: syscall() numbers: %s" % (label, ", ".join(
                    "%s=%s" % (n, name) for n, name in zip(numbers, names))), file=sys.stderr)
                self.assertNotIn(None, numbers,
                                 "%s: a syscall number is computed at run time" % label)
                unknown = sorted({n for n in numbers if n not in HARMLESS_SYSCALLS})
                self.assertEqual(unknown, [], "%s calls syscall() with numbers not known to be "
                                 "harmless (they may bypass smcpre's hooks)" % label)
                checked += 1
        if checked == 0:
            self.skipTest("no installed program imports syscall()")

    def test_table_matches_exports(self):
        """Every hook in exports.map is classified 'hooked', and nothing else is: a hook
        added later must update the table's verdict."""
        for name, (kind, _) in self.verdicts.items():
            base = name.split("@")[0]
            if kind == "hooked":
                self.assertIn(base, self.hooks, "%s is 'hooked' but not in exports.map" % name)
            else:
                self.assertNotIn(base, self.hooks,
                                 "%s is in exports.map: its verdict must be 'hooked'" % name)
        unlisted = sorted(h for h in self.hooks if h not in self.verdicts)
        self.assertEqual(unlisted, [], "hooks missing from libc_imports.txt")
        for hook in self.hooks:
            self.assertTrue(in_family(hook, self.family), "%s is not in the family" % hook)

    def test_check_can_fail(self):
        """The check notices an unclassified family member and a false 'hooked'."""
        problems = self.check_names(
            "self-test", {"recvfoo", "fancy_recv", "strdup", "pthread_create", "read"},
            "made up", dict(self.verdicts, fancy_recv=("hooked", "")))
        self.assertEqual(problems, [
            "self-test: fancy_recv is 'hooked' but not in exports.map",
            "self-test: recvfoo is not classified in libc_imports.txt",
        ])


if __name__ == "__main__":
    unittest.main(verbosity=2)
