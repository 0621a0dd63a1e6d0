// Tests for config/registry.h: the host-wide registry of smcpre listeners, trusted only
// for the listening socket the kernel itself names for a destination. Here a registration's
// life (publish, query, unpublish, moves, forks, a killed publisher) and the runtime dir;
// whose listener an entry may speak for is tested in test_registry_trust.cpp, the /proc
// fallback of the lookups in test_registry_fallback.cpp.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "config/listener_lookup.h"
#include "config/registry.h"
#include "config/runtime_dir.h"
#include "tests/unit/registry_fixtures.h"

// The test_registry_proc build turns the /proc fallback on for all of its tests, in every
// file of the executable.
#ifdef SMCPRE_TEST_PROC_FALLBACK
namespace {
const bool g_fallback_on = (smcpre::registry::use_proc_fallback_for_tests(true), true);
}  // namespace
#endif

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
