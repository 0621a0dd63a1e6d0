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

// Every epoll instance of the process (epoll_create, epoll_create1), and the ones that
// existed at a fork: another process may wait on those too. A readiness mirror in a set
// smcpre cannot see waited on -- one nested in another epoll set or in a poll or select
// set, or one shared with another process -- must show every change at once
// (core::Engine::mirrors_watched_unseen).
FdBits& epoll_instances() noexcept;
FdBits& shared_epoll_sets() noexcept;

// After a successful dup of `oldfd` onto `newfd`: the copy is what the original was.
void copy_epoll_bits(int oldfd, int newfd) noexcept;
// `fd` was closed.
void forget_epoll_bits(int fd) noexcept;
// After fork(), in the parent and in the child: every epoll set is shared from now on.
void note_fork_for_epoll_sets() noexcept;
// An untracked `fd` is added to an epoll set or waited on by poll or select: if it is an
// epoll set, its mirrors are watched where smcpre cannot see the wait.
void note_nested_wait(int fd) noexcept;

}  // namespace smcpre::preload
