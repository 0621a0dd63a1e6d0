// Which RDMA port carries a TCP connection, in the spirit of the kernel's pnet matching: the
// port whose netdev the kernel routes the connection over, and on it the GID that names the
// connection's local address. Three parts, kept apart so that the decision can be unit-tested
// without a device:
//   list_ports       what the host has (libibverbs; port_list.cpp),
//   route_of_socket  where a connection goes (getsockname/getpeername + rtnetlink; port_route.cpp),
//   choose_port      the pure decision between the two (port_select.cpp).
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "rdma/device.h"

namespace smcpre::rdma {

enum class GidType : uint8_t { kIb, kRoceV1, kRoceV2 };
// "IB", "RoCEv1", "RoCEv2" (the names ibv_devinfo and the kernel's sysfs use).
const char* to_string(GidType type);

struct GidEntry {
  uint32_t index = 0;
  Gid gid{};
  GidType type = GidType::kIb;
  uint32_t ifindex = 0;  // the netdev the GID belongs to; 0 = none (IB)
};

struct PortInfo {
  std::string device;
  uint8_t port = 0;
  bool active = false;
  bool ethernet = false;  // link layer: Ethernet (RoCE) or InfiniBand
  PathMtu active_mtu = PathMtu::k1024;
  Mac mac{};  // of the port's netdev, zero for IB
  std::vector<GidEntry> gids;
  // For diagnostics: the port state as libibverbs names it ("ACTIVE", "DOWN", ...) and the
  // port's own netdev (that of its default GID; 0 for IB).
  std::string state;
  uint32_t ifindex = 0;
};

// All ports of all devices, sorted by device name and port (libibverbs: ibv_get_device_list,
// ibv_query_port, ibv_query_gid_table). A host without RDMA support gives an empty list and
// no error. A device that cannot be opened or queried is left out and named in *error (set
// to "" when everything could be read), so the caller sees both what exists and what failed.
std::vector<PortInfo> list_ports(std::string* error);

// Where a TCP connection goes: the local and peer address (IPv4-mapped IPv6 normalized to
// IPv4) and the interface the kernel routes it over. A local delivery (the peer is on this
// host, the kernel's route goes through lo) names the interface holding the local address
// instead, since that is the netdev an RDMA port would carry the traffic on.
struct SocketRoute {
  sockaddr_storage local{};  // ss_family AF_UNSPEC when unknown (route_to without a source)
  sockaddr_storage peer{};
  uint32_t ifindex = 0;
  std::string ifname;
};

// The route of a connected TCP socket, asked from the kernel with rtnetlink RTM_GETROUTE for
// (local, peer, ports, the socket's SO_MARK and bound device). Bounded: gives up after a second.
bool route_of_socket(int fd, SocketRoute* out, std::string* error);
// Same for explicit addresses (ports in them are passed on for port-based policy rules).
// Without a source, out->local is the kernel's preferred source address when it names one.
bool route_to(const sockaddr* dst, const sockaddr* src_or_null, SocketRoute* out,
              std::string* error);

struct PortChoice {
  std::string device;
  uint8_t port = 0;
  uint32_t gid_index = 0;
  Gid gid{};
  Mac mac{};
  PathMtu mtu = PathMtu::k1024;
};

// Pure (no system calls). Without forced_device: an ACTIVE Ethernet (RoCE) port with a GID on
// netdev route.ifindex; among its GIDs on that netdev a RoCEv2 GID whose address (IPv4-mapped,
// or IPv6) is the local address, then any RoCEv2 GID of the local address's family, then a
// RoCEv1 GID; the best GID over all such ports wins, ties go to the first port listed.
// forced_device non-empty: only that device, and its port forced_port (0 = the best of its
// active ports); a RoCE port then need not carry the route (the user pairs them, as a pnetid
// would), though GIDs on the route's netdev still come first; an InfiniBand port takes its
// first valid GID. Returns nullopt with *why set to one line for a human, e.g.
// "no active RoCE port on netdev eth1 (route to 10.1.2.3)".
std::optional<PortChoice> choose_port(std::span<const PortInfo> ports, const SocketRoute& route,
                                      const std::string& forced_device, int forced_port,
                                      std::string* why);

// Text forms for logs and diagnostics: a GID as IPv6 ("::ffff:10.77.0.1"), a MAC as
// "02:00:0a:4d:00:01", an address without port ("10.1.2.3", "fe80::1%3"; "" for AF_UNSPEC).
std::string gid_string(const Gid& gid);
std::string mac_string(const Mac& mac);
std::string address_string(const sockaddr_storage& address);

}  // namespace smcpre::rdma
