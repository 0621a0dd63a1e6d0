// core/stream_start: which TCP connections another process may hand over undecided. Real
// loopback connections; the kernel's own counters are the input.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "core/stream_start.h"

namespace {

struct Pair {
  int listener = -1;
  int client = -1;
  int accepted = -1;
  Pair() {
    listener = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    REQUIRE(::bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(listener, 4) == 0);
    REQUIRE(::getsockname(listener, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    client = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(::connect(client, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    accepted = ::accept(listener, nullptr, nullptr);
    REQUIRE(accepted >= 0);
  }
  ~Pair() {
    ::close(listener);
    ::close(client);
    ::close(accepted);
  }
  // Waits until `n` bytes are queued at the accepted end.
  void arrive(size_t n) const {
    for (int i = 0; i < 200; ++i) {
      char buf[64];
      if (::recv(accepted, buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT) >= static_cast<ssize_t>(n)) {
        return;
      }
      pollfd p{accepted, POLLIN, 0};
      ::poll(&p, 1, 10);
    }
    FAIL("bytes did not arrive");
  }
};

}  // namespace

TEST_CASE("a fresh accepted connection is at its stream's start", "[stream_start]") {
  Pair p;
  CHECK(smcpre::core::at_stream_start(p.accepted));
}

TEST_CASE("bytes waiting unread keep it at the start", "[stream_start]") {
  Pair p;
  REQUIRE(::send(p.client, "\xE2\xD4\xC3\xD9", 4, 0) == 4);
  p.arrive(4);
  CHECK(smcpre::core::at_stream_start(p.accepted));
}

TEST_CASE("one byte read moves it past the start", "[stream_start]") {
  Pair p;
  REQUIRE(::send(p.client, "abcd", 4, 0) == 4);
  p.arrive(4);
  char c;
  REQUIRE(::recv(p.accepted, &c, 1, 0) == 1);
  CHECK_FALSE(smcpre::core::at_stream_start(p.accepted));
}

TEST_CASE("one byte sent moves it past the start", "[stream_start]") {
  Pair p;
  REQUIRE(::send(p.accepted, "x", 1, 0) == 1);
  CHECK_FALSE(smcpre::core::at_stream_start(p.accepted));
}

TEST_CASE("listening, unconnected, closed and non-TCP sockets are never candidates",
          "[stream_start]") {
  Pair p;
  CHECK_FALSE(smcpre::core::at_stream_start(p.listener));
  const int unconnected = ::socket(AF_INET, SOCK_STREAM, 0);
  CHECK_FALSE(smcpre::core::at_stream_start(unconnected));
  ::close(unconnected);
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
  CHECK_FALSE(smcpre::core::at_stream_start(sv[0]));
  ::close(sv[0]);
  ::close(sv[1]);
  CHECK_FALSE(smcpre::core::at_stream_start(-1));
  // The peer's FIN: no longer ESTABLISHED.
  ::shutdown(p.client, SHUT_WR);
  for (int i = 0; i < 100 && smcpre::core::at_stream_start(p.accepted); ++i) ::usleep(1000);
  CHECK_FALSE(smcpre::core::at_stream_start(p.accepted));
}
