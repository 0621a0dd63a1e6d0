// Socket addresses for tests: v4("10.1.2.3", 80), v6("fd00::1", 443).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>

#include <catch2/catch.hpp>
#include <cstdint>

inline sockaddr_in v4(const char* addr, uint16_t port) {
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(port);
  REQUIRE(inet_pton(AF_INET, addr, &sin.sin_addr) == 1);
  return sin;
}

inline sockaddr_in6 v6(const char* addr, uint16_t port) {
  sockaddr_in6 sin6{};
  sin6.sin6_family = AF_INET6;
  sin6.sin6_port = htons(port);
  REQUIRE(inet_pton(AF_INET6, addr, &sin6.sin6_addr) == 1);
  return sin6;
}
