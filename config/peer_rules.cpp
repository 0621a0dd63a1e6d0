// SMCPRE_PEERS and the policy file's address rules: their syntax (parse_peer_rule) and
// whether a destination matches them.
#include "config/peer_rules.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>

#include "config/value_syntax.h"

namespace smcpre::config {
namespace {

using syntax::parse_port_range;
using syntax::parse_uint;

// Applies a prefix mask: the rule "10.1.2.3/8" means 10.0.0.0/8.
void mask_address(uint8_t* addr, size_t len, unsigned prefix) {
  for (size_t i = 0; i < len; ++i) {
    unsigned bits_here = prefix >= 8 * (i + 1) ? 8 : (prefix > 8 * i ? prefix - 8 * i : 0);
    addr[i] &= static_cast<uint8_t>(0xff00u >> bits_here);
  }
}

}  // namespace

std::string parse_peer_rule(std::string_view rule, PeerRule* out) {
  PeerRule r;
  std::string_view rest;
  // PORTS `*` is every port, as no port at all: "10.0.0.0/8:*" is "10.0.0.0/8".
  if (rule.ends_with(":*")) {
    rule.remove_suffix(2);
    if (rule.empty()) return "expected an address or * before :*";
  }
  if (rule.empty()) return "expected an address rule";
  if (rule == "*") {
    *out = r;  // any address, any port
    return {};
  }
  if (rule.front() == '*') {
    rest = rule.substr(1);
    if (rest.empty() || rest.front() != ':') return "expected *, *:PORT[-PORT] or *:*";
  } else {
    std::string_view addr_text;
    if (rule.front() == '[') {
      size_t close = rule.find(']');
      if (close == std::string_view::npos) return "expected ] after the IPv6 address";
      addr_text = rule.substr(1, close - 1);
      rest = rule.substr(close + 1);
      r.family = AF_INET6;
    } else {
      if (std::count(rule.begin(), rule.end(), ':') > 1) {
        return "expected an IPv6 address in brackets, e.g. [fd00::]/8:80";
      }
      size_t end = rule.find_first_of("/:");
      addr_text = rule.substr(0, end);
      rest = end == std::string_view::npos ? std::string_view() : rule.substr(end);
      r.family = AF_INET;
    }
    // inet_pton needs a NUL-terminated string; an address longer than this is invalid.
    char buf[INET6_ADDRSTRLEN + 1] = {};
    const char* kBadAddress =
        r.family == AF_INET6 ? "expected an IPv6 address" : "expected an IPv4 address";
    if (addr_text.empty() || addr_text.size() >= sizeof(buf)) return kBadAddress;
    std::memcpy(buf, addr_text.data(), addr_text.size());
    if (inet_pton(r.family, buf, r.addr) != 1) return kBadAddress;
    const unsigned max_prefix = r.family == AF_INET6 ? 128 : 32;
    r.prefix_len = static_cast<uint8_t>(max_prefix);
    if (!rest.empty() && rest.front() == '/') {
      size_t colon = rest.find(':');
      uint64_t prefix = 0;
      if (!parse_uint(rest.substr(1, colon == std::string_view::npos ? rest.npos : colon - 1),
                      max_prefix, &prefix)) {
        return r.family == AF_INET6 ? "expected an IPv6 prefix length from 0 to 128"
                                    : "expected an IPv4 prefix length from 0 to 32";
      }
      r.prefix_len = static_cast<uint8_t>(prefix);
      mask_address(r.addr, r.family == AF_INET6 ? 16 : 4, r.prefix_len);
      rest = colon == std::string_view::npos ? std::string_view() : rest.substr(colon);
    }
  }
  if (!rest.empty()) {
    PortRange ports;
    if (rest.front() != ':' || !parse_port_range(rest.substr(1), &ports.min, &ports.max)) {
      return "expected :PORT, :PORT-PORT or :* after the address (ports 1 to 65535, "
             "ascending)";
    }
    r.port_min = ports.min;
    r.port_max = ports.max;
  }
  *out = r;
  return {};
}

namespace {

bool prefix_matches(const uint8_t* addr, const uint8_t* net, unsigned prefix_len) {
  unsigned full = prefix_len / 8;
  if (std::memcmp(addr, net, full) != 0) return false;
  unsigned bits = prefix_len % 8;
  if (bits == 0) return true;
  uint8_t mask = static_cast<uint8_t>(0xff00u >> bits);
  return (addr[full] & mask) == (net[full] & mask);
}

}  // namespace

namespace {

// A destination's address and port, as the rules compare them.
struct Destination {
  bool has_v4 = false;  // AF_INET, or AF_INET6 with an IPv4-mapped address
  bool has_v6 = false;
  uint8_t v4[4] = {};
  uint8_t v6[16] = {};
  uint16_t port = 0;
};

bool destination_of(const sockaddr* addr, Destination* d) {
  if (addr == nullptr) return false;
  // Copies, not casts of `addr` to the wider types: the caller's storage may be only as
  // large (and aligned) as its own family needs.
  if (addr->sa_family == AF_INET) {
    sockaddr_in sin;
    std::memcpy(&sin, addr, sizeof(sin));
    std::memcpy(d->v4, &sin.sin_addr, 4);
    d->has_v4 = true;
    d->port = ntohs(sin.sin_port);
    return true;
  }
  if (addr->sa_family == AF_INET6) {
    sockaddr_in6 sin6;
    std::memcpy(&sin6, addr, sizeof(sin6));
    std::memcpy(d->v6, sin6.sin6_addr.s6_addr, 16);
    d->has_v6 = true;
    d->port = ntohs(sin6.sin6_port);
    // An IPv4 peer reached through a dual-stack socket (::ffff:a.b.c.d) matches IPv4 rules.
    if (IN6_IS_ADDR_V4MAPPED(&sin6.sin6_addr)) {
      std::memcpy(d->v4, d->v6 + 12, 4);
      d->has_v4 = true;
    }
    return true;
  }
  return false;
}

bool rule_matches(const PeerRule& r, const Destination& d) {
  if (d.port < r.port_min || d.port > r.port_max) return false;
  switch (r.family) {
    case AF_UNSPEC:
      return true;
    case AF_INET:
      return d.has_v4 && prefix_matches(d.v4, r.addr, r.prefix_len);
    case AF_INET6:
      return d.has_v6 && prefix_matches(d.v6, r.addr, r.prefix_len);
    default:
      return false;
  }
}

}  // namespace

bool peer_rule_matches(const PeerRule& rule, const sockaddr* addr) {
  Destination d;
  return destination_of(addr, &d) && rule_matches(rule, d);
}

bool peer_rules_match(const std::vector<PeerRule>& rules, const sockaddr* addr) {
  Destination d;
  if (!destination_of(addr, &d)) return false;
  return std::any_of(rules.begin(), rules.end(),
                     [&](const PeerRule& r) { return rule_matches(r, d); });
}

bool port_excluded(const std::vector<PortRange>& ranges, uint16_t port) {
  return std::any_of(ranges.begin(), ranges.end(),
                     [port](const PortRange& r) { return port >= r.min && port <= r.max; });
}

}  // namespace smcpre::config
