// Waiting adaptively (doc/design.md §3.4): an application thread polls its link itself for
// a budget that follows how long its waits have been lately, then sleeps on its wait
// queue until the progress thread wakes it; the same for readiness calls (poll, epoll,
// select) over every link. The progress thread itself is progress.cpp.
#include <sched.h>

#include <algorithm>
#include <cerrno>

#include "config/config.h"
#include "core/backlog.h"
#include "core/connection.h"
#include "core/link_group.h"
#include "core/progress.h"

namespace smcpre::core {
namespace {

// A poll that has not succeeded within this long yields the CPU between looks.
constexpr int64_t kYieldAfterNs = 5'000;

}  // namespace

// Between two looks of a polling wait that has gone on for `polled_ns`.
void pause_polling(int64_t polled_ns) {
  if (polled_ns < kYieldAfterNs) {
    for (int i = 0; i < 8; ++i) cpu_relax();
  } else {
    // Still waiting: the peer may need this very CPU (more runnable threads than cores).
    // Polling on, but letting it run.
    sched_yield();
  }
}

void SpinBudget::record(int64_t waited_ns, int64_t max_ns) {
  // Long waits count as a few budgets at most, so a connection that turns busy again
  // starts polling after a handful of waits.
  const int64_t sample = std::min(waited_ns, 4 * max_ns);
  const int64_t avg = average_ns_.load(std::memory_order_relaxed);
  average_ns_.store(avg + (sample - avg) / 8, std::memory_order_relaxed);
}

void reap_here(Link& link) {
  if (link.progress(Reaper::kApplication)) {
    link.last_app_poll_ns.store(now_ns(), std::memory_order_relaxed);
  }
}

WaitResult wait_adaptive_impl(Link& link, WaitQueue& queue, SpinBudget& budget, int64_t deadline_ns,
                              bool (*pred)(void*), void* ctx) {
  const int64_t max_spin_ns = int64_t{config::current().spin_us} * 1000;
  const int64_t start = now_ns();
  auto done = [&](WaitResult r) {
    budget.record(now_ns() - start, max_spin_ns);
    return r;
  };

  // Phase 1: poll the link ourselves: no syscall, no thread hop.
  const int64_t spin_ns = budget.spin_ns(max_spin_ns);
  if (spin_ns > 0) {
    link.app_pollers.fetch_add(1, std::memory_order_relaxed);
    int64_t now = start;
    bool hit = false;
    while (true) {
      link.progress(Reaper::kApplication);
      if (pred(ctx)) {
        hit = true;
        break;
      }
      if (link.failed()) break;
      now = now_ns();
      if (now - start >= spin_ns || (deadline_ns >= 0 && now >= deadline_ns)) break;
      pause_polling(now - start);
    }
    link.last_app_poll_ns.store(now, std::memory_order_relaxed);
    link.app_pollers.fetch_sub(1, std::memory_order_relaxed);
    if (hit) return done(WaitResult::kReady);
  }
  // Phase 2: sleep; the background thread reaps and wakes us.
  link.last_app_poll_ns.store(0, std::memory_order_relaxed);
  while (true) {
    uint32_t seen = queue.seq();
    link.progress(Reaper::kApplication);
    if (pred(ctx)) return done(WaitResult::kReady);
    if (link.failed()) {
      // Messages that arrived before the link went down may still wait in a worker's
      // queue (a close, the last data): they are applied before the wait gives up.
      if (Backlog* backlog = link.backlog(); backlog != nullptr && backlog->wait_all_applied()) {
        if (pred(ctx)) return done(WaitResult::kReady);
      }
      return done(WaitResult::kLinkDown);
    }
    if (deadline_ns >= 0 && now_ns() >= deadline_ns) return done(WaitResult::kTimeout);
    progress_thread().on_app_sleep();
    // Bounded sleep so a lost notification can never turn into a hang.
    int64_t wake_at = now_ns() + 1'000'000'000;
    if (deadline_ns >= 0 && deadline_ns < wake_at) wake_at = deadline_ns;
    int r = queue.sleep(seen, wake_at);
    if (r == EINTR) {
      if (pred(ctx)) return done(WaitResult::kReady);
      return done(WaitResult::kInterrupted);
    }
  }
}

namespace {

// Kernel checks while polling with nothing reaped: other fds in the set (pipes, timers,
// plain TCP) are seen within this many link polls.
constexpr int kKernelCheckEvery = 16;

bool reap_all(const ProgressThread::LinkGroups& groups) {
  bool reaped = false;
  for (const auto& group : groups) reaped |= group->link().progress(Reaper::kApplication);
  return reaped;
}

int timeout_ms_until(int64_t deadline_ns) {
  if (deadline_ns < 0) return -1;
  const int64_t left_ms = (deadline_ns - now_ns() + 999'999) / 1'000'000;
  return static_cast<int>(std::clamp<int64_t>(left_ms, 0, INT32_MAX));
}

}  // namespace

namespace {

// Every kernel wait on mirrors goes through here: stale mirrors are settled first.
int kernel_wait_fresh(int (*kernel_wait)(void*, int), void* ctx, int timeout_ms) {
  flush_stale_mirrors();
  return kernel_wait(ctx, timeout_ms);
}

}  // namespace

int wait_readiness_adaptive(int64_t deadline_ns, int (*kernel_wait)(void*, int), void* ctx) {
  ProgressThread* progress = existing_progress_thread();
  std::shared_ptr<const ProgressThread::LinkGroups> groups;
  if (progress != nullptr) groups = progress->links_for_app_polling();
  if (groups == nullptr || groups->empty()) {
    return kernel_wait_fresh(kernel_wait, ctx, timeout_ms_until(deadline_ns));
  }
  // Whatever already arrived: one pass, then the kernel's view without blocking.
  reap_all(*groups);
  int n = kernel_wait_fresh(kernel_wait, ctx, 0);
  if (n != 0 || deadline_ns == 0) {
    // This thread will be back soon and reap again: the progress thread stays unarmed
    // meanwhile, so the peer's messages cost neither an eventfd write nor a wake-up that
    // would preempt this very thread.
    const int64_t now = now_ns();
    for (const auto& g : *groups) g->link().last_app_poll_ns.store(now, std::memory_order_relaxed);
    return n;
  }

  // One budget for all readiness waits of the process: an event loop is one waiter.
  static SpinBudget budget;
  const int64_t max_spin_ns = int64_t{config::current().spin_us} * 1000;
  const int64_t start = now_ns();
  const int64_t spin_ns = budget.spin_ns(max_spin_ns);
  if (spin_ns > 0) {
    for (const auto& g : *groups) g->link().app_pollers.fetch_add(1, std::memory_order_relaxed);
    int64_t now = start;
    for (int round = 1;; ++round) {
      if (reap_all(*groups) || round % kKernelCheckEvery == 0) {
        n = kernel_wait_fresh(kernel_wait, ctx, 0);
        if (n != 0) break;
      }
      now = now_ns();
      if (now - start >= spin_ns || (deadline_ns >= 0 && now >= deadline_ns)) break;
      pause_polling(now - start);
    }
    for (const auto& g : *groups) {
      g->link().last_app_poll_ns.store(now, std::memory_order_relaxed);
      g->link().app_pollers.fetch_sub(1, std::memory_order_relaxed);
    }
    if (n != 0) {
      budget.record(now - start, max_spin_ns);
      return n;
    }
    if (deadline_ns >= 0 && now >= deadline_ns) {
      budget.record(now - start, max_spin_ns);
      return kernel_wait_fresh(kernel_wait, ctx, 0);
    }
  }
  // Block in the kernel; the progress thread, armed now, reaps and updates the mirrors.
  for (const auto& g : *groups) g->link().last_app_poll_ns.store(0, std::memory_order_relaxed);
  progress->on_app_sleep();
  n = kernel_wait_fresh(kernel_wait, ctx, timeout_ms_until(deadline_ns));
  budget.record(now_ns() - start, max_spin_ns);
  return n;
}

}  // namespace smcpre::core
