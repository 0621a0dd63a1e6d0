// Waiting without losing the race against a waker, and without a syscall when nobody
// sleeps: a sequence word that wakers bump (futex wake only if someone sleeps on it).
#pragma once

#include <linux/futex.h>
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

}  // namespace smcpre::core
