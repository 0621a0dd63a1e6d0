// poll, ppoll, select, pselect and epoll_ctl over tracked sockets.
//
// If no tracked socket in a set is on SMC, the real call runs unchanged (an undecided
// server socket is polled as the kernel socket it still is). An SMC socket's kernel TCP socket says
// nothing about SMC data; its readiness mirror (an fd whose poll mask the engine keeps equal to
// what TCP would report) takes its place in poll/ppoll, select/pselect and epoll_ctl, and the
// kernel does the waiting. Only when a mirror cannot be had (fd limit) do poll and select
// fall back to Socket::poll_state() and the real call in a loop: first with timeout 0,
// then with short waits growing from 50us to 1ms, until something is ready or the
// caller's timeout expires.
//
// Signals: for the whole loop signals are blocked except inside the real waits,
// which run with the caller's mask (or ppoll/pselect's sigmask). A signal can thus only
// arrive inside a wait, which then returns EINTR exactly as one long wait would.

// The hooks define the very names glibc's headers may wrap: no _FORTIFY_SOURCE inline
// wrappers, and no _FILE_OFFSET_BITS=64 redirects (fcntl -> fcntl64, sendfile ->
// sendfile64), which would give two hooks one symbol. Both names are hooked anyway.
#undef _FORTIFY_SOURCE
#undef _FILE_OFFSET_BITS

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <time.h>

#include <algorithm>
#include <cstdint>
#include <new>
#include <vector>

#include "config/log.h"
#include "core/engine.h"
#include "preload/epoll_sets.h"
#include "preload/interpose.h"

namespace smcpre::preload {
namespace {

constexpr int64_t kNsPerSec = 1'000'000'000;
constexpr int64_t kFirstSliceNs = 50'000;
constexpr int64_t kMaxSliceNs = 1'000'000;
// Timeouts beyond this (~31 years) are treated as infinite, so no arithmetic overflows.
constexpr int64_t kInfiniteSec = 1'000'000'000;

int64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * kNsPerSec + ts.tv_nsec;
}

// The caller's timeout as an absolute CLOCK_MONOTONIC deadline.
class Deadline {
 public:
  static Deadline infinite() { return Deadline(-1); }
  static Deadline after(int64_t sec, int64_t nsec) {
    if (sec >= kInfiniteSec) return infinite();
    return Deadline(now_ns() + sec * kNsPerSec + nsec);
  }

  bool is_infinite() const { return at_ns_ < 0; }
  int64_t remaining_ns() const {
    if (is_infinite()) return INT64_MAX;
    return std::max<int64_t>(0, at_ns_ - now_ns());
  }
  bool expired() const { return remaining_ns() == 0; }

 private:
  explicit Deadline(int64_t at_ns) : at_ns_(at_ns) {}
  int64_t at_ns_;
};

// The wait between two looks at the SMC sockets: 0, then 50us doubling up to 1ms, never
// beyond the deadline; 0 as soon as something is known to be ready.
class Slices {
 public:
  timespec next(bool ready, const Deadline& deadline) {
    const int64_t ns = ready ? 0 : std::min(slice_ns_, deadline.remaining_ns());
    slice_ns_ = slice_ns_ == 0 ? kFirstSliceNs : std::min(slice_ns_ * 2, kMaxSliceNs);
    return timespec{static_cast<time_t>(ns / kNsPerSec), static_cast<long>(ns % kNsPerSec)};
  }

 private:
  int64_t slice_ns_ = 0;
};

// Blocks the asynchronous signals for its lifetime (glibc keeps its cancellation
// signal usable); wait_mask() is the mask for the real waits. Fault signals stay
// unblocked: should anything crash inside the loop, the application's crash handler
// must still run.
class SignalsBlocked {
 public:
  SignalsBlocked() {
    sigset_t async;
    sigfillset(&async);
    for (int fault : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS, SIGABRT}) {
      sigdelset(&async, fault);
    }
    blocked_ = pthread_sigmask(SIG_BLOCK, &async, &original_) == 0;
  }
  ~SignalsBlocked() {
    if (blocked_) pthread_sigmask(SIG_SETMASK, &original_, nullptr);
  }
  SignalsBlocked(const SignalsBlocked&) = delete;
  SignalsBlocked& operator=(const SignalsBlocked&) = delete;

  const sigset_t* wait_mask(const sigset_t* caller_mask) const {
    if (caller_mask != nullptr) return caller_mask;
    return blocked_ ? &original_ : nullptr;
  }

 private:
  sigset_t original_;
  bool blocked_ = false;
};

core::Readiness poll_state(core::Socket& s) {
  return engine_call("poll_state", core::Readiness{}, [&] { return s.poll_state(); });
}

// A tracked SMC socket in the caller's set: where it is and what it refers to.
struct SmcMember {
  size_t index;  // pollfd index, or fd for select
  std::shared_ptr<Tracked> tracked;
  int tracked_fd = -1;  // poll: the application's fd at that index
};

bool valid_timespec(const timespec* ts) {
  return ts == nullptr || (ts->tv_sec >= 0 && ts->tv_nsec >= 0 && ts->tv_nsec < kNsPerSec);
}

Deadline deadline_of(const timespec* ts) {
  return ts == nullptr ? Deadline::infinite() : Deadline::after(ts->tv_sec, ts->tv_nsec);
}

// --- poll ----------------------------------------------------------------------------

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
  if (mirror_fds.size() == members.size()) {
    smcpre::core::Engine::flush_stale_mirrors();
    for (size_t i = 0; i < members.size(); ++i) pfds[members[i].index].fd = mirror_fds[i];
    const int rc = unchanged();
    const int error = errno;
    for (const SmcMember& m : members) pfds[m.index].fd = static_cast<int>(m.tracked_fd);
    errno = error;
    return rc;
  }
  const int rc = poll_smc(pfds, nfds, members, deadline, sigmask);
  if (rc >= 0) saved.restore();
  return rc;
}

// --- select --------------------------------------------------------------------------

constexpr int kMaskBits = static_cast<int>(8 * sizeof(__fd_mask));

// An fd_set of any size (nfds may exceed FD_SETSIZE) as its array of words.
__fd_mask* words_of(fd_set* set) {
  return reinterpret_cast<__fd_mask*>(set);
}
__fd_mask bit_of(int fd) {
  return static_cast<__fd_mask>(1UL << (fd % kMaskBits));
}

// One of select's three sets: the caller's, what the kernel is asked (the caller's
// without the SMC members), and the kernel's answer of the current round.
class SelectSet {
 public:
  // False (errno ENOMEM) if the copies cannot be allocated.
  bool init(fd_set* caller, size_t words) {
    caller_ = caller;
    if (caller_ == nullptr) return true;
    try {
      request_.assign(words_of(caller_), words_of(caller_) + words);
      answer_.resize(words);
    } catch (const std::bad_alloc&) {
      errno = ENOMEM;
      return false;
    }
    return true;
  }
  bool wants(int fd) const {
    return caller_ != nullptr && (words_of(caller_)[fd / kMaskBits] & bit_of(fd)) != 0;
  }
  void hide(int fd) {
    if (caller_ != nullptr) request_[fd / kMaskBits] &= ~bit_of(fd);
  }
  // The set to hand to the kernel this round.
  fd_set* ask() {
    if (caller_ == nullptr) return nullptr;
    answer_ = request_;
    return reinterpret_cast<fd_set*>(answer_.data());
  }
  void add_answer(int fd) { answer_[fd / kMaskBits] |= bit_of(fd); }
  // Writes the answer into the caller's set; returns the number of bits set.
  int publish() {
    if (caller_ == nullptr) return 0;
    int count = 0;
    for (size_t w = 0; w < answer_.size(); ++w) {
      words_of(caller_)[w] = answer_[w];
      count += __builtin_popcountl(static_cast<unsigned long>(answer_[w]));
    }
    return count;
  }

 private:
  fd_set* caller_ = nullptr;
  std::vector<__fd_mask> request_;
  std::vector<__fd_mask> answer_;
};

// The SMC members among the fds the caller asks about.
bool scan_fdsets(int nfds, fd_set* rd, fd_set* wr, fd_set* ex, std::vector<SmcMember>* members) {
  const int limit = std::min(nfds, TrackedTable::kMaxFds);
  const size_t words = static_cast<size_t>((limit + kMaskBits - 1) / kMaskBits);
  for (size_t w = 0; w < words; ++w) {
    __fd_mask bits =
        (rd ? words_of(rd)[w] : 0) | (wr ? words_of(wr)[w] : 0) | (ex ? words_of(ex)[w] : 0);
    while (bits != 0) {
      const int b = __builtin_ctzl(static_cast<unsigned long>(bits));
      bits &= bits - 1;
      const int fd = static_cast<int>(w) * kMaskBits + b;
      if (fd >= limit) break;
      std::shared_ptr<Tracked> t = tracked_socket(fd);
      if (t == nullptr || !t->socket->is_smc()) continue;
      try {
        members->push_back(SmcMember{static_cast<size_t>(fd), std::move(t), fd});
      } catch (const std::bad_alloc&) {
        errno = ENOMEM;
        return false;
      }
    }
  }
  return true;
}

int select_smc(int nfds, fd_set* rd, fd_set* wr, fd_set* ex, const std::vector<SmcMember>& members,
               const Deadline& deadline, const sigset_t* sigmask) {
  const auto real_pselect = real().pselect;
  if (real_pselect == nullptr) return enosys();
  const size_t words = static_cast<size_t>((nfds + kMaskBits - 1) / kMaskBits);
  SelectSet sets[3];
  if (!sets[0].init(rd, words) || !sets[1].init(wr, words) || !sets[2].init(ex, words)) {
    return -1;
  }
  for (const SmcMember& m : members) {
    for (SelectSet& s : sets) s.hide(static_cast<int>(m.index));
  }
  std::vector<core::Readiness> states(members.size());
  SignalsBlocked blocked;
  Slices slices;
  for (;;) {
    // What the kernel's select derives from TCP's poll mask: readable on data, EOF,
    // hang-up or error; writable on space or error; no exceptional conditions (no OOB).
    bool smc_ready = false;
    for (size_t k = 0; k < members.size(); ++k) {
      states[k] = poll_state(*members[k].tracked->socket);
      const int fd = static_cast<int>(members[k].index);
      const bool in = states[k].readable || states[k].hangup || states[k].error;
      const bool out = states[k].writable || states[k].error;
      smc_ready = smc_ready || (in && sets[0].wants(fd)) || (out && sets[1].wants(fd));
    }
    timespec wait = slices.next(smc_ready, deadline);
    const int rc = real_pselect(nfds, sets[0].ask(), sets[1].ask(), sets[2].ask(), &wait,
                                blocked.wait_mask(sigmask));
    if (rc < 0) return -1;
    if (rc > 0 || smc_ready || deadline.expired()) {
      for (size_t k = 0; k < members.size(); ++k) {
        const int fd = static_cast<int>(members[k].index);
        if ((states[k].readable || states[k].hangup || states[k].error) && sets[0].wants(fd)) {
          sets[0].add_answer(fd);
        }
        if ((states[k].writable || states[k].error) && sets[1].wants(fd)) sets[1].add_answer(fd);
      }
      return sets[0].publish() + sets[1].publish() + sets[2].publish();
    }
  }
}

// select over readiness mirrors: copies of the sets, sized for the largest fd, in which
// each SMC socket's mirror stands in for it (in the read and write sets; TCP has no
// exceptional condition but urgent data, which SMC never carries), and one real pselect
// with the caller's deadline and signal mask. Returns -2 if some socket has no mirror.
int select_mirrored(int nfds, fd_set* rd, fd_set* wr, fd_set* ex,
                    const std::vector<SmcMember>& members, const Deadline& deadline,
                    const sigset_t* sigmask) {
  const auto real_pselect = real().pselect;
  if (real_pselect == nullptr) return enosys();
  std::vector<int> mirrors;
  int top = nfds - 1;
  try {
    mirrors.reserve(members.size());
    for (const SmcMember& m : members) {
      const int mirror = m.tracked->socket->readiness_fd();
      if (mirror < 0) return -2;
      mirrors.push_back(mirror);
      top = std::max(top, mirror);
    }
  } catch (const std::bad_alloc&) {
    errno = ENOMEM;
    return -1;
  }
  const size_t caller_words = static_cast<size_t>((nfds + kMaskBits - 1) / kMaskBits);
  const size_t words = static_cast<size_t>(top / kMaskBits + 1);
  fd_set* caller[3] = {rd, wr, ex};
  std::vector<__fd_mask> ask[3];
  try {
    for (int k = 0; k < 3; ++k) {
      if (caller[k] == nullptr) continue;
      ask[k].assign(words, 0);
      std::copy_n(words_of(caller[k]), caller_words, ask[k].begin());
      // Bits at nfds and above mean nothing to select(): they must not count here.
      if (nfds % kMaskBits != 0) {
        ask[k][caller_words - 1] &= static_cast<__fd_mask>((1UL << (nfds % kMaskBits)) - 1);
      }
    }
  } catch (const std::bad_alloc&) {
    errno = ENOMEM;
    return -1;
  }
  auto has = [&](int k, int fd) {
    return !ask[k].empty() && (ask[k][fd / kMaskBits] & bit_of(fd)) != 0;
  };
  auto set = [&](int k, int fd, bool on) {
    if (ask[k].empty()) return;
    if (on) {
      ask[k][fd / kMaskBits] |= bit_of(fd);
    } else {
      ask[k][fd / kMaskBits] &= ~bit_of(fd);
    }
  };
  std::vector<uint8_t> wanted(members.size());  // bit k: the caller asked set k
  for (size_t i = 0; i < members.size(); ++i) {
    const int fd = members[i].tracked_fd;
    for (int k = 0; k < 3; ++k) {
      if (has(k, fd)) wanted[i] |= static_cast<uint8_t>(1 << k);
      set(k, fd, false);
    }
    for (int k = 0; k < 2; ++k) {
      if (wanted[i] & (1 << k)) set(k, mirrors[i], true);
    }
  }
  timespec wait{};
  timespec* timeout = nullptr;
  if (!deadline.is_infinite()) {
    const int64_t ns = deadline.remaining_ns();
    wait = timespec{static_cast<time_t>(ns / kNsPerSec), static_cast<long>(ns % kNsPerSec)};
    timeout = &wait;
  }
  auto as_set = [&](int k) {
    return ask[k].empty() ? nullptr : reinterpret_cast<fd_set*>(ask[k].data());
  };
  smcpre::core::Engine::flush_stale_mirrors();
  const int rc = real_pselect(top + 1, as_set(0), as_set(1), as_set(2), timeout, sigmask);
  if (rc < 0) return -1;
  // The answer in the caller's terms: mirrors reported as their sockets, never themselves.
  std::vector<uint8_t> ready(members.size());
  for (size_t i = 0; i < members.size(); ++i) {
    for (int k = 0; k < 2; ++k) {
      if ((wanted[i] & (1 << k)) && has(k, mirrors[i])) ready[i] |= static_cast<uint8_t>(1 << k);
      set(k, mirrors[i], false);
    }
  }
  for (size_t i = 0; i < members.size(); ++i) {
    for (int k = 0; k < 2; ++k) set(k, members[i].tracked_fd, (ready[i] & (1 << k)) != 0);
  }
  int count = 0;
  for (int k = 0; k < 3; ++k) {
    if (caller[k] == nullptr) continue;
    std::copy_n(ask[k].begin(), caller_words, words_of(caller[k]));
    for (size_t w = 0; w < caller_words; ++w) {
      count += __builtin_popcountl(static_cast<unsigned long>(words_of(caller[k])[w]));
    }
  }
  return count;
}

// `time_left`: select()'s timeval, which Linux updates with the time not slept (the
// real call does so itself when it runs unchanged).
template <typename Unchanged>
int select_common(int nfds, fd_set* rd, fd_set* wr, fd_set* ex, const Deadline& deadline,
                  const sigset_t* sigmask, timeval* time_left, Unchanged&& unchanged) {
  if (nfds <= 0) return unchanged();  // nothing to look at, or EINVAL from the kernel
  SavedErrno saved;
  std::vector<SmcMember> members;
  if (!scan_fdsets(nfds, rd, wr, ex, &members)) return -1;
  saved.restore();
  if (members.empty()) return unchanged();
  int rc = select_mirrored(nfds, rd, wr, ex, members, deadline, sigmask);
  if (rc == -2) rc = select_smc(nfds, rd, wr, ex, members, deadline, sigmask);
  if (rc >= 0) saved.restore();
  if (time_left != nullptr && !deadline.is_infinite()) {
    const int64_t left_us = deadline.remaining_ns() / 1000;
    time_left->tv_sec = static_cast<time_t>(left_us / 1'000'000);
    time_left->tv_usec = static_cast<suseconds_t>(left_us % 1'000'000);
  }
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

SMCPRE_HOOK int select(int nfds, fd_set* rd, fd_set* wr, fd_set* ex, timeval* timeout) {
  const auto& r = real();
  if (r.select == nullptr) return enosys();
  auto unchanged = [&] { return r.select(nfds, rd, wr, ex, timeout); };
  if (!fds().any() || (timeout != nullptr && (timeout->tv_sec < 0 || timeout->tv_usec < 0))) {
    return unchanged();
  }
  const Deadline deadline = timeout == nullptr
                                ? Deadline::infinite()
                                : Deadline::after(timeout->tv_sec + timeout->tv_usec / 1'000'000,
                                                  int64_t{timeout->tv_usec % 1'000'000} * 1000);
  return select_common(nfds, rd, wr, ex, deadline, nullptr, timeout, unchanged);
}

SMCPRE_HOOK int pselect(int nfds, fd_set* rd, fd_set* wr, fd_set* ex, const timespec* timeout,
                        const sigset_t* sigmask) {
  const auto& r = real();
  if (r.pselect == nullptr) return enosys();
  auto unchanged = [&] { return r.pselect(nfds, rd, wr, ex, timeout, sigmask); };
  if (!fds().any() || !valid_timespec(timeout)) return unchanged();
  return select_common(nfds, rd, wr, ex, deadline_of(timeout), sigmask, nullptr, unchanged);
}

// An SMC socket takes part in epoll through its readiness mirror: the mirror is what
// gets added, modified or deleted, with the application's own event mask and data, so
// that the kernel's epoll (level/edge, ONESHOT, several sets and threads) works unchanged.
// An undecided server socket is registered as the kernel socket it still is (the
// Proposal makes it readable); the registration is recorded and moves to the mirror when
// the application's read turns the socket SMC.
SMCPRE_HOOK int epoll_ctl(int epfd, int op, int fd, epoll_event* event) noexcept {
  const auto& r = real();
  if (r.epoll_ctl == nullptr) return enosys();
  std::shared_ptr<Tracked> t = fds().any() ? tracked_socket(fd) : nullptr;
  if (t == nullptr) return r.epoll_ctl(epfd, op, fd, event);
  if (op != EPOLL_CTL_DEL) epoll_sets().mark(epfd);
  SavedErrno saved;
  // Held throughout: a call on the same socket from another thread (a re-arm right after
  // the handshake another thread's read completed) waits until this registration is
  // recorded, so it finds it either on the kernel socket or moved to the mirror.
  std::unique_lock lock(t->epoll_mutex);
  settle_epoll_registrations_locked(*t, fd);
  if (t->socket->is_smc()) {
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
