// Internal fds at the top of the fd space (config/high_fd): where they land, that the
// caller never loses its fd, and that a full top or a small limit leaves fds in place.
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <utility>
#include <vector>

#include "config/fd_budget.h"
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
    smcpre::config::nofile_limit_changed();  // what the preload's setrlimit hook does
  }
  ~SoftLimit() {
    ::setrlimit(RLIMIT_NOFILE, &saved_);
    smcpre::config::nofile_limit_changed();
  }

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

TEST_CASE("fd budget: smcpre keeps within 1/16 of the limit and leaves the application room",
          "[fd_budget]") {
  using smcpre::config::FdReservation;
  using smcpre::config::fds_held;
  using smcpre::config::reserve_fds;
  SoftLimit limit(1024);
  CHECK(smcpre::config::nofile_limit() == 1024);
  CHECK(smcpre::config::fd_share(1024) == 64);
  CHECK(smcpre::config::fd_share(64) == 0);  // too small to share
  const long held = fds_held();
  // A small application: reservations go on until the share (less the process's own
  // few) is used up.
  std::vector<FdReservation> taken;
  while (true) {
    FdReservation r = reserve_fds(2, 10);
    if (!r) break;
    taken.push_back(std::move(r));
    REQUIRE(taken.size() < 100);
  }
  CHECK(fds_held() - held == 2 * static_cast<long>(taken.size()));
  CHECK(fds_held() <= 64);
  CHECK(fds_held() > 64 - 2 - 8);
  // Given back, they can be reserved again.
  taken.pop_back();
  CHECK(reserve_fds(2, 10));
  taken.clear();
  CHECK(fds_held() == held);
  // An application whose newest fd is within the share of its limit gets no SMC fds.
  CHECK_FALSE(reserve_fds(2, 1024 - 64 - 8));
  CHECK(reserve_fds(2, 500));
  // A raised limit is seen (the preload's setrlimit hook refreshes the cached value).
  rlimit hard{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &hard) == 0);
  if (hard.rlim_max >= 4096) {
    SoftLimit raised(4096);
    CHECK(smcpre::config::nofile_limit() == 4096);
    CHECK(reserve_fds(2, 1024 - 64 - 8));
  }
  {
    SoftLimit lowered(512);
    CHECK(smcpre::config::nofile_limit() == 512);
    CHECK_FALSE(reserve_fds(2, 500));
  }
  CHECK(smcpre::config::nofile_limit() == 1024);
  // Charges count without a reservation and are never refused.
  smcpre::config::charge_fds(3);
  CHECK(fds_held() == held + 3);
  smcpre::config::uncharge_fds(3);
  CHECK(fds_held() == held);
}
