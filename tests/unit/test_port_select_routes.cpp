// RDMA port selection on this host: the route of real loopback sockets (route_of_socket,
// route_to), list_ports without RDMA support, and, where Soft-RoCE is up (scripts/rxe-vm),
// the real thing.
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "rdma/port_select.h"
#include "tests/unit/port_tables.h"

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
