// Waiting for readiness (epoll_wait, poll, select) while the process has SMC links
// (doc/design.md §6.2).
#pragma once

#include <cstdint>

#include "core/readiness_set.h"

namespace smcpre::core {

// The one wait loop of readiness waits (core/readiness_set.h). Data for SMC sockets
// arrives only as somebody reaps the links; left to the progress thread, that is a
// wake-up and a thread hop per message, which on a busy event loop costs more than the
// whole kernel TCP path (doc/design.md §6.2). So the waiting thread:
//   1. reaps every link itself;
//   2. evaluates the SMC members from connection state in user memory;
//   3. polls on like that for an adaptive budget while nothing is ready;
//   4. asks the kernel (timeout 0) only when the set has fds only the kernel knows, and
//      only every few passes (every pass that reaped something, for an epoll set whose
//      SMC readiness the kernel reports through mirrors);
//   5. blocks in the kernel last, with the progress thread armed and the mirrors up to
//      date, as a counted kernel waiter (ReadinessMirror::must_show_now).
// Returns the number ready (the set holds the answer), or -1 with errno.
// `deadline_ns`: CLOCK_MONOTONIC, -1 = none, 0 = one look, do not block.
int wait_ready_adaptive(int64_t deadline_ns, ReadinessSet& set);

}  // namespace smcpre::core
