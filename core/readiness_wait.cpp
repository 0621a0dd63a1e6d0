// Readiness waits over every link (doc/design.md §6.2): see readiness_wait.h.
#include "core/readiness_wait.h"

#include <memory>

#include "config/config.h"
#include "core/connection.h"
#include "core/datapath/link_group.h"
#include "core/datapath/progress.h"
#include "core/datapath/waiting.h"

namespace smcpre::core {
namespace {

// Kernel checks while polling with nothing reaped: other fds in the set (pipes, timers,
// plain TCP) are seen within this many link polls.
constexpr int kKernelCheckEvery = 16;

bool reap_all(const ProgressThread::LinkGroups& groups) {
  bool reaped = false;
  for (const auto& group : groups) reaped |= group->link().progress(Reaper::kApplication);
  return reaped;
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
