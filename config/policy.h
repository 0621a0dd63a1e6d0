// The policy file's rules (smcpre.conf(5)): which connections use SMC, by program name,
// role, subnet and port, first match wins, in the spirit of libvma.conf.
//
//   # ACTION  PROGRAM       ROLE    ADDRESS[/PREFIX][:PORTS]
//   tcp       *             client  *:22
//   smc       redis-server  server  *:6379
//
// Client rules match the connect() destination; server rules match the listener's local
// address and port, so a listener on 0.0.0.0 or :: matches only rules whose subnet
// contains that address (`*`, 0.0.0.0/0, [::]/0). Accepted sockets follow their listener.
// The file itself is read by config/policy_file.h, and merged with the environment by
// config/config.h's load().
#pragma once

#include <sys/socket.h>

#include <string>
#include <string_view>

#include "config/config_types.h"

namespace smcpre::config {

// Parses one rule line (leading and trailing blanks already removed): exactly four fields
// separated by blanks. Returns "" on success, else what was expected; out->line is 0 (the
// caller knows the line).
std::string parse_policy_rule(std::string_view line, PolicyRule* out);

// True if the rule's PROGRAM glob matches `program` (a short program name).
bool policy_program_matches(const PolicyRule& rule, std::string_view program);

// The action of the first rule in c.policy (already filtered by program at load) for
// `role` whose address matches `addr`, a sockaddr_in or sockaddr_in6 (an IPv4-mapped IPv6
// address matches IPv4 rules); kNone if none matches or `addr` is of another family.
PolicyAction policy_decide(const Config& c, PolicyRole role, const sockaddr* addr);

}  // namespace smcpre::config
