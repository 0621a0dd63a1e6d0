// Tests for config/config.h: strict environment parsing and the peer/port rules. The log
// (config/log.h) and the policy file as current() loads and reports it are tested in
// test_config_log.cpp, the policy file's syntax and rules in test_policy.cpp.
#include <arpa/inet.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <string>
#include <vector>

#include "config/config.h"
#include "config/peer_rules.h"
#include "config/runtime_dir.h"
#include "tests/unit/inet_addr.h"

using smcpre::config::Config;
using smcpre::config::DeviceChoice;
using smcpre::config::parse;

namespace {

// Parses one variable; the result must be valid.
Config good(const std::string& name, const std::string& value) {
  std::string error = "unset";
  Config c = parse({{name, value}}, &error);
  INFO(name << "=\"" << value << "\" -> " << error);
  CHECK(error.empty());
  CHECK(c.enabled);
  return c;
}

// Parses one variable; the result must be rejected, naming the variable and the value.
std::string bad(const std::string& name, const std::string& value) {
  std::string error;
  Config c = parse({{name, value}}, &error);
  INFO(name << "=\"" << value << "\"");
  CHECK_FALSE(c.enabled);
  CHECK(error.find(name + "=\"") == 0);
  CHECK(error.find('\n') == std::string::npos);
  CHECK(error.find(": expected") != std::string::npos);
  return error;
}

template <typename Addr>
bool matches(const std::vector<smcpre::config::PeerRule>& rules, const Addr& a) {
  return smcpre::config::peer_rules_match(rules, reinterpret_cast<const sockaddr*>(&a));
}

std::vector<smcpre::config::PeerRule> peers(const std::string& value) {
  return good("SMCPRE_PEERS", value).peers;
}

}  // namespace

TEST_CASE("defaults", "[config]") {
  std::string error = "unset";
  Config c = parse({}, &error);
  CHECK(error.empty());
  CHECK(c.enabled);
  CHECK(c.device == DeviceChoice::kAuto);
  CHECK(c.rmb_size == 512 * 1024);
  CHECK(c.log_level == "off");
  CHECK(c.handshake_timeout_ms == 2000);
  CHECK(c.runtime_dir == smcpre::runtime_dir::default_path());
  CHECK_FALSE(c.backlog_cpus.has_value());
  CHECK_FALSE(c.backlog_inline);
  CHECK(c.peers.empty());
  CHECK(c.unknown_variables.empty());
  // Non-SMCPRE variables are none of our business.
  c = parse({{"PATH", "/bin"}, {"SMCPRE", "x"}, {"XSMCPRE_LOG", "bogus"}}, &error);
  CHECK(error.empty());
  CHECK(c.unknown_variables.empty());
  // A null error pointer is allowed.
  CHECK_FALSE(parse({{"SMCPRE_LOG", "loud"}}, nullptr).enabled);
}

TEST_CASE("SMCPRE_ENABLE", "[config]") {
  for (const char* on : {"1", "yes", "true", "on", "YES", "True"}) {
    CHECK(good("SMCPRE_ENABLE", on).enabled);
  }
  for (const char* off : {"0", "no", "false", "off", "OFF"}) {
    std::string error = "unset";
    Config c = parse({{"SMCPRE_ENABLE", off}}, &error);
    CHECK(error.empty());
    CHECK_FALSE(c.enabled);
  }
  for (const char* v : {"", "2", " 1", "1 ", "yes!", "enable", "01", "-1"}) bad("SMCPRE_ENABLE", v);
}

TEST_CASE("SMCPRE_DEVICE", "[config]") {
  CHECK(good("SMCPRE_DEVICE", "auto").device == DeviceChoice::kAuto);
  CHECK(good("SMCPRE_DEVICE", "shm").device == DeviceChoice::kShm);
  CHECK(good("SMCPRE_DEVICE", "verbs").device == DeviceChoice::kVerbs);
  CHECK(good("SMCPRE_DEVICE", "none").device == DeviceChoice::kNone);
  Config c = good("SMCPRE_DEVICE", "rxe0");
  CHECK(c.device == DeviceChoice::kVerbs);
  CHECK(c.verbs_device == "rxe0");
  CHECK(c.verbs_port == 0);
  c = good("SMCPRE_DEVICE", "mlx5_0:2");
  CHECK(c.verbs_device == "mlx5_0");
  CHECK(c.verbs_port == 2);
  c = good("SMCPRE_DEVICE", std::string(63, 'a') + ":255");
  CHECK(c.verbs_device.size() == 63);
  CHECK(c.verbs_port == 255);
  CHECK(good("SMCPRE_DEVICE", "a.b-c_D").verbs_device == "a.b-c_D");
  for (const char* v : {"", "rxe0:0", "rxe0:256", "rxe0:", ":1", "rxe 0", "rxe0/1", "rxe0:1:2",
                        "shm:1", "auto:2", "rxe0:+1", " shm", "shm "}) {
    bad("SMCPRE_DEVICE", v);
  }
  bad("SMCPRE_DEVICE", std::string(64, 'a'));
}

TEST_CASE("SMCPRE_RMB_SIZE and size suffixes", "[config]") {
  CHECK(good("SMCPRE_RMB_SIZE", "16384").rmb_size == 16384);
  CHECK(good("SMCPRE_RMB_SIZE", "16K").rmb_size == 16384);
  CHECK(good("SMCPRE_RMB_SIZE", "16k").rmb_size == 16384);
  CHECK(good("SMCPRE_RMB_SIZE", "64KiB").rmb_size == 65536);
  CHECK(good("SMCPRE_RMB_SIZE", "1M").rmb_size == 1048576);
  CHECK(good("SMCPRE_RMB_SIZE", "1MiB").rmb_size == 1048576);
  CHECK(good("SMCPRE_RMB_SIZE", "8M").rmb_size == 8 * 1048576);
  CHECK(good("SMCPRE_RMB_SIZE", "512K").rmb_size == 512 * 1024);
  CHECK(bad("SMCPRE_RMB_SIZE", "300K") ==
        "SMCPRE_RMB_SIZE=\"300K\": expected a power of two from 16K to 8M");
  for (const char* v :
       {"", "8K", "16M", "0", "0K", "16 K", "16KB", "16G", "K", "16K ", "-16K", "1.5M",
        "99999999999999999999999", "18014398509481984K", "0x4000", "16385"}) {
    bad("SMCPRE_RMB_SIZE", v);
  }
}

TEST_CASE("SMCPRE_LOG and SMCPRE_LOG_FILE", "[config]") {
  for (const char* v : {"trace", "debug", "info", "warn", "error", "critical", "off"}) {
    CHECK(good("SMCPRE_LOG", v).log_level == v);
  }
  CHECK(good("SMCPRE_LOG", "warning").log_level == "warn");
  CHECK(good("SMCPRE_LOG", "DEBUG").log_level == "debug");
  for (const char* v : {"", "verbose", "err", "info ", "3"}) bad("SMCPRE_LOG", v);

  CHECK(good("SMCPRE_LOG_FILE", "/var/log/smcpre.log").log_file == "/var/log/smcpre.log");
  CHECK(good("SMCPRE_LOG_FILE", "rel/my log").log_file == "rel/my log");
  for (const char* v : {"", " /tmp/x", "/tmp/x ", "/tmp/a\nb"}) bad("SMCPRE_LOG_FILE", v);
  // Control characters in the value are escaped: the error stays one line.
  CHECK(bad("SMCPRE_LOG_FILE", "/tmp/a\nb") ==
        "SMCPRE_LOG_FILE=\"/tmp/a\\x0ab\": expected a file path");
}

TEST_CASE("SMCPRE_HANDSHAKE_TIMEOUT_MS", "[config]") {
  CHECK(good("SMCPRE_HANDSHAKE_TIMEOUT_MS", "1").handshake_timeout_ms == 1);
  CHECK(good("SMCPRE_HANDSHAKE_TIMEOUT_MS", "600000").handshake_timeout_ms == 600000);
  for (const char* v : {"", "0", "600001", "1K", "-5", "+5", "5ms", "4294967297"}) {
    bad("SMCPRE_HANDSHAKE_TIMEOUT_MS", v);
  }
}

TEST_CASE("SMCPRE_RUNTIME_DIR", "[config]") {
  CHECK(good("SMCPRE_RUNTIME_DIR", "/run/x").runtime_dir == "/run/x");
  CHECK(good("SMCPRE_RUNTIME_DIR", "/run/x//").runtime_dir == "/run/x");
  CHECK(good("SMCPRE_RUNTIME_DIR", "/").runtime_dir == "/");
  for (const char* v : {"", "run/x", "./x", " /run/x", "/run/x\t"}) bad("SMCPRE_RUNTIME_DIR", v);
  bad("SMCPRE_RUNTIME_DIR", "/" + std::string(4000, 'x'));
}

TEST_CASE("SMCPRE_BPF_DIR", "[config]") {
  CHECK(parse({}, nullptr).bpf_dir.empty());  // the default, SMCPRE_BPF_DEFAULT_DIR
  CHECK(good("SMCPRE_BPF_DIR", "/sys/fs/bpf/x").bpf_dir == "/sys/fs/bpf/x");
  CHECK(good("SMCPRE_BPF_DIR", "/sys/fs/bpf/x//").bpf_dir == "/sys/fs/bpf/x");
  CHECK(good("SMCPRE_BPF_DIR", "none").bpf_dir == "none");
  for (const char* v : {"", "sys/fs/bpf", "./x", " /x", "None", "/x\n"}) bad("SMCPRE_BPF_DIR", v);
}

TEST_CASE("runtime_dir::default_path", "[config]") {
  std::string d = smcpre::runtime_dir::default_path();
  REQUIRE_FALSE(d.empty());
  CHECK(d.front() == '/');
  if (geteuid() == 0) {
    CHECK(d == "/run/smcpre");
  } else {
    const char* xdg = getenv("XDG_RUNTIME_DIR");
    if (xdg != nullptr && xdg[0] == '/') {
      CHECK(d == std::string(xdg) + "/smcpre");
    } else {
      CHECK(d == "/tmp/smcpre-" + std::to_string(geteuid()));
    }
  }
}

TEST_CASE("SMCPRE_PEERS parsing", "[config]") {
  auto r = peers("10.0.0.0/8");
  REQUIRE(r.size() == 1);
  CHECK(r[0].family == AF_INET);
  CHECK(r[0].prefix_len == 8);
  CHECK(r[0].addr[0] == 10);
  CHECK(r[0].port_min == 1);
  CHECK(r[0].port_max == 65535);

  r = peers("192.168.1.7:80-90,[fd00::]/8:443,*:6379,[::1],*,10.1.2.3/8");
  REQUIRE(r.size() == 6);
  CHECK(r[0].family == AF_INET);
  CHECK(r[0].prefix_len == 32);
  CHECK(r[0].port_min == 80);
  CHECK(r[0].port_max == 90);
  CHECK(r[1].family == AF_INET6);
  CHECK(r[1].prefix_len == 8);
  CHECK(r[1].addr[0] == 0xfd);
  CHECK(r[1].port_min == 443);
  CHECK(r[1].port_max == 443);
  CHECK(r[2].family == AF_UNSPEC);
  CHECK(r[2].port_min == 6379);
  CHECK(r[2].port_max == 6379);
  CHECK(r[3].family == AF_INET6);
  CHECK(r[3].prefix_len == 128);
  CHECK(r[3].addr[15] == 1);
  CHECK(r[4].family == AF_UNSPEC);
  CHECK(r[4].port_min == 1);
  CHECK(r[4].port_max == 65535);
  // Host bits beyond the prefix are cleared.
  CHECK(r[5].addr[0] == 10);
  CHECK(r[5].addr[1] == 0);
  CHECK(r[5].addr[3] == 0);

  CHECK(peers("[::ffff:10.0.0.0]/104:1-65535")[0].prefix_len == 104);
  CHECK(peers("0.0.0.0/0")[0].prefix_len == 0);
  // PORTS `*`: every port, as no port at all.
  CHECK(peers("10.0.0.0/8:*") == peers("10.0.0.0/8"));
  CHECK(peers("[fd00::]/8:*") == peers("[fd00::]/8"));
  CHECK(peers("*:*") == peers("*"));

  for (const char* v : {"",
                        ",",
                        "10.0.0.1,",
                        ",10.0.0.1",
                        "10.0.0.1,,10.0.0.2",
                        "10.0.0.0/33",
                        "10.0.0.0/",
                        "10.0.0.0/8/8",
                        "10.0.0.256",
                        "10.0.0",
                        "10.0.0.1:0",
                        "10.0.0.1:65536",
                        "10.0.0.1:90-80",
                        "10.0.0.1:",
                        "10.0.0.1:80-",
                        "10.0.0.1:-80",
                        "10.0.0.1 ",
                        " 10.0.0.1",
                        "fd00::/8",
                        "::1",
                        "[fd00::",
                        "[fd00::]/129",
                        "[fd00::]:",
                        "[fd00::]80",
                        "[10.0.0.1]",
                        "[]",
                        "*:",
                        "*80",
                        "*/8",
                        "*:0",
                        "host.example:80",
                        "10.0.0.1:80:90",
                        "[fe80::1%eth0]",
                        "10.0.0.1/8x",
                        "10.0.0.1:8x",
                        ":*",
                        "10.0.0.1:*:*",
                        "10.0.0.1:*-80",
                        "**"}) {
    bad("SMCPRE_PEERS", v);
  }
  // The message points at the offending rule.
  std::string e = bad("SMCPRE_PEERS", "10.0.0.0/8,fd00::/8");
  CHECK(e ==
        "SMCPRE_PEERS=\"10.0.0.0/8,fd00::/8\": rule \"fd00::/8\": expected an IPv6 address in "
        "brackets, e.g. [fd00::]/8:80");
  // The offending rule is quoted like the value: control characters in it cannot split
  // the one error line (found by fuzz_config).
  e = bad("SMCPRE_PEERS", "10.0.0.0/8,10.0.0.1\nsmcpre: forged line");
  CHECK(e ==
        "SMCPRE_PEERS=\"10.0.0.0/8,10.0.0.1\\x0asmcpre: forged line\": rule "
        "\"10.0.0.1\\x0asmcpre: forged line\": expected an IPv4 address");
}

TEST_CASE("SMCPRE_PEERS matching", "[config]") {
  auto r = peers("10.0.0.0/8:80-90,192.168.1.7,[fd00::]/8:443,[2001:db8::1]:1000-2000");
  CHECK(matches(r, v4("10.1.2.3", 80)));
  CHECK(matches(r, v4("10.255.255.255", 90)));
  CHECK_FALSE(matches(r, v4("10.1.2.3", 79)));
  CHECK_FALSE(matches(r, v4("10.1.2.3", 91)));
  CHECK_FALSE(matches(r, v4("11.0.0.1", 80)));
  CHECK(matches(r, v4("192.168.1.7", 1)));
  CHECK(matches(r, v4("192.168.1.7", 65535)));
  CHECK_FALSE(matches(r, v4("192.168.1.8", 80)));
  CHECK(matches(r, v6("fd12:3456::1", 443)));
  CHECK(matches(r, v6("fdff::", 443)));
  CHECK_FALSE(matches(r, v6("fe00::1", 443)));
  CHECK_FALSE(matches(r, v6("fd00::1", 444)));
  CHECK(matches(r, v6("2001:db8::1", 1500)));
  CHECK_FALSE(matches(r, v6("2001:db8::2", 1500)));
  // An IPv4 destination through a dual-stack socket matches IPv4 rules...
  CHECK(matches(r, v6("::ffff:10.9.8.7", 85)));
  CHECK(matches(r, v6("::ffff:192.168.1.7", 22)));
  CHECK_FALSE(matches(r, v6("::ffff:192.168.1.8", 22)));
  // ...but an IPv4-compatible or NAT64 address is not an IPv4 address.
  CHECK_FALSE(matches(r, v6("::10.9.8.7", 85)));
  CHECK_FALSE(matches(r, v6("64:ff9b::10.9.8.7", 85)));

  // Odd prefix lengths compare the bits, not just whole bytes.
  auto odd = peers("172.16.0.0/12,[2001:db8:8000::]/33");
  CHECK(matches(odd, v4("172.31.255.255", 1)));
  CHECK_FALSE(matches(odd, v4("172.32.0.0", 1)));
  CHECK_FALSE(matches(odd, v4("172.15.255.255", 1)));
  CHECK(matches(odd, v6("2001:db8:ffff::", 1)));
  CHECK_FALSE(matches(odd, v6("2001:db8:7fff::", 1)));

  auto any = peers("*:6379-6380");
  CHECK(matches(any, v4("1.2.3.4", 6379)));
  CHECK(matches(any, v6("2001:db8::5", 6380)));
  CHECK_FALSE(matches(any, v4("1.2.3.4", 6381)));
  CHECK(matches(peers("0.0.0.0/0"), v4("203.0.113.9", 9)));
  CHECK_FALSE(matches(peers("0.0.0.0/0"), v6("2001:db8::5", 9)));
  CHECK(matches(peers("[::]/0"), v6("2001:db8::5", 9)));

  CHECK_FALSE(matches(std::vector<smcpre::config::PeerRule>{}, v4("10.0.0.1", 80)));
  CHECK_FALSE(smcpre::config::peer_rules_match(r, nullptr));
  sockaddr unix_addr{};
  unix_addr.sa_family = AF_UNIX;
  CHECK_FALSE(smcpre::config::peer_rules_match(peers("*"), &unix_addr));
}

TEST_CASE("SMCPRE_EXCLUDE", "[config]") {
  auto ex = good("SMCPRE_EXCLUDE", "22,8000-8100,65535,1").exclude_ports;
  REQUIRE(ex.size() == 4);
  using smcpre::config::port_excluded;
  CHECK(port_excluded(ex, 22));
  CHECK(port_excluded(ex, 8000));
  CHECK(port_excluded(ex, 8050));
  CHECK(port_excluded(ex, 8100));
  CHECK(port_excluded(ex, 65535));
  CHECK(port_excluded(ex, 1));
  CHECK_FALSE(port_excluded(ex, 21));
  CHECK_FALSE(port_excluded(ex, 7999));
  CHECK_FALSE(port_excluded(ex, 8101));
  CHECK_FALSE(port_excluded({}, 22));
  for (const char* v : {"", "0", "65536", "22,", ",22", "22,,23", "100-99", "22 ", "22;23", "1-2-3",
                        "-5", "5-", "http"}) {
    bad("SMCPRE_EXCLUDE", v);
  }
}

TEST_CASE("SMCPRE_EID", "[config]") {
  CHECK(parse({}, nullptr).eids == std::vector<std::string>{"SMCPRE"});
  CHECK(good("SMCPRE_EID", "SMCPRE-TEST").eids == std::vector<std::string>{"SMCPRE-TEST"});
  // 32 characters is the longest; duplicates are dropped, the order kept.
  const std::string longest = "A23456789.123456789-123456789012";
  CHECK(good("SMCPRE_EID", "B.1," + longest + ",B.1").eids ==
        std::vector<std::string>{"B.1", longest});
  CHECK(good("SMCPRE_EID", "1,2,3,4,5,6,7,8").eids.size() == 8);
  for (const char* v : {"", "smcpre", "-LEADING", ".DOT", "A B", "A_B", "A,,B", "1,2,3,4,5,6,7,8,9",
                        "A23456789.123456789-1234567890123"}) {
    bad("SMCPRE_EID", v);
  }
  CHECK(bad("SMCPRE_EID", "OK,bad") ==
        "SMCPRE_EID=\"OK,bad\": EID \"bad\": expected 1 to 32 of A-Z, 0-9, '.' and '-', the "
        "first a letter or digit");
}

TEST_CASE("SMCPRE_SHM_UIDS", "[config]") {
  auto uids = good("SMCPRE_SHM_UIDS", "0,1000,4294967294").shm_allowed_uids;
  REQUIRE(uids.size() == 3);
  CHECK(uids[0] == 0);
  CHECK(uids[1] == 1000);
  CHECK(uids[2] == 4294967294u);
  CHECK_FALSE(good("SMCPRE_SHM_UIDS", "1000").shm_any_uid);
  CHECK(good("SMCPRE_SHM_UIDS", "any").shm_any_uid);
  for (const char* v :
       {"", "4294967295", "99999999999", "1000,", "-1", "root", "1000 ,1001", "any,1000", "ANY"}) {
    bad("SMCPRE_SHM_UIDS", v);
  }
}

TEST_CASE("SMCPRE_BACKLOG_CPUS", "[config]") {
  Config c = good("SMCPRE_BACKLOG_CPUS", "none");
  CHECK(c.backlog_inline);
  CHECK_FALSE(c.backlog_cpus.has_value());
  c = good("SMCPRE_BACKLOG_CPUS", "0-3,8");
  CHECK_FALSE(c.backlog_inline);
  REQUIRE(c.backlog_cpus.has_value());
  CHECK(*c.backlog_cpus == std::vector<int>{0, 1, 2, 3, 8});
  CHECK(*good("SMCPRE_BACKLOG_CPUS", "5").backlog_cpus == std::vector<int>{5});
  CHECK(*good("SMCPRE_BACKLOG_CPUS", "9,2-2,4").backlog_cpus == std::vector<int>{9, 2, 4});
  CHECK(good("SMCPRE_BACKLOG_CPUS", "0-4095").backlog_cpus->size() == 4096);
  for (const char* v : {"", "3-0", "0-4096", "4096", "0,,1", "0,", "1-2-3", "0-3,2", "1,1", "a",
                        "0 -3", "-1", "0-", "0:2"}) {
    bad("SMCPRE_BACKLOG_CPUS", v);
  }
}

TEST_CASE("SMCPRE_POOL_SIZE", "[config]") {
  CHECK(good("SMCPRE_POOL_SIZE", "1").pool_size == 1);
  CHECK(good("SMCPRE_POOL_SIZE", "4K").pool_size == 4096);
  CHECK(good("SMCPRE_POOL_SIZE", "1024K").pool_size == 1048576);
  CHECK(good("SMCPRE_POOL_SIZE", "1048576").pool_size == 1048576);
  for (const char* v : {"", "0", "1048577", "1025K", "1M", "0K", "4 K"}) bad("SMCPRE_POOL_SIZE", v);
}

TEST_CASE("integer ranges", "[config]") {
  CHECK(good("SMCPRE_RQ_DEPTH", "1").rq_depth == 1);
  CHECK(good("SMCPRE_RQ_DEPTH", "4096").rq_depth == 4096);
  CHECK(good("SMCPRE_SQ_DEPTH", "16").sq_depth == 16);
  CHECK(good("SMCPRE_SQ_DEPTH", "16384").sq_depth == 16384);
  CHECK(good("SMCPRE_CLOSE_TIMEOUT_MS", "1").close_timeout_ms == 1);
  CHECK(good("SMCPRE_CLOSE_TIMEOUT_MS", "3600000").close_timeout_ms == 3600000);
  bad("SMCPRE_CLOSE_TIMEOUT_MS", "0");
  bad("SMCPRE_CLOSE_TIMEOUT_MS", "3600001");
  CHECK(good("SMCPRE_SPIN_US", "0").spin_us == 0);
  CHECK(good("SMCPRE_SPIN_US", "100000").spin_us == 100000);
  CHECK(good("SMCPRE_RNR_RETRY", "0").rnr_retry == 0);
  CHECK(good("SMCPRE_RNR_RETRY", "7").rnr_retry == 7);
  CHECK(good("SMCPRE_RNR_TIMER", "1").min_rnr_timer == 1);
  CHECK(good("SMCPRE_RNR_TIMER", "31").min_rnr_timer == 31);
  CHECK(bad("SMCPRE_RQ_DEPTH", "0") == "SMCPRE_RQ_DEPTH=\"0\": expected an integer from 1 to 4096");
  bad("SMCPRE_RQ_DEPTH", "4097");
  bad("SMCPRE_SQ_DEPTH", "15");
  bad("SMCPRE_SQ_DEPTH", "16385");
  bad("SMCPRE_SPIN_US", "100001");
  bad("SMCPRE_RNR_RETRY", "8");
  bad("SMCPRE_RNR_TIMER", "0");
  bad("SMCPRE_RNR_TIMER", "32");
  // 2^64 + 7 must not wrap around into range.
  bad("SMCPRE_RNR_RETRY", "18446744073709551623");
  CHECK(good("SMCPRE_IB_MTU", "256").ib_mtu == 256);
  CHECK(good("SMCPRE_IB_MTU", "1024").ib_mtu == 1024);
  CHECK(good("SMCPRE_IB_MTU", "4096").ib_mtu == 4096);
  CHECK(parse({}, nullptr).ib_mtu == 4096);
  bad("SMCPRE_IB_MTU", "1500");
  bad("SMCPRE_IB_MTU", "8192");
  bad("SMCPRE_IB_MTU", "0");
  CHECK(good("SMCPRE_IB_TIMEOUT", "1").ib_timeout == 1);
  CHECK(good("SMCPRE_IB_TIMEOUT", "31").ib_timeout == 31);
  bad("SMCPRE_IB_TIMEOUT", "0");
  bad("SMCPRE_IB_TIMEOUT", "32");
  CHECK(good("SMCPRE_IB_RETRY", "0").ib_retry == 0);
  bad("SMCPRE_IB_RETRY", "8");
  CHECK(good("SMCPRE_KEEPALIVE_MS", "0").keepalive_ms == 0);
  CHECK(parse({}, nullptr).keepalive_ms == 30000);
  bad("SMCPRE_KEEPALIVE_MS", "3600001");
  CHECK(good("SMCPRE_LINGER_MS", "0").linger_ms == 0);
  CHECK(good("SMCPRE_LINGER_MS", "86400000").linger_ms == 86400000);
  bad("SMCPRE_LINGER_MS", "86400001");
  for (const char* name :
       {"SMCPRE_RQ_DEPTH", "SMCPRE_SQ_DEPTH", "SMCPRE_SPIN_US", "SMCPRE_RNR_RETRY",
        "SMCPRE_RNR_TIMER", "SMCPRE_IB_MTU", "SMCPRE_IB_TIMEOUT", "SMCPRE_IB_RETRY",
        "SMCPRE_KEEPALIVE_MS", "SMCPRE_LINGER_MS"}) {
    for (const char* v : {"", " 5", "5 ", "+5", "-0", "5x", "0x10", "1K"}) bad(name, v);
  }
}

TEST_CASE("SMCPRE_CONFIG", "[config]") {
  // parse() only checks the value; load() reads the file (test_policy.cpp).
  for (const char* v : {"none", "/etc/smcpre.conf", "/tmp/my policy.conf", "/"}) {
    Config c = good("SMCPRE_CONFIG", v);
    CHECK(c.config_file.empty());
    CHECK(c.unknown_variables.empty());
  }
  CHECK(bad("SMCPRE_CONFIG", "smcpre.conf") ==
        "SMCPRE_CONFIG=\"smcpre.conf\": expected an absolute file path, or none for no policy "
        "file");
  for (const char* v : {"", "./x.conf", " /etc/x", "/etc/x ", "None", "/etc/a\nb"}) {
    bad("SMCPRE_CONFIG", v);
  }
}

TEST_CASE("SMCPRE_STATS", "[config]") {
  CHECK(good("SMCPRE_STATS", "exit").stats == "exit");
  CHECK(good("SMCPRE_STATS", "none").stats == "none");
  CHECK(good("SMCPRE_STATS", "EXIT").stats == "exit");
  for (const char* v : {"", "yes", "exit ", "/tmp/stats"}) bad("SMCPRE_STATS", v);
}

TEST_CASE("combined environment", "[config]") {
  std::string error = "unset";
  Config c = parse({{"SMCPRE_DEVICE", "shm"},
                    {"SMCPRE_RMB_SIZE", "1M"},
                    {"SMCPRE_LOG", "info"},
                    {"SMCPRE_FOO", "1"},
                    {"SMCPRE_BAR", ""},
                    {"HOME", "/root"}},
                   &error);
  CHECK(error.empty());
  CHECK(c.enabled);
  CHECK(c.device == DeviceChoice::kShm);
  CHECK(c.rmb_size == 1048576);
  CHECK(c.log_level == "info");
  // Unknown SMCPRE_* names are collected (in name order), not fatal.
  CHECK(c.unknown_variables == std::vector<std::string>{"SMCPRE_BAR", "SMCPRE_FOO"});

  // One bad value disables everything, reports the first bad variable (name order), and
  // keeps only what is needed to report: the log settings.
  c = parse({{"SMCPRE_DEVICE", "shm"},
             {"SMCPRE_SQ_DEPTH", "1"},
             {"SMCPRE_RQ_DEPTH", "0"},
             {"SMCPRE_LOG", "debug"},
             {"SMCPRE_LOG_FILE", "/tmp/x.log"},
             {"SMCPRE_FOO", "1"}},
            &error);
  CHECK_FALSE(c.enabled);
  CHECK(error == "SMCPRE_RQ_DEPTH=\"0\": expected an integer from 1 to 4096");
  CHECK(c.device == DeviceChoice::kAuto);
  CHECK(c.sq_depth == Config{}.sq_depth);
  CHECK(c.log_level == "debug");
  CHECK(c.log_file == "/tmp/x.log");
  CHECK(c.unknown_variables == std::vector<std::string>{"SMCPRE_FOO"});

  // SMCPRE_LIBRARY belongs to smcpre-run and smcpre-systemd: known (no warning), a path.
  c = parse({{"SMCPRE_LIBRARY", "/usr/lib/libsmcpre.so"}}, &error);
  CHECK(error.empty());
  CHECK(c.enabled);
  CHECK(c.unknown_variables.empty());
  bad("SMCPRE_LIBRARY", " /x");

  // Long values are shortened in the message.
  error = bad("SMCPRE_LOG", std::string(5000, 'x'));
  CHECK(error.size() < 400);
  CHECK(error.find("...\"") != std::string::npos);
}
