// What poll/ppoll (hooks_poll.cpp) and select/pselect (hooks_select.cpp) share when the
// caller's set holds SMC sockets.
//
// If no tracked socket in a set is on SMC, the real call runs unchanged (an undecided
// server socket is polled as the kernel socket it still is). Otherwise the call goes
// through the engine's wait loop (core::Engine::wait_ready, doc/design.md §6.2): the SMC
// members are evaluated from their connections in user memory (Socket::poll_state), the
// kernel is asked (timeout 0, SMC members hidden) only about the other fds and only now
// and then, and the final blocking wait has each SMC member's readiness mirror in its
// place, so that a change wakes it. A member without a mirror (fd limit) caps that wait
// at a short slice instead (SliceCap), and the loop looks again.
//
// Signals: once the loop polls, signals are blocked except inside the real waits, which
// run with the caller's mask (or ppoll/pselect's sigmask). A signal can thus only arrive
// inside a wait, which then returns EINTR exactly as one long wait would.
//
// Include it after the hooks' #undef of _FORTIFY_SOURCE and _FILE_OFFSET_BITS.
#pragma once

#include <pthread.h>
#include <signal.h>
#include <time.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>

#include "core/engine.h"
#include "preload/interpose.h"

namespace smcpre::preload {

inline constexpr int64_t kNsPerSec = 1'000'000'000;
inline constexpr int64_t kFirstSliceNs = 50'000;
inline constexpr int64_t kMaxSliceNs = 1'000'000;
// Timeouts beyond this (~31 years) are treated as infinite, so no arithmetic overflows.
inline constexpr int64_t kInfiniteSec = 1'000'000'000;

// The caller's timeout as an absolute CLOCK_MONOTONIC deadline.
class Deadline {
 public:
  static Deadline infinite() { return Deadline(-1); }
  static Deadline after(int64_t sec, int64_t nsec) {
    if (sec >= kInfiniteSec) return infinite();
    if (sec == 0 && nsec == 0) return Deadline(0);  // do not block
    return Deadline(core::now_ns() + sec * kNsPerSec + nsec);
  }

  bool is_infinite() const { return at_ns_ < 0; }
  int64_t remaining_ns() const {
    if (is_infinite()) return INT64_MAX;
    return std::max<int64_t>(0, at_ns_ - core::now_ns());
  }
  // As core::Engine::wait_readiness takes it: -1 none, 0 do not block, else CLOCK_MONOTONIC.
  int64_t engine_ns() const { return at_ns_; }

 private:
  explicit Deadline(int64_t at_ns) : at_ns_(at_ns) {}
  int64_t at_ns_;
};

// The longest kernel wait while an SMC member has no readiness mirror (fd limit), so that
// its changes are seen: 50us at first, doubling up to 1ms.
class SliceCap {
 public:
  int64_t next_ns() {
    const int64_t ns = slice_ns_;
    slice_ns_ = std::min(slice_ns_ * 2, kMaxSliceNs);
    return ns;
  }

 private:
  int64_t slice_ns_ = kFirstSliceNs;
};

// Blocks the asynchronous signals for its lifetime (glibc keeps its cancellation
// signal usable); wait_mask() is the mask for the real waits. Fault signals stay
// unblocked: should anything crash inside the loop, the application's crash handler
// must still run.
class SignalsBlocked {
 public:
  SignalsBlocked() {
    sigset_t async;
    sigfillset(&async);
    for (int fault : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS, SIGABRT}) {
      sigdelset(&async, fault);
    }
    blocked_ = pthread_sigmask(SIG_BLOCK, &async, &original_) == 0;
  }
  ~SignalsBlocked() {
    if (blocked_) pthread_sigmask(SIG_SETMASK, &original_, nullptr);
  }
  SignalsBlocked(const SignalsBlocked&) = delete;
  SignalsBlocked& operator=(const SignalsBlocked&) = delete;

  const sigset_t* wait_mask(const sigset_t* caller_mask) const {
    if (caller_mask != nullptr) return caller_mask;
    return blocked_ ? &original_ : nullptr;
  }

 private:
  sigset_t original_;
  bool blocked_ = false;
};

// SignalsBlocked from the first pass of polling on (core::ReadinessSet::before_polling):
// a call answered at the first look pays no syscall for it.
class SignalsWhilePolling {
 public:
  void block() {
    if (!blocked_) blocked_.emplace();
  }
  const sigset_t* wait_mask(const sigset_t* caller_mask) const {
    return blocked_ ? blocked_->wait_mask(caller_mask) : caller_mask;
  }

 private:
  std::optional<SignalsBlocked> blocked_;
};

inline core::Readiness poll_state(core::Socket& s) {
  return engine_call("poll_state", core::Readiness{}, [&] { return s.poll_state(); });
}

// A tracked SMC socket in the caller's set: where it is and what it refers to.
struct SmcMember {
  size_t index;  // pollfd index, or fd for select
  std::shared_ptr<Tracked> tracked;
  int tracked_fd = -1;  // poll: the application's fd at that index
};

// A kernel wait's timeout: timeout_ms (-1: none), no longer than cap_ns if that is >= 0.
// nullptr for none, else `storage` filled in.
inline const timespec* wait_timeout(int timeout_ms, int64_t cap_ns, timespec* storage) {
  int64_t ns = timeout_ms < 0 ? -1 : int64_t{timeout_ms} * 1'000'000;
  if (cap_ns >= 0 && (ns < 0 || cap_ns < ns)) ns = cap_ns;
  if (ns < 0) return nullptr;
  *storage = timespec{static_cast<time_t>(ns / kNsPerSec), static_cast<long>(ns % kNsPerSec)};
  return storage;
}

inline bool valid_timespec(const timespec* ts) {
  return ts == nullptr || (ts->tv_sec >= 0 && ts->tv_nsec >= 0 && ts->tv_nsec < kNsPerSec);
}

inline Deadline deadline_of(const timespec* ts) {
  return ts == nullptr ? Deadline::infinite() : Deadline::after(ts->tv_sec, ts->tv_nsec);
}

}  // namespace smcpre::preload
