// RDMA port selection, the choice: between the ports the host has (port_list.cpp) and the
// route of a connection (port_route.cpp), without a system call, so that it is unit-tested;
// and the text forms of GIDs, MACs and addresses. See port_select.h for the rules; the why
// is below.
#include "rdma/port_select.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <iterator>
#include <optional>

#include "rdma/port_select_common.h"

namespace smcpre::rdma {

const char* to_string(GidType type) {
  switch (type) {
    case GidType::kIb:
      return "IB";
    case GidType::kRoceV1:
      return "RoCEv1";
    case GidType::kRoceV2:
      return "RoCEv2";
  }
  return "unknown";
}

namespace {

using port_select_detail::address_bytes;

bool is_zero(const Gid& gid) {
  return std::all_of(gid.begin(), gid.end(), [](uint8_t b) { return b == 0; });
}

bool is_v4_mapped(const Gid& gid) {
  static constexpr uint8_t kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return std::equal(std::begin(kPrefix), std::end(kPrefix), gid.begin());
}

// The GID form of an address: IPv4 as IPv4-mapped IPv6. nullopt for AF_UNSPEC.
std::optional<Gid> gid_of_address(const sockaddr_storage& a) {
  Gid gid{};
  const auto bytes = address_bytes(a);
  if (bytes.size() == 4) {
    gid[10] = 0xff;
    gid[11] = 0xff;
    std::copy(bytes.begin(), bytes.end(), gid.begin() + 12);
    return gid;
  }
  if (bytes.size() == 16) {
    std::copy(bytes.begin(), bytes.end(), gid.begin());
    return gid;
  }
  return std::nullopt;
}

constexpr int kUnusable = -1;

// How well a RoCE GID fits the connection; lower is better. A RoCEv2 GID is an IP address
// the peer's packets are routed to, so it must be of the connection's family (the peer
// chooses its GID by the same rule); a RoCEv1 GID is only a link-layer name.
int roce_rank(const GidEntry& entry, const std::optional<Gid>& local, int family) {
  if (is_zero(entry.gid)) return kUnusable;
  if (entry.type == GidType::kRoceV2) {
    const int gid_family = is_v4_mapped(entry.gid) ? AF_INET : AF_INET6;
    if (family != AF_UNSPEC && gid_family != family) return kUnusable;
    return local && *local == entry.gid ? 0 : 1;
  }
  if (entry.type == GidType::kRoceV1) return 2;
  return kUnusable;
}

struct Best {
  const PortInfo* port = nullptr;
  const GidEntry* gid = nullptr;
  int rank = 0;
  void offer(const PortInfo& p, const GidEntry& g, int r) {
    if (r == kUnusable || (port != nullptr && r >= rank)) return;
    port = &p;
    gid = &g;
    rank = r;
  }
};

std::string netdev_text(const SocketRoute& route) {
  if (!route.ifname.empty()) return route.ifname;
  return "ifindex " + std::to_string(route.ifindex);
}

std::string route_text(const SocketRoute& route) {
  const std::string peer = address_string(route.peer);
  return peer.empty() ? std::string() : " (route to " + peer + ")";
}

std::string port_name(const PortInfo& p) {
  return p.device + " port " + std::to_string(p.port);
}

std::string state_text(const PortInfo& p) {
  return p.state.empty() ? "not active" : "not active (" + p.state + ")";
}

std::string family_gids_text(int family) {
  if (family == AF_INET) return "IPv4 RoCEv2 or RoCEv1";
  if (family == AF_INET6) return "IPv6 RoCEv2 or RoCEv1";
  return "RoCE";
}

PortChoice make_choice(const Best& best) {
  PortChoice choice;
  choice.device = best.port->device;
  choice.port = best.port->port;
  choice.gid_index = best.gid->index;
  choice.gid = best.gid->gid;
  choice.mac = best.port->mac;
  choice.mtu = best.port->active_mtu;
  return choice;
}

std::optional<PortChoice> choose_auto(std::span<const PortInfo> ports, const SocketRoute& route,
                                      std::string* why) {
  const int family =
      route.local.ss_family != AF_UNSPEC ? route.local.ss_family : route.peer.ss_family;
  const std::optional<Gid> local = gid_of_address(route.local);
  Best best;
  const PortInfo* down = nullptr;        // a RoCE port on the netdev that is not active
  const PortInfo* wrong_gids = nullptr;  // an active one without a GID that fits
  for (const PortInfo& p : ports) {
    if (!p.ethernet) continue;  // IB has no netdev to match: only when named explicitly
    bool on_netdev = false;
    bool fits = false;
    for (const GidEntry& g : p.gids) {
      if (g.ifindex != route.ifindex || route.ifindex == 0 || is_zero(g.gid)) continue;
      on_netdev = true;
      if (!p.active) break;
      const int rank = roce_rank(g, local, family);
      fits = fits || rank != kUnusable;
      best.offer(p, g, rank);
    }
    if (on_netdev && !p.active && down == nullptr) down = &p;
    if (on_netdev && p.active && !fits && wrong_gids == nullptr) wrong_gids = &p;
  }
  if (best.port != nullptr) return make_choice(best);
  if (ports.empty()) {
    *why = "no RDMA devices";
  } else if (route.ifindex == 0) {
    *why = "the connection's route names no interface";
  } else if (wrong_gids != nullptr) {
    *why = port_name(*wrong_gids) + " on netdev " + netdev_text(route) + " has no " +
           family_gids_text(family) + " GID" + route_text(route);
  } else if (down != nullptr) {
    *why = "RoCE " + port_name(*down) + " on netdev " + netdev_text(route) + " is " +
           state_text(*down) + route_text(route);
  } else {
    *why = "no active RoCE port on netdev " + netdev_text(route) + route_text(route);
  }
  return std::nullopt;
}

std::optional<PortChoice> choose_forced(std::span<const PortInfo> ports, const SocketRoute& route,
                                        const std::string& device, int forced_port,
                                        std::string* why) {
  if (forced_port < 0 || forced_port > 255) {
    *why = "invalid RDMA port number " + std::to_string(forced_port);
    return std::nullopt;
  }
  const int family =
      route.local.ss_family != AF_UNSPEC ? route.local.ss_family : route.peer.ss_family;
  const std::optional<Gid> local = gid_of_address(route.local);
  // The netdev match still counts, but only as a preference: ranks off the route come after
  // all ranks on it.
  constexpr int kOffRoute = 10;
  Best best;
  bool device_seen = false;
  const PortInfo* named = nullptr;
  const PortInfo* down = nullptr;
  bool some_active = false;
  for (const PortInfo& p : ports) {
    if (p.device != device) continue;
    device_seen = true;
    if (forced_port != 0 && p.port != forced_port) continue;
    named = &p;
    if (!p.active) {
      if (down == nullptr) down = &p;
      continue;
    }
    some_active = true;
    for (const GidEntry& g : p.gids) {
      if (!p.ethernet) {
        // InfiniBand: GIDs are the port's own names; the first valid one will do.
        if (!is_zero(g.gid)) best.offer(p, g, 0);
        continue;
      }
      const int rank = roce_rank(g, local, family);
      if (rank == kUnusable) continue;
      const bool on_route = route.ifindex != 0 && g.ifindex == route.ifindex;
      best.offer(p, g, on_route ? rank : rank + kOffRoute);
    }
  }
  if (best.port != nullptr) return make_choice(best);
  if (!device_seen) {
    *why = "RDMA device " + device + " not found";
  } else if (named == nullptr) {
    *why = "RDMA device " + device + " has no port " + std::to_string(forced_port);
  } else if (!some_active) {
    *why = forced_port != 0 ? port_name(*down) + " is " + state_text(*down)
                            : "RDMA device " + device + " has no active port";
  } else if (forced_port != 0) {
    *why = port_name(*named) + " has no usable " +
           (named->ethernet ? family_gids_text(family) + " " : std::string()) + "GID";
  } else {
    *why = "RDMA device " + device + " has no active port with a usable " +
           family_gids_text(family) + " GID";
  }
  return std::nullopt;
}

}  // namespace

std::optional<PortChoice> choose_port(std::span<const PortInfo> ports, const SocketRoute& route,
                                      const std::string& forced_device, int forced_port,
                                      std::string* why) {
  why->clear();
  if (forced_device.empty()) return choose_auto(ports, route, why);
  return choose_forced(ports, route, forced_device, forced_port, why);
}

std::string gid_string(const Gid& gid) {
  char text[INET6_ADDRSTRLEN] = {};
  ::inet_ntop(AF_INET6, gid.data(), text, sizeof text);
  return text;
}

std::string mac_string(const Mac& mac) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string text;
  for (size_t i = 0; i < mac.size(); ++i) {
    if (i != 0) text += ':';
    text += kHex[mac[i] >> 4];
    text += kHex[mac[i] & 0xf];
  }
  return text;
}

std::string address_string(const sockaddr_storage& address) {
  char text[INET6_ADDRSTRLEN] = {};
  if (address.ss_family == AF_INET) {
    ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(address).sin_addr, text,
                sizeof text);
    return text;
  }
  if (address.ss_family == AF_INET6) {
    const auto& in6 = reinterpret_cast<const sockaddr_in6&>(address);
    ::inet_ntop(AF_INET6, &in6.sin6_addr, text, sizeof text);
    std::string result = text;
    if (in6.sin6_scope_id != 0) result += "%" + std::to_string(in6.sin6_scope_id);
    return result;
  }
  return {};
}

}  // namespace smcpre::rdma
