// The subnet information CLC Proposals carry, from the interface that holds a socket's
// local address (RFC 7609: the server declines with DIFFPREFIX when they do not match).
#pragma once

#include <cstdint>
#include <vector>

#include "core/clc.h"

namespace smcpre::core {

struct LocalSubnets {
  bool ipv4 = false;            // the socket's local address is IPv4 (or v4-mapped)
  uint32_t ipv4_subnet_be = 0;  // network order
  uint8_t ipv4_prefix_len = 0;
  std::vector<clc::Ipv6Prefix> ipv6_prefixes;
};

// Looks up the interface holding fd's local address. False if it cannot be found.
bool local_subnets(int fd, LocalSubnets* out);

// Server check of a Proposal against our own side of the connection.
bool subnets_match(const LocalSubnets& ours, const clc::Proposal& proposal);

}  // namespace smcpre::core
