// Which epoll instances watch a tracked socket (an SMC socket's readiness mirror, or an
// undecided server socket that may turn SMC). Only waits on those poll the SMC links
// inline (core::Engine::wait_readiness); every other epoll_wait goes straight to the
// kernel, so an unrelated event loop in the same process never polls.
//
// A bit per fd number: set by epoll_ctl, cleared by close. A stale bit (an epoll fd
// dup'd, or its watched sockets all gone) only costs a little polling, never correctness.
#pragma once

#include <sys/epoll.h>

#include <memory>

#include "core/engine.h"
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
// epoll set, its mirrors are watched where smcpre cannot see the wait, and its user-space
// members move to the kernel.
void note_nested_wait(int fd) noexcept;

// User-space registrations (core/epoll_set.h, preload/user_epoll.cpp). The set `epfd`
// refers to, if it keeps its SMC members in user memory; with `create`, made for a set
// whose every wait smcpre sees (an epoll instance not shared with another process and not
// nested). Null otherwise.
std::shared_ptr<core::EpollSet> user_epoll_set(int epfd, bool create) noexcept;
// The set's SMC members move to the kernel as readiness mirrors, for good: it is about to
// be waited on where smcpre cannot see.
void move_user_epoll_set_to_kernel(int epfd) noexcept;
// Before fork(): every set's (the child shares them all).
void move_all_user_epoll_sets_to_kernel() noexcept;
// An SMC socket's registration in the kernel's set, as its readiness mirror (armed false:
// a one-shot registration that has fired). False if the mirror cannot be had or added.
bool register_mirror(int epfd, core::Socket& socket, epoll_event event, bool armed) noexcept;

}  // namespace smcpre::preload
