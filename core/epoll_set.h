// An epoll set's SMC members, kept in user memory (doc/design.md §6.3).
//
// epoll_ctl on an SMC socket changes only this object, and epoll_wait harvests the ready
// members from it without a syscall: a connection's change (data, space, close, error)
// queues its members on their sets' ready lists. The kernel's set keeps the application's
// other fds and one notification eventfd per set, written only while a thread is blocked
// in the kernel on the set, so that a change wakes it.
//
// The semantics are the kernel's (fs/eventpoll.c): a member is queued when added or
// modified and on every change of its connection; a harvest reports the connection's
// current readiness masked by the member's events, ERR and HUP always included; a
// level-triggered member stays queued while it reports something, an edge-triggered one
// leaves the queue until the next change, and a one-shot member is disarmed until
// EPOLL_CTL_MOD re-arms it. EPOLLEXCLUSIVE is accepted: a change wakes every set that
// holds the socket, which epoll(7) allows ("one or more").
//
// Waits smcpre cannot see into (the set nested in another set or in poll/select, shared
// with another process) need the kernel to know the members: take_members_for_kernel()
// empties the set for good, and the caller registers each member's readiness mirror.
#pragma once

#include <sys/epoll.h>

#include <atomic>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/socket.h"

namespace smcpre::core {

class EpollSet;

// One SMC socket's registration in one set.
class EpollMember final : public ReadinessWatcher,
                          public std::enable_shared_from_this<EpollMember> {
 public:
  EpollMember(std::weak_ptr<EpollSet> set, int fd, std::shared_ptr<Socket> socket)
      : set_(std::move(set)), fd_(fd), socket_(std::move(socket)) {}

  void readiness_changed() noexcept override;
  void socket_released() noexcept override;

 private:
  friend class EpollSet;
  const std::weak_ptr<EpollSet> set_;
  const int fd_;
  const std::shared_ptr<Socket> socket_;
  // Under the set's mutex.
  epoll_event event_{};
  bool queued_ = false;
  bool disarmed_ = false;  // a one-shot member that has fired
  bool removed_ = false;
};

class EpollSet final : public std::enable_shared_from_this<EpollSet> {
 public:
  // For the set the application's `epfd` refers to: keeps a private duplicate of it (the
  // application may close or dup its own) and registers the notification eventfd in it.
  // Null with *error when either cannot be had.
  static std::shared_ptr<EpollSet> create(int epfd, std::string* error);
  ~EpollSet();
  EpollSet(const EpollSet&) = delete;
  EpollSet& operator=(const EpollSet&) = delete;

  // EPOLL_CTL_ADD, MOD and DEL for an SMC socket: 0, or the errno epoll_ctl would give,
  // or (add) kUseKernel: the set is retired or the socket not on SMC, and the caller
  // registers in the kernel. armed false: a one-shot registration that already fired.
  static constexpr int kUseKernel = -1;
  int add(int fd, const std::shared_ptr<Socket>& socket, const epoll_event& event,
          bool armed = true);
  int modify(int fd, const epoll_event& event);
  int remove(int fd);
  bool contains(int fd) const;

  // Reports up to `max` ready members into `out`; no syscall.
  int harvest(epoll_event* out, int max);
  // Whether something is queued (a harvest may still find nothing).
  bool any_queued() const;
  // Whether a wait whose harvest found members ready asks the kernel's set too: every
  // kKernelLookEvery such waits, so that busy SMC members do not starve the other fds.
  bool kernel_look_due() {
    return looks_.fetch_add(1, std::memory_order_relaxed) % kKernelLookEvery == 0;
  }
  static constexpr unsigned kKernelLookEvery = 8;

  // Around a blocking kernel wait on the set: from begin_blocking() on, a change writes
  // the eventfd. begin_blocking() returns false when a member is queued already: the
  // caller harvests instead of blocking.
  bool begin_blocking();
  void end_blocking();
  // Removes the notification events from the kernel's answer (draining the eventfd when
  // one was there) and returns how many events are left.
  int filter_notifications(epoll_event* events, int n);

  // Leaving user space: the members as registered now, for the caller to register in the
  // kernel; the set refuses members from now on (retired()) and its eventfd leaves the
  // kernel's set.
  struct Registration {
    int fd;
    std::shared_ptr<Socket> socket;
    epoll_event event;
    bool armed;
  };
  std::vector<Registration> take_members_for_kernel();
  bool retired() const { return retired_.load(std::memory_order_acquire); }
  // In a fork child (one thread): the set was moved to the kernel before the fork; its
  // private fds are the parent's business and close here.
  void forget_in_fork_child();
  // The private duplicate of the application's set (for registrations in the kernel).
  int kernel_fd() const { return epfd_; }

 private:
  EpollSet(int epfd, int notify_fd) : epfd_(epfd), notify_fd_(notify_fd) {}
  friend class EpollMember;
  void queue(const std::shared_ptr<EpollMember>& member);  // from a change, any thread
  void forget(const std::shared_ptr<EpollMember>& member);
  void queue_locked(const std::shared_ptr<EpollMember>& member);
  void unlist_locked(EpollMember& member);

  int epfd_;
  int notify_fd_;
  const uint64_t cookie_ = next_cookie();
  static uint64_t next_cookie();

  mutable std::mutex mutex_;
  std::unordered_map<int, std::shared_ptr<EpollMember>> members_;
  std::deque<std::shared_ptr<EpollMember>> ready_;
  int blocked_ = 0;        // threads in a blocking kernel wait on the set
  bool notified_ = false;  // the eventfd was written and not drained yet
  std::atomic<bool> retired_{false};
  std::atomic<unsigned> looks_{0};
};

}  // namespace smcpre::core
