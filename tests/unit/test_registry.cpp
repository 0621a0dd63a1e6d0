// Tests for config/registry.h: the host-wide registry of smcpre listeners, trusted only
// for the listening socket the kernel itself names for a destination.
#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>

#include "config/config.h"
#include "config/registry.h"

using smcpre::registry::destination_published;
using smcpre::registry::is_published;
using smcpre::registry::listener_path;
using smcpre::registry::ListenerRegistration;

namespace {

constexpr uid_t kNobody = 65534;

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

bool exists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

mode_t mode_of(const std::string& path) {
  struct stat st;
  REQUIRE(lstat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

sockaddr_storage address(const char* ip, uint16_t port) {
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

ListenerRegistration publish(const std::string& dir, const Listening& l) {
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
bool reaches_published(const std::string& dir, const char* ip, uint16_t port, int fd = -1) {
  return destination_published(dir, fd, address(ip, port));
}

int wait_exit(pid_t pid) {
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

bool have_ipv6_loopback() {
  int fd = socket(AF_INET6, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_storage ss = address("::1", 0);
  const bool ok = bind(fd, reinterpret_cast<sockaddr*>(&ss), sizeof(sockaddr_in6)) == 0;
  close(fd);
  return ok;
}

// Blocks until the child writes one byte; returns it.
char read_byte(int fd) {
  char c = 0;
  REQUIRE(read(fd, &c, 1) == 1);
  return c;
}

}  // namespace

TEST_CASE("publish, query, unpublish", "[registry]") {
  TempDir tmp;
  Listening l("127.0.0.1", 0);
  const std::string file = listener_path(tmp.path, geteuid(), l.port, l.inode);
  CHECK(file == tmp.path + "/listeners/" + std::to_string(geteuid()) + "/tcp-" +
                    std::to_string(l.port) + "-" + std::to_string(l.inode));
  CHECK_FALSE(reaches_published(tmp.path, "127.0.0.1", l.port));
  {
    ListenerRegistration reg = publish(tmp.path, l);
    CHECK(reg.path() == file);
    CHECK(exists(file));
    // Only its owner may open (and so lock) an entry; the subtree is the owner's alone,
    // the shared dir above it open to every user, sticky.
    CHECK(mode_of(file) == 0600);
    CHECK(mode_of(tmp.path + "/listeners/" + std::to_string(geteuid())) == 0711);
    CHECK(mode_of(tmp.path + "/listeners") == 01777);
    CHECK(mode_of(tmp.path + "/stats") == 01777);
    CHECK(reaches_published(tmp.path, "127.0.0.1", l.port));
    CHECK(reaches_published(tmp.path, "127.0.0.1", l.port));  // a query changes nothing
    CHECK(is_published(tmp.path, l.port, l.inode, geteuid()));
    CHECK_FALSE(is_published(tmp.path, l.port + 1, l.inode, geteuid()));
    CHECK_FALSE(is_published(tmp.path, l.port, l.inode + 1, geteuid()));
    CHECK_FALSE(is_published(tmp.path, 0, l.inode, geteuid()));
    // The registry's own fd is close-on-exec.
    bool found_cloexec_lock = false;
    for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
      const int fd = std::stoi(entry.path().filename().string());
      int flags = fcntl(fd, F_GETFD);
      char link[64];
      char target[512] = {};
      snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
      if (flags >= 0 && readlink(link, target, sizeof(target) - 1) > 0 && file == target) {
        CHECK((flags & FD_CLOEXEC) != 0);
        found_cloexec_lock = true;
      }
    }
    CHECK(found_cloexec_lock);
  }
  CHECK_FALSE(exists(file));
  CHECK_FALSE(reaches_published(tmp.path, "127.0.0.1", l.port));
}

TEST_CASE("a published socket that stops listening is not published", "[registry]") {
  TempDir tmp;
  auto l = std::make_unique<Listening>("127.0.0.1", 0);
  const uint16_t port = l->port;
  ListenerRegistration reg = publish(tmp.path, *l);
  CHECK(reaches_published(tmp.path, "127.0.0.1", port));
  l.reset();  // the entry is still there; the kernel says nobody listens
  CHECK(exists(reg.path()));
  CHECK_FALSE(reaches_published(tmp.path, "127.0.0.1", port));
  // A plain listener on the same address and port: a new socket, not the published one.
  Listening plain("127.0.0.1", port);
  CHECK_FALSE(reaches_published(tmp.path, "127.0.0.1", port));
}

TEST_CASE("two registrations of one socket: the entry stays until both are gone", "[registry]") {
  TempDir tmp;
  Listening l("127.0.0.1", 0);
  auto first = std::make_unique<ListenerRegistration>(publish(tmp.path, l));
  auto second = std::make_unique<ListenerRegistration>(publish(tmp.path, l));
  const std::string file = first->path();
  CHECK(reaches_published(tmp.path, "127.0.0.1", l.port));
  first.reset();
  CHECK(exists(file));
  CHECK(reaches_published(tmp.path, "127.0.0.1", l.port));
  second.reset();
  CHECK_FALSE(exists(file));
  CHECK_FALSE(reaches_published(tmp.path, "127.0.0.1", l.port));
}

TEST_CASE("moving a registration keeps it published", "[registry]") {
  TempDir tmp;
  Listening la("127.0.0.1", 0);
  Listening lb("127.0.0.1", 0);
  ListenerRegistration a = publish(tmp.path, la);
  ListenerRegistration b = std::move(a);
  CHECK(reaches_published(tmp.path, "127.0.0.1", la.port));
  ListenerRegistration c = publish(tmp.path, lb);
  const std::string c_file = c.path();
  c = std::move(b);  // drops lb's, takes over la's
  CHECK(c.port() == la.port);
  CHECK(reaches_published(tmp.path, "127.0.0.1", la.port));
  CHECK_FALSE(reaches_published(tmp.path, "127.0.0.1", lb.port));
  CHECK_FALSE(exists(c_file));
  { ListenerRegistration d = std::move(c); }
  CHECK_FALSE(reaches_published(tmp.path, "127.0.0.1", la.port));
}

TEST_CASE("a SIGKILLed publisher: never trusted, its file swept later", "[registry]") {
  TempDir tmp;
  int ready[2];
  REQUIRE(pipe(ready) == 0);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    close(ready[0]);
    Listening l("127.0.0.1", 0);
    auto reg = ListenerRegistration::publish(tmp.path, l.fd, nullptr);
    const uint16_t port = reg ? l.port : 0;
    if (write(ready[1], &port, sizeof port) != sizeof port) _exit(1);
    pause();
    _exit(0);
  }
  close(ready[1]);
  uint16_t port = 0;
  REQUIRE(read(ready[0], &port, sizeof port) == sizeof port);
  close(ready[0]);
  REQUIRE(port != 0);
  CHECK(reaches_published(tmp.path, "127.0.0.1", port));
  REQUIRE(kill(pid, SIGKILL) == 0);
  CHECK(wait_exit(pid) == 128 + SIGKILL);
  const std::string subtree = tmp.path + "/listeners/" + std::to_string(geteuid());
  auto entries = [&] {
    int n = 0;
    for (const auto& e : std::filesystem::directory_iterator(subtree)) n += e.exists() ? 1 : 0;
    return n;
  };
  CHECK(entries() == 1);  // nobody cleaned up, yet nothing is trusted
  CHECK_FALSE(reaches_published(tmp.path, "127.0.0.1", port));
  // The same port listens again, not published: still nothing trusted.
  Listening again("127.0.0.1", port);
  CHECK_FALSE(reaches_published(tmp.path, "127.0.0.1", port));
  // Publishing it sweeps the dead entry.
  ListenerRegistration reg = publish(tmp.path, again);
  CHECK(entries() == 1);
  CHECK(reaches_published(tmp.path, "127.0.0.1", port));
}

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
    CHECK_FALSE(reaches_published(tmp.path, "127.0.0.1", v6only.port));
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

TEST_CASE("fork children: inherited and renewed registrations", "[registry]") {
  TempDir tmp;
  Listening l("127.0.0.1", 0);
  auto parent = std::make_unique<ListenerRegistration>(publish(tmp.path, l));
  const std::string file = parent->path();

  // A child dropping its inherited copy leaves the parent's entry alone.
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    parent.reset();
    _exit(0);
  }
  CHECK(wait_exit(pid) == 0);
  CHECK(reaches_published(tmp.path, "127.0.0.1", l.port));

  // A child that renews keeps the entry after the parent stops listening (the socket is
  // the child's too: a pre-fork server).
  int ready[2];
  int go[2];
  REQUIRE(pipe(ready) == 0);
  REQUIRE(pipe(go) == 0);
  pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    char ok = parent->renew_after_fork(nullptr) ? 'y' : 'n';
    if (write(ready[1], &ok, 1) != 1) _exit(1);
    char c;
    if (read(go[0], &c, 1) != 1) _exit(2);
    parent.reset();
    _exit(0);
  }
  close(ready[1]);
  REQUIRE(read_byte(ready[0]) == 'y');
  parent.reset();
  CHECK(exists(file));
  CHECK(reaches_published(tmp.path, "127.0.0.1", l.port));
  REQUIRE(write(go[1], "x", 1) == 1);
  CHECK(wait_exit(pid) == 0);
  CHECK_FALSE(exists(file));
  CHECK_FALSE(reaches_published(tmp.path, "127.0.0.1", l.port));
  for (int fd : {ready[0], go[0], go[1]}) close(fd);

  // Renewing in the publishing process is a no-op.
  ListenerRegistration own = publish(tmp.path, l);
  CHECK(own.renew_after_fork(nullptr));
  CHECK(reaches_published(tmp.path, "127.0.0.1", l.port));
}

TEST_CASE("a publisher gives up on a file held exclusively for good", "[registry]") {
  TempDir tmp;
  Listening l("127.0.0.1", 0);
  { ListenerRegistration make_dirs = publish(tmp.path, l); }
  const std::string file = listener_path(tmp.path, geteuid(), l.port, l.inode);
  int fd = open(file.c_str(), O_CREAT | O_RDONLY, 0600);
  REQUIRE(fd >= 0);
  REQUIRE(flock(fd, LOCK_EX) == 0);
  std::string error;
  CHECK_FALSE(ListenerRegistration::publish(tmp.path, l.fd, &error).has_value());
  CHECK(error.find(file) != std::string::npos);
  close(fd);
}

TEST_CASE("the eligibility check's cost (printed, not asserted)", "[registry][bench]") {
  TempDir tmp;
  Listening l("127.0.0.1", 0);
  ListenerRegistration reg = publish(tmp.path, l);
  Listening plain("127.0.0.1", 0);
  // As before a connect(): the connecting socket names the network namespace, and the
  // process's cached sock_diag socket answers.
  const int client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(client >= 0);
  auto per_call_us = [&](uint16_t port, bool expect) {
    constexpr int kCalls = 20000;
    timespec a{};
    timespec b{};
    bool all = true;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < kCalls; ++i)
      all &= reaches_published(tmp.path, "127.0.0.1", port, client) == expect;
    clock_gettime(CLOCK_MONOTONIC, &b);
    CHECK(all);
    return ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / 1e3 / kCalls;
  };
  const double published = per_call_us(l.port, true);
  const double unpublished = per_call_us(plain.port, false);
  const double nobody = per_call_us(1, false);
  std::printf(
      "destination_published: %.2f us (published listener), %.2f us (plain listener), "
      "%.2f us (no listener)\n",
      published, unpublished, nobody);
  close(client);
}

TEST_CASE("runtime dir creation", "[registry]") {
  TempDir tmp;
  const std::string dir = tmp.path + "/a/b/runtime";
  mode_t old_umask = umask(077);
  Listening a("127.0.0.1", 0);
  ListenerRegistration reg = publish(dir, a);
  umask(old_umask);
  CHECK(reaches_published(dir, "127.0.0.1", a.port));
  // Explicit runtime dirs are 0755, the shared dirs 1777, whatever the umask.
  CHECK(mode_of(dir) == 0755);
  CHECK(mode_of(dir + "/listeners") == 01777);
  CHECK(mode_of(dir + "/stats") == 01777);
  // Existing directories are fine, with or without a trailing slash.
  Listening b("127.0.0.1", 0);
  ListenerRegistration other = publish(dir + "/", b);
  CHECK(reaches_published(dir, "127.0.0.1", b.port));
  // A shared dir left by an older smcpre (0755) is repaired by its owner.
  REQUIRE(chmod((dir + "/listeners").c_str(), 0755) == 0);
  Listening c("127.0.0.1", 0);
  ListenerRegistration third = publish(dir, c);
  CHECK(mode_of(dir + "/listeners") == 01777);
}

TEST_CASE("bad runtime dirs give an error, never a crash", "[registry]") {
  TempDir tmp;
  Listening l("127.0.0.1", 0);
  std::string error;
  CHECK_FALSE(ListenerRegistration::publish("relative/dir", l.fd, &error).has_value());
  CHECK(error.find("absolute") != std::string::npos);
  CHECK_FALSE(ListenerRegistration::publish("", l.fd, &error).has_value());
  CHECK_FALSE(ListenerRegistration::publish(tmp.path, -1, &error).has_value());
  CHECK(error.find("not a socket") != std::string::npos);
  const int unbound = socket(AF_INET, SOCK_STREAM, 0);
  CHECK_FALSE(ListenerRegistration::publish(tmp.path, unbound, &error).has_value());
  CHECK(error.find("port 0") != std::string::npos);
  close(unbound);

  // Below a regular file: nothing can be created, even by root.
  const std::string file = tmp.path + "/plain-file";
  int fd = open(file.c_str(), O_CREAT | O_WRONLY, 0644);
  REQUIRE(fd >= 0);
  close(fd);
  error.clear();
  CHECK_FALSE(ListenerRegistration::publish(file + "/runtime", l.fd, &error).has_value());
  CHECK(error.find(file) != std::string::npos);
  CHECK_FALSE(ListenerRegistration::publish(file, l.fd, &error).has_value());
  CHECK(error.find("Not a directory") != std::string::npos);
  CHECK_FALSE(reaches_published(file, "127.0.0.1", l.port));
  // "listeners" itself being a file.
  const std::string dir = tmp.path + "/rt";
  REQUIRE(mkdir(dir.c_str(), 0755) == 0);
  fd = open((dir + "/listeners").c_str(), O_CREAT | O_WRONLY, 0644);
  REQUIRE(fd >= 0);
  close(fd);
  CHECK_FALSE(ListenerRegistration::publish(dir, l.fd, &error).has_value());
  CHECK(error.find("listeners") != std::string::npos);

  // An unwritable directory (permissions do not stop root).
  if (geteuid() != 0) {
    const std::string ro = tmp.path + "/ro";
    REQUIRE(mkdir(ro.c_str(), 0500) == 0);
    error.clear();
    CHECK_FALSE(ListenerRegistration::publish(ro + "/runtime", l.fd, &error).has_value());
    CHECK_FALSE(error.empty());
    chmod(ro.c_str(), 0700);
  }
}

TEST_CASE("the default per-user runtime dir is private", "[registry]") {
  if (geteuid() != 0) {
    SUCCEED("needs root to run the check as another user");
    return;
  }
  TempDir tmp;
  REQUIRE(chmod(tmp.path.c_str(), 0755) == 0);
  const uid_t nobody = 65534;
  const std::string xdg = tmp.path + "/xdg";
  REQUIRE(mkdir(xdg.c_str(), 0700) == 0);
  REQUIRE(chown(xdg.c_str(), nobody, nobody) == 0);
  const std::string squatted = tmp.path + "/squatted";
  REQUIRE(mkdir(squatted.c_str(), 0777) == 0);
  REQUIRE(chmod(squatted.c_str(), 0777) == 0);
  REQUIRE(mkdir((squatted + "/smcpre").c_str(), 0755) == 0);  // owned by root

  // Exit codes: 0 ok, 10+ setup failed, 20+ a check failed.
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    if (setgid(nobody) != 0 || setuid(nobody) != 0) _exit(10);
    if (setenv("XDG_RUNTIME_DIR", xdg.c_str(), 1) != 0) _exit(11);
    const std::string dir = smcpre::config::runtime_dir_default();
    if (dir != xdg + "/smcpre") _exit(20);
    std::string error;
    Listening l("127.0.0.1", 0);
    auto reg = ListenerRegistration::publish(dir, l.fd, &error);
    if (!reg || !reaches_published(dir, "127.0.0.1", l.port)) _exit(21);
    struct stat st;
    if (stat(dir.c_str(), &st) != 0 || (st.st_mode & 07777) != 0700 || st.st_uid != nobody) {
      _exit(22);
    }
    // Someone else's directory at the default place is refused.
    if (setenv("XDG_RUNTIME_DIR", squatted.c_str(), 1) != 0) _exit(12);
    const std::string theirs = smcpre::config::runtime_dir_default();
    if (ListenerRegistration::publish(theirs, l.fd, &error)) _exit(23);
    if (error.find("owned by uid 65534") == std::string::npos) _exit(24);
    _exit(0);
  }
  CHECK(wait_exit(pid) == 0);
}
