// The engine between two processes on loopback TCP, without the interposer: the test
// environment (small rings and queues, short timeouts), a listening and a connecting
// socket, bytes moved through the engine's Socket as the interposer would move them, and
// a forked peer. Shared by test_connection.cpp and test_connection_close.cpp.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "core/engine.h"
#include "core/engine_state.h"

using smcpre::core::Engine;
using smcpre::core::Path;
using smcpre::core::Socket;

struct TestEnv {
  TestEnv() {
    char tmpl[] = "/tmp/smcpre-test-XXXXXX";
    dir = mkdtemp(tmpl);
    setenv("SMCPRE_RUNTIME_DIR", dir.c_str(), 1);
    setenv("SMCPRE_RMB_SIZE", "64K", 1);  // small rings: wraps and flow control get exercised
    setenv("SMCPRE_RQ_DEPTH", "16", 1);   // a short receive queue: RNR gets exercised
    setenv("SMCPRE_CLOSE_TIMEOUT_MS", "1000", 1);
    setenv("SMCPRE_LINGER_MS", "500", 1);      // unused link groups go soon
    setenv("SMCPRE_KEEPALIVE_MS", "1000", 1);  // and silent peers are noticed soon
    signal(SIGPIPE, SIG_IGN);
#ifdef SMCPRE_TEST_STAGED_WRITES
    smcpre::core::EngineState::stage_shm_writes_for_tests(true);
#endif
  }
  std::string dir;
};
inline TestEnv& env() {
  static TestEnv e;
  return e;
}

inline int listen_loopback(uint16_t* port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(listen(fd, 64) == 0);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  *port = ntohs(a.sin_port);
  return fd;
}

inline int connect_loopback(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return -1;
  return fd;
}

inline uint8_t pattern(uint64_t i) {
  return static_cast<uint8_t>((i * 2654435761u) >> 13);
}

// Moves bytes through the engine's Socket the way the interposer would.
inline ssize_t sock_send(Socket& s, int fd, const void* buf, size_t len, int flags = 0) {
  if (s.route_send(fd, flags) == Path::kKernel) return send(fd, buf, len, flags);
  iovec v{const_cast<void*>(buf), len};
  return s.send(&v, 1, flags);
}
inline ssize_t sock_recv(Socket& s, int fd, void* buf, size_t len, int flags = 0) {
  if (s.route_recv(fd, flags) == Path::kKernel) return recv(fd, buf, len, flags);
  iovec v{buf, len};
  return s.recv(&v, 1, flags);
}

inline bool send_pattern(Socket& s, int fd, uint64_t total, std::mt19937& rng) {
  std::vector<uint8_t> buf(1 << 20);
  uint64_t sent = 0;
  while (sent < total) {
    size_t chunk =
        std::min<uint64_t>(total - sent, 1 + rng() % (rng() % 4 == 0 ? buf.size() : 9000));
    for (size_t i = 0; i < chunk; ++i) buf[i] = pattern(sent + i);
    ssize_t n = sock_send(s, fd, buf.data(), chunk);
    if (n <= 0) return false;
    sent += static_cast<uint64_t>(n);
  }
  return true;
}

// Returns bytes received until EOF, or -1 on a content mismatch or error.
inline int64_t recv_pattern(Socket& s, int fd, std::mt19937& rng) {
  std::vector<uint8_t> buf(1 << 20);
  uint64_t got = 0;
  while (true) {
    size_t want = 1 + rng() % buf.size();
    ssize_t n = sock_recv(s, fd, buf.data(), want);
    if (n < 0) return -1;
    if (n == 0) return static_cast<int64_t>(got);
    for (ssize_t i = 0; i < n; ++i) {
      if (buf[i] != pattern(got + i)) return -1;
    }
    got += static_cast<uint64_t>(n);
  }
}

// Runs `child` in a forked process (exit status 0 = pass) and `parent` here.
inline void run_pair(const std::function<int()>& child, const std::function<void()>& parent) {
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    Engine::after_fork_in_child();
    alarm(60);
    _exit(child());
  }
  parent();
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
}
