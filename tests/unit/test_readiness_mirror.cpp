// The readiness mirror (core/datapath/readiness_mirror.h): in every state an SMC connection can be
// in, its poll and epoll masks must equal those of a kernel TCP socket in the same state
// (each checked against a real loopback TCP pair driven through the same steps). The
// kernel's epoll machinery on it is tested in test_readiness_mirror_epoll.cpp.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <random>
#include <string>
#include <thread>

#include "core/datapath/readiness_mirror.h"
#include "tests/unit/mirror_masks.h"

namespace {

// A connected loopback TCP pair, both ends non-blocking: `a` plays the SMC socket.
struct TcpPair {
  Fd a, b;
  TcpPair() {
    Fd listener(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(listener >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(listen(listener, 1) == 0);
    socklen_t len = sizeof addr;
    REQUIRE(getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    a.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(connect(a, reinterpret_cast<sockaddr*>(&addr), len) == 0);
    b.fd = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    REQUIRE(b >= 0);
    for (int fd : {a.fd, b.fd}) REQUIRE(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == 0);
  }
  // Sends from `a` until the kernel takes no more (`b` does not read).
  void fill_a() {
    static char buf[65536];
    for (int eagains = 0; eagains < 3;) {
      if (send(a, buf, sizeof buf, MSG_NOSIGNAL) > 0) {
        eagains = 0;
        continue;
      }
      REQUIRE(errno == EAGAIN);
      ++eagains;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  void drain(int fd) {
    static char buf[65536];
    while (read(fd, buf, sizeof buf) > 0) {
    }
  }
  // b aborts the connection: an RST reaches a.
  void reset_from_b() {
    linger lg{1, 0};
    REQUIRE(setsockopt(b, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == 0);
    b.reset();
  }
};

// Loopback delivers within the sending call, but window updates and the like may lag:
// gives TCP up to 2 s to show `expected`, then returns what it shows.
unsigned settled_tcp_mask(int fd, unsigned expected) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  unsigned m = poll_mask(fd);
  while (m != expected && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    m = poll_mask(fd);
  }
  return m;
}

// TCP and the mirror, in poll and in LT epoll, all show `expected`.
void check_same(int tcp, const ReadinessMirror& mirror, unsigned expected, const char* what) {
  INFO("state: " << what);
  CHECK(names(settled_tcp_mask(tcp, expected)) == names(expected));
  CHECK(names(epoll_mask(tcp)) == names(expected));
  CHECK(names(poll_mask(mirror.app_fd())) == names(expected));
  CHECK(names(epoll_mask(mirror.app_fd())) == names(expected));
}

}  // namespace

TEST_CASE("mirror: app_fd is a non-blocking CLOEXEC AF_UNIX stream socket") {
  auto m = make_mirror();
  int fd = m->app_fd();
  CHECK((fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0);
  CHECK((fcntl(fd, F_GETFL) & O_NONBLOCK) != 0);
  int v = 0;
  socklen_t len = sizeof v;
  REQUIRE(getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &len) == 0);
  CHECK(v == AF_UNIX);
  REQUIRE(getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &len) == 0);
  CHECK(v == SOCK_STREAM);
  // A fresh mirror shows what an idle connection with send space shows.
  std::string error;
  auto fresh = ReadinessMirror::create(&error);
  REQUIRE(fresh);
  CHECK(names(poll_mask(fresh->app_fd())) == names(kOut));
}

TEST_CASE("mirror equals TCP: data, draining, peer FIN, then our shutdown") {
  TcpPair tcp;
  auto m = make_mirror();
  check_same(tcp.a, *m, kOut, "established, idle");

  REQUIRE(send(tcp.b, "x", 1, 0) == 1);
  m->apply(st(true, true), true);
  check_same(tcp.a, *m, kIn | kOut, "data to read");

  tcp.drain(tcp.a);
  m->apply(st(false, true), false);
  check_same(tcp.a, *m, kOut, "data read");

  REQUIRE(send(tcp.b, "y", 1, 0) == 1);
  REQUIRE(shutdown(tcp.b, SHUT_WR) == 0);
  m->apply(st(true, true, true), true);
  check_same(tcp.a, *m, kIn | kOut | kRdhup, "peer FIN, data unread");

  tcp.drain(tcp.a);
  m->apply(st(false, true, true), false);
  check_same(tcp.a, *m, kIn | kOut | kRdhup, "peer FIN, data read, EOF");

  REQUIRE(shutdown(tcp.a, SHUT_WR) == 0);
  m->apply(st(false, true, true, true), false);
  check_same(tcp.a, *m, kIn | kOut | kRdhup | kHup, "both directions closed");
}

TEST_CASE("mirror equals TCP: send buffer full, data and FIN meanwhile, space again") {
  TcpPair tcp;
  auto m = make_mirror();
  tcp.fill_a();
  m->apply(st(false, false), false);
  check_same(tcp.a, *m, 0, "send buffer full");

  REQUIRE(send(tcp.b, "x", 1, 0) == 1);
  m->apply(st(true, false), true);
  check_same(tcp.a, *m, kIn, "full, data to read");

  REQUIRE(shutdown(tcp.b, SHUT_WR) == 0);
  m->apply(st(true, false, true), false);
  check_same(tcp.a, *m, kIn | kRdhup, "full, peer FIN");

  // b reads everything a sent: space returns.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while ((poll_mask(tcp.a) & POLLOUT) == 0 && std::chrono::steady_clock::now() < deadline) {
    tcp.drain(tcp.b);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  m->apply(st(true, true, true), false);
  check_same(tcp.a, *m, kIn | kOut | kRdhup, "space again, peer FIN");

  // Full once more after FIN: OUT goes, IN RDHUP stay.
  tcp.fill_a();
  m->apply(st(true, false, true), false);
  check_same(tcp.a, *m, kIn | kRdhup, "full again, peer FIN");

  // Our shutdown(SHUT_WR) with the buffer full: TCP reports OUT at once (a send fails).
  REQUIRE(shutdown(tcp.a, SHUT_WR) == 0);
  m->apply(st(true, false, true, true), false);
  check_same(tcp.a, *m, kIn | kOut | kRdhup | kHup, "full, then both directions closed");
}

TEST_CASE("mirror equals TCP: our own shutdowns") {
  SECTION("SHUT_WR: OUT only (the connection maps it to writable)") {
    TcpPair tcp;
    auto m = make_mirror();
    REQUIRE(shutdown(tcp.a, SHUT_WR) == 0);
    m->apply(st(false, true), false);
    check_same(tcp.a, *m, kOut, "local SHUT_WR");
  }
  SECTION("SHUT_RD: IN RDHUP (the connection maps it to peer_done)") {
    TcpPair tcp;
    auto m = make_mirror();
    REQUIRE(shutdown(tcp.a, SHUT_RD) == 0);
    m->apply(st(false, true, true), false);
    check_same(tcp.a, *m, kIn | kOut | kRdhup, "local SHUT_RD");
  }
  SECTION("SHUT_RDWR: closed") {
    TcpPair tcp;
    auto m = make_mirror();
    REQUIRE(shutdown(tcp.a, SHUT_RDWR) == 0);
    m->apply(st(false, true, true, true), false);
    check_same(tcp.a, *m, kIn | kOut | kRdhup | kHup, "local SHUT_RDWR");
  }
}

TEST_CASE("mirror equals TCP: reset, before and after the error is read") {
  const unsigned all = kIn | kOut | kRdhup | kHup;
  SECTION("from idle; the error read by recv") {
    TcpPair tcp;
    auto m = make_mirror();
    tcp.reset_from_b();
    m->apply(reset_state(false), false);
    check_same(tcp.a, *m, all | kErr, "reset");
    char c;
    REQUIRE(read(tcp.a, &c, 1) == -1);
    CHECK(errno == ECONNRESET);
    m->apply(reset_state(true), false);
    check_same(tcp.a, *m, all, "reset, error read");
    // Final: nothing brings it back or changes it.
    m->apply(st(true, false), true);
    m->apply(reset_state(false), false);
    check_same(tcp.a, *m, all, "reset, error read, later states");
  }
  SECTION("with the send buffer full and data unread; the error read by SO_ERROR") {
    TcpPair tcp;
    auto m = make_mirror();
    tcp.fill_a();
    REQUIRE(send(tcp.b, "x", 1, 0) == 1);
    m->apply(st(true, false), true);
    check_same(tcp.a, *m, kIn, "full, data to read");
    tcp.reset_from_b();
    m->apply(reset_state(false), false);
    check_same(tcp.a, *m, all | kErr, "reset");
    int err = 0;
    socklen_t len = sizeof err;
    REQUIRE(getsockopt(tcp.a, SOL_SOCKET, SO_ERROR, &err, &len) == 0);
    CHECK(err == ECONNRESET);
    m->apply(reset_state(true), false);
    check_same(tcp.a, *m, all, "reset, error read");
  }
  SECTION("after peer FIN") {
    TcpPair tcp;
    auto m = make_mirror();
    REQUIRE(shutdown(tcp.b, SHUT_WR) == 0);
    m->apply(st(false, true, true), false);
    check_same(tcp.a, *m, kIn | kOut | kRdhup, "peer FIN");
    tcp.reset_from_b();
    m->apply(reset_state(false), false);
    check_same(tcp.a, *m, all | kErr, "peer FIN, then reset");
  }
  SECTION("the mirror alone: a reset after a full close still shows ERR (the primer)") {
    auto m = make_mirror();
    m->apply(st(false, false), false);  // a full send queue read back empties it wholly
    m->apply(st(false, true), false);
    m->apply(st(false, true, true, true), false);
    CHECK(names(poll_mask(m->app_fd())) == names(all));
    m->apply(reset_state(false), false);
    CHECK(names(poll_mask(m->app_fd())) == names(all | kErr));
  }
  SECTION("the mirror alone: made after the error was read, it never shows ERR") {
    auto m = make_mirror(reset_state(true));
    CHECK(names(poll_mask(m->app_fd())) == names(all));
    CHECK(names(epoll_mask(m->app_fd())) == names(all));
  }
}

TEST_CASE("mirror: WRBAND is the one bit TCP and the mirror disagree on") {
  // The interposer must not ask app_fd for POLLWRBAND/EPOLLWRBAND: TCP never reports it.
  TcpPair tcp;
  auto m = make_mirror();
  CHECK((poll_mask(tcp.a, POLLOUT | POLLWRBAND) & POLLWRBAND) == 0);
  CHECK((poll_mask(m->app_fd(), POLLOUT | POLLWRBAND) & POLLWRBAND) != 0);
}

TEST_CASE("mirror: any sequence of states gives the mask of the last one") {
  // A model of what TCP reports, with peer_done, closed and reset sticky as in TCP.
  std::mt19937 rng(Catch::rngSeed());
  for (int round = 0; round < 200; ++round) {
    auto m = make_mirror(st(false, true));
    bool peer_done = false, closed = false, reset = false, reported = false;
    for (int step = 0; step < 30; ++step) {
      MirrorState s;
      unsigned r = rng();
      s.readable = r & 1;
      s.writable = r & 2;
      s.peer_done = (r % 97) < 6;
      s.closed = (r % 89) < 3;
      s.reset = (r % 83) < 2;
      s.error_reported = (r % 7) == 0;
      const bool new_data = r & 4;
      m->apply(s, new_data);
      reset = reset || s.reset;
      reported = reset && (reported || s.error_reported);
      closed = closed || s.closed;
      peer_done = peer_done || s.peer_done || closed;
      unsigned expect;
      if (reset) {
        expect = kIn | kOut | kRdhup | kHup | (reported ? 0 : kErr);
      } else if (closed) {
        expect = kIn | kOut | kRdhup | kHup;
      } else {
        expect = (s.readable || peer_done ? kIn : 0) | (s.writable ? kOut : 0) |
                 (peer_done ? kRdhup : 0);
      }
      INFO("round " << round << " step " << step << " bits " << r);
      REQUIRE(names(poll_mask(m->app_fd())) == names(expect));
      REQUIRE(queued_to_app(*m) <= 16);
    }
  }
}
