// Internal fds at the top of the fd space (config/high_fd): where they land, that the
// caller never loses its fd, and that a full top or a small limit leaves fds in place.
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <vector>

#include "config/high_fd.h"

namespace {

// Sets the soft RLIMIT_NOFILE for one test case and restores it after.
class SoftLimit {
 public:
  explicit SoftLimit(rlim_t soft) {
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &saved_) == 0);
    rlimit changed = saved_;
    changed.rlim_cur = soft;
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &changed) == 0);
  }
  ~SoftLimit() { ::setrlimit(RLIMIT_NOFILE, &saved_); }

 private:
  rlimit saved_{};
};

bool is_open(int fd) {
  return ::fcntl(fd, F_GETFD) >= 0;
}
bool cloexec(int fd) {
  return (::fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0;
}

}  // namespace

TEST_CASE("internal fds move to the upper half below the soft limit", "[high_fd]") {
  SoftLimit limit(1024);
  CHECK(smcpre::sys::high_fd_floor() == 512);
  const int low = ::eventfd(0, EFD_CLOEXEC);
  REQUIRE(low >= 0);
  REQUIRE(low < 512);
  const int high = smcpre::sys::move_fd_high(low);
  CHECK(high >= 512);
  CHECK(high < 1024);
  CHECK(cloexec(high));
  CHECK_FALSE(is_open(low));  // the old number is free for the application again
  const int next = ::eventfd(0, EFD_CLOEXEC);
  CHECK(next == low);
  ::close(next);

  const int copy = smcpre::sys::dup_high(high);
  CHECK(copy >= 512);
  CHECK(copy != high);
  CHECK(is_open(high));
  CHECK(cloexec(copy));
  ::close(copy);
  ::close(high);
  CHECK(smcpre::sys::move_fd_high(-1) == -1);
}

TEST_CASE("a full upper half leaves internal fds where they are", "[high_fd]") {
  SoftLimit limit(1024);
  std::vector<int> taken;
  for (;;) {
    const int fd = smcpre::sys::move_fd_high(::eventfd(0, EFD_CLOEXEC));
    REQUIRE(fd >= 0);
    taken.push_back(fd);
    if (fd < 512) break;  // the top was full: it stayed low, and is still valid
    REQUIRE(taken.size() < 1024);
  }
  CHECK(taken.size() > 400);  // most of [512, 1024) was free before
  CHECK(is_open(taken.back()));
  // A duplicate falls back to the lowest free number.
  const int copy = smcpre::sys::dup_high(taken.back());
  CHECK(copy >= 0);
  CHECK(copy < 512);
  ::close(copy);
  for (int fd : taken) ::close(fd);
}

TEST_CASE("a small limit keeps internal fds low", "[high_fd]") {
  SoftLimit limit(128);
  CHECK(smcpre::sys::high_fd_floor() == -1);
  const int fd = ::eventfd(0, EFD_CLOEXEC);
  REQUIRE(fd >= 0);
  CHECK(smcpre::sys::move_fd_high(fd) == fd);
  ::close(fd);
}
