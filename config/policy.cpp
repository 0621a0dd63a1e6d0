// Policy rules: parsing one rule line, and matching.
#include "config/policy.h"

#include <fnmatch.h>

#include <utility>
#include <vector>

#include "config/peer_rules.h"

namespace smcpre::config {
namespace {

bool is_blank(char c) {
  return c == ' ' || c == '\t';
}

std::vector<std::string_view> split_fields(std::string_view line) {
  std::vector<std::string_view> fields;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && is_blank(line[i])) ++i;
    size_t start = i;
    while (i < line.size() && !is_blank(line[i])) ++i;
    if (i > start) fields.push_back(line.substr(start, i - start));
  }
  return fields;
}

// A field as shown in a message: quoted, shortened, control characters replaced (the file
// parser rejects them before, but the message must stay one line whoever calls).
std::string shown(std::string_view field) {
  constexpr size_t kMaxShown = 60;
  std::string out = "\"";
  for (size_t i = 0; i < field.size() && i < kMaxShown; ++i) {
    const auto byte = static_cast<unsigned char>(field[i]);
    out += (byte < 0x20 || byte == 0x7f) ? '?' : field[i];
  }
  if (field.size() > kMaxShown) out += "...";
  return out + "\"";
}

}  // namespace

std::string parse_policy_rule(std::string_view line, PolicyRule* out) {
  const std::vector<std::string_view> f = split_fields(line);
  if (f.empty()) return "expected a rule: smc|tcp PROGRAM ROLE ADDRESS";
  PolicyRule r;
  if (f[0] == "smc") {
    r.action = PolicyAction::kSmc;
  } else if (f[0] == "tcp") {
    r.action = PolicyAction::kTcp;
  } else {
    return "expected a setting SMCPRE_NAME=VALUE or a rule starting with smc or tcp, not " +
           shown(f[0]);
  }
  if (f.size() < 4) {
    return "expected 4 fields: smc|tcp PROGRAM ROLE ADDRESS[/PREFIX][:PORTS], got " +
           std::to_string(f.size());
  }
  if (f.size() > 4) {
    return "unexpected " + shown(f[4]) +
           " after the address (one rule per line; a comment takes a whole line)";
  }
  // program_invocation_short_name has no directory: a path would silently never match.
  if (f[1].find('/') != std::string_view::npos) {
    return "expected a program name glob without / (it matches the short program name, "
           "e.g. nginx*), not " +
           shown(f[1]);
  }
  r.program = std::string(f[1]);
  if (f[2] == "client") {
    r.role = PolicyRole::kClient;
  } else if (f[2] == "server") {
    r.role = PolicyRole::kServer;
  } else if (f[2] != "*") {
    return "expected the role client, server or *, not " + shown(f[2]);
  }
  if (std::string problem = parse_peer_rule(f[3], &r.address); !problem.empty()) {
    return "address " + shown(f[3]) + ": " + problem;
  }
  r.text = std::string(f[0]) + " " + r.program + " " + std::string(f[2]) + " " + std::string(f[3]);
  *out = std::move(r);
  return {};
}

bool policy_program_matches(const PolicyRule& rule, std::string_view program) {
  // No flags: `*` matches a leading dot too, and letter case matters, as in the name.
  return ::fnmatch(rule.program.c_str(), std::string(program).c_str(), 0) == 0;
}

PolicyAction policy_decide(const Config& c, PolicyRole role, const sockaddr* addr) {
  for (const PolicyRule& r : c.policy) {
    if (r.role.has_value() && *r.role != role) continue;
    if (peer_rule_matches(r.address, addr)) return r.action;
  }
  return PolicyAction::kNone;
}

}  // namespace smcpre::config
