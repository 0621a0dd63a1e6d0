// libFuzzer harness: the policy file (config/policy.h, smcpre.conf(5)) as config::parse
// reads it: settings and rules, line by line. The input is the file's text. Besides
// crashes and sanitizer reports, it fails when:
// - the report of a malformed file is not one printable line starting with the file's
//   path, or a rejected file leaves anything applied;
// - a rule does not parse back from its own text (the log shows that text), or its
//   ADDRESS does not parse back from its canonical form (parse_peer_rule);
// - policy_decide disagrees with a first-match walk over the rules;
// - parsing the same text twice gives different configurations.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "config/config.h"
#include "config/peer_rules.h"
#include "config/policy.h"
#include "tests/fuzz/fuzz_check.h"

namespace config = smcpre::config;
using smcpre::fuzz::one_printable_line;

namespace {

constexpr const char* kPath = "/etc/smcpre.conf";
constexpr const char* kProgram = "redis-server";

// A PeerRule in the syntax parse_peer_rule reads, canonical (masked address, explicit
// prefix length, ports only when not all of them).
std::string canonical(const config::PeerRule& r) {
  std::string text;
  if (r.family == AF_UNSPEC) {
    text = "*";
  } else {
    char buf[INET6_ADDRSTRLEN] = {};
    FUZZ_CHECK(inet_ntop(r.family, r.addr, buf, sizeof buf) != nullptr);
    text = r.family == AF_INET6 ? "[" + std::string(buf) + "]" : std::string(buf);
    text += "/" + std::to_string(r.prefix_len);
  }
  if (r.port_min != 1 || r.port_max != 65535) {
    text += ":" + std::to_string(r.port_min);
    if (r.port_max != r.port_min) text += "-" + std::to_string(r.port_max);
  }
  return text;
}

void check_rule(const config::PolicyRule& rule) {
  FUZZ_CHECK(rule.action == config::PolicyAction::kSmc ||
             rule.action == config::PolicyAction::kTcp);
  FUZZ_CHECK(rule.line > 0);
  FUZZ_CHECK(config::policy_program_matches(rule, kProgram));
  FUZZ_CHECK(one_printable_line(rule.text));
  config::PolicyRule again;
  FUZZ_CHECK(config::parse_policy_rule(rule.text, &again).empty());
  again.line = rule.line;
  FUZZ_CHECK(again == rule);
  const config::PeerRule& a = rule.address;
  FUZZ_CHECK(a.port_min >= 1 && a.port_min <= a.port_max);
  FUZZ_CHECK(a.prefix_len <= (a.family == AF_INET6 ? 128 : 32));
  config::PeerRule address;
  FUZZ_CHECK(config::parse_peer_rule(canonical(a), &address).empty());
  FUZZ_CHECK(address == a);
}

// Destinations to decide on: IPv4, IPv6, IPv4-mapped IPv6, on common ports.
std::vector<sockaddr_storage> destinations() {
  std::vector<sockaddr_storage> out;
  for (const char* text : {"10.1.2.3", "127.0.0.1", "0.0.0.0"}) {
    for (uint16_t port : {22, 6379, 65535}) {
      sockaddr_storage ss{};
      auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
      sin->sin_family = AF_INET;
      sin->sin_port = htons(port);
      inet_pton(AF_INET, text, &sin->sin_addr);
      out.push_back(ss);
    }
  }
  for (const char* text : {"fd00::1", "::", "::ffff:10.1.2.3"}) {
    for (uint16_t port : {80, 6379}) {
      sockaddr_storage ss{};
      auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
      sin6->sin6_family = AF_INET6;
      sin6->sin6_port = htons(port);
      inet_pton(AF_INET6, text, &sin6->sin6_addr);
      out.push_back(ss);
    }
  }
  return out;
}

void check_decisions(const config::Config& c) {
  static const std::vector<sockaddr_storage> kDestinations = destinations();
  for (const sockaddr_storage& ss : kDestinations) {
    const auto* addr = reinterpret_cast<const sockaddr*>(&ss);
    for (config::PolicyRole role : {config::PolicyRole::kClient, config::PolicyRole::kServer}) {
      config::PolicyAction first = config::PolicyAction::kNone;
      for (const config::PolicyRule& r : c.policy) {
        if (r.role.has_value() && *r.role != role) continue;
        if (config::peer_rules_match({r.address}, addr)) {
          first = r.action;
          break;
        }
      }
      FUZZ_CHECK(config::policy_decide(c, role, addr) == first);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const config::FileSource file{kPath, std::string(reinterpret_cast<const char*>(data), size)};
  std::string error;
  const config::Config c = config::parse({}, &file, kProgram, &error);
  if (!error.empty()) {
    FUZZ_CHECK(one_printable_line(error));
    FUZZ_CHECK(error.rfind(std::string(kPath) + ":", 0) == 0);
    FUZZ_CHECK(!c.enabled && c.policy.empty() && c.settings.empty() && c.config_file.empty());
    return 0;
  }
  FUZZ_CHECK(c.config_file == kPath);
  for (const config::PolicyRule& rule : c.policy) check_rule(rule);
  for (const config::Setting& s : c.settings) FUZZ_CHECK(s.line > 0);
  check_decisions(c);
  std::string error2;
  FUZZ_CHECK(config::parse({}, &file, kProgram, &error2) == c && error2.empty());
  return 0;
}
