// The registry tests' fixtures: fresh runtime dirs, listening sockets and their
// publication, the question whether a destination reaches a published listener, and
// running a check as user nobody. Shared by test_registry.cpp, test_registry_trust.cpp
// and test_registry_fallback.cpp.
#pragma once

#include <arpa/inet.h>
#include <grp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>

#include "config/listener_lookup.h"
#include "config/registry.h"

using smcpre::registry::destination_published;
using smcpre::registry::is_published;
using smcpre::registry::listener_path;
using smcpre::registry::ListenerRegistration;

inline constexpr uid_t kNobody = 65534;

// The test_registry_proc build runs every test once more through the /proc fallback, as on
// a host whose kernel has no sock_diag TCP handler (test_registry.cpp turns it on).
#ifdef SMCPRE_TEST_PROC_FALLBACK
inline constexpr bool kProcFallback = true;
#else
inline constexpr bool kProcFallback = false;
#endif

// True where lookups go through /proc: in test_registry_proc, or on a kernel without the
// sock_diag TCP handler (the rxe-vm guest without inet_diag/tcp_diag).
inline bool via_proc() {
  return kProcFallback || smcpre::registry::lookups_read_proc();
}

// A fresh, empty directory per test, removed afterwards.
struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/smcpre-test-registry-XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::string cmd = "rm -rf '" + path + "'";
    if (std::system(cmd.c_str()) != 0) WARN("could not remove " << path);
  }
};

inline bool exists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

inline mode_t mode_of(const std::string& path) {
  struct stat st;
  REQUIRE(lstat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

inline sockaddr_storage address(const char* ip, uint16_t port) {
  sockaddr_storage ss{};
  if (std::strchr(ip, ':') != nullptr) {
    auto& a = reinterpret_cast<sockaddr_in6&>(ss);
    a.sin6_family = AF_INET6;
    a.sin6_port = htons(port);
    REQUIRE(inet_pton(AF_INET6, ip, &a.sin6_addr) == 1);
  } else {
    auto& a = reinterpret_cast<sockaddr_in&>(ss);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    REQUIRE(inet_pton(AF_INET, ip, &a.sin_addr) == 1);
  }
  return ss;
}

// A listening TCP socket on ip:port (port 0: any), not published by itself.
struct Listening {
  int fd = -1;
  uint16_t port = 0;
  uint64_t inode = 0;
  Listening(const char* ip, uint16_t want_port, bool v6only = false) {
    sockaddr_storage ss = address(ip, want_port);
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    const int one = 1;
    REQUIRE(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0);
    if (ss.ss_family == AF_INET6) {
      const int v6 = v6only ? 1 : 0;
      REQUIRE(setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6, sizeof v6) == 0);
    }
    const socklen_t len = ss.ss_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
    INFO("bind " << ip << ":" << want_port << ": " << strerror(errno));
    REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&ss), len) == 0);
    REQUIRE(listen(fd, 16) == 0);
    socklen_t got = sizeof ss;
    REQUIRE(getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &got) == 0);
    port = ntohs(ss.ss_family == AF_INET ? reinterpret_cast<sockaddr_in&>(ss).sin_port
                                         : reinterpret_cast<sockaddr_in6&>(ss).sin6_port);
    struct stat st;
    REQUIRE(fstat(fd, &st) == 0);
    inode = st.st_ino;
  }
  ~Listening() { close_now(); }
  void close_now() {
    if (fd >= 0) close(fd);
    fd = -1;
  }
};

inline ListenerRegistration publish(const std::string& dir, const Listening& l) {
  std::string error;
  auto reg = ListenerRegistration::publish(dir, l.fd, &error);
  INFO(error);
  REQUIRE(reg.has_value());
  CHECK(error.empty());
  CHECK(reg->port() == l.port);
  CHECK(reg->inode() == l.inode);
  return std::move(*reg);
}

// Would a connection to ip:port from socket fd (-1: from this thread) reach a published
// listener?
inline bool reaches_published(const std::string& dir, const char* ip, uint16_t port, int fd = -1) {
  return destination_published(dir, fd, address(ip, port));
}

inline int wait_exit(pid_t pid) {
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Runs `body` in a forked child as uid/gid nobody; returns its exit code.
template <typename F>
int as_nobody(F body) {
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    if (setgroups(0, nullptr) != 0 || setgid(kNobody) != 0 || setuid(kNobody) != 0) _exit(10);
    _exit(body());
  }
  return wait_exit(pid);
}

inline bool have_ipv6_loopback() {
  int fd = socket(AF_INET6, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_storage ss = address("::1", 0);
  const bool ok = bind(fd, reinterpret_cast<sockaddr*>(&ss), sizeof(sockaddr_in6)) == 0;
  close(fd);
  return ok;
}

// Blocks until the child writes one byte; returns it.
inline char read_byte(int fd) {
  char c = 0;
  REQUIRE(read(fd, &c, 1) == 1);
  return c;
}
