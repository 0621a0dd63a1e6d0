// Which epoll instances watch a tracked socket (an SMC socket's readiness mirror, or an
// undecided server socket that may turn SMC). Only waits on those poll the SMC links
// inline (core::Engine::wait_readiness); every other epoll_wait goes straight to the
// kernel, so an unrelated event loop in the same process never polls.
//
// A bit per fd number: set by epoll_ctl, cleared by close. A stale bit (an epoll fd
// dup'd, or its watched sockets all gone) only costs a little polling, never correctness.
#pragma once

#include <atomic>
#include <cstdint>

namespace smcpre::preload {

class EpollSets {
 public:
  static constexpr int kMaxFds = 1 << 20;

  void mark(int epfd) noexcept {
    if (in_range(epfd)) word(epfd).fetch_or(bit(epfd), std::memory_order_relaxed);
  }
  void forget(int epfd) noexcept {
    if (in_range(epfd) && (word(epfd).load(std::memory_order_relaxed) & bit(epfd)) != 0) {
      word(epfd).fetch_and(~bit(epfd), std::memory_order_relaxed);
    }
  }
  bool watches_smc(int epfd) const noexcept {
    return in_range(epfd) && (words_[epfd / 64].load(std::memory_order_relaxed) & bit(epfd)) != 0;
  }

 private:
  static bool in_range(int fd) {
    return static_cast<unsigned>(fd) < static_cast<unsigned>(kMaxFds);
  }
  static uint64_t bit(int fd) { return uint64_t{1} << (fd % 64); }
  std::atomic<uint64_t>& word(int fd) { return words_[fd / 64]; }

  // 128 KiB of zero pages until used.
  std::atomic<uint64_t> words_[kMaxFds / 64] = {};
};

EpollSets& epoll_sets() noexcept;

}  // namespace smcpre::preload
