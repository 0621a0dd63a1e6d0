// RDMA port selection: choose_port on made-up port tables (no device needed), the route of
// real loopback sockets, and, where Soft-RoCE is up (scripts/rxe-vm), the real thing.
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "rdma/port_select.h"

using namespace smcpre::rdma;

namespace {

constexpr uint32_t kEth0 = 2;
constexpr uint32_t kEth1 = 3;
constexpr uint32_t kVlan = 7;

Gid gid_of(const char* text) {
  Gid gid{};
  in_addr v4{};
  if (inet_pton(AF_INET, text, &v4) == 1) {
    gid[10] = 0xff;
    gid[11] = 0xff;
    std::memcpy(gid.data() + 12, &v4, 4);
    return gid;
  }
  REQUIRE(inet_pton(AF_INET6, text, gid.data()) == 1);
  return gid;
}

GidEntry gid_entry(uint32_t index, const char* address, GidType type, uint32_t ifindex) {
  return GidEntry{index, gid_of(address), type, ifindex};
}

GidEntry zero_entry(uint32_t index, uint32_t ifindex) {
  return GidEntry{index, Gid{}, GidType::kRoceV2, ifindex};
}

PortInfo roce_port(const std::string& device, uint8_t port, uint32_t ifindex,
                   std::vector<GidEntry> gids, bool active = true) {
  PortInfo p;
  p.device = device;
  p.port = port;
  p.active = active;
  p.ethernet = true;
  p.active_mtu = PathMtu::k1024;
  p.mac = {0x02, 0, 0, 0, static_cast<uint8_t>(ifindex), port};
  p.gids = std::move(gids);
  p.state = active ? "ACTIVE" : "DOWN, phys Disabled";
  p.ifindex = ifindex;
  return p;
}

PortInfo ib_port(const std::string& device, uint8_t port, std::vector<GidEntry> gids,
                 bool active = true) {
  PortInfo p;
  p.device = device;
  p.port = port;
  p.active = active;
  p.ethernet = false;
  p.active_mtu = PathMtu::k4096;
  p.gids = std::move(gids);
  p.state = active ? "ACTIVE" : "INIT";
  return p;
}

sockaddr_storage address(const char* text, uint16_t port = 0) {
  sockaddr_storage storage{};
  sockaddr_in in{};
  if (inet_pton(AF_INET, text, &in.sin_addr) == 1) {
    in.sin_family = AF_INET;
    in.sin_port = htons(port);
    std::memcpy(&storage, &in, sizeof in);
    return storage;
  }
  sockaddr_in6 in6{};
  REQUIRE(inet_pton(AF_INET6, text, &in6.sin6_addr) == 1);
  in6.sin6_family = AF_INET6;
  in6.sin6_port = htons(port);
  std::memcpy(&storage, &in6, sizeof in6);
  return storage;
}

SocketRoute route(const char* local, const char* peer, uint32_t ifindex, const char* ifname) {
  SocketRoute r;
  if (local != nullptr) r.local = address(local, 40000);
  r.peer = address(peer, 5000);
  r.ifindex = ifindex;
  r.ifname = ifname;
  return r;
}

std::optional<PortChoice> choose(const std::vector<PortInfo>& ports, const SocketRoute& r,
                                 std::string* why, const std::string& device = "", int port = 0) {
  return choose_port(ports, r, device, port, why);
}

// The usual RoCE table of a port on one netdev with one IPv4 and one IPv6 address: for each
// address a RoCEv1 and a RoCEv2 entry (what the kernel's GID cache holds).
std::vector<GidEntry> dual_stack_gids(uint32_t ifindex, const char* v4, const char* v6) {
  return {
      gid_entry(0, "fe80::1", GidType::kRoceV1, ifindex),
      gid_entry(1, "fe80::1", GidType::kRoceV2, ifindex),
      gid_entry(2, v4, GidType::kRoceV1, ifindex),
      gid_entry(3, v4, GidType::kRoceV2, ifindex),
      gid_entry(4, v6, GidType::kRoceV1, ifindex),
      gid_entry(5, v6, GidType::kRoceV2, ifindex),
  };
}

}  // namespace

TEST_CASE("port_select: IPv4 picks the RoCEv2 GID of the local address on the route's netdev") {
  std::vector<PortInfo> ports = {
      roce_port("mlx5_0", 1, kEth0, dual_stack_gids(kEth0, "10.0.0.1", "2001:db8::1")),
  };
  std::string why = "stale";
  auto c = choose(ports, route("10.0.0.1", "10.0.0.2", kEth0, "eth0"), &why);
  REQUIRE(c);
  CHECK(why.empty());
  CHECK(c->device == "mlx5_0");
  CHECK(c->port == 1);
  CHECK(c->gid_index == 3);
  CHECK(c->gid == gid_of("10.0.0.1"));
  CHECK(c->mac == ports[0].mac);
  CHECK(c->mtu == PathMtu::k1024);
}

TEST_CASE("port_select: the local address's GID beats an earlier GID of the same family") {
  std::vector<PortInfo> ports = {roce_port("rxe0", 1, kEth0,
                                           {
                                               gid_entry(1, "10.0.0.9", GidType::kRoceV2, kEth0),
                                               gid_entry(2, "10.0.0.1", GidType::kRoceV2, kEth0),
                                           })};
  std::string why;
  auto c = choose(ports, route("10.0.0.1", "10.0.0.2", kEth0, "eth0"), &why);
  REQUIRE(c);
  CHECK(c->gid_index == 2);

  // No GID carries the local address (a secondary address without a GID yet): the first
  // IPv4 RoCEv2 GID on the netdev.
  c = choose(ports, route("10.0.0.5", "10.0.0.2", kEth0, "eth0"), &why);
  REQUIRE(c);
  CHECK(c->gid_index == 1);
}

TEST_CASE("port_select: IPv6 picks the IPv6 RoCEv2 GID of the local address") {
  std::vector<PortInfo> ports = {
      roce_port("mlx5_0", 1, kEth0, dual_stack_gids(kEth0, "10.0.0.1", "2001:db8::1")),
  };
  std::string why;
  auto c = choose(ports, route("2001:db8::1", "2001:db8::2", kEth0, "eth0"), &why);
  REQUIRE(c);
  CHECK(c->gid_index == 5);
  CHECK(c->gid == gid_of("2001:db8::1"));

  // Another IPv6 address: the first IPv6 RoCEv2 GID, never the IPv4-mapped one.
  c = choose(ports, route("2001:db8::7", "2001:db8::2", kEth0, "eth0"), &why);
  REQUIRE(c);
  CHECK(c->gid_index == 1);
}

TEST_CASE("port_select: RoCEv1 only when no RoCEv2 GID of the family is there") {
  std::vector<PortInfo> ports = {
      roce_port("mlx4_0", 1, kEth0,
                {
                    gid_entry(0, "fe80::1", GidType::kRoceV1, kEth0),
                    gid_entry(1, "fe80::1", GidType::kRoceV2, kEth0),  // IPv6: wrong family
                    gid_entry(2, "10.0.0.1", GidType::kRoceV1, kEth0),
                }),
  };
  std::string why;
  auto c = choose(ports, route("10.0.0.1", "10.0.0.2", kEth0, "eth0"), &why);
  REQUIRE(c);
  CHECK(c->gid_index == 0);  // RoCEv1 GIDs are link-layer names: the first one does
}

TEST_CASE("port_select: only wrong-family RoCEv2 GIDs on the netdev is no choice") {
  std::vector<PortInfo> ports = {
      roce_port("rxe0", 1, kEth0, {gid_entry(1, "fe80::1", GidType::kRoceV2, kEth0)}),
  };
  std::string why;
  CHECK_FALSE(choose(ports, route("10.0.0.1", "10.0.0.2", kEth0, "eth0"), &why));
  CHECK(why == "rxe0 port 1 on netdev eth0 has no IPv4 RoCEv2 or RoCEv1 GID (route to 10.0.0.2)");
}

TEST_CASE("port_select: among devices and ports, the one on the route's netdev") {
  std::vector<PortInfo> ports = {
      roce_port("mlx5_0", 1, kEth0, dual_stack_gids(kEth0, "10.0.0.1", "2001:db8::1")),
      roce_port("mlx5_1", 1, kEth1, {gid_entry(1, "10.1.0.1", GidType::kRoceV2, kEth1)}, false),
      roce_port("mlx5_1", 2, kEth1, {gid_entry(1, "10.1.0.1", GidType::kRoceV2, kEth1)}),
  };
  std::string why;
  auto c = choose(ports, route("10.1.0.1", "10.1.0.2", kEth1, "eth1"), &why);
  REQUIRE(c);
  CHECK(c->device == "mlx5_1");
  CHECK(c->port == 2);  // port 1 carries the netdev too, but is down
  CHECK(c->gid == gid_of("10.1.0.1"));
  CHECK(c->mac == ports[2].mac);

  c = choose(ports, route("10.0.0.1", "10.0.0.2", kEth0, "eth0"), &why);
  REQUIRE(c);
  CHECK(c->device == "mlx5_0");
}

TEST_CASE("port_select: the best GID over all ports wins, ties go to the first port") {
  std::vector<PortInfo> ports = {
      roce_port("a", 1, kEth0, {gid_entry(0, "fe80::1", GidType::kRoceV1, kEth0)}),
      roce_port("b", 1, kEth0, {gid_entry(4, "10.0.0.1", GidType::kRoceV2, kEth0)}),
      roce_port("c", 1, kEth0, {gid_entry(2, "10.0.0.1", GidType::kRoceV2, kEth0)}),
  };
  std::string why;
  auto c = choose(ports, route("10.0.0.1", "10.0.0.2", kEth0, "eth0"), &why);
  REQUIRE(c);
  CHECK(c->device == "b");
  CHECK(c->gid_index == 4);
}

TEST_CASE("port_select: GIDs of a VLAN upper device match a route over the VLAN") {
  std::vector<PortInfo> ports = {
      roce_port("mlx5_0", 1, kEth0,
                {
                    gid_entry(0, "fe80::1", GidType::kRoceV1, kEth0),
                    gid_entry(3, "10.0.0.1", GidType::kRoceV2, kEth0),
                    gid_entry(7, "10.100.0.1", GidType::kRoceV2, kVlan),
                }),
  };
  std::string why;
  auto c = choose(ports, route("10.100.0.1", "10.100.0.2", kVlan, "eth0.100"), &why);
  REQUIRE(c);
  CHECK(c->gid_index == 7);
}

TEST_CASE("port_select: a down port on the netdev is named in the reason") {
  std::vector<PortInfo> ports = {
      roce_port("rxe0", 1, kEth0, {gid_entry(1, "10.0.0.1", GidType::kRoceV2, kEth0)}, false),
  };
  std::string why;
  CHECK_FALSE(choose(ports, route("10.0.0.1", "10.0.0.2", kEth0, "eth0"), &why));
  CHECK(why ==
        "RoCE rxe0 port 1 on netdev eth0 is not active (DOWN, phys Disabled) (route to 10.0.0.2)");
}

TEST_CASE("port_select: no port on the route's netdev") {
  std::vector<PortInfo> ports = {
      roce_port("rxe0", 1, kEth0, {gid_entry(1, "10.0.0.1", GidType::kRoceV2, kEth0)}),
      ib_port("mlx5_2", 1, {gid_entry(0, "fe80::2", GidType::kIb, 0)}),
  };
  std::string why;
  CHECK_FALSE(choose(ports, route("10.1.2.1", "10.1.2.3", kEth1, "eth1"), &why));
  CHECK(why == "no active RoCE port on netdev eth1 (route to 10.1.2.3)");

  // The interface name unknown: its index stands in.
  CHECK_FALSE(choose(ports, route("10.1.2.1", "10.1.2.3", 42, ""), &why));
  CHECK(why == "no active RoCE port on netdev ifindex 42 (route to 10.1.2.3)");

  // No interface at all, and no devices at all.
  CHECK_FALSE(choose(ports, route("10.1.2.1", "10.1.2.3", 0, ""), &why));
  CHECK(why == "the connection's route names no interface");
  CHECK_FALSE(choose({}, route("10.1.2.1", "10.1.2.3", kEth1, "eth1"), &why));
  CHECK(why == "no RDMA devices");
}

TEST_CASE("port_select: zero GIDs (empty table slots) are never chosen") {
  std::vector<PortInfo> ports = {
      roce_port("rxe0", 1, kEth0, {zero_entry(0, kEth0), zero_entry(1, kEth0)}),
      roce_port("rxe1", 1, kEth0,
                {zero_entry(0, kEth0), gid_entry(1, "10.0.0.1", GidType::kRoceV2, kEth0),
                 zero_entry(2, kEth0)}),
  };
  std::string why;
  auto c = choose(ports, route("10.0.0.1", "10.0.0.2", kEth0, "eth0"), &why);
  REQUIRE(c);
  CHECK(c->device == "rxe1");
  CHECK(c->gid_index == 1);

  ports.pop_back();
  CHECK_FALSE(choose(ports, route("10.0.0.1", "10.0.0.2", kEth0, "eth0"), &why));
  CHECK(why == "no active RoCE port on netdev eth0 (route to 10.0.0.2)");
}

TEST_CASE("port_select: InfiniBand ports are used only when forced") {
  std::vector<PortInfo> ports = {
      ib_port("mlx5_0", 1, {gid_entry(0, "fe80::a", GidType::kIb, 0)}, false),
      ib_port("mlx5_0", 2,
              {GidEntry{0, Gid{}, GidType::kIb, 0}, gid_entry(1, "fe80::b", GidType::kIb, 0),
               gid_entry(2, "fe80::c", GidType::kIb, 0)}),
  };
  std::string why;
  CHECK_FALSE(choose(ports, route("10.0.0.1", "10.0.0.2", kEth0, "ib0"), &why));

  auto c = choose(ports, route("10.0.0.1", "10.0.0.2", kEth0, "ib0"), &why, "mlx5_0");
  REQUIRE(c);
  CHECK(c->port == 2);  // port 1 is not active
  CHECK(c->gid_index == 1);
  CHECK(c->gid == gid_of("fe80::b"));
  CHECK(c->mac == Mac{});
  CHECK(c->mtu == PathMtu::k4096);

  CHECK_FALSE(choose(ports, route("10.0.0.1", "10.0.0.2", kEth0, "ib0"), &why, "mlx5_0", 1));
  CHECK(why == "mlx5_0 port 1 is not active (INIT)");
}

TEST_CASE("port_select: forced device and port") {
  std::vector<PortInfo> ports = {
      roce_port("rxe0", 1, kEth0, {gid_entry(1, "10.0.0.1", GidType::kRoceV2, kEth0)}),
      roce_port("rxe1", 1, kEth1,
                {gid_entry(0, "fe80::1", GidType::kRoceV1, kEth1),
                 gid_entry(1, "10.1.0.1", GidType::kRoceV2, kEth1)}),
      roce_port("rxe1", 2, kEth0, {gid_entry(1, "10.0.0.1", GidType::kRoceV2, kEth0)}, false),
      roce_port("rxe2", 1, kEth1, {gid_entry(1, "fe80::1", GidType::kRoceV2, kEth1)}),
  };
  const SocketRoute via_eth0 = route("10.0.0.1", "10.0.0.2", kEth0, "eth0");
  std::string why;

  SECTION("a forced RoCE device need not carry the route; its fitting GID is used") {
    auto c = choose(ports, via_eth0, &why, "rxe1");
    REQUIRE(c);
    CHECK(c->device == "rxe1");
    CHECK(c->port == 1);
    CHECK(c->gid_index == 1);
    CHECK(c->gid == gid_of("10.1.0.1"));
  }
  SECTION("the forced device's GIDs on the route's netdev come first") {
    ports[1].gids.push_back(gid_entry(9, "fe80::9", GidType::kRoceV1, kEth0));
    auto c = choose(ports, via_eth0, &why, "rxe1");
    REQUIRE(c);
    CHECK(c->gid_index == 9);
  }
  SECTION("a forced port that is down fails even though the device has another") {
    CHECK_FALSE(choose(ports, via_eth0, &why, "rxe1", 2));
    CHECK(why == "rxe1 port 2 is not active (DOWN, phys Disabled)");
  }
  SECTION("a forced port that does not exist") {
    CHECK_FALSE(choose(ports, via_eth0, &why, "rxe1", 3));
    CHECK(why == "RDMA device rxe1 has no port 3");
  }
  SECTION("a forced device that does not exist") {
    CHECK_FALSE(choose(ports, via_eth0, &why, "mlx5_9"));
    CHECK(why == "RDMA device mlx5_9 not found");
  }
  SECTION("a forced device without an active port") {
    ports[0].active = false;
    CHECK_FALSE(choose(ports, via_eth0, &why, "rxe0"));
    CHECK(why == "RDMA device rxe0 has no active port");
  }
  SECTION("a forced port without a GID of the connection's family") {
    CHECK_FALSE(choose(ports, via_eth0, &why, "rxe2", 1));
    CHECK(why == "rxe2 port 1 has no usable IPv4 RoCEv2 or RoCEv1 GID");
    CHECK_FALSE(choose(ports, via_eth0, &why, "rxe2"));
    CHECK(why == "RDMA device rxe2 has no active port with a usable IPv4 RoCEv2 or RoCEv1 GID");
  }
  SECTION("port numbers out of range") {
    CHECK_FALSE(choose(ports, via_eth0, &why, "rxe0", -1));
    CHECK(why == "invalid RDMA port number -1");
    CHECK_FALSE(choose(ports, via_eth0, &why, "rxe0", 256));
  }
}

TEST_CASE("port_select: text forms") {
  CHECK(gid_string(gid_of("10.77.0.1")) == "::ffff:10.77.0.1");
  CHECK(gid_string(gid_of("fe80::200:aff:fe4d:1")) == "fe80::200:aff:fe4d:1");
  CHECK(mac_string({0x02, 0x00, 0x0a, 0x4d, 0xab, 0xff}) == "02:00:0a:4d:ab:ff");
  CHECK(address_string(address("10.1.2.3", 80)) == "10.1.2.3");
  sockaddr_storage scoped = address("fe80::1");
  reinterpret_cast<sockaddr_in6&>(scoped).sin6_scope_id = 3;
  CHECK(address_string(scoped) == "fe80::1%3");
  CHECK(address_string(sockaddr_storage{}).empty());
  CHECK(std::string(to_string(GidType::kRoceV2)) == "RoCEv2");
}

// ---------------------------------------------------------------------------------------------
// Routes of real sockets on this host

namespace {

struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

uint16_t port_of(const sockaddr_storage& a) {
  if (a.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(a).sin_port);
  return ntohs(reinterpret_cast<const sockaddr_in6&>(a).sin6_port);
}

socklen_t length_of(const sockaddr_storage& a) {
  return a.ss_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
}

// A connected TCP pair: client socket (family of `client_family`) to a listener on
// `listen_at`. Returns false (with a WARN) where the host cannot make one.
struct TcpPair {
  std::unique_ptr<Fd> listener, client, server;
  sockaddr_storage listen_address{};

  bool make(const char* listen_at, int client_family, const char* connect_to,
            const char* bind_client_to = nullptr) {
    listen_address = address(listen_at);
    listener = std::make_unique<Fd>(::socket(listen_address.ss_family, SOCK_STREAM, 0));
    if (listener->fd < 0 || ::bind(listener->fd, reinterpret_cast<sockaddr*>(&listen_address),
                                   length_of(listen_address)) != 0) {
      WARN("cannot listen on " << listen_at << ": " << std::strerror(errno));
      return false;
    }
    REQUIRE(::listen(listener->fd, 4) == 0);
    socklen_t len = sizeof listen_address;
    REQUIRE(::getsockname(listener->fd, reinterpret_cast<sockaddr*>(&listen_address), &len) == 0);
    client = std::make_unique<Fd>(::socket(client_family, SOCK_STREAM, 0));
    if (client->fd < 0) {
      WARN("no socket of family " << client_family << ": " << std::strerror(errno));
      return false;
    }
    if (bind_client_to != nullptr) {
      sockaddr_storage local = address(bind_client_to);
      REQUIRE(::bind(client->fd, reinterpret_cast<sockaddr*>(&local), length_of(local)) == 0);
    }
    sockaddr_storage target = address(connect_to, port_of(listen_address));
    if (::connect(client->fd, reinterpret_cast<sockaddr*>(&target), length_of(target)) != 0) {
      WARN("cannot connect to " << connect_to << ": " << std::strerror(errno));
      return false;
    }
    server = std::make_unique<Fd>(::accept(listener->fd, nullptr, nullptr));
    REQUIRE(server->fd >= 0);
    return true;
  }
};

}  // namespace

TEST_CASE("port_select: route of a TCP connection over IPv4 loopback") {
  TcpPair pair;
  REQUIRE(pair.make("127.0.0.1", AF_INET, "127.0.0.1"));
  SocketRoute r;
  std::string error;
  REQUIRE(route_of_socket(pair.client->fd, &r, &error));
  CHECK(error.empty());
  CHECK(r.ifindex == if_nametoindex("lo"));
  CHECK(r.ifname == "lo");
  CHECK(address_string(r.local) == "127.0.0.1");
  CHECK(address_string(r.peer) == "127.0.0.1");
  CHECK(port_of(r.peer) == port_of(pair.listen_address));

  // The accepted side sees the same connection from the other end.
  SocketRoute s;
  REQUIRE(route_of_socket(pair.server->fd, &s, &error));
  CHECK(s.ifindex == r.ifindex);
  CHECK(port_of(s.local) == port_of(pair.listen_address));
  CHECK(port_of(s.peer) == port_of(r.local));

  // lo carries no RoCE port: a RoCE table elsewhere gives no choice, and says so.
  std::vector<PortInfo> ports = {
      roce_port("rxe0", 1, r.ifindex + 1000, {gid_entry(1, "127.0.0.1", GidType::kRoceV2, 9)}),
  };
  std::string why;
  CHECK_FALSE(choose_port(ports, r, "", 0, &why));
  CHECK(why == "no active RoCE port on netdev lo (route to 127.0.0.1)");
}

TEST_CASE("port_select: an IPv4-mapped IPv6 connection is routed as IPv4") {
  TcpPair pair;
  if (!pair.make("127.0.0.1", AF_INET6, "::ffff:127.0.0.1")) return;
  SocketRoute r;
  std::string error;
  REQUIRE(route_of_socket(pair.client->fd, &r, &error));
  CHECK(r.local.ss_family == AF_INET);
  CHECK(r.peer.ss_family == AF_INET);
  CHECK(address_string(r.peer) == "127.0.0.1");
  CHECK(port_of(r.peer) == port_of(pair.listen_address));
  CHECK(r.ifname == "lo");
}

TEST_CASE("port_select: route of a TCP connection over IPv6 loopback") {
  TcpPair pair;
  if (!pair.make("::1", AF_INET6, "::1")) return;
  SocketRoute r;
  std::string error;
  REQUIRE(route_of_socket(pair.client->fd, &r, &error));
  CHECK(r.peer.ss_family == AF_INET6);
  CHECK(address_string(r.local) == "::1");
  CHECK(r.ifname == "lo");
}

TEST_CASE("port_select: route_of_socket refuses what is not a connected TCP/IP socket") {
  SocketRoute r;
  std::string error;
  Fd unconnected(::socket(AF_INET, SOCK_STREAM, 0));
  CHECK_FALSE(route_of_socket(unconnected.fd, &r, &error));
  CHECK(error.find("getpeername") != std::string::npos);

  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
  Fd a(sv[0]), b(sv[1]);
  error.clear();
  CHECK_FALSE(route_of_socket(a.fd, &r, &error));
  CHECK(error.find("not an IPv4 or IPv6 address") != std::string::npos);

  int p[2];
  REQUIRE(::pipe(p) == 0);
  Fd rd(p[0]), wr(p[1]);
  error.clear();
  CHECK_FALSE(route_of_socket(rd.fd, &r, &error));
  CHECK_FALSE(error.empty());
}

TEST_CASE("port_select: route_to explicit addresses") {
  SocketRoute r;
  std::string error;

  SECTION("loopback without a source: the kernel's preferred source") {
    sockaddr_storage dst = address("127.0.0.1", 80);
    REQUIRE(route_to(reinterpret_cast<sockaddr*>(&dst), nullptr, &r, &error));
    CHECK(r.ifname == "lo");
    CHECK(address_string(r.local) == "127.0.0.1");
    CHECK(port_of(r.peer) == 80);
  }
  SECTION("an IPv4-mapped destination") {
    sockaddr_storage dst = address("::ffff:127.0.0.1", 80);
    REQUIRE(route_to(reinterpret_cast<sockaddr*>(&dst), nullptr, &r, &error));
    CHECK(r.peer.ss_family == AF_INET);
    CHECK(r.ifname == "lo");
  }
  SECTION("a local address of another interface: local delivery names that interface") {
    // The first IPv4 address of a non-loopback interface, if the host has one.
    ifaddrs* list = nullptr;
    REQUIRE(getifaddrs(&list) == 0);
    std::string ifname;
    sockaddr_storage dst{};
    for (ifaddrs* it = list; it != nullptr; it = it->ifa_next) {
      if (it->ifa_addr == nullptr || it->ifa_addr->sa_family != AF_INET) continue;
      if ((it->ifa_flags & IFF_LOOPBACK) != 0 || (it->ifa_flags & IFF_UP) == 0) continue;
      std::memcpy(&dst, it->ifa_addr, sizeof(sockaddr_in));
      ifname = it->ifa_name;
      ifname = ifname.substr(0, ifname.find(':'));
      break;
    }
    freeifaddrs(list);
    if (ifname.empty()) {
      WARN("no non-loopback IPv4 address on this host: local-delivery case not run");
      return;
    }
    REQUIRE(route_to(reinterpret_cast<sockaddr*>(&dst), nullptr, &r, &error));
    CHECK(r.ifname == ifname);
    CHECK(r.ifindex == if_nametoindex(ifname.c_str()));
    CHECK(address_string(r.local) == address_string(dst));
  }
  SECTION("a source that is not ours: the kernel's error") {
    sockaddr_storage dst = address("127.0.0.1");
    sockaddr_storage src = address("203.0.113.77");
    CHECK_FALSE(
        route_to(reinterpret_cast<sockaddr*>(&dst), reinterpret_cast<sockaddr*>(&src), &r, &error));
    CHECK(error.find("no route to 127.0.0.1") == 0);
  }
  SECTION("mixed families and non-IP addresses") {
    sockaddr_storage dst = address("127.0.0.1");
    sockaddr_storage src = address("::1");
    CHECK_FALSE(
        route_to(reinterpret_cast<sockaddr*>(&dst), reinterpret_cast<sockaddr*>(&src), &r, &error));
    CHECK(error.find("different address families") != std::string::npos);
    sockaddr_storage unix_address{};
    unix_address.ss_family = AF_UNIX;
    CHECK_FALSE(route_to(reinterpret_cast<sockaddr*>(&unix_address), nullptr, &r, &error));
    CHECK(error.find("not an IPv4 or IPv6 address") != std::string::npos);
  }
}

TEST_CASE("port_select: list_ports on a host without RDMA support is empty, without error") {
  struct stat st {};
  if (::stat("/sys/class/infiniband_verbs", &st) == 0) {
    WARN("this host has RDMA support: the no-RDMA case is not run");
    return;
  }
  std::string error = "stale";
  CHECK(list_ports(&error).empty());
  CHECK(error.empty());
}

// ---------------------------------------------------------------------------------------------
// Soft-RoCE in scripts/rxe-vm: rxe0 on veth0 10.77.0.1, rxe1 on veth1 10.77.0.2, with policy
// routing sending 10.77.0.1 -> 10.77.0.2 out of veth0.

namespace {

Mac mac_from_sysfs(const std::string& ifname) {
  std::ifstream in("/sys/class/net/" + ifname + "/address");
  std::string text;
  in >> text;
  Mac mac{};
  unsigned b[6];
  REQUIRE(std::sscanf(text.c_str(), "%x:%x:%x:%x:%x:%x", &b[0], &b[1], &b[2], &b[3], &b[4],
                      &b[5]) == 6);
  for (size_t i = 0; i < mac.size(); ++i) mac[i] = static_cast<uint8_t>(b[i]);
  return mac;
}

bool have_rxe_guest(const std::vector<PortInfo>& ports) {
  auto has = [&](const char* name) {
    return std::any_of(ports.begin(), ports.end(),
                       [&](const PortInfo& p) { return p.device == name; });
  };
  return has("rxe0") && has("rxe1") && if_nametoindex("veth0") != 0;
}

}  // namespace

TEST_CASE("port_select: Soft-RoCE: 10.77.0.1 -> 10.77.0.2 picks rxe0 with its IPv4 GID") {
  std::string error;
  const std::vector<PortInfo> ports = list_ports(&error);
  if (!have_rxe_guest(ports)) {
    WARN("no rxe0/rxe1 on veth0/veth1 (run in scripts/rxe-vm): Soft-RoCE case skipped");
    return;
  }
  CHECK(error.empty());
  for (const PortInfo& p : ports) {
    if (p.device != "rxe0") continue;
    CHECK(p.active);
    CHECK(p.ethernet);
    CHECK(p.ifindex == if_nametoindex("veth0"));
    CHECK(p.mac == mac_from_sysfs("veth0"));
    CHECK_FALSE(p.gids.empty());
  }

  SocketRoute r;
  sockaddr_storage dst = address("10.77.0.2");
  sockaddr_storage src = address("10.77.0.1");
  REQUIRE(
      route_to(reinterpret_cast<sockaddr*>(&dst), reinterpret_cast<sockaddr*>(&src), &r, &error));
  CHECK(r.ifname == "veth0");

  std::string why;
  auto c = choose_port(ports, r, "", 0, &why);
  REQUIRE(c);
  CHECK(c->device == "rxe0");
  CHECK(c->port == 1);
  CHECK(gid_string(c->gid) == "::ffff:10.77.0.1");
  CHECK(c->mac == mac_from_sysfs("veth0"));

  // Forcing the other device: rxe1 with its own IPv4 GID although veth1 is off the route.
  c = choose_port(ports, r, "rxe1", 0, &why);
  REQUIRE(c);
  CHECK(gid_string(c->gid) == "::ffff:10.77.0.2");
  CHECK(c->mac == mac_from_sysfs("veth1"));
}

TEST_CASE("port_select: Soft-RoCE: a real connection 10.77.0.1 -> 10.77.0.2 and back") {
  std::string error;
  const std::vector<PortInfo> ports = list_ports(&error);
  if (!have_rxe_guest(ports)) {
    WARN("no rxe0/rxe1 on veth0/veth1 (run in scripts/rxe-vm): Soft-RoCE case skipped");
    return;
  }
  TcpPair pair;
  REQUIRE(pair.make("10.77.0.2", AF_INET, "10.77.0.2", "10.77.0.1"));
  std::string why;

  SocketRoute r;
  REQUIRE(route_of_socket(pair.client->fd, &r, &error));
  CHECK(r.ifname == "veth0");
  auto c = choose_port(ports, r, "", 0, &why);
  REQUIRE(c);
  CHECK(c->device == "rxe0");
  CHECK(gid_string(c->gid) == "::ffff:10.77.0.1");

  // The server's side of the same connection goes out of veth1: rxe1.
  REQUIRE(route_of_socket(pair.server->fd, &r, &error));
  CHECK(r.ifname == "veth1");
  c = choose_port(ports, r, "", 0, &why);
  REQUIRE(c);
  CHECK(c->device == "rxe1");
  CHECK(gid_string(c->gid) == "::ffff:10.77.0.2");
  CHECK(c->mac == mac_from_sysfs("veth1"));
}
