// Waiting adaptively on one link (doc/design.md §3.4): an application thread polls the link
// itself for a budget that follows how long its waits have been lately, then sleeps on
// its wait queue until the progress thread wakes it.
#pragma once

#include <cstdint>
#include <type_traits>

#include "core/datapath/link.h"
#include "core/datapath/wait.h"

namespace smcpre::core {

enum class WaitResult { kReady, kTimeout, kInterrupted, kLinkDown };

WaitResult wait_adaptive_impl(Link& link, WaitQueue& queue, SpinBudget& budget, int64_t deadline_ns,
                              bool (*pred)(void*), void* ctx);

// Reaps `link` (as the background poller: see Reaper) and waits, until deadline_ns at the
// latest, until the backlog worker of the connection with `flow_hash` has applied
// everything that arrived for it so far: for whoever judges a connection after its
// messages (its TCP connection ended: did the peer's SMC close come first?).
void apply_arrived(Link& link, uint64_t flow_hash, int64_t deadline_ns);

// An application thread reaps `link` in passing (it is about to use the connection, not
// to wait): applied here when its worker is idle, and the background thread stays unarmed
// as it does while application threads poll.
void reap_here(Link& link);

// Waits until pred() holds, the deadline (CLOCK_MONOTONIC ns, -1 = none) passes, a signal
// interrupts the sleep, or the link fails.
template <typename Pred>
WaitResult wait_adaptive(Link& link, WaitQueue& queue, SpinBudget& budget, int64_t deadline_ns,
                         Pred&& pred) {
  if (pred()) return WaitResult::kReady;
  return wait_adaptive_impl(
      link, queue, budget, deadline_ns,
      [](void* ctx) { return (*static_cast<std::remove_reference_t<Pred>*>(ctx))(); }, &pred);
}

}  // namespace smcpre::core
