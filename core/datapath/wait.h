// Waiting without losing the race against a waker, and without a syscall when nobody
// sleeps: a sequence word that wakers bump (futex wake only if someone sleeps on it).
#pragma once

#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>

namespace smcpre::core {

inline int64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

// Milliseconds from now until deadline_ns, for poll() and epoll_wait(): -1 without a
// deadline (deadline_ns < 0), 0 once it has passed, rounded up so that a wait never ends
// before its deadline.
inline int timeout_ms_until(int64_t deadline_ns) {
  if (deadline_ns < 0) return -1;
  const int64_t left_ns = deadline_ns - now_ns();
  if (left_ns <= 0) return 0;
  const int64_t ms = (left_ns + 999'999) / 1'000'000;
  return ms > INT32_MAX ? INT32_MAX : static_cast<int>(ms);
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

// A wake-up channel. Waiters read seq(), re-check their condition, then sleep(seq) — a
// wake() between the two makes sleep() return at once.
class WaitQueue {
 public:
  uint32_t seq() const { return seq_.load(std::memory_order_acquire); }

  // Sleeps until wake() or `deadline_ns` (CLOCK_MONOTONIC, -1 = none). Returns 0, or
  // ETIMEDOUT, or EINTR when a signal handler ran (so blocking calls can report EINTR
  // like the kernel's would).
  int sleep(uint32_t seen, int64_t deadline_ns) {
    sleepers_.fetch_add(1, std::memory_order_seq_cst);
    int result = 0;
    if (seq_.load(std::memory_order_seq_cst) == seen) {
      timespec ts{};
      timespec* timeout = nullptr;
      if (deadline_ns >= 0) {
        int64_t left = deadline_ns - now_ns();
        if (left <= 0) {
          sleepers_.fetch_sub(1, std::memory_order_relaxed);
          return ETIMEDOUT;
        }
        ts.tv_sec = left / 1'000'000'000;
        ts.tv_nsec = left % 1'000'000'000;
        timeout = &ts;
      }
      long r = ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(&seq_), FUTEX_WAIT_PRIVATE, seen,
                         timeout, nullptr, 0);
      if (r != 0 && errno == ETIMEDOUT) result = ETIMEDOUT;
      if (r != 0 && errno == EINTR) result = EINTR;
    }
    sleepers_.fetch_sub(1, std::memory_order_relaxed);
    return result;
  }

  void wake() {
    seq_.fetch_add(1, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
      ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(&seq_), FUTEX_WAKE_PRIVATE, INT32_MAX,
                nullptr, nullptr, 0);
    }
  }

  bool has_sleepers() const { return sleepers_.load(std::memory_order_relaxed) > 0; }

 private:
  static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t));
  std::atomic<uint32_t> seq_{0};
  std::atomic<int32_t> sleepers_{0};
};

// Between two looks of a polling loop that has gone on for `polled_ns` (a waiting
// application thread, or the progress thread reaping busy links): a few pause
// instructions at first; after 5 µs the CPU is yielded, as the peer may need this very
// CPU (more runnable threads than cores), but at most once per microsecond of polling: a
// look costs a fraction of a yield, and a yield per look made most of a crowded
// machine's syscalls (a reverse proxy: 295 sched_yield per request).
inline void pause_polling(int64_t polled_ns) {
  constexpr int64_t kYieldAfterNs = 5'000;
  constexpr int64_t kYieldEveryNs = 1'000;
  thread_local int64_t last_polled_ns = 0;
  thread_local int64_t next_yield_ns = 0;
  // A new wait starts its count from 0.
  if (polled_ns < last_polled_ns) next_yield_ns = 0;
  last_polled_ns = polled_ns;
  if (polled_ns < kYieldAfterNs || polled_ns < next_yield_ns) {
    for (int i = 0; i < 8; ++i) cpu_relax();
  } else {
    next_yield_ns = polled_ns + kYieldEveryNs;
    sched_yield();
  }
}

// Per waiter: whether polling is worth it. It keeps a moving average of how long this
// waiter's waits took. While waits are shorter than the polling budget (a ping-pong, a
// stream), it polls for the whole budget, which also pulls a pair of peers that were
// both sleeping back into polling (their sleep-mode round trip is shorter than the
// budget). When waits are long (an idle connection) it does not poll at all, so an idle
// connection costs no CPU.
class SpinBudget {
 public:
  int64_t spin_ns(int64_t max_ns) const {
    return average_ns_.load(std::memory_order_relaxed) < max_ns ? max_ns : 0;
  }
  // Long waits count as a few budgets at most, so a waiter that turns busy again starts
  // polling after a handful of waits.
  void record(int64_t waited_ns, int64_t max_ns) {
    const int64_t sample = waited_ns < 4 * max_ns ? waited_ns : 4 * max_ns;
    const int64_t avg = average_ns_.load(std::memory_order_relaxed);
    average_ns_.store(avg + (sample - avg) / 8, std::memory_order_relaxed);
  }

 private:
  std::atomic<int64_t> average_ns_{0};
};

}  // namespace smcpre::core
