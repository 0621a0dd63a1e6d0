// Waiting adaptively on one link (doc/design.md §3.4); readiness waits over every link are
// core/readiness_wait.cpp, the progress thread itself progress.cpp.
#include "core/datapath/waiting.h"

#include <algorithm>
#include <cerrno>

#include "config/config.h"
#include "core/datapath/backlog.h"
#include "core/datapath/progress.h"

namespace smcpre::core {
void apply_arrived(Link& link, uint64_t flow_hash, int64_t deadline_ns) {
  link.progress();
  if (Backlog* backlog = link.backlog()) backlog->wait_applied(flow_hash, deadline_ns);
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

}  // namespace smcpre::core
