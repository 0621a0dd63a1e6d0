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
#include "preload/epoll_sets.h"
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
      if (t == nullptr) note_nested_wait(fd);
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

// The caller's fd_sets as the engine's wait loop sees it (core/readiness_set.h). The
// kernel gets copies: without the SMC members for a look, with their readiness mirrors in
// their place (in the read and write sets: TCP has no exceptional condition but urgent
// data, which SMC never carries) for the blocking wait.
class SelectWait final : public core::ReadinessSet {
 public:
  SelectWait(int nfds, fd_set* rd, fd_set* wr, fd_set* ex, const std::vector<SmcMember>& members,
             const sigset_t* sigmask)
      : nfds_(nfds), caller_{rd, wr, ex}, members_(members), sigmask_(sigmask) {}

  // False (errno ENOMEM) if the copies cannot be allocated.
  bool init() {
    caller_words_ = static_cast<size_t>((nfds_ + kMaskBits - 1) / kMaskBits);
    try {
      wanted_.assign(members_.size(), 0);
      ready_.assign(members_.size(), 0);
      mirrors_.reserve(members_.size());
      int top = nfds_ - 1;
      for (const SmcMember& m : members_) {
        const int mirror = m.tracked->socket->readiness_fd();
        if (mirror < 0) break;
        mirrors_.push_back(mirror);
        top = std::max(top, mirror);
      }
      top_ = top;
      const size_t words = static_cast<size_t>(top / kMaskBits + 1);
      for (int k = 0; k < 3; ++k) {
        if (caller_[k] == nullptr) continue;
        asked_[k].assign(words, 0);
        answer_[k].assign(words, 0);
        std::copy_n(words_of(caller_[k]), caller_words_, asked_[k].begin());
        // Bits at nfds and above mean nothing to select(): they must not count here.
        if (nfds_ % kMaskBits != 0) {
          asked_[k][caller_words_ - 1] &= static_cast<__fd_mask>((1UL << (nfds_ % kMaskBits)) - 1);
        }
      }
    } catch (const std::bad_alloc&) {
      errno = ENOMEM;
      return false;
    }
    for (size_t i = 0; i < members_.size(); ++i) {
      const int fd = members_[i].tracked_fd;
      for (int k = 0; k < 3; ++k) {
        if (has(asked_[k], fd)) wanted_[i] |= static_cast<uint8_t>(1 << k);
        set(asked_[k], fd, false);
      }
    }
    for (int k = 0; k < 3; ++k) {
      for (__fd_mask w : asked_[k]) has_kernel_fds_ = has_kernel_fds_ || w != 0;
    }
    return true;
  }

  // What the kernel's select derives from TCP's poll mask: readable on data, EOF,
  // hang-up or error; writable on space or error; no exceptional conditions (no OOB).
  int smc_ready() override {
    int bits = 0;
    for (size_t i = 0; i < members_.size(); ++i) {
      const core::Readiness st = poll_state(*members_[i].tracked->socket);
      const bool in = st.readable || st.hangup || st.error;
      const bool out = st.writable || st.error;
      ready_[i] = static_cast<uint8_t>(((in && (wanted_[i] & 1)) ? 1 : 0) |
                                       ((out && (wanted_[i] & 2)) ? 2 : 0));
      bits += __builtin_popcount(ready_[i]);
    }
    return bits;
  }

  int kernel_wait(int timeout_ms, bool block) override {
    const bool mirrored = block && mirrors_.size() == members_.size();
    fd_set* sets[3] = {};
    for (int k = 0; k < 3; ++k) {
      if (caller_[k] == nullptr) continue;
      answer_[k] = asked_[k];  // pselect overwrites its sets: each call starts afresh
      sets[k] = reinterpret_cast<fd_set*>(answer_[k].data());
    }
    if (mirrored) {
      for (size_t i = 0; i < members_.size(); ++i) {
        for (int k = 0; k < 2; ++k) {
          if (wanted_[i] & (1 << k)) set(answer_[k], mirrors_[i], true);
        }
      }
    }
    timespec storage;
    const int64_t cap = block && !mirrored ? slices_.next_ns() : -1;
    const int rc =
        real().pselect(mirrored ? top_ + 1 : nfds_, sets[0], sets[1], sets[2],
                       wait_timeout(timeout_ms, cap, &storage), signals_.wait_mask(sigmask_));
    if (rc < 0) return -1;
    if (rc == 0) return 0;
    int count = 0;
    for (int k = 0; k < 3; ++k) {
      if (mirrored) {
        // The mirrors' answers are not the caller's: smc_ready() gives those.
        for (int mirror : mirrors_) set(answer_[k], mirror, false);
      }
      for (__fd_mask w : answer_[k]) count += __builtin_popcountl(static_cast<unsigned long>(w));
    }
    return count;
  }

  bool has_kernel_fds() const override { return has_kernel_fds_; }
  void before_polling() override { signals_.block(); }

  // The answer in the caller's sets (the kernel's last answer, which holds nothing ready
  // unless it ended the wait, and the SMC members); the number of bits set.
  int finish() {
    for (size_t i = 0; i < members_.size(); ++i) {
      for (int k = 0; k < 2; ++k) {
        if (ready_[i] & (1 << k)) set(answer_[k], members_[i].tracked_fd, true);
      }
    }
    int count = 0;
    for (int k = 0; k < 3; ++k) {
      if (caller_[k] == nullptr) continue;
      std::copy_n(answer_[k].begin(), caller_words_, words_of(caller_[k]));
      for (size_t w = 0; w < caller_words_; ++w) {
        count += __builtin_popcountl(static_cast<unsigned long>(words_of(caller_[k])[w]));
      }
    }
    return count;
  }

 private:
  static bool has(const std::vector<__fd_mask>& s, int fd) {
    return !s.empty() && (s[fd / kMaskBits] & bit_of(fd)) != 0;
  }
  static void set(std::vector<__fd_mask>& s, int fd, bool on) {
    if (s.empty()) return;
    if (on) {
      s[fd / kMaskBits] |= bit_of(fd);
    } else {
      s[fd / kMaskBits] &= ~bit_of(fd);
    }
  }

  int nfds_;
  fd_set* caller_[3];
  const std::vector<SmcMember>& members_;
  const sigset_t* sigmask_;
  size_t caller_words_ = 0;
  int top_ = -1;
  std::vector<__fd_mask> asked_[3];   // the caller's sets without the SMC members
  std::vector<__fd_mask> answer_[3];  // the kernel's last answer
  std::vector<int> mirrors_;
  std::vector<uint8_t> wanted_;  // per member, bit k: the caller asked set k
  std::vector<uint8_t> ready_;   // per member, bit k: ready for set k
  bool has_kernel_fds_ = false;
  SliceCap slices_;
  SignalsWhilePolling signals_;
};

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
  if (real().pselect == nullptr) return enosys();
  SelectWait wait(nfds, rd, wr, ex, members, sigmask);
  if (!wait.init()) return -1;
  saved.restore();
  int rc = core::Engine::wait_ready(deadline.engine_ns(), wait);
  if (rc >= 0) {
    saved.restore();
    rc = wait.finish();
  }
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
