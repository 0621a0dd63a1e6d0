// The engine end to end over the shm device, without the interposer: two processes, a
// real TCP connection on loopback, the CLC handshake, and data through RMB rings; a peer
// that stays plain TCP or a server that speaks first; urgent data and an abortive close.
// Closing, and peers that die or fall silent, are tested in test_connection_close.cpp.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/engine.h"
#include "core/engine_state.h"
#include "core/wire/clc.h"
#include "tests/unit/engine_pair.h"

TEST_CASE("client and server move data over SMC in both directions") {
  env();
  uint16_t port;
  int lfd = listen_loopback(&port);
  auto listener = Engine::on_listen(lfd);
  REQUIRE(listener);
  const uint64_t sizes[] = {1, 100, 65535, 65536, 65537, 3 * 1024 * 1024 + 7};
  run_pair(
      [&] {
        close(lfd);
        std::mt19937 rng(7);
        for (uint64_t size : sizes) {
          int fd = connect_loopback(port);
          auto s = Engine::on_connected(fd);
          if (!s || !s->is_smc()) return 10;
#ifdef SMCPRE_TEST_STAGED_WRITES
          // The device really makes the engine stage its writes.
          uint32_t decline = 0;
          auto* device = smcpre::core::EngineState::get()->device_for(fd, &decline);
          if (device == nullptr || device->caps().write_from_any_memory) return 14;
#endif
          if (!send_pattern(*s, fd, size, rng)) return 11;
          if (s->shutdown(SHUT_WR) != 0) return 12;
          // Then the server sends the same amount back.
          if (recv_pattern(*s, fd, rng) != static_cast<int64_t>(size)) return 13;
          s->release(fd);
          close(fd);
        }
        return 0;
      },
      [&] {
        std::mt19937 rng(9);
        for (uint64_t size : sizes) {
          int fd = accept(lfd, nullptr, nullptr);
          REQUIRE(fd >= 0);
          auto s = Engine::on_accepted(fd, listener);
          REQUIRE(s);
          REQUIRE(recv_pattern(*s, fd, rng) == static_cast<int64_t>(size));
          REQUIRE(s->is_smc());
          REQUIRE(send_pattern(*s, fd, size, rng));
          s->release(fd);
          close(fd);
        }
      });
  close(lfd);
}

TEST_CASE("one-byte writes, one CDC each, far more than the receive queue holds") {
  env();
  uint16_t port;
  int lfd = listen_loopback(&port);
  auto listener = Engine::on_listen(lfd);
  const int kBytes = 20000;
  run_pair(
      [&] {
        close(lfd);
        int fd = connect_loopback(port);
        auto s = Engine::on_connected(fd);
        if (!s || !s->is_smc()) return 1;
        for (int i = 0; i < kBytes; ++i) {
          uint8_t b = pattern(static_cast<uint64_t>(i));
          if (sock_send(*s, fd, &b, 1) != 1) return 2;
        }
        s->shutdown(SHUT_WR);
        char c;
        if (sock_recv(*s, fd, &c, 1) != 0) return 3;
        s->release(fd);
        close(fd);
        return 0;
      },
      [&] {
        int fd = accept(lfd, nullptr, nullptr);
        auto s = Engine::on_accepted(fd, listener);
        std::mt19937 rng(3);
        REQUIRE(recv_pattern(*s, fd, rng) == kBytes);
        REQUIRE(s->is_smc());
        s->release(fd);
        close(fd);
      });
  close(lfd);
}

TEST_CASE("SO_RCVTIMEO bounds a blocking SMC receive: EAGAIN, as TCP gives") {
  env();
  uint16_t port;
  int lfd = listen_loopback(&port);
  auto listener = Engine::on_listen(lfd);
  auto set_timeout = [](int fd, int ms) {
    timeval tv{ms / 1000, (ms % 1000) * 1000};
    return setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  };
  auto elapsed_ms = [](timespec a) {
    timespec b;
    clock_gettime(CLOCK_MONOTONIC, &b);
    return (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1'000'000;
  };
  run_pair(
      [&] {
        close(lfd);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        set_timeout(fd, 300);  // before connect: the engine reads it when it takes over
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a.sin_port = htons(port);
        if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return 1;
        auto s = Engine::on_connected(fd);
        if (!s || !s->is_smc()) return 2;
        char c;
        timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        if (sock_recv(*s, fd, &c, 1) != -1 || errno != EAGAIN) return 3;
        if (elapsed_ms(t0) < 250) return 4;
        if (sock_send(*s, fd, "done", 4) != 4) return 5;
        s->release(fd);
        close(fd);
        return 0;
      },
      [&] {
        int fd = accept(lfd, nullptr, nullptr);
        REQUIRE(set_timeout(fd, 100) == 0);
        auto s = Engine::on_accepted(fd, listener);
        char buf[4];
        int timeouts = 0;
        ssize_t n;
        while ((n = sock_recv(*s, fd, buf, 4, MSG_WAITALL)) == -1 && errno == EAGAIN) ++timeouts;
        REQUIRE(n == 4);
        REQUIRE(s->is_smc());
        REQUIRE(timeouts >= 2);  // ~300 ms of client silence in 100 ms steps
        s->release(fd);
        close(fd);
      });
  close(lfd);
}

TEST_CASE("a plain TCP client is served as TCP, bytes untouched") {
  env();
  uint16_t port;
  int lfd = listen_loopback(&port);
  auto listener = Engine::on_listen(lfd);
  run_pair(
      [&] {
        close(lfd);
        int fd = connect_loopback(port);
        const char msg[] = "GET / HTTP/1.0\r\n\r\n";
        if (send(fd, msg, sizeof msg, 0) != sizeof msg) return 1;
        char reply[5] = {};
        if (recv(fd, reply, 4, MSG_WAITALL) != 4 || std::strcmp(reply, "pong") != 0) return 2;
        close(fd);
        return 0;
      },
      [&] {
        int fd = accept(lfd, nullptr, nullptr);
        auto s = Engine::on_accepted(fd, listener);
        char buf[64] = {};
        REQUIRE(sock_recv(*s, fd, buf, 19, MSG_WAITALL) == 19);
        REQUIRE(std::string(buf) == "GET / HTTP/1.0\r\n\r\n");
        REQUIRE_FALSE(s->is_smc());
        REQUIRE(sock_send(*s, fd, "pong", 4) == 4);
        close(fd);
      });
  close(lfd);
}

TEST_CASE("a server that writes first is correct whichever path it takes") {
  env();
  uint16_t port;
  int lfd = listen_loopback(&port);
  auto listener = Engine::on_listen(lfd);
  run_pair(
      [&] {
        close(lfd);
        int fd = connect_loopback(port);
        auto s = Engine::on_connected(fd);
        if (!s) return 1;
        char buf[8] = {};
        if (sock_recv(*s, fd, buf, 7, MSG_WAITALL) != 7 || std::string(buf) != "220 hi\n") return 2;
        if (sock_send(*s, fd, "QUIT\n", 5) != 5) return 3;
        s->release(fd);
        close(fd);
        return 0;
      },
      [&] {
        int fd = accept(lfd, nullptr, nullptr);
        auto s = Engine::on_accepted(fd, listener);
        REQUIRE(sock_send(*s, fd, "220 hi\n", 7) == 7);
        char buf[8] = {};
        REQUIRE(sock_recv(*s, fd, buf, 5, MSG_WAITALL) == 5);
        REQUIRE(std::string(buf) == "QUIT\n");
        s->release(fd);
        close(fd);
      });
  close(lfd);
}

TEST_CASE("a Proposal arriving after the server spoke is swallowed, never shown") {
  env();
  uint16_t port;
  int lfd = listen_loopback(&port);
  auto listener = Engine::on_listen(lfd);
  run_pair(
      [&] {
        close(lfd);
        int fd = connect_loopback(port);  // a raw client, playing a late smcpre client
        char buf[8] = {};
        if (recv(fd, buf, 7, MSG_WAITALL) != 7) return 1;
        smcpre::core::clc::Proposal proposal;
        proposal.ipv4_subnet_be = htonl(0x7f000000);
        proposal.ipv4_prefix_len = 8;
        std::vector<uint8_t> bytes = smcpre::core::clc::encode(proposal);
        bytes.insert(bytes.end(), {'Q', 'U', 'I', 'T', '\n'});
        if (send(fd, bytes.data(), bytes.size(), 0) != static_cast<ssize_t>(bytes.size())) return 2;
        close(fd);
        return 0;
      },
      [&] {
        int fd = accept(lfd, nullptr, nullptr);
        auto s = Engine::on_accepted(fd, listener);
        REQUIRE(sock_send(*s, fd, "220 hi\n", 7) == 7);  // before any Proposal: TCP for good
        char buf[16] = {};
        REQUIRE(sock_recv(*s, fd, buf, 5, MSG_WAITALL) == 5);
        REQUIRE(std::string(buf) == "QUIT\n");
        REQUIRE(sock_recv(*s, fd, buf, sizeof buf) == 0);
        REQUIRE_FALSE(s->is_smc());
        close(fd);
      });
  close(lfd);
}

TEST_CASE("urgent data and SO_LINGER {1, 0} on an SMC connection behave as on TCP") {
  env();
  uint16_t port;
  int lfd = listen_loopback(&port);
  auto listener = Engine::on_listen(lfd);
  run_pair(
      [&] {
        close(lfd);
        int fd = connect_loopback(port);
        auto s = Engine::on_connected(fd);
        if (!s || !s->is_smc()) return 1;
        // MSG_OOB has no SMC equivalent: refused, never sent inline.
        iovec v{const_cast<char*>("u"), 1};
        if (s->send(&v, 1, MSG_OOB) != -1 || errno != EOPNOTSUPP) return 2;
        char c;
        iovec r{&c, 1};
        if (s->recv(&r, 1, MSG_OOB) != -1 || errno != EINVAL) return 3;  // none pending
        if (sock_send(*s, fd, "x", 1) != 1) return 4;
        // A zero linger time makes close() abortive: the server sees ECONNRESET.
        const ::linger abortive{1, 0};
        s->on_sockopt(SOL_SOCKET, SO_LINGER, &abortive, sizeof abortive);
        s->release(fd);
        close(fd);
        return 0;
      },
      [&] {
        int fd = accept(lfd, nullptr, nullptr);
        auto s = Engine::on_accepted(fd, listener);
        char c;
        REQUIRE(sock_recv(*s, fd, &c, 1) == 1);
        REQUIRE(c == 'x');  // the urgent byte never arrived
        REQUIRE(s->is_smc());
        CHECK(sock_recv(*s, fd, &c, 1) == -1);
        CHECK(errno == ECONNRESET);
        s->release(fd);
        close(fd);
      });
  close(lfd);
}
