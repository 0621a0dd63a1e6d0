// epoll over tracked sockets. An SMC socket's registration lives in user memory
// (core/epoll_set.h, preload/user_epoll.cpp) when smcpre sees every wait on the set:
// epoll_ctl then makes no syscall, and epoll_wait harvests the SMC members from user
// memory and asks the kernel only for the other fds, and to block. Elsewhere (a nested
// set, a set shared with another process) the socket is registered as its readiness
// mirror, and the kernel answers for it.
//
// Either way a wait on a set with SMC members reaps the links in the calling thread and
// polls adaptively before it blocks (core::Engine::wait_ready), so a busy event loop gets
// its data without a wake-up and a thread hop per message. Sets without SMC sockets go
// straight to the kernel.
#include <pthread.h>
#include <sys/epoll.h>
#include <time.h>

#include <algorithm>
#include <climits>
#include <memory>
#include <mutex>
#include <new>

#include "core/engine.h"
#include "preload/epoll_sets.h"
#include "preload/interpose.h"
#include "preload/poll_common.h"
#include "preload/preconnect_epoll.h"

namespace smcpre::preload {

FdBits& epoll_sets() noexcept {
  static constinit FdBits sets;
  return sets;
}

FdBits& epoll_instances() noexcept {
  static constinit FdBits instances;
  return instances;
}

FdBits& shared_epoll_sets() noexcept {
  static constinit FdBits shared;
  return shared;
}

void copy_epoll_bits(int oldfd, int newfd) noexcept {
  epoll_sets().copy(oldfd, newfd);
  epoll_instances().copy(oldfd, newfd);
  shared_epoll_sets().copy(oldfd, newfd);
}

void forget_epoll_bits(int fd) noexcept {
  epoll_sets().forget(fd);
  epoll_instances().forget(fd);
  shared_epoll_sets().forget(fd);
}

void note_fork_for_epoll_sets() noexcept {
  shared_epoll_sets().merge(epoll_instances());
}

// A new epoll set: known as one, and, should the process fork, known as shared. The fork
// handler is the epoll sets' own, not the engine's: a program that makes an epoll set
// but no SMC socket must not wake the engine at fork or exit.
// Returns epfd (the real call's result; -1 is passed through).
int note_epoll_instance(int epfd) noexcept {
  if (epfd < 0) return epfd;
  epoll_instances().mark(epfd);
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  SavedErrno saved;
  // Before the fork, the user-space members move to the kernel: the child shares the sets.
  pthread_once(&once, [] {
    pthread_atfork(move_all_user_epoll_sets_to_kernel, note_fork_for_epoll_sets,
                   note_fork_for_epoll_sets);
  });
  saved.restore();
  return epfd;
}

void note_nested_wait(int fd) noexcept {
  if (!epoll_instances().test(fd)) return;
  core::Engine::mirrors_watched_unseen();
  move_user_epoll_set_to_kernel(fd);
}

namespace {

// An epoll set as the engine's wait loop sees it (core/readiness_set.h). With user-space
// members, their events come first, harvested from user memory, and the kernel's fill
// the rest of the array; a blocking wait arms the set's notification first. Without
// (the SMC members are mirrors), the kernel answers for everything, and the loop asks it
// after each pass that reaped something.
class EpollWait final : public core::ReadinessSet {
 public:
  EpollWait(int epfd, std::shared_ptr<core::EpollSet> user, epoll_event* events, int maxevents,
            const sigset_t* sigmask)
      : epfd_(epfd),
        user_(std::move(user)),
        events_(events),
        maxevents_(maxevents),
        sigmask_(sigmask) {}

  int smc_ready() override {
    if (user_ == nullptr) return 0;
    const int n = user_->harvest(events_ + filled_, maxevents_ - filled_);
    filled_ += n;
    return n;
  }
  int kernel_wait(int timeout_ms, bool block) override {
    if (maxevents_ > 0 && filled_ >= maxevents_) return 0;
    const bool arm = block && user_ != nullptr;
    // Something queued already: the harvest that follows finds it.
    if (arm && !user_->begin_blocking()) {
      user_->end_blocking();
      return 0;
    }
    int k = real().epoll_pwait(epfd_, events_ + filled_, maxevents_ - filled_, timeout_ms,
                               signals_.wait_mask(sigmask_));
    if (arm) user_->end_blocking();
    // Harvested events are answered: their one-shot and edge state is spent already.
    if (k < 0 && filled_ > 0) return 0;
    if (k > 0 && user_ != nullptr) k = user_->filter_notifications(events_ + filled_, k);
    if (k > 0) filled_ += k;
    return k;
  }
  bool has_kernel_fds() const override { return true; }
  bool smc_through_kernel() const override { return user_ == nullptr; }
  bool kernel_look_due() override { return user_ == nullptr || user_->kernel_look_due(); }
  void before_polling() override { signals_.block(); }

 private:
  int epfd_;
  std::shared_ptr<core::EpollSet> user_;
  epoll_event* events_;
  int maxevents_;
  int filled_ = 0;  // events_ entries already answered (user members first)
  const sigset_t* sigmask_;
  SignalsWhilePolling signals_;
};

// deadline_ns: CLOCK_MONOTONIC, -1 = none, 0 = do not block (the links are still reaped
// once: a loop that only ever polls with timeout 0 sees SMC data without a thread hop).
int epoll_wait_common(int epfd, epoll_event* events, int maxevents, const sigset_t* sigmask,
                      int64_t deadline_ns) {
  SavedErrno saved;
  EpollWait wait(epfd, maxevents > 0 ? user_epoll_set(epfd, false) : nullptr, events, maxevents,
                 sigmask);
  const int n = core::Engine::wait_ready(deadline_ns, wait);
  if (n >= 0) saved.restore();
  return n;
}

int64_t deadline_of_ms(int timeout_ms) {
  if (timeout_ms < 0) return -1;
  if (timeout_ms == 0) return 0;
  return core::now_ns() + int64_t{timeout_ms} * 1'000'000;
}

}  // namespace

}  // namespace smcpre::preload

using namespace smcpre::preload;  // NOLINT: the hooks below are C symbols

SMCPRE_HOOK int epoll_create(int size) noexcept {
  const auto& r = real();
  if (r.epoll_create == nullptr) return enosys();
  return note_epoll_instance(r.epoll_create(size));
}

SMCPRE_HOOK int epoll_create1(int flags) noexcept {
  const auto& r = real();
  if (r.epoll_create1 == nullptr) return enosys();
  return note_epoll_instance(r.epoll_create1(flags));
}

SMCPRE_HOOK int epoll_wait(int epfd, epoll_event* events, int maxevents, int timeout) {
  const auto& r = real();
  if (r.epoll_pwait == nullptr) return enosys();
  if (!epoll_sets().test(epfd)) {
    return r.epoll_pwait(epfd, events, maxevents, timeout, nullptr);
  }
  return epoll_wait_common(epfd, events, maxevents, nullptr, deadline_of_ms(timeout));
}

SMCPRE_HOOK int epoll_pwait(int epfd, epoll_event* events, int maxevents, int timeout,
                            const sigset_t* sigmask) {
  const auto& r = real();
  if (r.epoll_pwait == nullptr) return enosys();
  if (!epoll_sets().test(epfd)) {
    return r.epoll_pwait(epfd, events, maxevents, timeout, sigmask);
  }
  return epoll_wait_common(epfd, events, maxevents, sigmask, deadline_of_ms(timeout));
}

SMCPRE_HOOK int epoll_pwait2(int epfd, epoll_event* events, int maxevents, const timespec* timeout,
                             const sigset_t* sigmask) {
  const auto& r = real();
  if (r.epoll_pwait2 == nullptr) return enosys();
  const bool valid = timeout == nullptr || (timeout->tv_sec >= 0 && timeout->tv_nsec >= 0 &&
                                            timeout->tv_nsec < 1'000'000'000);
  if (!epoll_sets().test(epfd) || !valid) {
    return r.epoll_pwait2(epfd, events, maxevents, timeout, sigmask);
  }
  // Millisecond steps inside (epoll_pwait): the kernel rounds a nanosecond timeout up to
  // its timer slack anyway, and the deadline below keeps the total exact.
  int64_t deadline_ns = -1;
  if (timeout != nullptr && timeout->tv_sec == 0 && timeout->tv_nsec == 0) {
    deadline_ns = 0;
  } else if (timeout != nullptr) {
    const int64_t ns = int64_t{timeout->tv_sec} * 1'000'000'000 + timeout->tv_nsec;
    deadline_ns = smcpre::core::now_ns() + std::min<int64_t>(ns, INT64_MAX / 2);
  }
  return epoll_wait_common(epfd, events, maxevents, sigmask, deadline_ns);
}

// An SMC socket takes part in epoll through the set's user-space registrations
// (core/epoll_set.h) when the set has them, else through its readiness mirror: the mirror
// is what gets added, modified or deleted, with the application's own event mask and
// data, so that the kernel's epoll (level/edge, ONESHOT, several sets and threads) works
// unchanged. An undecided server socket is registered as the kernel socket it still is
// (the Proposal makes it readable); the registration is recorded and moves to the set's
// user space or to the mirror when the application's read turns the socket SMC.
SMCPRE_HOOK int epoll_ctl(int epfd, int op, int fd, epoll_event* event) noexcept {
  const auto& r = real();
  if (r.epoll_ctl == nullptr) return enosys();
  std::shared_ptr<Tracked> t = fds().any() ? tracked_socket(fd) : nullptr;
  if (t == nullptr) {
    const int rc = r.epoll_ctl(epfd, op, fd, event);
    if (rc == 0) {
      SavedErrno saved;
      if (op == EPOLL_CTL_ADD) note_nested_wait(fd);
      note_preconnect_registration(epfd, op, fd, event);
      saved.restore();
    }
    return rc;
  }
  if (op != EPOLL_CTL_DEL) {
    epoll_sets().mark(epfd);
    // A set another process may wait on: its mirrors must not wait for our waits.
    if (shared_epoll_sets().test(epfd)) smcpre::core::Engine::mirrors_watched_unseen();
  }
  SavedErrno saved;
  // Held throughout: a call on the same socket from another thread (a re-arm right after
  // the handshake another thread's read completed) waits until this registration is
  // recorded, so it finds it either on the kernel socket or moved to SMC.
  std::unique_lock lock(t->epoll_mutex);
  settle_epoll_registrations_locked(*t, fd);
  if (t->socket->is_smc()) {
    if (op != EPOLL_CTL_ADD && op != EPOLL_CTL_MOD && op != EPOLL_CTL_DEL) {
      errno = EINVAL;
      return -1;
    }
    if (op != EPOLL_CTL_DEL && event == nullptr) {
      errno = EFAULT;
      return -1;
    }
    if (auto set = user_epoll_set(epfd, op == EPOLL_CTL_ADD)) {
      const int rc = engine_call("epoll_ctl", int{ENOMEM}, [&] {
        switch (op) {
          case EPOLL_CTL_ADD:
            return set->add(fd, t->socket, *event);
          case EPOLL_CTL_MOD:
            return set->modify(fd, *event);
          default:
            return set->remove(fd);
        }
      });
      if (rc == 0) {
        saved.restore();
        return 0;
      }
      // ENOENT: a registration from before the set kept members in user memory may be
      // in the kernel (as the mirror); kUseKernel: the set or socket went meanwhile.
      if (rc != ENOENT && rc != smcpre::core::EpollSet::kUseKernel) {
        errno = rc;
        return -1;
      }
    }
    if (op == EPOLL_CTL_ADD && user_epoll_set(epfd, false) != nullptr) {
      // The set keeps its SMC members in user memory but this one could not join them
      // (its socket cannot be watched there any more): the others go to the kernel too,
      // so that the set's SMC members are all of one kind.
      move_user_epoll_set_to_kernel(epfd);
    }
    if (event != nullptr && (event->events & EPOLLET)) t->socket->want_readiness_edges();
    const int mirror = t->socket->readiness_fd();
    if (mirror < 0) {
      errno = ENOMEM;  // as the kernel says when it cannot watch one more fd
      return -1;
    }
    // ADD and MOD look at the mirror's state at once: it must not be stale.
    if (op != EPOLL_CTL_DEL) smcpre::core::Engine::flush_stale_mirrors();
    saved.restore();
    return r.epoll_ctl(epfd, op, mirror, event);
  }
  saved.restore();
  const int rc = r.epoll_ctl(epfd, op, fd, event);
  if (rc != 0) return rc;
  // Recorded even when another thread decided the socket during the call above (its
  // Proposal may be what this registration reported to it at once): settled below.
  auto& regs = t->epoll_registrations;
  auto it = std::find_if(regs.begin(), regs.end(),
                         [&](const Tracked::EpollRegistration& reg) { return reg.epfd == epfd; });
  if (op == EPOLL_CTL_DEL) {
    if (it != regs.end()) regs.erase(it);
  } else if (event != nullptr) {
    try {
      if (it != regs.end()) {
        it->event = *event;
      } else {
        regs.push_back({epfd, *event});
      }
    } catch (const std::bad_alloc&) {
      r.epoll_ctl(epfd, EPOLL_CTL_DEL, fd, nullptr);
      errno = ENOMEM;
      return -1;
    }
  }
  t->epoll_pending.store(!regs.empty(), std::memory_order_seq_cst);
  // Either the deciding thread's settle (after its decision) sees the record above, or
  // this look sees the decision (both sequentially consistent): a registration made on
  // the kernel socket never stays there once the socket is SMC.
  settle_epoll_registrations_locked(*t, fd);
  return rc;
}
