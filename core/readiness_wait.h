// Waiting for readiness (epoll_wait, poll, select) while the process has SMC links
// (doc/design.md §6.2).
#pragma once

#include <cstdint>

namespace smcpre::core {

// For an application thread about to wait in the kernel for readiness (epoll_wait, poll,
// select) while the process has SMC links: data for SMC sockets reaches their readiness
// mirrors only when somebody reaps the links. Left to the progress thread, that is a
// wake-up and a thread hop per message, which on a busy event loop costs more than the
// whole kernel TCP path (doc/design.md §6.2). So the waiting thread reaps every link itself,
// asks the kernel without blocking, polls on for an adaptive budget while nothing is
// ready, and only then blocks in the kernel with the progress thread's notifications
// armed. `kernel_wait(ctx, timeout_ms)` is the real call (0: do not block); its result is
// returned as soon as it is not 0. `deadline_ns`: CLOCK_MONOTONIC, -1 = none.
int wait_readiness_adaptive(int64_t deadline_ns, int (*kernel_wait)(void*, int), void* ctx);

}  // namespace smcpre::core
