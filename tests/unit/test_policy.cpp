// Tests for config/policy.h, config/policy_file.h and the policy file side of
// config/config.h: rule parsing (every form and every malformed form), first match, program
// globs, roles, address families and ports, settings from the file and the environment
// overriding them, the file ignored as a whole on any malformed line, reading the file
// (missing, not regular, too large, foreign owner, SMCPRE_CONFIG), and the debug listing of
// what differs from the defaults.
#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "config/config.h"
#include "config/policy.h"
#include "config/policy_file.h"
#include "config/runtime_dir.h"
#include "tests/unit/inet_addr.h"

using namespace std::string_literals;
using smcpre::config::Config;
using smcpre::config::FileSource;
using smcpre::config::PolicyAction;
using smcpre::config::PolicyRole;
using smcpre::config::PolicyRule;

namespace {

constexpr const char* kPath = "/etc/smcpre.conf";

PolicyRule rule(const std::string& line) {
  PolicyRule r;
  std::string error = smcpre::config::parse_policy_rule(line, &r);
  INFO(line << " -> " << error);
  CHECK(error.empty());
  return r;
}

std::string bad_rule(const std::string& line) {
  PolicyRule r;
  std::string error = smcpre::config::parse_policy_rule(line, &r);
  INFO(line);
  CHECK_FALSE(error.empty());
  CHECK(error.find("expected") != std::string::npos);
  return error;
}

// Parses `text` as the file kPath for `program`; the result must be valid.
Config good_file(const std::string& text, const std::string& program = "myprog",
                 const std::map<std::string, std::string>& env = {}) {
  FileSource file{kPath, text};
  std::string error = "unset";
  Config c = smcpre::config::parse(env, &file, program, &error);
  INFO(text << " -> " << error);
  CHECK(error.empty());
  CHECK(c.enabled);
  CHECK(c.config_file == kPath);
  return c;
}

// Parses `text` as the file kPath; it must be rejected as a whole with an error that
// starts with "<path>:<line>: " and says what was expected.
std::string bad_file(const std::string& text, int line,
                     const std::map<std::string, std::string>& env = {}) {
  FileSource file{kPath, text};
  std::string error;
  Config c = smcpre::config::parse(env, &file, "myprog", &error);
  INFO(text.substr(0, 300));
  CHECK_FALSE(c.enabled);
  CHECK(c.policy.empty());
  CHECK(c.settings.empty());
  CHECK(c.config_file.empty());
  CHECK(error.find(std::string(kPath) + ":" + std::to_string(line) + ": ") == 0);
  CHECK(error.find('\n') == std::string::npos);
  return error;
}

template <typename Addr>
PolicyAction decide(const Config& c, PolicyRole role, const Addr& a) {
  return smcpre::config::policy_decide(c, role, reinterpret_cast<const sockaddr*>(&a));
}

// A private temporary directory for files load() reads.
struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/smcpre-test-policy-XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    for (const std::string& f : files) unlink(f.c_str());
    for (const std::string& d : dirs) rmdir(d.c_str());
    rmdir(path.c_str());
  }
  std::string write(const std::string& name, const std::string& text, mode_t mode = 0644) {
    std::string p = path + "/" + name;
    std::ofstream(p, std::ios::binary | std::ios::trunc) << text;
    REQUIRE(chmod(p.c_str(), mode) == 0);
    files.push_back(p);
    return p;
  }
  std::string dir(const std::string& name) {
    std::string p = path + "/" + name;
    REQUIRE(mkdir(p.c_str(), 0755) == 0);
    dirs.push_back(p);
    return p;
  }
  std::string fifo(const std::string& name) {
    std::string p = path + "/" + name;
    REQUIRE(mkfifo(p.c_str(), 0644) == 0);
    files.push_back(p);
    return p;
  }
  std::vector<std::string> files;
  std::vector<std::string> dirs;
};

Config load(const std::map<std::string, std::string>& vars, const std::string& default_file,
            std::string* error, bool secure = false) {
  smcpre::config::Environment env;
  env.variables = vars;
  env.program = "myprog";
  env.default_file = default_file;
  env.secure = secure;
  return smcpre::config::load(env, error);
}

}  // namespace

TEST_CASE("rule forms", "[policy]") {
  PolicyRule r = rule("smc redis-server server *:6379");
  CHECK(r.action == PolicyAction::kSmc);
  CHECK(r.program == "redis-server");
  REQUIRE(r.role.has_value());
  CHECK(*r.role == PolicyRole::kServer);
  CHECK(r.address.family == AF_UNSPEC);
  CHECK(r.address.port_min == 6379);
  CHECK(r.address.port_max == 6379);
  CHECK(r.text == "smc redis-server server *:6379");
  CHECK(r.line == 0);

  r = rule("tcp\t*   client\t\t*:22");
  CHECK(r.action == PolicyAction::kTcp);
  CHECK(r.program == "*");
  CHECK(*r.role == PolicyRole::kClient);
  CHECK(r.text == "tcp * client *:22");  // blanks normalized for the log

  r = rule("smc * client 10.0.0.0/8:*");
  CHECK(r.address.family == AF_INET);
  CHECK(r.address.prefix_len == 8);
  CHECK(r.address.addr[0] == 10);
  CHECK(r.address.port_min == 1);
  CHECK(r.address.port_max == 65535);

  r = rule("smc nginx* server [fd00::]/8:80-443");
  CHECK(r.address.family == AF_INET6);
  CHECK(r.address.prefix_len == 8);
  CHECK(r.address.addr[0] == 0xfd);
  CHECK(r.address.port_min == 80);
  CHECK(r.address.port_max == 443);

  r = rule("tcp * * *");
  CHECK_FALSE(r.role.has_value());
  CHECK(r.address.family == AF_UNSPEC);
  CHECK(r.address.port_min == 1);
  CHECK(r.address.port_max == 65535);

  CHECK(rule("tcp * * *:*").address == rule("tcp * * *").address);
  CHECK(rule("smc x server 192.168.1.7").address.prefix_len == 32);
  CHECK(rule("smc x server 192.168.1.7:80").address.port_max == 80);
  CHECK(rule("smc x server [::]:443").address.family == AF_INET6);
  CHECK(rule("smc x server [::]/0:*").address.prefix_len == 0);
  CHECK(rule("smc x server 0.0.0.0/0").address.prefix_len == 0);
  CHECK(rule("smc [a-c]?x* client *").program == "[a-c]?x*");
}

TEST_CASE("malformed rules", "[policy]") {
  CHECK(bad_rule("smcc * client *") ==
        "expected a setting SMCPRE_NAME=VALUE or a rule starting with smc or tcp, not \"smcc\"");
  CHECK(bad_rule("SMC * client *").find("not \"SMC\"") != std::string::npos);
  CHECK(bad_rule("SMCPRE_RMB_SIZE 1M").find("SMCPRE_NAME=VALUE") != std::string::npos);
  CHECK(bad_rule("smc * client") ==
        "expected 4 fields: smc|tcp PROGRAM ROLE ADDRESS[/PREFIX][:PORTS], got 3");
  bad_rule("smc");
  bad_rule("tcp *");
  CHECK(bad_rule("tcp * client *:80 # web") ==
        "unexpected \"#\" after the address (one rule per line; a comment takes a whole line)");
  bad_rule("smc * client 10.0.0.1 10.0.0.2");
  CHECK(bad_rule("smc * both *") == "expected the role client, server or *, not \"both\"");
  bad_rule("smc * Client *");
  bad_rule("smc * clients *");
  CHECK(bad_rule("smc /usr/bin/nginx server *").find("without /") != std::string::npos);
  for (const char* addr :
       {"10.0.0.0/33", "10.0.0.0/", "10.0.0.256", "10.0.0.1:0", "10.0.0.1:65536", "10.0.0.1:90-80",
        "10.0.0.1:", "fd00::/8", "[fd00::", "[fd00::]/129", "*:", "*80", "*:0", ":*",
        "host.example:80", "10.0.0.1:*:*", "10.0.0.1:8x", "**", "[fe80::1%eth0]"}) {
    std::string e = bad_rule(std::string("smc * client ") + addr);
    CHECK(e.find("address \"" + std::string(addr) + "\": expected") == 0);
  }
  CHECK(bad_rule("smc * client 10.0.0.1:0") ==
        "address \"10.0.0.1:0\": expected :PORT, :PORT-PORT or :* after the address (ports 1 "
        "to 65535, ascending)");
  // Long fields are shortened in the message, control characters replaced: one line.
  CHECK(bad_rule("smc * " + std::string(500, 'r') + " *").size() < 200);
  CHECK(bad_rule("smc\x01\n * client *") ==
        "expected a setting SMCPRE_NAME=VALUE or a rule starting with smc or tcp, not \"smc??\"");
}

TEST_CASE("policy_decide: first match wins, roles, families, ports", "[policy]") {
  Config c = good_file(
      "tcp * client *:22\n"
      "smc * server 0.0.0.0/0:22\n"
      "smc * client 10.0.0.0/8:*\n"
      "tcp * client 10.1.0.0/16:*\n"  // shadowed by the rule above: first match wins
      "smc * * [fd00::]/8:80-443\n"
      "tcp * server [::]/0:*\n");
  REQUIRE(c.policy.size() == 6);
  CHECK(c.policy[0].line == 1);
  CHECK(c.policy[5].line == 6);
  const auto kClient = PolicyRole::kClient;
  const auto kServer = PolicyRole::kServer;
  // Role: the same port, both verdicts.
  CHECK(decide(c, kClient, v4("10.1.2.3", 22)) == PolicyAction::kTcp);
  CHECK(decide(c, kServer, v4("0.0.0.0", 22)) == PolicyAction::kSmc);
  // A client rule never applies to a server, and the reverse.
  CHECK(decide(c, kServer, v4("10.1.2.3", 80)) == PolicyAction::kNone);
  CHECK(decide(c, kClient, v6("2001:db8::1", 80)) == PolicyAction::kNone);
  // First match: 10.1.x.x is also in the later tcp rule.
  CHECK(decide(c, kClient, v4("10.1.2.3", 80)) == PolicyAction::kSmc);
  CHECK(decide(c, kClient, v4("11.1.2.3", 80)) == PolicyAction::kNone);
  // An IPv4 destination through a dual-stack socket matches IPv4 rules.
  CHECK(decide(c, kClient, v6("::ffff:10.9.8.7", 80)) == PolicyAction::kSmc);
  CHECK(decide(c, kClient, v6("::ffff:10.9.8.7", 22)) == PolicyAction::kTcp);
  CHECK(decide(c, kClient, v6("::ffff:11.9.8.7", 80)) == PolicyAction::kNone);
  // IPv6 with a port range, for both roles (`*`).
  CHECK(decide(c, kClient, v6("fd12::1", 80)) == PolicyAction::kSmc);
  CHECK(decide(c, kServer, v6("fdff::1", 443)) == PolicyAction::kSmc);
  CHECK(decide(c, kClient, v6("fd12::1", 444)) == PolicyAction::kNone);
  CHECK(decide(c, kClient, v6("fd12::1", 79)) == PolicyAction::kNone);
  CHECK(decide(c, kServer, v6("fd12::1", 444)) == PolicyAction::kTcp);
  // A listener on :: matches only rules whose subnet contains ::, never IPv4 rules.
  CHECK(decide(c, kServer, v6("::", 22)) == PolicyAction::kTcp);
  // A listener on 0.0.0.0 is not inside 10.0.0.0/8.
  Config narrow = good_file("tcp * server 10.0.0.0/8:*\n");
  CHECK(decide(narrow, kServer, v4("0.0.0.0", 80)) == PolicyAction::kNone);
  CHECK(decide(narrow, kServer, v4("10.0.0.1", 80)) == PolicyAction::kTcp);

  // Neither inet family nor an address at all: no rule applies.
  sockaddr unix_addr{};
  unix_addr.sa_family = AF_UNIX;
  Config any = good_file("tcp * * *\n");
  CHECK(smcpre::config::policy_decide(any, kClient, &unix_addr) == PolicyAction::kNone);
  CHECK(smcpre::config::policy_decide(any, kClient, nullptr) == PolicyAction::kNone);
  CHECK(decide(any, kClient, v4("1.2.3.4", 1)) == PolicyAction::kTcp);
  CHECK(decide(Config{}, kClient, v4("1.2.3.4", 1)) == PolicyAction::kNone);
}

TEST_CASE("program globs select the rules at load", "[policy]") {
  const std::string text =
      "smc redis-server server *:6379\n"
      "tcp nginx* server *:80\n"
      "smc *-cli client *\n"
      "tcp * * *:22\n"
      "smc python3.? client *\n"
      "smc [rn]* client *:1\n";
  auto programs = [&](const std::string& program) {
    std::vector<int> lines;
    for (const PolicyRule& r : good_file(text, program).policy) lines.push_back(r.line);
    return lines;
  };
  CHECK(programs("redis-server") == std::vector<int>{1, 4, 6});
  CHECK(programs("redis-cli") == std::vector<int>{3, 4, 6});
  CHECK(programs("nginx") == std::vector<int>{2, 4, 6});
  CHECK(programs("nginx-debug") == std::vector<int>{2, 4, 6});
  CHECK(programs("python3.11") == std::vector<int>{4});
  CHECK(programs("python3.9") == std::vector<int>{4, 5});
  CHECK(programs("Redis-server") == std::vector<int>{4});  // letter case matters
  CHECK(programs(".hidden") == std::vector<int>{4});       // `*` matches a leading dot
  CHECK(programs("") == std::vector<int>{4});

  PolicyRule r = rule("smc nginx server *");
  CHECK(smcpre::config::policy_program_matches(r, "nginx"));
  CHECK_FALSE(smcpre::config::policy_program_matches(r, "nginx:"));
  CHECK_FALSE(smcpre::config::policy_program_matches(r, "xnginx"));
}

TEST_CASE("file syntax: comments, blanks, settings", "[policy]") {
  Config c = good_file(
      "# smcpre policy\n"
      "\n"
      "   \t\n"
      "  # indented comment\n"
      "SMCPRE_RMB_SIZE = 1M\n"
      "SMCPRE_BACKLOG_CPUS=2-3\r\n"
      "\tSMCPRE_LOG_FILE =  /var/log/my smcpre.log  \n"
      "  smc   *   client   *:5000\t\n"
      "SMCPRE_PEERS=10.0.0.0/8:*,[fd00::]/8:80\n"
      "tcp * * *:22");  // no final newline
  CHECK(c.rmb_size == 1048576);
  REQUIRE(c.backlog_cpus.has_value());
  CHECK(*c.backlog_cpus == std::vector<int>{2, 3});
  CHECK(c.log_file == "/var/log/my smcpre.log");  // blanks inside a value are kept
  REQUIRE(c.peers.size() == 2);
  CHECK(c.peers[0].port_max == 65535);
  REQUIRE(c.policy.size() == 2);
  CHECK(c.policy[0].line == 8);
  CHECK(c.policy[1].line == 10);
  REQUIRE(c.settings.size() == 4);  // name order
  CHECK(c.settings[0].name == "SMCPRE_BACKLOG_CPUS");
  CHECK(c.settings[0].value == "2-3");
  CHECK(c.settings[0].line == 6);
  CHECK(c.settings[3].name == "SMCPRE_RMB_SIZE");
  CHECK(c.settings[3].value == "1M");
  CHECK(c.settings[3].line == 5);

  // Empty files and files of comments are valid: no settings, no rules.
  for (const char* text : {"", "\n", "# nothing\n\n# here", "\r\n"}) {
    Config e = good_file(text);
    CHECK(e.policy.empty());
    CHECK(e.settings.empty());
    CHECK(e.rmb_size == Config{}.rmb_size);
  }
  // A rule whose program contains '=' is still a rule.
  CHECK(good_file("smc a=b client *\n", "a=b").policy.size() == 1);
  // '#' inside a setting's value is part of it (comments take a whole line).
  CHECK(good_file("SMCPRE_LOG_FILE=/tmp/a#b\n").log_file == "/tmp/a#b");
  // A file may disable smcpre, as SMCPRE_ENABLE=0 does: not an error.
  FileSource off{kPath, "SMCPRE_ENABLE=0\n"};
  std::string error = "unset";
  CHECK_FALSE(smcpre::config::parse({}, &off, "x", &error).enabled);
  CHECK(error.empty());
}

TEST_CASE("malformed files: line numbers, the file ignored as a whole", "[policy]") {
  CHECK(bad_file("# ok\nsmcc * client *\n", 2) ==
        "/etc/smcpre.conf:2: expected a setting SMCPRE_NAME=VALUE or a rule starting with smc "
        "or tcp, not \"smcc\"");
  CHECK(bad_file("smc * both *", 1) ==
        "/etc/smcpre.conf:1: expected the role client, server or *, not \"both\"");
  bad_file("\n\n\nsmc * client 10.0.0.0/33\n", 4);
  bad_file("smc * client *:0\n", 1);
  bad_file("smc * client *:1-65536\n", 1);
  bad_file("tcp * client *:22 # ssh\n", 1);
  bad_file("smc * client\n", 1);
  bad_file("just some words\n", 1);
  CHECK(bad_file("SMCPRE_RMB_SIZE=1M\nSMCPRE_RMB_SIZ=1M\n", 2) ==
        "/etc/smcpre.conf:2: unknown setting \"SMCPRE_RMB_SIZ\" (expected an SMCPRE_* variable "
        "name, as in the environment)");
  bad_file("RMB_SIZE=1M\n", 1);
  bad_file("smcpre_rmb_size=1M\n", 1);
  CHECK(bad_file("=1M\n", 1) == "/etc/smcpre.conf:1: expected a setting name before =");
  CHECK(bad_file("\nSMCPRE_RMB_SIZE=300K\n", 2) ==
        "/etc/smcpre.conf:2: SMCPRE_RMB_SIZE=\"300K\": expected a power of two from 16K to 8M");
  bad_file("SMCPRE_RMB_SIZE=\n", 1);
  bad_file("SMCPRE_RMB_SIZE=1M 2M\n", 1);
  CHECK(bad_file("SMCPRE_LOG_FILE=\"/tmp/x\"\n", 1) ==
        "/etc/smcpre.conf:1: SMCPRE_LOG_FILE=\"\\x22/tmp/x\\x22\": expected the value without "
        "quotes");
  bad_file("SMCPRE_LOG_FILE='/tmp/x'\n", 1);
  CHECK(bad_file("SMCPRE_LOG=info\n#\nSMCPRE_LOG = debug\n", 3) ==
        "/etc/smcpre.conf:3: SMCPRE_LOG given twice (first on line 1)");
  CHECK(bad_file("SMCPRE_CONFIG=/etc/other.conf\n", 1) ==
        "/etc/smcpre.conf:1: SMCPRE_CONFIG can only be set in the environment (it names this "
        "file)");
  // Lines: 4096 bytes are fine, 4097 are not (the newline not counted).
  const std::string comment4096 = "#" + std::string(4095, 'x');
  good_file(comment4096 + "\n" + comment4096);
  CHECK(bad_file("tcp * * *\n" + comment4096 + "x\n", 2) ==
        "/etc/smcpre.conf:2: line longer than 4096 bytes");
  // Binary content: NUL bytes, control characters (also in comments).
  CHECK(bad_file("tcp * * *\n# a\0b\n"s, 2) == "/etc/smcpre.conf:2: a NUL byte (not a text file?)");
  CHECK(bad_file("smc * client *:80\x01\n", 1) ==
        "/etc/smcpre.conf:1: a control character (\"\\x01\")");
  bad_file("# bell \a\n", 1);
  bad_file("smc *\rx client *\n", 1);
  bad_file("SMCPRE_LOG=info\x7f\n", 1);
  // The file as a whole: too large.
  std::string big;
  while (big.size() <= smcpre::config::kMaxPolicyFileBytes) big += comment4096 + "\n";
  FileSource file{kPath, big};
  std::string error;
  CHECK_FALSE(smcpre::config::parse({}, &file, "x", &error).enabled);
  CHECK(error == "/etc/smcpre.conf: larger than 1 MiB (1048576 bytes)");
  big.resize(smcpre::config::kMaxPolicyFileBytes);
  big.back() = '\n';
  good_file(big);

  // Never half-applied: the good lines before the bad one change nothing, the
  // environment's log settings stay (to report the problem), the file's do not.
  FileSource half{kPath,
                  "SMCPRE_RMB_SIZE=1M\nSMCPRE_LOG=debug\nSMCPRE_DEVICE=shm\nsmc * * *\n"
                  "SMCPRE_SPIN_US=5x\n"};
  Config c = smcpre::config::parse({{"SMCPRE_LOG_FILE", "/tmp/l"}, {"SMCPRE_FOO", "1"}}, &half, "x",
                                   &error);
  CHECK(error == "/etc/smcpre.conf:5: SMCPRE_SPIN_US=\"5x\": expected an integer from 0 to 100000");
  CHECK_FALSE(c.enabled);
  CHECK(c.rmb_size == Config{}.rmb_size);
  CHECK(c.device == smcpre::config::DeviceChoice::kAuto);
  CHECK(c.log_level == "off");
  CHECK(c.log_file == "/tmp/l");
  CHECK(c.unknown_variables == std::vector<std::string>{"SMCPRE_FOO"});
  CHECK(c.policy.empty());
  CHECK(smcpre::config::policy_decide(c, PolicyRole::kClient, nullptr) == PolicyAction::kNone);
}

TEST_CASE("the environment overrides the file's settings", "[policy]") {
  const std::string text =
      "SMCPRE_RMB_SIZE=1M\n"
      "SMCPRE_SPIN_US=50\n"
      "SMCPRE_LOG=info\n"
      "smc * client *:5000\n";
  Config c = good_file(text, "p", {{"SMCPRE_RMB_SIZE", "64K"}, {"SMCPRE_DEVICE", "shm"}});
  CHECK(c.rmb_size == 65536);                             // environment
  CHECK(c.spin_us == 50);                                 // file
  CHECK(c.log_level == "info");                           // file
  CHECK(c.device == smcpre::config::DeviceChoice::kShm);  // environment only
  CHECK(c.policy.size() == 1);                            // rules only come from the file
  REQUIRE(c.settings.size() == 4);
  CHECK(c.settings[0].name == "SMCPRE_DEVICE");
  CHECK(c.settings[0].line == 0);
  CHECK(c.settings[2].name == "SMCPRE_RMB_SIZE");
  CHECK(c.settings[2].value == "64K");
  CHECK(c.settings[2].line == 0);
  CHECK(c.settings[3].name == "SMCPRE_SPIN_US");
  CHECK(c.settings[3].line == 2);

  // A bad environment value is reported as the environment's, without a file line, and
  // disables smcpre as without a file.
  FileSource file{kPath, text};
  std::string error;
  c = smcpre::config::parse({{"SMCPRE_RMB_SIZE", "300K"}}, &file, "p", &error);
  CHECK(error == "SMCPRE_RMB_SIZE=\"300K\": expected a power of two from 16K to 8M");
  CHECK_FALSE(c.enabled);
  CHECK(c.policy.empty());
  // An environment value overriding a bad file value does not save the file.
  c = smcpre::config::parse({{"SMCPRE_RMB_SIZE", "1M"}}, &file, "p", &error);
  CHECK(c.enabled);
  FileSource broken{kPath, "SMCPRE_RMB_SIZE=300K\n"};
  c = smcpre::config::parse({{"SMCPRE_RMB_SIZE", "1M"}}, &broken, "p", &error);
  CHECK_FALSE(c.enabled);
  CHECK(error.find("/etc/smcpre.conf:1: ") == 0);
  // Unknown SMCPRE_* names in the environment are still only warnings.
  c = good_file(text, "p", {{"SMCPRE_NEWER_THING", "1"}});
  CHECK(c.unknown_variables == std::vector<std::string>{"SMCPRE_NEWER_THING"});
}

TEST_CASE("describe lists what differs from the defaults", "[policy]") {
  Config c = good_file(
      "SMCPRE_RMB_SIZE=1M\n"
      "SMCPRE_SPIN_US=400\n"  // the default: not listed
      "SMCPRE_ENABLE=yes\n"   // the default too
      "smc myprog server *:6379\n"
      "smc other client *\n"  // not for this program
      "tcp my* client *:22\n"
      "SMCPRE_LOG = debug\n",
      "myprog", {{"SMCPRE_DEVICE", "shm"}, {"SMCPRE_CONFIG", kPath}});
  CHECK(smcpre::config::describe(c) ==
        std::vector<std::string>{
            "policy file: /etc/smcpre.conf (2 rules for this program)",
            "setting SMCPRE_CONFIG=/etc/smcpre.conf (from the environment)",
            "setting SMCPRE_DEVICE=shm (from the environment)",
            "setting SMCPRE_LOG=debug (from /etc/smcpre.conf:7)",
            "setting SMCPRE_RMB_SIZE=1M (from /etc/smcpre.conf:1)",
            "rule smc myprog server *:6379 (from /etc/smcpre.conf:4)",
            "rule tcp my* client *:22 (from /etc/smcpre.conf:6)",
        });
  std::string error;
  CHECK(smcpre::config::describe(smcpre::config::parse({}, &error)) ==
        std::vector<std::string>{"policy file: none"});
  // The runtime dir given as its default value is no change either; another one is.
  c = smcpre::config::parse(
      {{"SMCPRE_RUNTIME_DIR", smcpre::runtime_dir::default_path() + "/"}, {"SMCPRE_LOG", "OFF"}},
      &error);
  CHECK(smcpre::config::describe(c) == std::vector<std::string>{"policy file: none"});
  c = good_file("smc * * *\nSMCPRE_RUNTIME_DIR=/run/elsewhere\n");
  CHECK(smcpre::config::describe(c) ==
        std::vector<std::string>{"policy file: /etc/smcpre.conf (1 rule for this program)",
                                 "setting SMCPRE_RUNTIME_DIR=/run/elsewhere (from "
                                 "/etc/smcpre.conf:2)",
                                 "rule smc * * * (from /etc/smcpre.conf:1)"});
}

TEST_CASE("load: which file, and files that cannot be used", "[policy]") {
  TempDir tmp;
  const std::string good = tmp.write("good.conf", "SMCPRE_RMB_SIZE=1M\nsmc myprog client *\n");
  const std::string broken = tmp.write("broken.conf", "SMCPRE_RMB_SIZE=1M\nsmc\n");
  const std::string missing = tmp.path + "/missing.conf";
  std::string error = "unset";

  // The default file: used when it exists, defaults when it does not.
  Config c = load({}, good, &error);
  CHECK(error.empty());
  CHECK(c.enabled);
  CHECK(c.config_file == good);
  CHECK(c.rmb_size == 1048576);
  CHECK(c.policy.size() == 1);
  c = load({{"SMCPRE_LOG", "info"}}, missing, &error);
  CHECK(error.empty());
  CHECK(c.enabled);
  CHECK(c.config_file.empty());
  CHECK(c.log_level == "info");
  c = load({}, broken, &error);
  CHECK(error == broken +
                     ":2: expected 4 fields: smc|tcp PROGRAM ROLE ADDRESS[/PREFIX][:PORTS], "
                     "got 1");
  CHECK_FALSE(c.enabled);

  // SMCPRE_CONFIG names another file, which then must exist; `none` reads no file at all.
  c = load({{"SMCPRE_CONFIG", good}}, broken, &error);
  CHECK(error.empty());
  CHECK(c.config_file == good);
  c = load({{"SMCPRE_CONFIG", "none"}}, broken, &error);
  CHECK(error.empty());
  CHECK(c.enabled);
  CHECK(c.config_file.empty());
  CHECK(c.rmb_size == Config{}.rmb_size);
  c = load({{"SMCPRE_CONFIG", missing}, {"SMCPRE_LOG", "warn"}}, good, &error);
  CHECK(error == missing + ": no such file (named by SMCPRE_CONFIG)");
  CHECK_FALSE(c.enabled);
  CHECK(c.log_level == "warn");  // kept to report the problem
  for (const char* value : {"", "relative.conf", " /etc/smcpre.conf", "NONE"}) {
    c = load({{"SMCPRE_CONFIG", value}}, good, &error);
    INFO(value);
    CHECK_FALSE(c.enabled);
    CHECK(error == "SMCPRE_CONFIG=\"" + std::string(value) +
                       "\": expected an absolute file path, or none for no policy file");
  }
  // A set-user-ID program does not read the file its caller names.
  c = load({{"SMCPRE_CONFIG", broken}}, good, &error, /*secure=*/true);
  CHECK(error.empty());
  CHECK(c.config_file == good);

  // Not regular files: a directory, a FIFO (must not block waiting for a writer).
  const std::string dir = tmp.dir("dir.conf");
  c = load({{"SMCPRE_CONFIG", dir}}, missing, &error);
  CHECK(error == dir + ": not a regular file");
  CHECK_FALSE(c.enabled);
  const std::string fifo = tmp.fifo("fifo.conf");
  c = load({}, fifo, &error);
  CHECK(error == fifo + ": not a regular file");
  CHECK_FALSE(c.enabled);
  // Not a directory on the way: an error, not a missing file.
  c = load({}, good + "/x", &error);
  CHECK(error == good + "/x: cannot open: Not a directory");

  // Writable by others than its owner: refused (it could choose a root process's log file).
  const std::string open_file = tmp.write("open.conf", "SMCPRE_RMB_SIZE=1M\n", 0664);
  c = load({}, open_file, &error);
  CHECK(error == open_file + ": writable by group or others (chmod go-w)");
  CHECK_FALSE(c.enabled);
  REQUIRE(chmod(open_file.c_str(), 0646) == 0);
  CHECK_FALSE(load({}, open_file, &error).enabled);
  REQUIRE(chmod(open_file.c_str(), 0600) == 0);
  CHECK(load({}, open_file, &error).enabled);

  // Too large: refused as a whole, not truncated.
  std::string big(smcpre::config::kMaxPolicyFileBytes + 1, '\n');
  const std::string big_file = tmp.write("big.conf", big);
  c = load({}, big_file, &error);
  CHECK(error == big_file + ": larger than 1 MiB (1048576 bytes)");
  big.pop_back();
  CHECK(load({}, tmp.write("max.conf", big), &error).enabled);
  CHECK(error.empty());

  if (geteuid() == 0) {
    // Owned by another user (as root we can hand it over; read access stays).
    const std::string foreign = tmp.write("foreign.conf", "SMCPRE_RMB_SIZE=1M\n");
    REQUIRE(chown(foreign.c_str(), 12345, 12345) == 0);
    c = load({}, foreign, &error);
    CHECK(error == foreign + ": owned by uid 12345, expected root or this process's user");
    CHECK_FALSE(c.enabled);
  } else {
    // Unreadable (root could read it anyway).
    const std::string secret = tmp.write("secret.conf", "SMCPRE_RMB_SIZE=1M\n", 0200);
    c = load({}, secret, &error);
    CHECK(error == secret + ": cannot open: Permission denied");
    CHECK_FALSE(c.enabled);
  }
}

TEST_CASE("read_policy_file reads the bytes as they are", "[policy]") {
  TempDir tmp;
  std::string text = "smc * client *\n";
  for (int i = 0; i < 20000; ++i) text += "# line " + std::to_string(i) + "\n";  // > 64 KiB
  const std::string path = tmp.write("p.conf", text);
  FileSource file;
  std::string error;
  REQUIRE(smcpre::config::read_policy_file(path, &file, &error) ==
          smcpre::config::FileStatus::kRead);
  CHECK(file.path == path);
  CHECK(file.text == text);
  CHECK(smcpre::config::read_policy_file(tmp.path + "/none", &file, &error) ==
        smcpre::config::FileStatus::kMissing);
}
