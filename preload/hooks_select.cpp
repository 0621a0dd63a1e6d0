// select and pselect over tracked sockets: an SMC socket's readiness mirror stands in for
// it in copies of the caller's fd_sets, or, without one, the polling loop of poll_common.h
// serves.

// The hooks define the very names glibc's headers may wrap: no _FORTIFY_SOURCE inline
// wrappers, and no _FILE_OFFSET_BITS=64 redirects (fcntl -> fcntl64, sendfile ->
// sendfile64), which would give two hooks one symbol. Both names are hooked anyway.
#undef _FORTIFY_SOURCE
#undef _FILE_OFFSET_BITS

#include <signal.h>
#include <sys/select.h>
#include <sys/time.h>
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

// The kernel's pselect over the sets in which mirrors stand in for the SMC sockets, for
// core::Engine::wait_readiness. pselect overwrites its sets, so each call starts from the
// sets as asked.
struct SelectCall {
  int nfds;
  std::vector<__fd_mask>* ask;          // [3], what pselect is given and overwrites
  const std::vector<__fd_mask>* asked;  // [3], what was asked
  const sigset_t* sigmask;
};

int kernel_select(void* ctx, int timeout_ms) {
  const auto* call = static_cast<const SelectCall*>(ctx);
  fd_set* sets[3] = {};
  for (int k = 0; k < 3; ++k) {
    if (call->asked[k].empty()) continue;
    std::copy(call->asked[k].begin(), call->asked[k].end(), call->ask[k].begin());
    sets[k] = reinterpret_cast<fd_set*>(call->ask[k].data());
  }
  const timespec ts = timespec_of_ms(timeout_ms);
  return real().pselect(call->nfds, sets[0], sets[1], sets[2], timeout_ms < 0 ? nullptr : &ts,
                        call->sigmask);
}

// select over readiness mirrors: copies of the sets, sized for the largest fd, in which
// each SMC socket's mirror stands in for it (in the read and write sets; TCP has no
// exceptional condition but urgent data, which SMC never carries), waited on through the
// engine's readiness wait with the caller's deadline and signal mask. Returns -2 if some
// socket has no mirror.
int select_mirrored(int nfds, fd_set* rd, fd_set* wr, fd_set* ex,
                    const std::vector<SmcMember>& members, const Deadline& deadline,
                    const sigset_t* sigmask) {
  if (real().pselect == nullptr) return enosys();
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
  std::vector<__fd_mask> asked[3];
  try {
    for (int k = 0; k < 3; ++k) asked[k] = ask[k];
  } catch (const std::bad_alloc&) {
    errno = ENOMEM;
    return -1;
  }
  SelectCall call{top + 1, ask, asked, sigmask};
  const int rc = core::Engine::wait_readiness(deadline.engine_ns(), kernel_select, &call);
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
}  // namespace smcpre::preload

using namespace smcpre::preload;  // NOLINT: the hooks below are C symbols

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
