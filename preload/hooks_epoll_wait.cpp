// epoll_wait, epoll_pwait and epoll_pwait2 on a set that watches SMC sockets.
//
// The kernel does the wait itself (an SMC socket is registered as its readiness mirror,
// see epoll_ctl), but a mirror changes only when somebody reaps the SMC links. Here the
// waiting thread does that first and polls adaptively before it blocks
// (core::Engine::wait_readiness), so a busy event loop gets its data without a wake-up
// and a thread hop per message. Sets without SMC sockets go straight to the kernel.
#include <sys/epoll.h>
#include <time.h>

#include <climits>

#include "core/engine.h"
#include "preload/epoll_sets.h"
#include "preload/interpose.h"

namespace smcpre::preload {

EpollSets& epoll_sets() noexcept {
  static constinit EpollSets sets;
  return sets;
}

namespace {

struct EpollCall {
  int epfd;
  epoll_event* events;
  int maxevents;
  const sigset_t* sigmask;
};

int kernel_epoll_wait(void* ctx, int timeout_ms) {
  const auto* call = static_cast<const EpollCall*>(ctx);
  return real().epoll_pwait(call->epfd, call->events, call->maxevents, timeout_ms, call->sigmask);
}

// deadline_ns: CLOCK_MONOTONIC, -1 = none, 0 = do not block (the links are still reaped
// once: a loop that only ever polls with timeout 0 sees SMC data without a thread hop).
int epoll_wait_common(const EpollCall& call, int64_t deadline_ns) {
  SavedErrno saved;
  const int n =
      core::Engine::wait_readiness(deadline_ns, kernel_epoll_wait, const_cast<EpollCall*>(&call));
  if (n >= 0) saved.restore();
  return n;
}

int64_t deadline_of_ms(int timeout_ms) {
  if (timeout_ms < 0) return -1;
  if (timeout_ms == 0) return 0;
  return core::now_ns() + int64_t{timeout_ms} * 1'000'000;
}

}  // namespace

}  // namespace smcpre::preload

using namespace smcpre::preload;  // NOLINT: the hooks below are C symbols

SMCPRE_HOOK int epoll_wait(int epfd, epoll_event* events, int maxevents, int timeout) {
  const auto& r = real();
  if (r.epoll_pwait == nullptr) return enosys();
  if (!epoll_sets().watches_smc(epfd)) {
    return r.epoll_pwait(epfd, events, maxevents, timeout, nullptr);
  }
  return epoll_wait_common({epfd, events, maxevents, nullptr}, deadline_of_ms(timeout));
}

SMCPRE_HOOK int epoll_pwait(int epfd, epoll_event* events, int maxevents, int timeout,
                            const sigset_t* sigmask) {
  const auto& r = real();
  if (r.epoll_pwait == nullptr) return enosys();
  if (!epoll_sets().watches_smc(epfd)) {
    return r.epoll_pwait(epfd, events, maxevents, timeout, sigmask);
  }
  return epoll_wait_common({epfd, events, maxevents, sigmask}, deadline_of_ms(timeout));
}

SMCPRE_HOOK int epoll_pwait2(int epfd, epoll_event* events, int maxevents, const timespec* timeout,
                             const sigset_t* sigmask) {
  const auto& r = real();
  if (r.epoll_pwait2 == nullptr) return enosys();
  const bool valid = timeout == nullptr || (timeout->tv_sec >= 0 && timeout->tv_nsec >= 0 &&
                                            timeout->tv_nsec < 1'000'000'000);
  if (!epoll_sets().watches_smc(epfd) || !valid) {
    return r.epoll_pwait2(epfd, events, maxevents, timeout, sigmask);
  }
  // Millisecond steps inside (epoll_pwait): the kernel rounds a nanosecond timeout up to
  // its timer slack anyway, and the deadline below keeps the total exact.
  int64_t deadline_ns = -1;
  if (timeout != nullptr && timeout->tv_sec == 0 && timeout->tv_nsec == 0) {
    deadline_ns = 0;
  } else if (timeout != nullptr) {
    const int64_t ns = int64_t{timeout->tv_sec} * 1'000'000'000 + timeout->tv_nsec;
    deadline_ns = smcpre::core::now_ns() + std::min<int64_t>(ns, INT64_MAX / 2);
  }
  return epoll_wait_common({epfd, events, maxevents, sigmask}, deadline_ns);
}
