// Readiness waits over every link (doc/design.md §6.2): see readiness_wait.h.
#include "core/readiness_wait.h"

#include <unistd.h>

#include <memory>

#include "config/config.h"
#include "config/log.h"
#include "core/connection.h"
#include "core/datapath/link_group.h"
#include "core/datapath/progress.h"
#include "core/datapath/readiness_mirror.h"
#include "core/datapath/waiting.h"

namespace smcpre::core {
namespace {

// While polling with nothing reaped, the kernel's fds (pipes, timers, plain TCP) are
// looked at every this many passes, and no more often than every kKernelCheckGapNs: a
// pass without a syscall takes well under a microsecond, and a look every 16 of them was
// most of a crowded proxy's epoll_pwait calls (48 per request).
constexpr int kKernelCheckEvery = 16;
constexpr int64_t kKernelCheckGapNs = 2'000;

using Groups = ProgressThread::LinkGroups;

bool reap_all(const Groups* groups) {
  bool reaped = false;
  if (groups == nullptr) return false;
  for (const auto& group : *groups) reaped |= group->link().progress(Reaper::kApplication);
  return reaped;
}

// This thread will be back soon and reap again: the progress thread stays unarmed
// meanwhile, so the peer's messages cost neither an eventfd write nor a wake-up that
// would preempt this very thread.
void note_app_polled(const Groups* groups, int64_t when) {
  if (groups == nullptr) return;
  for (const auto& g : *groups) g->link().last_app_poll_ns.store(when, std::memory_order_relaxed);
}

// A look: the SMC members from user memory, and, if `kernel`, the kernel's fds.
int look(ReadinessSet& set, bool kernel) {
  int n = set.smc_ready();
  if (!kernel || !set.has_kernel_fds() || (n > 0 && !set.kernel_look_due())) return n;
  // Mirrors stand in for SMC sockets in the kernel's answer: they must be up to date.
  if (set.smc_through_kernel()) flush_stale_mirrors();
  const int k = set.kernel_wait(0, false);
  return k < 0 ? -1 : n + k;
}

// For as long as it lives, the calling thread counts as blocked in the kernel on
// mirrors: changes show on them at once, and the ones noted before show now.
class KernelWaiter {
 public:
  KernelWaiter() {
    ReadinessMirror::count_kernel_waiter(+1);
    flush_stale_mirrors();
  }
  ~KernelWaiter() { ReadinessMirror::count_kernel_waiter(-1); }
  KernelWaiter(const KernelWaiter&) = delete;
  KernelWaiter& operator=(const KernelWaiter&) = delete;
};

}  // namespace

int wait_ready_adaptive(int64_t deadline_ns, ReadinessSet& set) {
  ProgressThread* progress = existing_progress_thread();
  std::shared_ptr<const Groups> snapshot;
  if (progress != nullptr) snapshot = progress->links_for_app_polling();
  const Groups* groups = snapshot != nullptr && !snapshot->empty() ? snapshot.get() : nullptr;

  // Whatever already arrived: one pass, then the answer if there is one.
  reap_all(groups);
  // The kernel too unless the set says it can wait (epoll with user-space members): a
  // wait that will poll looks at the kernel's fds within a few passes anyway.
  int n = look(set, deadline_ns == 0 || set.kernel_look_due());
  if (n != 0 || deadline_ns == 0) {
    note_app_polled(groups, now_ns());
    return n;
  }

  // One budget for all readiness waits of the process: an event loop is one waiter.
  static SpinBudget budget;
  const int64_t max_spin_ns = int64_t{config::current().spin_us} * 1000;
  const int64_t start = now_ns();
  const int64_t spin_ns = groups != nullptr ? budget.spin_ns(max_spin_ns) : 0;
  if (spin_ns > 0) {
    set.before_polling();
    for (const auto& g : *groups) g->link().app_pollers.fetch_add(1, std::memory_order_relaxed);
    int64_t now = start;
    int64_t kernel_looked = start;
    for (int round = 1;; ++round) {
      const bool reaped = reap_all(groups);
      const bool kernel =
          set.has_kernel_fds() &&
          ((reaped && set.smc_through_kernel()) ||
           (round % kKernelCheckEvery == 0 && now - kernel_looked >= kKernelCheckGapNs));
      if (kernel) kernel_looked = now;
      if (reaped || kernel) {
        n = look(set, kernel);
        if (n != 0) break;
      }
      now = now_ns();
      if (now - start >= spin_ns || (deadline_ns >= 0 && now >= deadline_ns)) break;
      pause_polling(now - start);
    }
    note_app_polled(groups, now);
    for (const auto& g : *groups) g->link().app_pollers.fetch_sub(1, std::memory_order_relaxed);
    if (n != 0) {
      budget.record(now - start, max_spin_ns);
      return n;
    }
  }

  // Block in the kernel; the progress thread, armed now, reaps and shows changes on the
  // mirrors, which wake this wait.
  for (int spurious = 0;; ++spurious) {
    note_app_polled(groups, 0);
    if (progress != nullptr) progress->on_app_sleep();
    int k;
    {
      KernelWaiter waiter;
      k = set.kernel_wait(timeout_ms_until(deadline_ns), true);
    }
    n = k < 0 ? -1 : k + set.smc_ready();
    const int64_t now = now_ns();
    if (n != 0 || (deadline_ns >= 0 && now >= deadline_ns)) {
      budget.record(now - start, max_spin_ns);
      return n;
    }
    // A mirror woke the wait, but its connection is not ready for what was asked (it
    // changed back meanwhile). Look again; should a mirror keep disagreeing with its
    // connection, do not let that spin.
    if (spurious >= 3) {
      if (log::thinned(static_cast<uint64_t>(spurious))) {
        SMC_LOG_WARN("readiness wait: woken {} times with nothing ready", spurious);
      }
      ::usleep(1000);
    }
    set.before_polling();
    reap_all(groups);
  }
}

}  // namespace smcpre::core
