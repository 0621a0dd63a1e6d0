// What a readiness wait (poll, select, epoll_wait) looks like to the engine's one wait
// loop (core::Engine::wait_ready, doc/design.md §6.2). The interposer implements it for
// the caller's pollfd array, fd_sets or epoll set; the engine decides when to look at
// what and when to block.
#pragma once

namespace smcpre::core {

class ReadinessSet {
 public:
  // The SMC members' readiness, evaluated from their connections' state in user memory
  // (no syscall) and kept for the answer; the number of members ready.
  virtual int smc_ready() = 0;
  // The kernel's part. block false: a look (timeout 0) at the fds only the kernel can
  // answer for. block true: the wait proper, until timeout_ms (-1: none), in which the
  // SMC members' readiness mirrors stand in for them so that a change wakes it (where a
  // member has no mirror the set caps the timeout itself, and the loop looks again).
  // Returns the number of the kernel's fds ready (mirrors never count), or -1 with errno
  // (EINTR when a signal arrived).
  virtual int kernel_wait(int timeout_ms, bool block) = 0;
  // Whether the set has fds that only the kernel can answer for.
  virtual bool has_kernel_fds() const = 0;
  // Whether SMC readiness reaches the caller only through the kernel (an epoll set in
  // which mirrors stand in for the SMC sockets): every look then asks the kernel, and
  // mirrors must be up to date before each.
  virtual bool smc_through_kernel() const { return false; }
  // Whether a look that found SMC members ready asks the kernel too. poll and select
  // report every ready fd, so they do; epoll may report some and the rest next time, and
  // asks only now and then, so that the kernel's fds are not starved.
  virtual bool kernel_look_due() { return true; }
  // Called once, before the first pass of polling: from here until the call returns
  // signals must arrive only inside kernel_wait, as if the whole call were one kernel
  // wait (poll_common.h's SignalsBlocked).
  virtual void before_polling() {}

 protected:
  ~ReadinessSet() = default;
};

}  // namespace smcpre::core
