#include "config/fd_budget.h"

#include <sys/resource.h>

#include <atomic>
#include <cerrno>
#include <climits>

namespace smcpre::config {

namespace {

// smcpre's share of the limit: 1/16 of it.
constexpr long kShareDivisor = 16;
// Held outside every reservation and charge: the progress thread's epoll and eventfd,
// the shm device's rendezvous listener, the stats segment, a listener's registry entry.
constexpr long kProcessFds = 6;

// 0: not read yet.
std::atomic<long> g_limit{0};
std::atomic<long> g_held{0};

long read_limit() {
  const int saved = errno;
  rlimit limit{};
  long value = 1024;  // what the kernel gives a process by default
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    value = limit.rlim_cur == RLIM_INFINITY || limit.rlim_cur > static_cast<rlim_t>(LONG_MAX / 2)
                ? LONG_MAX / 2
                : static_cast<long>(limit.rlim_cur);
  }
  errno = saved;
  return value;
}

}  // namespace

long nofile_limit() {
  long limit = g_limit.load(std::memory_order_relaxed);
  if (limit == 0) {
    limit = read_limit();
    g_limit.store(limit, std::memory_order_relaxed);
  }
  return limit;
}

void nofile_limit_changed() {
  g_limit.store(read_limit(), std::memory_order_relaxed);
}

long fd_share(long limit) {
  const long share = limit / kShareDivisor;
  return share > kProcessFds ? share : 0;
}

long fds_held() {
  return g_held.load(std::memory_order_relaxed);
}

FdReservation reserve_fds(int count, int app_fd) {
  if (count <= 0) return FdReservation();
  const long limit = nofile_limit();
  const long share = fd_share(limit);
  // The application's descriptors: those below its newest one, at least.
  const long app = app_fd >= 0 ? long{app_fd} + 1 : 0;
  long held = g_held.load(std::memory_order_relaxed);
  while (true) {
    const long after = held + count + kProcessFds;
    // Within the share, and the application keeps a share's worth free beyond it all.
    if (after > share || app + after > limit - share) return FdReservation();
    if (g_held.compare_exchange_weak(held, held + count, std::memory_order_relaxed)) break;
  }
  return FdReservation(count);
}

void FdReservation::reset() {
  if (count_ > 0) g_held.fetch_sub(count_, std::memory_order_relaxed);
  count_ = 0;
}

void charge_fds(int count) {
  g_held.fetch_add(count, std::memory_order_relaxed);
}

void uncharge_fds(int count) {
  g_held.fetch_sub(count, std::memory_order_relaxed);
}

}  // namespace smcpre::config
