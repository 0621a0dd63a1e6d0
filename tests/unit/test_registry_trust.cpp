// Whose listener a registry entry speaks for (config/registry.h): only the socket the kernel
// names for the destination, so not the same port at another address, nor in another
// network namespace, nor another user's entry; wildcard binds, and several users sharing
// one runtime dir.
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "config/listener_lookup.h"
#include "config/registry.h"
#include "tests/unit/registry_fixtures.h"

TEST_CASE("the same port at another address is not the published listener", "[registry]") {
  TempDir tmp;
  Listening smc("127.0.0.1", 0);
  ListenerRegistration reg = publish(tmp.path, smc);
  Listening plain("127.0.0.2", smc.port);
  CHECK(reaches_published(tmp.path, "127.0.0.1", smc.port));
  CHECK_FALSE(reaches_published(tmp.path, "127.0.0.2", smc.port));
  CHECK_FALSE(reaches_published(tmp.path, "127.0.0.3", smc.port));  // nobody listens there
  if (!have_ipv6_loopback()) {
    WARN("no ::1: IPv6 cases skipped");
    return;
  }
  // IPv6 ::1 on the same port, plain: the IPv4-only smcpre listener does not cover it.
  Listening plain6("::1", smc.port, true);
  CHECK_FALSE(reaches_published(tmp.path, "::1", smc.port));
  // And the other way round: smcpre on ::1, a plain server on 127.0.0.1.
  Listening smc6("::1", 0, true);
  ListenerRegistration reg6 = publish(tmp.path, smc6);
  Listening plain4("127.0.0.1", smc6.port);
  CHECK(reaches_published(tmp.path, "::1", smc6.port));
  CHECK_FALSE(reaches_published(tmp.path, "127.0.0.1", smc6.port));
}

TEST_CASE("wildcard binds cover what the kernel delivers to them", "[registry]") {
  TempDir tmp;
  {
    Listening any("0.0.0.0", 0);
    ListenerRegistration reg = publish(tmp.path, any);
    CHECK(reaches_published(tmp.path, "127.0.0.1", any.port));
    CHECK(reaches_published(tmp.path, "127.0.0.2", any.port));
  }
  if (!have_ipv6_loopback()) return;
  {
    // [::] dual-stack covers IPv4 too; with IPV6_V6ONLY only IPv6.
    Listening dual("::", 0, false);
    ListenerRegistration reg = publish(tmp.path, dual);
    CHECK(reaches_published(tmp.path, "::1", dual.port));
    CHECK(reaches_published(tmp.path, "127.0.0.1", dual.port));
  }
  {
    Listening v6only("::", 0, true);
    ListenerRegistration reg = publish(tmp.path, v6only);
    CHECK(reaches_published(tmp.path, "::1", v6only.port));
    // /proc does not show IPV6_V6ONLY: the fallback takes [::] for dual-stack. (Harmless:
    // nothing listens for IPv4 there, a connection is refused either way.)
    CHECK(reaches_published(tmp.path, "127.0.0.1", v6only.port) == via_proc());
    Listening plain4("127.0.0.1", v6only.port);
    CHECK_FALSE(reaches_published(tmp.path, "127.0.0.1", v6only.port));
  }
}

TEST_CASE("a listener in another network namespace is not ours", "[registry]") {
  if (geteuid() != 0) {
    SUCCEED("needs root for a network namespace");
    return;
  }
  TempDir tmp;
  Listening plain("127.0.0.1", 0);
  int ready[2];
  int go[2];
  REQUIRE(pipe(ready) == 0);
  REQUIRE(pipe(go) == 0);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // A container sharing the runtime dir: same port, same address, its own namespace.
    char result = 'n';
    if (unshare(CLONE_NEWNET) == 0) {
      const int s = socket(AF_INET, SOCK_DGRAM, 0);
      ifreq ifr{};
      std::strcpy(ifr.ifr_name, "lo");
      ifr.ifr_flags = IFF_UP;
      if (s >= 0 && ioctl(s, SIOCSIFFLAGS, &ifr) == 0) {
        Listening smc("127.0.0.1", plain.port);
        auto reg = ListenerRegistration::publish(tmp.path, smc.fd, nullptr);
        // Seen as published from inside its own namespace.
        if (reg && reaches_published(tmp.path, "127.0.0.1", plain.port)) result = 'y';
        if (write(ready[1], &result, 1) != 1) _exit(1);
        char c;
        if (read(go[0], &c, 1) != 1) _exit(2);
        _exit(0);
      }
    }
    if (write(ready[1], &result, 1) != 1) _exit(1);
    _exit(3);
  }
  close(ready[1]);
  REQUIRE(read_byte(ready[0]) == 'y');
  // Its entry is in the shared runtime dir, but here the kernel names our plain socket.
  CHECK_FALSE(reaches_published(tmp.path, "127.0.0.1", plain.port));
  REQUIRE(write(go[1], "x", 1) == 1);
  CHECK(wait_exit(pid) == 0);
  for (int fd : {ready[0], go[0], go[1]}) close(fd);
}

TEST_CASE("a socket of another namespace than the thread's is not looked up in the thread's",
          "[registry]") {
  if (geteuid() != 0) {
    SUCCEED("needs root for a network namespace");
    return;
  }
  TempDir tmp;
  Listening plain("127.0.0.1", 0);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // A socket made here, then the thread moves: its connect() goes to our namespace, where
    // only a plain server listens; the thread's new namespace has a published one.
    const int client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (client < 0 || unshare(CLONE_NEWNET) != 0) _exit(3);
    const int s = socket(AF_INET, SOCK_DGRAM, 0);
    ifreq ifr{};
    std::strcpy(ifr.ifr_name, "lo");
    ifr.ifr_flags = IFF_UP;
    if (s < 0 || ioctl(s, SIOCSIFFLAGS, &ifr) != 0) _exit(4);
    Listening smc("127.0.0.1", plain.port);
    auto reg = ListenerRegistration::publish(tmp.path, smc.fd, nullptr);
    if (!reg || !reaches_published(tmp.path, "127.0.0.1", plain.port)) _exit(5);
    smcpre::registry::FoundListener found;
    const auto lookup =
        smcpre::registry::find_listener(client, address("127.0.0.1", plain.port), &found);
    if (lookup != smcpre::registry::Lookup::kError) _exit(6);
    _exit(reaches_published(tmp.path, "127.0.0.1", plain.port, client) ? 7 : 0);
  }
  CHECK(wait_exit(pid) == 0);
}

TEST_CASE("another user cannot vouch for, keep or lock an entry it does not own", "[registry]") {
  if (geteuid() != 0) {
    SUCCEED("needs root to run a check as another user");
    return;
  }
  TempDir tmp;
  REQUIRE(chmod(tmp.path.c_str(), 0755) == 0);
  // Root's plain server: nobody tries to make root's clients propose to it.
  Listening plain("127.0.0.1", 0);
  {
    // Root's dirs exist (published once before).
    Listening other("127.0.0.1", 0);
    ListenerRegistration reg = publish(tmp.path, other);
  }
  const std::string fake_name =
      "tcp-" + std::to_string(plain.port) + "-" + std::to_string(plain.inode);
  const std::string root_tree = tmp.path + "/listeners/0";
  const std::string nobody_tree = tmp.path + "/listeners/65534";
  CHECK(as_nobody([&] {
          // Into root's subtree: refused.
          const int fd = open((root_tree + "/" + fake_name).c_str(), O_CREAT | O_WRONLY, 0644);
          if (fd >= 0) return 20;
          // In a subtree of its own: made, but it speaks only for nobody's sockets.
          if (mkdir(nobody_tree.c_str(), 0711) != 0) return 21;
          const int own = open((nobody_tree + "/" + fake_name).c_str(), O_CREAT | O_WRONLY, 0644);
          if (own < 0) return 22;
          close(own);
          // A symlink to a root-owned regular file under the same name.
          if (symlink("/etc/passwd", (nobody_tree + "/x").c_str()) != 0) return 23;
          return 0;
        }) == 0);
  CHECK_FALSE(reaches_published(tmp.path, "127.0.0.1", plain.port));
  CHECK_FALSE(is_published(tmp.path, plain.port, plain.inode, 0));
  // The file is there, in nobody's subtree: it would speak for a socket of nobody's, but
  // the kernel says this one is root's.
  CHECK(is_published(tmp.path, plain.port, plain.inode, kNobody));

  // Root's own entry: not openable (so not lockable) by nobody; after root's listener is
  // gone, a lock could not make it count anyway.
  auto smc = std::make_unique<Listening>("127.0.0.1", 0);
  const uint16_t port = smc->port;
  ListenerRegistration reg = publish(tmp.path, *smc);
  const std::string entry = reg.path();
  CHECK(as_nobody([&] {
          const int fd = open(entry.c_str(), O_RDONLY);
          return fd < 0 && errno == EACCES ? 0 : 20;
        }) == 0);
  smc.reset();
  CHECK_FALSE(reaches_published(tmp.path, "127.0.0.1", port));
  // Nobody's server on the port root's listener had: not root's, and not published.
  int ready[2];
  int go[2];
  REQUIRE(pipe(ready) == 0);
  REQUIRE(pipe(go) == 0);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    if (setgroups(0, nullptr) != 0 || setgid(kNobody) != 0 || setuid(kNobody) != 0) _exit(10);
    Listening theirs("127.0.0.1", port);
    if (write(ready[1], "y", 1) != 1) _exit(1);
    char c;
    if (read(go[0], &c, 1) != 1) _exit(2);
    _exit(0);
  }
  close(ready[1]);
  REQUIRE(read_byte(ready[0]) == 'y');
  CHECK_FALSE(reaches_published(tmp.path, "127.0.0.1", port));
  REQUIRE(write(go[1], "x", 1) == 1);
  CHECK(wait_exit(pid) == 0);
  for (int fd : {ready[0], go[0], go[1]}) close(fd);

  // A second link to a root entry (nlink 2) is not trusted.
  Listening linked("127.0.0.1", 0);
  ListenerRegistration linked_reg = publish(tmp.path, linked);
  CHECK(reaches_published(tmp.path, "127.0.0.1", linked.port));
  REQUIRE(link(linked_reg.path().c_str(), (tmp.path + "/second-link").c_str()) == 0);
  CHECK_FALSE(reaches_published(tmp.path, "127.0.0.1", linked.port));
  REQUIRE(unlink((tmp.path + "/second-link").c_str()) == 0);
  CHECK(reaches_published(tmp.path, "127.0.0.1", linked.port));
}

TEST_CASE("several users publish in one runtime dir", "[registry]") {
  if (geteuid() != 0) {
    SUCCEED("needs root to run a check as another user");
    return;
  }
  TempDir tmp;
  REQUIRE(chmod(tmp.path.c_str(), 01777) == 0);
  // The first user makes the runtime dir (a database's own account, say) and even
  // squats root's subtree.
  const std::string dir = tmp.path + "/shared";
  int ready[2];
  int go[2];
  REQUIRE(pipe(ready) == 0);
  REQUIRE(pipe(go) == 0);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    if (setgroups(0, nullptr) != 0 || setgid(kNobody) != 0 || setuid(kNobody) != 0) _exit(10);
    Listening l("127.0.0.1", 0);
    std::string error;
    auto reg = ListenerRegistration::publish(dir, l.fd, &error);
    if (!reg) {
      std::fprintf(stderr, "nobody cannot publish: %s\n", error.c_str());
      _exit(20);
    }
    if (mkdir((dir + "/listeners/0").c_str(), 0755) != 0) _exit(21);
    if (write(ready[1], &l.port, sizeof l.port) != sizeof l.port) _exit(1);
    char c;
    if (read(go[0], &c, 1) != 1) _exit(2);
    _exit(0);
  }
  close(ready[1]);
  uint16_t nobody_port = 0;
  REQUIRE(read(ready[0], &nobody_port, sizeof nobody_port) == sizeof nobody_port);
  struct stat st;
  REQUIRE(stat(dir.c_str(), &st) == 0);
  CHECK(st.st_uid == kNobody);
  // Root's clients trust nobody's entry for nobody's socket.
  CHECK(reaches_published(dir, "127.0.0.1", nobody_port));
  // Root publishes too: it takes its subtree back.
  Listening mine("127.0.0.1", 0);
  ListenerRegistration reg = publish(dir, mine);
  CHECK(reaches_published(dir, "127.0.0.1", mine.port));
  REQUIRE(lstat((dir + "/listeners/0").c_str(), &st) == 0);
  CHECK(st.st_uid == 0);
  REQUIRE(write(go[1], "x", 1) == 1);
  CHECK(wait_exit(pid) == 0);
  CHECK_FALSE(reaches_published(dir, "127.0.0.1", nobody_port));
  for (int fd : {ready[0], go[0], go[1]}) close(fd);
}
