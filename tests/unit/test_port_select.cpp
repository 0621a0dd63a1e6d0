// RDMA port selection: choose_port on made-up port tables (no device needed), by route,
// GID type and family, forced device and port, with the reason when there is no choice;
// and the text forms. Routes of real sockets and Soft-RoCE: test_port_select_routes.cpp.
#include <arpa/inet.h>
#include <sys/socket.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "rdma/port_select.h"
#include "tests/unit/port_tables.h"

namespace {

constexpr uint32_t kEth0 = 2;
constexpr uint32_t kEth1 = 3;
constexpr uint32_t kVlan = 7;

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
