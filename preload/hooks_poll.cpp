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
#include "preload/interpose.h"
#include "preload/poll_common.h"

namespace smcpre::preload {
namespace {

short poll_revents(short events, const core::Readiness& st) {
  short revents = 0;
  if (st.readable) revents |= events & (POLLIN | POLLRDNORM);
  if (st.writable) revents |= events & (POLLOUT | POLLWRNORM);
  if (st.hangup) revents |= POLLHUP | (events & POLLRDHUP);
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
  ~HiddenFds() { show(); }
  HiddenFds(const HiddenFds&) = delete;
  HiddenFds& operator=(const HiddenFds&) = delete;

  void show() {
    if (shown_) return;
    for (const SmcMember& m : members_) pfds_[m.index].fd = ~pfds_[m.index].fd;
    shown_ = true;
  }

 private:
  pollfd* pfds_;
  const std::vector<SmcMember>& members_;
  bool shown_ = false;
};

// The kernel's poll over the set in which mirrors stand in for the SMC sockets, for
// core::Engine::wait_readiness.
struct PollCall {
  pollfd* pfds;
  nfds_t nfds;
  const sigset_t* sigmask;
};

int kernel_poll(void* ctx, int timeout_ms) {
  const auto* call = static_cast<const PollCall*>(ctx);
  const timespec ts = timespec_of_ms(timeout_ms);
  return real().ppoll(call->pfds, call->nfds, timeout_ms < 0 ? nullptr : &ts, call->sigmask);
}

int poll_smc(pollfd* pfds, nfds_t nfds, const std::vector<SmcMember>& members,
             const Deadline& deadline, const sigset_t* sigmask) {
  const auto real_ppoll = real().ppoll;
  if (real_ppoll == nullptr) return enosys();
  std::vector<short> smc_revents(members.size());
  SignalsBlocked blocked;
  HiddenFds hidden(pfds, members);
  Slices slices;
  for (;;) {
    bool smc_ready = false;
    for (size_t k = 0; k < members.size(); ++k) {
      const pollfd& p = pfds[members[k].index];
      smc_revents[k] = poll_revents(p.events, poll_state(*members[k].tracked->socket));
      smc_ready = smc_ready || smc_revents[k] != 0;
    }
    timespec wait = slices.next(smc_ready, deadline);
    const int rc = real_ppoll(pfds, nfds, &wait, blocked.wait_mask(sigmask));
    if (rc < 0) return -1;
    if (rc > 0 || smc_ready || deadline.expired()) {
      hidden.show();
      for (size_t k = 0; k < members.size(); ++k) pfds[members[k].index].revents = smc_revents[k];
      return static_cast<int>(
          std::count_if(pfds, pfds + nfds, [](const pollfd& p) { return p.revents != 0; }));
    }
  }
}

// The SMC members of a poll set.
// False (errno ENOMEM) only if the list cannot be allocated.
bool scan_pollfds(const pollfd* pfds, nfds_t nfds, std::vector<SmcMember>* members) {
  for (nfds_t i = 0; i < nfds; ++i) {
    const int fd = pfds[i].fd;
    if (fd < 0) continue;
    std::shared_ptr<Tracked> t = tracked_socket(fd);
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
  // Each SMC socket's readiness mirror stands in for it, and the kernel does the whole
  // wait: exact poll semantics, no busy loop. Only if a mirror cannot be had (fd limit)
  // does the polling loop below serve.
  std::vector<int> mirror_fds;
  try {
    mirror_fds.reserve(members.size());
  } catch (const std::bad_alloc&) {
    errno = ENOMEM;
    return -1;
  }
  for (const SmcMember& m : members) {
    const int mirror = m.tracked->socket->readiness_fd();
    if (mirror < 0) break;
    mirror_fds.push_back(mirror);
  }
  saved.restore();
  if (mirror_fds.size() == members.size() && real().ppoll != nullptr) {
    for (size_t i = 0; i < members.size(); ++i) pfds[members[i].index].fd = mirror_fds[i];
    PollCall call{pfds, nfds, sigmask};
    const int rc = core::Engine::wait_readiness(deadline.engine_ns(), kernel_poll, &call);
    const int error = errno;
    for (const SmcMember& m : members) pfds[m.index].fd = static_cast<int>(m.tracked_fd);
    errno = error;
    return rc;
  }
  const int rc = poll_smc(pfds, nfds, members, deadline, sigmask);
  if (rc >= 0) saved.restore();
  return rc;
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
