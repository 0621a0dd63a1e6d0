// The registry's lookups through /proc/net/tcp{,6} (config/proc_listeners.h), as on a
// kernel without the sock_diag TCP handler: the parser fed text as the kernel prints it,
// the kernel's own text, the probe that tells when to fall back, and their costs.
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <catch2/catch.hpp>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "config/listener_lookup.h"
#include "config/proc_listeners.h"
#include "tests/unit/registry_fixtures.h"

// The /proc/net/tcp{,6} fallback's parser, fed text as the kernel prints it.
namespace {

using smcpre::registry::FoundListener;
using smcpre::registry::Lookup;
using smcpre::registry::proc_net::find_in_files;
using smcpre::registry::proc_net::ListenerScan;

// The headers and one socket's line as tcp4_seq_show / tcp6_seq_show print them (tcp lines
// padded to 149 columns). `local` and `remote` are ADDR:PORT in /proc's hex.
const char* const kTcpHeader =
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
    "timeout inode                                                     \n";
const char* const kTcp6Header =
    "  sl  local_address                         remote_address                        st "
    "tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";

std::string proc_line(bool v6, int sl, const char* local, const char* remote, unsigned state,
                      unsigned uid, unsigned long inode) {
  char buf[400];
  int n = std::snprintf(buf, sizeof buf,
                        "%4d: %s %s %02X %08X:%08X %02X:%08lX %08X %5u %8d %lu %d %016lx %lu %lu "
                        "%u %u %d",
                        sl, local, remote, state, 0u, 0u, 0u, 0ul, 0u, uid, 0, inode, 1,
                        0xffff8f2a12345678ul, 100ul, 0ul, 0u, 10u, -1);
  std::string line(buf, static_cast<size_t>(n));
  if (!v6 && line.size() < 149) line.resize(149, ' ');
  return line + "\n";
}

constexpr unsigned kListen = 0x0A;
constexpr unsigned kEstablished = 0x01;
constexpr unsigned kSynRecv = 0x03;
constexpr unsigned kTimeWait = 0x06;

// Addresses as a little-endian host prints them.
const char* const kAny4 = "00000000:0000";
const char* const kAny6 = "00000000000000000000000000000000:0000";

struct ProcFiles {
  TempDir dir;
  std::string tcp = dir.path + "/tcp";
  std::string tcp6 = dir.path + "/tcp6";
  void write(const std::string& path, const std::string& text) {
    FILE* f = std::fopen(path.c_str(), "w");
    REQUIRE(f != nullptr);
    REQUIRE(std::fwrite(text.data(), 1, text.size(), f) == text.size());
    REQUIRE(std::fclose(f) == 0);
  }
  // The listener found for ip:port: its inode, 0 for none, -1 for an error.
  long long find(const char* ip, uint16_t port, uid_t* uid = nullptr) {
    FoundListener found;
    switch (find_in_files(tcp.c_str(), tcp6.c_str(), address(ip, port), &found)) {
      case Lookup::kFound:
        if (uid != nullptr) *uid = found.uid;
        return static_cast<long long>(found.inode);
      case Lookup::kNone:
        return 0;
      case Lookup::kError:
        break;
    }
    return -1;
  }
};

bool little_endian_host() {
  if constexpr (std::endian::native == std::endian::little) return true;
  WARN("the literal /proc text below is a little-endian host's: skipped");
  return false;
}

}  // namespace

TEST_CASE("/proc fallback: the exact address before the wildcard, LISTEN only",
          "[registry][proc]") {
  if (!little_endian_host()) return;
  ProcFiles f;
  // Port 8080 (1F90): a wildcard listed before an exact bind on 127.0.0.1; 127.0.0.3 has
  // only a connection on that port; the kernel lists its listening hash first.
  f.write(f.tcp, std::string(kTcpHeader) +
                     proc_line(false, 0, "00000000:1F90", kAny4, kListen, 1000, 100) +
                     proc_line(false, 1, "0100007F:1F90", kAny4, kListen, 0, 200) +
                     proc_line(false, 2, "0100007F:1F91", kAny4, kListen, 0, 300) +
                     proc_line(false, 3, "0300007F:1F90", "0100007F:D431", kEstablished, 7, 400) +
                     proc_line(false, 4, "0300007F:1F92", "0100007F:D432", kTimeWait, 0, 0));
  f.write(f.tcp6, kTcp6Header);
  uid_t uid = 99;
  CHECK(f.find("127.0.0.1", 8080, &uid) == 200);
  CHECK(uid == 0);
  CHECK(f.find("127.0.0.2", 8080, &uid) == 100);  // the wildcard covers it
  CHECK(uid == 1000);
  CHECK(f.find("127.0.0.3", 8080) == 100);  // a connection is not a listener
  CHECK(f.find("127.0.0.1", 8081) == 300);
  CHECK(f.find("127.0.0.1", 8082) == 0);  // only a TIME_WAIT there
  CHECK(f.find("127.0.0.1", 8083) == 0);
  CHECK(f.find("::1", 8080) == 0);  // IPv4 sockets never take an IPv6 destination

  // Past the listening section, a LISTEN line is not looked for (the kernel never prints
  // one there); SYN_RECV lines (the listening section before 4.4) do not end it.
  f.write(f.tcp, std::string(kTcpHeader) +
                     proc_line(false, 0, "0100007F:1F90", "0100007F:D431", kSynRecv, 0, 0) +
                     proc_line(false, 1, "0100007F:1F91", kAny4, kListen, 0, 500) +
                     proc_line(false, 2, "0100007F:1F90", "0100007F:D431", kEstablished, 0, 1) +
                     proc_line(false, 3, "0100007F:1F92", kAny4, kListen, 0, 600));
  CHECK(f.find("127.0.0.1", 8081) == 500);
  CHECK(f.find("127.0.0.1", 8082) == 0);
}

TEST_CASE("/proc fallback: IPv6 addresses, dual-stack and v4-mapped binds", "[registry][proc]") {
  if (!little_endian_host()) return;
  ProcFiles f;
  // /proc prints an IPv6 address as four 32-bit words in host order: ::1 is
  // ...0001000000, ::ffff:127.0.0.1 is 0000FFFF 0100007F, 2001:db8::5 is B80D0120 ... 05000000.
  const std::string loop6 = "00000000000000000000000001000000";
  const std::string mapped = "0000000000000000FFFF00000100007F";
  const std::string doc6 = "B80D0120000000000000000005000000";
  f.write(f.tcp, kTcpHeader);
  f.write(
      f.tcp6,
      std::string(kTcp6Header) +
          proc_line(true, 0, "00000000000000000000000000000000:1F90", kAny6, kListen, 1000, 10) +
          proc_line(true, 1, (loop6 + ":1F90").c_str(), kAny6, kListen, 0, 20) +
          proc_line(true, 2, (mapped + ":1F91").c_str(), kAny6, kListen, 0, 30) +
          proc_line(true, 3, "00000000000000000000000000000000:1F91", kAny6, kListen, 0, 40) +
          proc_line(true, 4, (doc6 + ":1F92").c_str(), kAny6, kListen, 0, 50));
  CHECK(f.find("::1", 8080) == 20);          // exact
  CHECK(f.find("2001:db8::5", 8080) == 10);  // the wildcard [::]
  CHECK(f.find("2001:db8::5", 8082) == 50);
  CHECK(f.find("::2", 8082) == 0);
  // IPv4: the dual-stack [::] takes it (IPV6_V6ONLY is not shown: Linux's default assumed),
  // a v4-mapped bind is exact.
  CHECK(f.find("127.0.0.1", 8080) == 10);
  CHECK(f.find("127.0.0.1", 8091) == 0);
  CHECK(f.find("127.0.0.1", 8081) == 30);
  CHECK(f.find("127.0.0.2", 8081) == 40);
  // An IPv4 wildcard comes before [::]; an IPv4 exact bind before a v4-mapped one.
  f.write(f.tcp, std::string(kTcpHeader) +
                     proc_line(false, 0, "00000000:1F90", kAny4, kListen, 0, 60) +
                     proc_line(false, 1, "0100007F:1F91", kAny4, kListen, 0, 70));
  CHECK(f.find("127.0.0.1", 8080) == 60);
  CHECK(f.find("127.0.0.1", 8081) == 70);
  CHECK(f.find("::1", 8080) == 20);  // IPv4 sockets never take an IPv6 destination
  // An IPv6 destination does not read the tcp file; a missing tcp6 (IPv6 off) is empty.
  f.write(f.tcp, "garbage that would be an error if read \x01\x02");
  CHECK(f.find("::1", 8080) == 20);
  REQUIRE(unlink(f.tcp6.c_str()) == 0);
  CHECK(f.find("::1", 8080) == 0);
  f.write(f.tcp,
          std::string(kTcpHeader) + proc_line(false, 0, "0100007F:1F90", kAny4, kListen, 0, 80));
  CHECK(f.find("127.0.0.1", 8080) == 80);
  REQUIRE(unlink(f.tcp.c_str()) == 0);
  CHECK(f.find("127.0.0.1", 8080) == -1);  // no tcp file: no answer, never "none"
}

TEST_CASE("/proc fallback: any split of the text, malformed lines", "[registry][proc]") {
  if (!little_endian_host()) return;
  const std::string tcp = std::string(kTcpHeader) + std::string(300, 'x') + "\n" +
                          "   0: 0100007F:1F9\n" +                                 // truncated
                          "   1: 0100007G:1F90 00000000:0000 0A 0 0 0 0 0 77\n" +  // not hex
                          "   2: 0100007F:1F90 00000000:0000 0A 0 0 0 x 0 77\n" +  // bad uid
                          "\n" + proc_line(false, 3, "00000000:1F90", kAny4, kListen, 5, 1) +
                          proc_line(false, 4, "0100007F:1F90", kAny4, kListen, 6, 2);
  for (size_t piece = 1; piece <= tcp.size(); piece += piece < 20 ? 1 : 37) {
    ListenerScan scan(address("127.0.0.1", 8080));
    for (size_t at = 0; at < tcp.size(); at += piece) {
      if (scan.feed(false, tcp.data() + at, std::min(piece, tcp.size() - at))) break;
    }
    scan.end_file(false);
    FoundListener found;
    INFO("pieces of " << piece);
    REQUIRE(scan.found(&found));
    CHECK(found.inode == 2);
    CHECK(found.uid == 6);
    CHECK(scan.complete());
  }
  // A last line without its newline still counts.
  ListenerScan scan(address("127.0.0.2", 8080));
  std::string last = proc_line(false, 0, "00000000:1F90", kAny4, kListen, 5, 9);
  last.pop_back();
  scan.feed(false, last.data(), last.size());
  scan.end_file(false);
  FoundListener found;
  REQUIRE(scan.found(&found));
  CHECK(found.inode == 9);
  CHECK_FALSE(scan.complete());  // a wildcard: tcp6 could still hold a v4-mapped exact bind
}

TEST_CASE("/proc fallback: the kernel's own /proc text", "[registry][proc]") {
  // The calling thread's view names the very sockets fstat() names, byte order included.
  Listening l4("127.0.0.1", 0);
  ProcFiles f;
  f.tcp = "/proc/thread-self/net/tcp";
  f.tcp6 = "/proc/thread-self/net/tcp6";
  uid_t uid = 12345;
  CHECK(f.find("127.0.0.1", l4.port, &uid) == static_cast<long long>(l4.inode));
  CHECK(uid == geteuid());
  if (!have_ipv6_loopback()) return;
  Listening l6("::1", 0, true);
  CHECK(f.find("::1", l6.port) == static_cast<long long>(l6.inode));
  Listening dual("::", 0, false);
  CHECK(f.find("127.0.0.1", dual.port) == static_cast<long long>(dual.inode));
  CHECK(f.find("::1", dual.port) == static_cast<long long>(dual.inode));
  // An exact IPv4 bind before a [::] on the same port (V6ONLY, or the binds would clash).
  Listening v6only("::", 0, true);
  Listening exact("127.0.0.1", v6only.port);
  CHECK(f.find("127.0.0.1", v6only.port) == static_cast<long long>(exact.inode));
}

TEST_CASE("the sock_diag probe tells a missing handler from no socket", "[registry][proc]") {
  using smcpre::registry::DiagHandler;
  using smcpre::registry::probe_diag_handler;
  const DiagHandler tcp = probe_diag_handler(AF_INET, IPPROTO_TCP);
  REQUIRE(tcp != DiagHandler::kUnknown);
  // No handler for the family (AF_DECnet): sock_diag itself answers -ENOENT.
  CHECK(probe_diag_handler(12, 0) == DiagHandler::kMissing);
  if (tcp == DiagHandler::kMissing) {
    WARN("this kernel has no sock_diag TCP handler: smcpre uses /proc here");
    return;
  }
  CHECK(probe_diag_handler(AF_INET6, IPPROTO_TCP) == DiagHandler::kPresent);
  // inet_diag is there, but has no handler for protocol 253 (experimentation): the dump
  // ends with -ENOENT. This is the answer of a kernel with inet_diag but no tcp_diag.
  CHECK(probe_diag_handler(AF_INET, 253) == DiagHandler::kMissing);
  // While an exact lookup gets -ENOENT for a protocol with a handler and no socket.
  Listening l("127.0.0.1", 0);
  const uint16_t port = l.port;
  l.close_now();
  smcpre::registry::FoundListener found;
  if (!via_proc()) {
    CHECK(smcpre::registry::find_listener(-1, address("127.0.0.1", port), &found) ==
          smcpre::registry::Lookup::kNone);
  }
}

TEST_CASE("the probe's and the /proc fallback's cost (printed, not asserted)",
          "[.][registry][bench]") {
  using smcpre::registry::probe_diag_handler;
  if (kProcFallback) return;  // the same calls as in test_registry
  auto time_us = [](int calls, auto&& body) {
    timespec a{};
    timespec b{};
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < calls; ++i) body();
    clock_gettime(CLOCK_MONOTONIC, &b);
    return ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / 1e3 / calls;
  };
  const double tcp = time_us(200, [] { probe_diag_handler(AF_INET, IPPROTO_TCP); });
  // Includes the kernel's attempt to load a module for it (a modprobe run).
  const double missing = time_us(5, [] { probe_diag_handler(AF_INET, 253); });
  std::printf("probe: %.1f us (TCP), %.1f us (protocol 253: no handler, a module attempt)\n", tcp,
              missing);

  auto lookup_us = [&](const char* ip, uint16_t port, int calls) {
    const sockaddr_storage dest = address(ip, port);
    return time_us(calls, [&] {
      FoundListener found;
      find_in_files("/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6", dest, &found);
    });
  };
  Listening exact("127.0.0.1", 0);
  Listening any("0.0.0.0", 0);
  auto report = [&](const char* what) {
    std::printf("/proc lookup (%s): %.1f us exact, %.1f us wildcard (+tcp6), %.1f us no listener\n",
                what, lookup_us("127.0.0.1", exact.port, 500),
                lookup_us("127.0.0.2", any.port, 500), lookup_us("127.0.0.1", 1, 500));
  };
  report("this host's sockets");
  {
    // ~1000 connections (500 pairs): past the listening section, not read.
    Listening server("127.0.0.1", 0);
    std::vector<int> fds;
    for (int i = 0; i < 250; ++i) {
      const int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_storage ss = address("127.0.0.1", server.port);
      if (c < 0 || connect(c, reinterpret_cast<sockaddr*>(&ss), sizeof(sockaddr_in)) != 0) break;
      fds.push_back(c);
      const int a = accept4(server.fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (a < 0) break;
      fds.push_back(a);
    }
    char what[64];
    std::snprintf(what, sizeof what, "+%zu connected sockets", fds.size());
    report(what);
    for (int fd : fds) close(fd);
  }
  {
    std::vector<std::unique_ptr<Listening>> many;
    for (int i = 0; i < 1000; ++i) many.push_back(std::make_unique<Listening>("127.0.0.1", 0));
    report("+1000 listeners");
  }
}
