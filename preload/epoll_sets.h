// Which epoll instances watch a tracked socket (an SMC socket's readiness mirror, or an
// undecided server socket that may turn SMC). Only waits on those poll the SMC links
// inline (core::Engine::wait_readiness); every other epoll_wait goes straight to the
// kernel, so an unrelated event loop in the same process never polls.
//
// A bit per fd number: set by epoll_ctl, cleared by close. A stale bit (an epoll fd
// dup'd, or its watched sockets all gone) only costs a little polling, never correctness.
#pragma once

#include "preload/fd_bits.h"

namespace smcpre::preload {

FdBits& epoll_sets() noexcept;

}  // namespace smcpre::preload
