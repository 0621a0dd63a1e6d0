// Made-up RDMA ports for the port selection tests: GIDs from address text, GID table
// entries, RoCE and InfiniBand ports, and socket addresses. Shared by
// test_port_select.cpp and test_port_select_routes.cpp.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "rdma/port_select.h"

using namespace smcpre::rdma;

inline Gid gid_of(const char* text) {
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

inline GidEntry gid_entry(uint32_t index, const char* address, GidType type, uint32_t ifindex) {
  return GidEntry{index, gid_of(address), type, ifindex};
}

inline GidEntry zero_entry(uint32_t index, uint32_t ifindex) {
  return GidEntry{index, Gid{}, GidType::kRoceV2, ifindex};
}

inline PortInfo roce_port(const std::string& device, uint8_t port, uint32_t ifindex,
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

inline PortInfo ib_port(const std::string& device, uint8_t port, std::vector<GidEntry> gids,
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

inline sockaddr_storage address(const char* text, uint16_t port = 0) {
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
