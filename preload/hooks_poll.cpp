// poll and ppoll over tracked sockets: an SMC socket's readiness mirror stands in for it
// in the caller's pollfd array, or, without one, the polling loop of poll_common.h serves.

// The hooks define the very names glibc's headers may wrap: no _FORTIFY_SOURCE inline
// wrappers, and no _FILE_OFFSET_BITS=64 redirects (fcntl -> fcntl64, sendfile ->
// sendfile64), which would give two hooks one symbol. Both names are hooked anyway.
#undef _FORTIFY_SOURCE
#undef _FILE_OFFSET_BITS

#include <poll.h>
#include <signal.h>
#include <time.h>

#include <algorithm>
#include <cstdint>
#include <new>
#include <vector>

#include "core/engine.h"
#include "preload/epoll_sets.h"
#include "preload/interpose.h"
#include "preload/poll_common.h"

namespace smcpre::preload {
namespace {

short poll_revents(short events, const core::Readiness& st) {
  short revents = 0;
  if (st.readable) revents |= events & (POLLIN | POLLRDNORM);
  if (st.writable) revents |= events & (POLLOUT | POLLWRNORM);
  if (st.rdhup) revents |= events & POLLRDHUP;
  if (st.hangup) revents |= POLLHUP;
  if (st.error) revents |= POLLERR;
  return revents;
}

// Hides the SMC members from the kernel (a negative fd is ignored by poll, its revents
// zeroed) and puts them back on destruction, also when cancellation unwinds.
class HiddenFds {
 public:
  HiddenFds(pollfd* pfds, const std::vector<SmcMember>& members) : pfds_(pfds), members_(members) {
    for (const SmcMember& m : members_) pfds_[m.index].fd = ~pfds_[m.index].fd;
  }
  ~HiddenFds() {
    for (const SmcMember& m : members_) pfds_[m.index].fd = ~pfds_[m.index].fd;
  }
  HiddenFds(const HiddenFds&) = delete;
  HiddenFds& operator=(const HiddenFds&) = delete;

 private:
  pollfd* pfds_;
  const std::vector<SmcMember>& members_;
};

// Puts each SMC member's readiness mirror in its place for the kernel's blocking wait,
// and the application's fds back on destruction.
class MirrorsInPlace {
 public:
  MirrorsInPlace(pollfd* pfds, const std::vector<SmcMember>& members,
                 const std::vector<int>& mirrors)
      : pfds_(pfds), members_(members) {
    for (size_t k = 0; k < members_.size(); ++k) pfds_[members_[k].index].fd = mirrors[k];
  }
  ~MirrorsInPlace() {
    for (const SmcMember& m : members_) pfds_[m.index].fd = m.tracked_fd;
  }
  MirrorsInPlace(const MirrorsInPlace&) = delete;
  MirrorsInPlace& operator=(const MirrorsInPlace&) = delete;

 private:
  pollfd* pfds_;
  const std::vector<SmcMember>& members_;
};

// The caller's pollfd array as the engine's wait loop sees it (core/readiness_set.h).
class PollWait final : public core::ReadinessSet {
 public:
  PollWait(pollfd* pfds, nfds_t nfds, const std::vector<SmcMember>& members,
           const sigset_t* sigmask)
      : pfds_(pfds), nfds_(nfds), members_(members), sigmask_(sigmask) {}

  // False (errno ENOMEM) if the lists cannot be allocated.
  bool init() {
    try {
      smc_revents_.assign(members_.size(), 0);
      mirrors_.reserve(members_.size());
    } catch (const std::bad_alloc&) {
      errno = ENOMEM;
      return false;
    }
    for (const SmcMember& m : members_) {
      const int mirror = m.tracked->socket->readiness_fd();
      if (mirror < 0) break;
      mirrors_.push_back(mirror);
    }
    // Until the kernel answers, nothing of its is ready.
    for (nfds_t i = 0; i < nfds_; ++i) pfds_[i].revents = 0;
    has_kernel_fds_ = kernel_fd_count() > 0;
    return true;
  }

  int smc_ready() override {
    int ready = 0;
    for (size_t k = 0; k < members_.size(); ++k) {
      const pollfd& p = pfds_[members_[k].index];
      smc_revents_[k] = poll_revents(p.events, poll_state(*members_[k].tracked->socket));
      ready += smc_revents_[k] != 0;
    }
    return ready;
  }

  int kernel_wait(int timeout_ms, bool block) override {
    const auto real_ppoll = real().ppoll;
    timespec storage;
    int rc;
    if (block && mirrors_.size() == members_.size()) {
      MirrorsInPlace in_place(pfds_, members_, mirrors_);
      rc = real_ppoll(pfds_, nfds_, wait_timeout(timeout_ms, -1, &storage),
                      signals_.wait_mask(sigmask_));
      if (rc > 0) {
        // The mirrors' answers are not the caller's: smc_ready() gives those.
        for (const SmcMember& m : members_) rc -= pfds_[m.index].revents != 0;
        for (const SmcMember& m : members_) pfds_[m.index].revents = 0;
      }
    } else {
      HiddenFds hidden(pfds_, members_);
      const int64_t cap = block ? slices_.next_ns() : 0;
      rc = real_ppoll(pfds_, nfds_, wait_timeout(timeout_ms, cap, &storage),
                      signals_.wait_mask(sigmask_));
    }
    return rc;
  }

  bool has_kernel_fds() const override { return has_kernel_fds_; }
  void before_polling() override { signals_.block(); }

  // The answer in the caller's array; the number of entries with events.
  int finish() {
    for (size_t k = 0; k < members_.size(); ++k) pfds_[members_[k].index].revents = smc_revents_[k];
    return static_cast<int>(
        std::count_if(pfds_, pfds_ + nfds_, [](const pollfd& p) { return p.revents != 0; }));
  }

 private:
  // Entries the kernel answers for: non-negative fds that are not SMC members.
  size_t kernel_fd_count() const {
    const auto valid =
        std::count_if(pfds_, pfds_ + nfds_, [](const pollfd& p) { return p.fd >= 0; });
    return static_cast<size_t>(valid) - members_.size();
  }

  pollfd* pfds_;
  nfds_t nfds_;
  const std::vector<SmcMember>& members_;
  const sigset_t* sigmask_;
  std::vector<short> smc_revents_;
  std::vector<int> mirrors_;
  bool has_kernel_fds_ = false;
  SliceCap slices_;
  SignalsWhilePolling signals_;
};

// The SMC members of a poll set.
// False (errno ENOMEM) only if the list cannot be allocated.
bool scan_pollfds(const pollfd* pfds, nfds_t nfds, std::vector<SmcMember>* members) {
  for (nfds_t i = 0; i < nfds; ++i) {
    const int fd = pfds[i].fd;
    if (fd < 0) continue;
    std::shared_ptr<Tracked> t = tracked_socket(fd);
    if (t == nullptr) note_nested_wait(fd);
    if (t == nullptr || !t->socket->is_smc()) continue;
    try {
      members->push_back(SmcMember{i, std::move(t), fd});
    } catch (const std::bad_alloc&) {
      errno = ENOMEM;
      return false;
    }
  }
  return true;
}

template <typename Unchanged>
int poll_common(pollfd* pfds, nfds_t nfds, const Deadline& deadline, const sigset_t* sigmask,
                Unchanged&& unchanged) {
  if (pfds == nullptr) return unchanged();  // the kernel reports EFAULT (or 0 for nfds 0)
  SavedErrno saved;
  std::vector<SmcMember> members;
  if (!scan_pollfds(pfds, nfds, &members)) return -1;
  saved.restore();
  if (members.empty()) return unchanged();
  if (real().ppoll == nullptr) return enosys();
  PollWait wait(pfds, nfds, members, sigmask);
  if (!wait.init()) return -1;
  saved.restore();
  const int rc = core::Engine::wait_ready(deadline.engine_ns(), wait);
  if (rc < 0) return -1;
  saved.restore();
  return wait.finish();
}

}  // namespace

int poll_impl(pollfd* pfds, nfds_t nfds, int timeout_ms) {
  const auto& r = real();
  if (r.poll == nullptr) return enosys();
  if (!fds().any()) [[likely]] {
    return r.poll(pfds, nfds, timeout_ms);
  }
  const Deadline deadline =
      timeout_ms < 0 ? Deadline::infinite()
                     : Deadline::after(timeout_ms / 1000, int64_t{timeout_ms % 1000} * 1'000'000);
  return poll_common(pfds, nfds, deadline, nullptr, [&] { return r.poll(pfds, nfds, timeout_ms); });
}

int ppoll_impl(pollfd* pfds, nfds_t nfds, const timespec* timeout, const sigset_t* sigmask) {
  const auto& r = real();
  if (r.ppoll == nullptr) return enosys();
  auto unchanged = [&] { return r.ppoll(pfds, nfds, timeout, sigmask); };
  if (!fds().any() || !valid_timespec(timeout)) return unchanged();
  return poll_common(pfds, nfds, deadline_of(timeout), sigmask, unchanged);
}

}  // namespace smcpre::preload

using namespace smcpre::preload;  // NOLINT: the hooks below are C symbols

SMCPRE_HOOK int poll(pollfd* pfds, nfds_t nfds, int timeout) {
  return poll_impl(pfds, nfds, timeout);
}

SMCPRE_HOOK int ppoll(pollfd* pfds, nfds_t nfds, const timespec* timeout, const sigset_t* sigmask) {
  return ppoll_impl(pfds, nfds, timeout, sigmask);
}
