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

#include <bit>
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "config/listener_lookup.h"
#include "config/proc_listeners.h"
#include "config/registry.h"
#include "config/runtime_dir.h"

using smcpre::registry::destination_published;
using smcpre::registry::is_published;
using smcpre::registry::listener_path;
using smcpre::registry::ListenerRegistration;

namespace {

constexpr uid_t kNobody = 65534;

// The test_registry_proc build runs every test once more through the /proc fallback, as on
// a host whose kernel has no sock_diag TCP handler.
#ifdef SMCPRE_TEST_PROC_FALLBACK
constexpr bool kProcFallback = true;
const bool g_fallback_on = (smcpre::registry::use_proc_fallback_for_tests(true), true);
#else
constexpr bool kProcFallback = false;
#endif

// True where lookups go through /proc: in test_registry_proc, or on a kernel without the
// sock_diag TCP handler (the rxe-vm guest without inet_diag/tcp_diag).
bool via_proc() {
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

TEST_CASE("the eligibility check's cost (printed, not asserted)", "[.][registry][bench]") {
  TempDir tmp;
  Listening l("127.0.0.1", 0);
  ListenerRegistration reg = publish(tmp.path, l);
  Listening plain("127.0.0.1", 0);
  // As before a connect(): the connecting socket names the network namespace, and the
  // process's cached sock_diag socket answers.
  const int client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(client >= 0);
  auto per_call_us = [&](uint16_t port, bool expect) {
    // A /proc lookup can take milliseconds: fewer calls there.
    const int kCalls = via_proc() ? 200 : 20000;
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
    const std::string dir = smcpre::runtime_dir::default_path();
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
    const std::string theirs = smcpre::runtime_dir::default_path();
    if (ListenerRegistration::publish(theirs, l.fd, &error)) _exit(23);
    if (error.find("owned by uid 65534") == std::string::npos) _exit(24);
    _exit(0);
  }
  CHECK(wait_exit(pid) == 0);
}

// The /proc/net/tcp{,6} fallback's parser, fed text as the kernel prints it.
namespace {

using smcpre::registry::FoundListener;
using smcpre::registry::Lookup;
using smcpre::registry::proc_net::find_in_files;
using smcpre::registry::proc_net::ListenerScan;

// The headers and one socket's line as tcp4_seq_show / tcp6_seq_show print them (tcp lines
// padded to 149 columns). `local` and `remote` are ADDR:PORT in /proc's hex.
const char* const kTcpHeader =
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
    "timeout inode                                                     \n";
const char* const kTcp6Header =
    "  sl  local_address                         remote_address                        st "
    "tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";

std::string proc_line(bool v6, int sl, const char* local, const char* remote, unsigned state,
                      unsigned uid, unsigned long inode) {
  char buf[400];
  int n = std::snprintf(buf, sizeof buf,
                        "%4d: %s %s %02X %08X:%08X %02X:%08lX %08X %5u %8d %lu %d %016lx %lu %lu "
                        "%u %u %d",
                        sl, local, remote, state, 0u, 0u, 0u, 0ul, 0u, uid, 0, inode, 1,
                        0xffff8f2a12345678ul, 100ul, 0ul, 0u, 10u, -1);
  std::string line(buf, static_cast<size_t>(n));
  if (!v6 && line.size() < 149) line.resize(149, ' ');
  return line + "\n";
}

constexpr unsigned kListen = 0x0A;
constexpr unsigned kEstablished = 0x01;
constexpr unsigned kSynRecv = 0x03;
constexpr unsigned kTimeWait = 0x06;

// Addresses as a little-endian host prints them.
const char* const kAny4 = "00000000:0000";
const char* const kAny6 = "00000000000000000000000000000000:0000";

struct ProcFiles {
  TempDir dir;
  std::string tcp = dir.path + "/tcp";
  std::string tcp6 = dir.path + "/tcp6";
  void write(const std::string& path, const std::string& text) {
    FILE* f = std::fopen(path.c_str(), "w");
    REQUIRE(f != nullptr);
    REQUIRE(std::fwrite(text.data(), 1, text.size(), f) == text.size());
    REQUIRE(std::fclose(f) == 0);
  }
  // The listener found for ip:port: its inode, 0 for none, -1 for an error.
  long long find(const char* ip, uint16_t port, uid_t* uid = nullptr) {
    FoundListener found;
    switch (find_in_files(tcp.c_str(), tcp6.c_str(), address(ip, port), &found)) {
      case Lookup::kFound:
        if (uid != nullptr) *uid = found.uid;
        return static_cast<long long>(found.inode);
      case Lookup::kNone:
        return 0;
      case Lookup::kError:
        break;
    }
    return -1;
  }
};

bool little_endian_host() {
  if constexpr (std::endian::native == std::endian::little) return true;
  WARN("the literal /proc text below is a little-endian host's: skipped");
  return false;
}

}  // namespace

TEST_CASE("/proc fallback: the exact address before the wildcard, LISTEN only",
          "[registry][proc]") {
  if (!little_endian_host()) return;
  ProcFiles f;
  // Port 8080 (1F90): a wildcard listed before an exact bind on 127.0.0.1; 127.0.0.3 has
  // only a connection on that port; the kernel lists its listening hash first.
  f.write(f.tcp, std::string(kTcpHeader) +
                     proc_line(false, 0, "00000000:1F90", kAny4, kListen, 1000, 100) +
                     proc_line(false, 1, "0100007F:1F90", kAny4, kListen, 0, 200) +
                     proc_line(false, 2, "0100007F:1F91", kAny4, kListen, 0, 300) +
                     proc_line(false, 3, "0300007F:1F90", "0100007F:D431", kEstablished, 7, 400) +
                     proc_line(false, 4, "0300007F:1F92", "0100007F:D432", kTimeWait, 0, 0));
  f.write(f.tcp6, kTcp6Header);
  uid_t uid = 99;
  CHECK(f.find("127.0.0.1", 8080, &uid) == 200);
  CHECK(uid == 0);
  CHECK(f.find("127.0.0.2", 8080, &uid) == 100);  // the wildcard covers it
  CHECK(uid == 1000);
  CHECK(f.find("127.0.0.3", 8080) == 100);  // a connection is not a listener
  CHECK(f.find("127.0.0.1", 8081) == 300);
  CHECK(f.find("127.0.0.1", 8082) == 0);  // only a TIME_WAIT there
  CHECK(f.find("127.0.0.1", 8083) == 0);
  CHECK(f.find("::1", 8080) == 0);  // IPv4 sockets never take an IPv6 destination

  // Past the listening section, a LISTEN line is not looked for (the kernel never prints
  // one there); SYN_RECV lines (the listening section before 4.4) do not end it.
  f.write(f.tcp, std::string(kTcpHeader) +
                     proc_line(false, 0, "0100007F:1F90", "0100007F:D431", kSynRecv, 0, 0) +
                     proc_line(false, 1, "0100007F:1F91", kAny4, kListen, 0, 500) +
                     proc_line(false, 2, "0100007F:1F90", "0100007F:D431", kEstablished, 0, 1) +
                     proc_line(false, 3, "0100007F:1F92", kAny4, kListen, 0, 600));
  CHECK(f.find("127.0.0.1", 8081) == 500);
  CHECK(f.find("127.0.0.1", 8082) == 0);
}

TEST_CASE("/proc fallback: IPv6 addresses, dual-stack and v4-mapped binds", "[registry][proc]") {
  if (!little_endian_host()) return;
  ProcFiles f;
  // /proc prints an IPv6 address as four 32-bit words in host order: ::1 is
  // ...0001000000, ::ffff:127.0.0.1 is 0000FFFF 0100007F, 2001:db8::5 is B80D0120 ... 05000000.
  const std::string loop6 = "00000000000000000000000001000000";
  const std::string mapped = "0000000000000000FFFF00000100007F";
  const std::string doc6 = "B80D0120000000000000000005000000";
  f.write(f.tcp, kTcpHeader);
  f.write(
      f.tcp6,
      std::string(kTcp6Header) +
          proc_line(true, 0, "00000000000000000000000000000000:1F90", kAny6, kListen, 1000, 10) +
          proc_line(true, 1, (loop6 + ":1F90").c_str(), kAny6, kListen, 0, 20) +
          proc_line(true, 2, (mapped + ":1F91").c_str(), kAny6, kListen, 0, 30) +
          proc_line(true, 3, "00000000000000000000000000000000:1F91", kAny6, kListen, 0, 40) +
          proc_line(true, 4, (doc6 + ":1F92").c_str(), kAny6, kListen, 0, 50));
  CHECK(f.find("::1", 8080) == 20);          // exact
  CHECK(f.find("2001:db8::5", 8080) == 10);  // the wildcard [::]
  CHECK(f.find("2001:db8::5", 8082) == 50);
  CHECK(f.find("::2", 8082) == 0);
  // IPv4: the dual-stack [::] takes it (IPV6_V6ONLY is not shown: Linux's default assumed),
  // a v4-mapped bind is exact.
  CHECK(f.find("127.0.0.1", 8080) == 10);
  CHECK(f.find("127.0.0.1", 8091) == 0);
  CHECK(f.find("127.0.0.1", 8081) == 30);
  CHECK(f.find("127.0.0.2", 8081) == 40);
  // An IPv4 wildcard comes before [::]; an IPv4 exact bind before a v4-mapped one.
  f.write(f.tcp, std::string(kTcpHeader) +
                     proc_line(false, 0, "00000000:1F90", kAny4, kListen, 0, 60) +
                     proc_line(false, 1, "0100007F:1F91", kAny4, kListen, 0, 70));
  CHECK(f.find("127.0.0.1", 8080) == 60);
  CHECK(f.find("127.0.0.1", 8081) == 70);
  CHECK(f.find("::1", 8080) == 20);  // IPv4 sockets never take an IPv6 destination
  // An IPv6 destination does not read the tcp file; a missing tcp6 (IPv6 off) is empty.
  f.write(f.tcp, "garbage that would be an error if read \x01\x02");
  CHECK(f.find("::1", 8080) == 20);
  REQUIRE(unlink(f.tcp6.c_str()) == 0);
  CHECK(f.find("::1", 8080) == 0);
  f.write(f.tcp,
          std::string(kTcpHeader) + proc_line(false, 0, "0100007F:1F90", kAny4, kListen, 0, 80));
  CHECK(f.find("127.0.0.1", 8080) == 80);
  REQUIRE(unlink(f.tcp.c_str()) == 0);
  CHECK(f.find("127.0.0.1", 8080) == -1);  // no tcp file: no answer, never "none"
}

TEST_CASE("/proc fallback: any split of the text, malformed lines", "[registry][proc]") {
  if (!little_endian_host()) return;
  const std::string tcp = std::string(kTcpHeader) + std::string(300, 'x') + "\n" +
                          "   0: 0100007F:1F9\n" +                                 // truncated
                          "   1: 0100007G:1F90 00000000:0000 0A 0 0 0 0 0 77\n" +  // not hex
                          "   2: 0100007F:1F90 00000000:0000 0A 0 0 0 x 0 77\n" +  // bad uid
                          "\n" + proc_line(false, 3, "00000000:1F90", kAny4, kListen, 5, 1) +
                          proc_line(false, 4, "0100007F:1F90", kAny4, kListen, 6, 2);
  for (size_t piece = 1; piece <= tcp.size(); piece += piece < 20 ? 1 : 37) {
    ListenerScan scan(address("127.0.0.1", 8080));
    for (size_t at = 0; at < tcp.size(); at += piece) {
      if (scan.feed(false, tcp.data() + at, std::min(piece, tcp.size() - at))) break;
    }
    scan.end_file(false);
    FoundListener found;
    INFO("pieces of " << piece);
    REQUIRE(scan.found(&found));
    CHECK(found.inode == 2);
    CHECK(found.uid == 6);
    CHECK(scan.complete());
  }
  // A last line without its newline still counts.
  ListenerScan scan(address("127.0.0.2", 8080));
  std::string last = proc_line(false, 0, "00000000:1F90", kAny4, kListen, 5, 9);
  last.pop_back();
  scan.feed(false, last.data(), last.size());
  scan.end_file(false);
  FoundListener found;
  REQUIRE(scan.found(&found));
  CHECK(found.inode == 9);
  CHECK_FALSE(scan.complete());  // a wildcard: tcp6 could still hold a v4-mapped exact bind
}

TEST_CASE("/proc fallback: the kernel's own /proc text", "[registry][proc]") {
  // The calling thread's view names the very sockets fstat() names, byte order included.
  Listening l4("127.0.0.1", 0);
  ProcFiles f;
  f.tcp = "/proc/thread-self/net/tcp";
  f.tcp6 = "/proc/thread-self/net/tcp6";
  uid_t uid = 12345;
  CHECK(f.find("127.0.0.1", l4.port, &uid) == static_cast<long long>(l4.inode));
  CHECK(uid == geteuid());
  if (!have_ipv6_loopback()) return;
  Listening l6("::1", 0, true);
  CHECK(f.find("::1", l6.port) == static_cast<long long>(l6.inode));
  Listening dual("::", 0, false);
  CHECK(f.find("127.0.0.1", dual.port) == static_cast<long long>(dual.inode));
  CHECK(f.find("::1", dual.port) == static_cast<long long>(dual.inode));
  // An exact IPv4 bind before a [::] on the same port (V6ONLY, or the binds would clash).
  Listening v6only("::", 0, true);
  Listening exact("127.0.0.1", v6only.port);
  CHECK(f.find("127.0.0.1", v6only.port) == static_cast<long long>(exact.inode));
}

TEST_CASE("the sock_diag probe tells a missing handler from no socket", "[registry][proc]") {
  using smcpre::registry::DiagHandler;
  using smcpre::registry::probe_diag_handler;
  const DiagHandler tcp = probe_diag_handler(AF_INET, IPPROTO_TCP);
  REQUIRE(tcp != DiagHandler::kUnknown);
  // No handler for the family (AF_DECnet): sock_diag itself answers -ENOENT.
  CHECK(probe_diag_handler(12, 0) == DiagHandler::kMissing);
  if (tcp == DiagHandler::kMissing) {
    WARN("this kernel has no sock_diag TCP handler: smcpre uses /proc here");
    return;
  }
  CHECK(probe_diag_handler(AF_INET6, IPPROTO_TCP) == DiagHandler::kPresent);
  // inet_diag is there, but has no handler for protocol 253 (experimentation): the dump
  // ends with -ENOENT. This is the answer of a kernel with inet_diag but no tcp_diag.
  CHECK(probe_diag_handler(AF_INET, 253) == DiagHandler::kMissing);
  // While an exact lookup gets -ENOENT for a protocol with a handler and no socket.
  Listening l("127.0.0.1", 0);
  const uint16_t port = l.port;
  l.close_now();
  smcpre::registry::FoundListener found;
  if (!via_proc()) {
    CHECK(smcpre::registry::find_listener(-1, address("127.0.0.1", port), &found) ==
          smcpre::registry::Lookup::kNone);
  }
}

TEST_CASE("the probe's and the /proc fallback's cost (printed, not asserted)",
          "[.][registry][bench]") {
  using smcpre::registry::probe_diag_handler;
  if (kProcFallback) return;  // the same calls as in test_registry
  auto time_us = [](int calls, auto&& body) {
    timespec a{};
    timespec b{};
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < calls; ++i) body();
    clock_gettime(CLOCK_MONOTONIC, &b);
    return ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / 1e3 / calls;
  };
  const double tcp = time_us(200, [] { probe_diag_handler(AF_INET, IPPROTO_TCP); });
  // Includes the kernel's attempt to load a module for it (a modprobe run).
  const double missing = time_us(5, [] { probe_diag_handler(AF_INET, 253); });
  std::printf("probe: %.1f us (TCP), %.1f us (protocol 253: no handler, a module attempt)\n", tcp,
              missing);

  auto lookup_us = [&](const char* ip, uint16_t port, int calls) {
    const sockaddr_storage dest = address(ip, port);
    return time_us(calls, [&] {
      FoundListener found;
      find_in_files("/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6", dest, &found);
    });
  };
  Listening exact("127.0.0.1", 0);
  Listening any("0.0.0.0", 0);
  auto report = [&](const char* what) {
    std::printf("/proc lookup (%s): %.1f us exact, %.1f us wildcard (+tcp6), %.1f us no listener\n",
                what, lookup_us("127.0.0.1", exact.port, 500),
                lookup_us("127.0.0.2", any.port, 500), lookup_us("127.0.0.1", 1, 500));
  };
  report("this host's sockets");
  {
    // ~1000 connections (500 pairs): past the listening section, not read.
    Listening server("127.0.0.1", 0);
    std::vector<int> fds;
    for (int i = 0; i < 250; ++i) {
      const int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_storage ss = address("127.0.0.1", server.port);
      if (c < 0 || connect(c, reinterpret_cast<sockaddr*>(&ss), sizeof(sockaddr_in)) != 0) break;
      fds.push_back(c);
      const int a = accept4(server.fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (a < 0) break;
      fds.push_back(a);
    }
    char what[64];
    std::snprintf(what, sizeof what, "+%zu connected sockets", fds.size());
    report(what);
    for (int fd : fds) close(fd);
  }
  {
    std::vector<std::unique_ptr<Listening>> many;
    for (int i = 0; i < 1000; ++i) many.push_back(std::make_unique<Listening>("127.0.0.1", 0));
    report("+1000 listeners");
  }
}
