// SMCPRE_PEERS and the ADDRESS of a policy rule (PeerRule), and SMCPRE_EXCLUDE
// (PortRange): the syntax of one rule, and whether a destination matches.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "config/config_types.h"

namespace smcpre::config {

// Parses one SMCPRE_PEERS rule (ADDR[/PREFIX][:PORTS], [IPV6][/PREFIX][:PORTS] or
// *[:PORTS]; PORTS is P, P-Q or *). Returns "" on success, else what was expected.
std::string parse_peer_rule(std::string_view rule, PeerRule* out);

// True if the destination (a sockaddr_in or sockaddr_in6; an IPv4-mapped IPv6 address
// matches IPv4 rules) matches the rule, or any of the rules.
bool peer_rule_matches(const PeerRule& rule, const sockaddr* addr);
bool peer_rules_match(const std::vector<PeerRule>& rules, const sockaddr* addr);
bool port_excluded(const std::vector<PortRange>& ranges, uint16_t port);

}  // namespace smcpre::config
