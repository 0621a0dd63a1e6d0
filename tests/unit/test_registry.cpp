// Tests for config/registry.h: the flock-based host-wide registry of smcpre listeners.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "config/config.h"
#include "config/registry.h"

using smcpre::registry::is_published;
using smcpre::registry::listener_path;
using smcpre::registry::ListenerRegistration;

namespace {

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
  REQUIRE(stat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

ListenerRegistration publish(const std::string& dir, uint16_t port) {
  std::string error;
  auto reg = ListenerRegistration::publish(dir, port, &error);
  INFO(error);
  REQUIRE(reg.has_value());
  CHECK(error.empty());
  CHECK(reg->port() == port);
  return std::move(*reg);
}

int wait_exit(pid_t pid) {
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

TEST_CASE("publish, query, unpublish", "[registry]") {
  TempDir tmp;
  const std::string file = listener_path(tmp.path, 8080);
  CHECK(file == tmp.path + "/listeners/tcp-8080");
  CHECK_FALSE(is_published(tmp.path, 8080));
  {
    ListenerRegistration reg = publish(tmp.path, 8080);
    CHECK(exists(file));
    CHECK(is_published(tmp.path, 8080));
    CHECK(is_published(tmp.path, 8080));  // a query leaves a live entry alone
    CHECK_FALSE(is_published(tmp.path, 8081));
    CHECK_FALSE(is_published(tmp.path, 0));
    // The registry's own fd is close-on-exec (and anywhere: it lives at the top of the
    // fd space).
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
  CHECK_FALSE(is_published(tmp.path, 8080));
}

TEST_CASE("two registrations on one port: the entry stays until both are gone", "[registry]") {
  TempDir tmp;
  const std::string file = listener_path(tmp.path, 443);
  auto first = std::make_unique<ListenerRegistration>(publish(tmp.path, 443));
  auto second = std::make_unique<ListenerRegistration>(publish(tmp.path, 443));
  CHECK(is_published(tmp.path, 443));
  first.reset();
  CHECK(exists(file));
  CHECK(is_published(tmp.path, 443));
  // Publishing again while one holds it joins the same file.
  auto third = std::make_unique<ListenerRegistration>(publish(tmp.path, 443));
  second.reset();
  CHECK(is_published(tmp.path, 443));
  third.reset();
  CHECK_FALSE(exists(file));
  CHECK_FALSE(is_published(tmp.path, 443));
}

TEST_CASE("moving a registration keeps it published", "[registry]") {
  TempDir tmp;
  ListenerRegistration a = publish(tmp.path, 7000);
  ListenerRegistration b = std::move(a);
  CHECK(is_published(tmp.path, 7000));
  ListenerRegistration c = publish(tmp.path, 7001);
  c = std::move(b);  // drops 7001, takes over 7000
  CHECK(c.port() == 7000);
  CHECK(is_published(tmp.path, 7000));
  CHECK_FALSE(is_published(tmp.path, 7001));
  CHECK_FALSE(exists(listener_path(tmp.path, 7001)));
  { ListenerRegistration d = std::move(c); }
  CHECK_FALSE(is_published(tmp.path, 7000));
}

TEST_CASE("a SIGKILLed listener reads as not published", "[registry]") {
  TempDir tmp;
  int ready[2];
  REQUIRE(pipe(ready) == 0);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    close(ready[0]);
    auto reg = ListenerRegistration::publish(tmp.path, 9000, nullptr);
    char ok = reg.has_value() ? 'y' : 'n';
    if (write(ready[1], &ok, 1) != 1) _exit(1);
    pause();
    _exit(0);
  }
  close(ready[1]);
  char ok = 0;
  REQUIRE(read(ready[0], &ok, 1) == 1);
  close(ready[0]);
  REQUIRE(ok == 'y');
  CHECK(is_published(tmp.path, 9000));
  REQUIRE(kill(pid, SIGKILL) == 0);
  CHECK(wait_exit(pid) == 128 + SIGKILL);
  const std::string file = listener_path(tmp.path, 9000);
  CHECK(exists(file));  // nobody cleaned up...
  CHECK_FALSE(is_published(tmp.path, 9000));
  CHECK_FALSE(exists(file));  // ...until the first query
  // The port can be published again.
  ListenerRegistration again = publish(tmp.path, 9000);
  CHECK(is_published(tmp.path, 9000));
}

TEST_CASE("stale entries are cleaned up by queries", "[registry]") {
  TempDir tmp;
  { ListenerRegistration make_dirs = publish(tmp.path, 1); }
  const std::string file = listener_path(tmp.path, 5000);
  int fd = open(file.c_str(), O_CREAT | O_WRONLY, 0644);
  REQUIRE(fd >= 0);
  close(fd);
  CHECK_FALSE(is_published(tmp.path, 5000));
  CHECK_FALSE(exists(file));

  // A file held shared by some process counts as live even if we did not create it.
  fd = open(file.c_str(), O_CREAT | O_RDONLY, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(flock(fd, LOCK_SH) == 0);
  CHECK(is_published(tmp.path, 5000));
  close(fd);
  CHECK_FALSE(is_published(tmp.path, 5000));

  // While a client holds the stale file exclusively, a publisher waits briefly for it to
  // go and then publishes a fresh file.
  fd = open(file.c_str(), O_CREAT | O_RDONLY, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(flock(fd, LOCK_EX) == 0);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    usleep(5000);
    unlink(file.c_str());
    _exit(0);
  }
  ListenerRegistration reg = publish(tmp.path, 5000);
  CHECK(wait_exit(pid) == 0);
  close(fd);
  CHECK(is_published(tmp.path, 5000));
}

TEST_CASE("a publisher gives up on a file held exclusively for good", "[registry]") {
  TempDir tmp;
  { ListenerRegistration make_dirs = publish(tmp.path, 1); }
  const std::string file = listener_path(tmp.path, 5001);
  int fd = open(file.c_str(), O_CREAT | O_RDONLY, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(flock(fd, LOCK_EX) == 0);
  std::string error;
  CHECK_FALSE(ListenerRegistration::publish(tmp.path, 5001, &error).has_value());
  CHECK(error.find(file) != std::string::npos);
  close(fd);
}

TEST_CASE("fork children: inherited and renewed registrations", "[registry]") {
  TempDir tmp;
  auto parent = std::make_unique<ListenerRegistration>(publish(tmp.path, 6000));

  // A child dropping its inherited copy leaves the parent's entry alone.
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    parent.reset();
    _exit(0);
  }
  CHECK(wait_exit(pid) == 0);
  CHECK(is_published(tmp.path, 6000));

  // A child that renews keeps the entry alive after the parent stops listening.
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
  char ok = 0;
  REQUIRE(read(ready[0], &ok, 1) == 1);
  REQUIRE(ok == 'y');
  parent.reset();
  CHECK(is_published(tmp.path, 6000));
  REQUIRE(write(go[1], "x", 1) == 1);
  CHECK(wait_exit(pid) == 0);
  CHECK_FALSE(is_published(tmp.path, 6000));
  CHECK_FALSE(exists(listener_path(tmp.path, 6000)));
  for (int fd : {ready[0], ready[1], go[0], go[1]}) close(fd);

  // Renewing in the publishing process is a no-op.
  ListenerRegistration own = publish(tmp.path, 6001);
  CHECK(own.renew_after_fork(nullptr));
  CHECK(is_published(tmp.path, 6001));
}

TEST_CASE("runtime dir creation", "[registry]") {
  TempDir tmp;
  const std::string dir = tmp.path + "/a/b/runtime";
  mode_t old_umask = umask(077);
  ListenerRegistration reg = publish(dir, 1234);
  umask(old_umask);
  CHECK(is_published(dir, 1234));
  // Explicit runtime dirs and the listeners dir are 0755 whatever the umask.
  CHECK(mode_of(dir) == 0755);
  CHECK(mode_of(dir + "/listeners") == 0755);
  // Existing directories are fine, with or without a trailing slash.
  ListenerRegistration other = publish(dir + "/", 1235);
  CHECK(is_published(dir, 1235));
}

TEST_CASE("bad runtime dirs give an error, never a crash", "[registry]") {
  TempDir tmp;
  std::string error;
  CHECK_FALSE(ListenerRegistration::publish("relative/dir", 80, &error).has_value());
  CHECK(error.find("absolute") != std::string::npos);
  CHECK_FALSE(ListenerRegistration::publish("", 80, &error).has_value());
  CHECK_FALSE(ListenerRegistration::publish(tmp.path, 0, &error).has_value());
  CHECK(error.find("port 0") != std::string::npos);

  // Below a regular file: nothing can be created, even by root.
  const std::string file = tmp.path + "/plain-file";
  int fd = open(file.c_str(), O_CREAT | O_WRONLY, 0644);
  REQUIRE(fd >= 0);
  close(fd);
  error.clear();
  CHECK_FALSE(ListenerRegistration::publish(file + "/runtime", 80, &error).has_value());
  CHECK(error.find(file) != std::string::npos);
  CHECK_FALSE(ListenerRegistration::publish(file, 80, &error).has_value());
  CHECK(error.find("Not a directory") != std::string::npos);
  CHECK_FALSE(is_published(file, 80));
  // "listeners" itself being a file.
  const std::string dir = tmp.path + "/rt";
  REQUIRE(mkdir(dir.c_str(), 0755) == 0);
  fd = open((dir + "/listeners").c_str(), O_CREAT | O_WRONLY, 0644);
  REQUIRE(fd >= 0);
  close(fd);
  CHECK_FALSE(ListenerRegistration::publish(dir, 80, &error).has_value());
  CHECK(error.find("listeners") != std::string::npos);

  // An unwritable directory (permissions do not stop root).
  if (geteuid() != 0) {
    const std::string ro = tmp.path + "/ro";
    REQUIRE(mkdir(ro.c_str(), 0500) == 0);
    error.clear();
    CHECK_FALSE(ListenerRegistration::publish(ro + "/runtime", 80, &error).has_value());
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
    auto reg = ListenerRegistration::publish(dir, 4000, &error);
    if (!reg || !is_published(dir, 4000)) _exit(21);
    struct stat st;
    if (stat(dir.c_str(), &st) != 0 || (st.st_mode & 07777) != 0700 || st.st_uid != nobody) {
      _exit(22);
    }
    // Someone else's directory at the default place is refused.
    if (setenv("XDG_RUNTIME_DIR", squatted.c_str(), 1) != 0) _exit(12);
    const std::string theirs = smcpre::config::runtime_dir_default();
    if (ListenerRegistration::publish(theirs, 4000, &error)) _exit(23);
    if (error.find("owned by uid 65534") == std::string::npos) _exit(24);
    _exit(0);
  }
  CHECK(wait_exit(pid) == 0);
}
