// The subnet information CLC Proposals carry, from the interface that holds a socket's
// local address (RFC 7609: the server declines with DIFFPREFIX when they do not match).
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <vector>

#include "core/wire/clc.h"

namespace smcpre::core {

bool is_loopback(const sockaddr_storage& a);
bool same_address(const sockaddr_storage& a, const sockaddr_storage& b);
// Is `a` an address of this host? Loopback, or the address of one of our interfaces.
bool is_local_address(const sockaddr_storage& a);
// An IPv4-mapped IPv6 address becomes the IPv4 address it maps; others are copied.
sockaddr_storage normalized(const sockaddr* addr, socklen_t len);

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
