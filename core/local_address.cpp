#include "core/local_address.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <string>

namespace smcpre::core {
namespace {

int prefix_length(const uint8_t* mask, size_t bytes) {
  int bits = 0;
  for (size_t i = 0; i < bytes; ++i) bits += __builtin_popcount(mask[i]);
  return bits;
}

void mask_prefix(uint8_t* addr, size_t bytes, int prefix) {
  for (size_t i = 0; i < bytes; ++i) {
    int keep = std::max(0, std::min(8, prefix - static_cast<int>(i) * 8));
    addr[i] &= static_cast<uint8_t>(0xff00 >> keep);
  }
}

}  // namespace

bool is_loopback(const sockaddr_storage& a) {
  if (a.ss_family == AF_INET) {
    return (ntohl(reinterpret_cast<const sockaddr_in&>(a).sin_addr.s_addr) >> 24) == 127;
  }
  if (a.ss_family == AF_INET6) {
    const in6_addr& v6 = reinterpret_cast<const sockaddr_in6&>(a).sin6_addr;
    if (IN6_IS_ADDR_LOOPBACK(&v6)) return true;
    return IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127;
  }
  return false;
}

bool same_address(const sockaddr_storage& a, const sockaddr_storage& b) {
  if (a.ss_family != b.ss_family) return false;
  if (a.ss_family == AF_INET) {
    return reinterpret_cast<const sockaddr_in&>(a).sin_addr.s_addr ==
           reinterpret_cast<const sockaddr_in&>(b).sin_addr.s_addr;
  }
  return std::memcmp(&reinterpret_cast<const sockaddr_in6&>(a).sin6_addr,
                     &reinterpret_cast<const sockaddr_in6&>(b).sin6_addr, 16) == 0;
}

// Is `a` an address of this host? Loopback, or the address of one of our interfaces.
bool is_local_address(const sockaddr_storage& a) {
  if (is_loopback(a)) return true;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return false;
  sockaddr_storage mine{};
  bool found = false;
  for (ifaddrs* ifa = list; ifa != nullptr && !found; ifa = ifa->ifa_next) {
    if (ifa->ifa_addr == nullptr || ifa->ifa_addr->sa_family != a.ss_family) continue;
    std::memcpy(&mine, ifa->ifa_addr,
                a.ss_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6));
    found = same_address(mine, a);
  }
  freeifaddrs(list);
  return found;
}

// An IPv4-mapped IPv6 destination is the IPv4 address it maps.
sockaddr_storage normalized(const sockaddr* addr, socklen_t len) {
  sockaddr_storage out{};
  std::memcpy(&out, addr, std::min<size_t>(len, sizeof out));
  if (out.ss_family == AF_INET6) {
    const auto& v6 = reinterpret_cast<const sockaddr_in6&>(out);
    if (IN6_IS_ADDR_V4MAPPED(&v6.sin6_addr)) {
      sockaddr_in v4{};
      v4.sin_family = AF_INET;
      v4.sin_port = v6.sin6_port;
      std::memcpy(&v4.sin_addr, &v6.sin6_addr.s6_addr[12], 4);
      out = sockaddr_storage{};
      std::memcpy(&out, &v4, sizeof v4);
    }
  }
  return out;
}

bool local_subnets(int fd, LocalSubnets* out) {
  sockaddr_storage local{};
  socklen_t len = sizeof local;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) != 0) return false;
  bool v4 = local.ss_family == AF_INET;
  in_addr v4addr{};
  in6_addr v6addr{};
  if (v4) {
    v4addr = reinterpret_cast<sockaddr_in*>(&local)->sin_addr;
  } else if (local.ss_family == AF_INET6) {
    v6addr = reinterpret_cast<sockaddr_in6*>(&local)->sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(&v6addr)) {
      v4 = true;
      std::memcpy(&v4addr, &v6addr.s6_addr[12], 4);
    }
  } else {
    return false;
  }
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return false;
  std::string ifname;
  bool found = false;
  for (ifaddrs* ifa = list; ifa && !found; ifa = ifa->ifa_next) {
    if (!ifa->ifa_addr || !ifa->ifa_netmask) continue;
    if (v4 && ifa->ifa_addr->sa_family == AF_INET) {
      auto* a = reinterpret_cast<sockaddr_in*>(ifa->ifa_addr);
      if (a->sin_addr.s_addr != v4addr.s_addr) continue;
      auto* m = reinterpret_cast<sockaddr_in*>(ifa->ifa_netmask);
      out->ipv4 = true;
      out->ipv4_subnet_be = a->sin_addr.s_addr & m->sin_addr.s_addr;
      out->ipv4_prefix_len = static_cast<uint8_t>(
          prefix_length(reinterpret_cast<const uint8_t*>(&m->sin_addr.s_addr), 4));
      found = true;
    } else if (!v4 && ifa->ifa_addr->sa_family == AF_INET6) {
      auto* a = reinterpret_cast<sockaddr_in6*>(ifa->ifa_addr);
      if (std::memcmp(&a->sin6_addr, &v6addr, 16) != 0) continue;
      ifname = ifa->ifa_name;
      found = true;
    }
  }
  if (found && !v4) {
    // Every IPv6 prefix of that interface (RFC 7609: the server needs one in common).
    for (ifaddrs* ifa = list; ifa; ifa = ifa->ifa_next) {
      if (!ifa->ifa_addr || !ifa->ifa_netmask || ifa->ifa_addr->sa_family != AF_INET6) continue;
      if (ifname != ifa->ifa_name) continue;
      if (out->ipv6_prefixes.size() >= clc::kMaxIpv6Prefixes) break;
      auto* a = reinterpret_cast<sockaddr_in6*>(ifa->ifa_addr);
      auto* m = reinterpret_cast<sockaddr_in6*>(ifa->ifa_netmask);
      clc::Ipv6Prefix p;
      std::memcpy(p.prefix.data(), &a->sin6_addr, 16);
      p.prefix_len = static_cast<uint8_t>(prefix_length(m->sin6_addr.s6_addr, 16));
      mask_prefix(p.prefix.data(), 16, p.prefix_len);
      out->ipv6_prefixes.push_back(p);
    }
  }
  freeifaddrs(list);
  return found;
}

bool subnets_match(const LocalSubnets& ours, const clc::Proposal& proposal) {
  if (ours.ipv4) {
    return proposal.ipv4_prefix_len == ours.ipv4_prefix_len &&
           proposal.ipv4_subnet_be == ours.ipv4_subnet_be;
  }
  for (const auto& mine : ours.ipv6_prefixes) {
    for (const auto& theirs : proposal.ipv6_prefixes) {
      if (mine.prefix_len == theirs.prefix_len && mine.prefix == theirs.prefix) return true;
    }
  }
  return false;
}

}  // namespace smcpre::core
