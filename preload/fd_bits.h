// A bit per fd number, lock-free, for questions a hook must answer on every call without
// a syscall or a lookup (is this epoll set watching an SMC socket? was this fd created as
// a TCP socket that is not yet connected?). 128 KiB of zero pages until used.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace smcpre::preload {

class FdBits {
 public:
  static constexpr int kMaxFds = 1 << 20;

  void mark(int fd) noexcept {
    if (in_range(fd)) word(fd).fetch_or(bit(fd), std::memory_order_relaxed);
  }
  void forget(int fd) noexcept {
    if (in_range(fd) && (word(fd).load(std::memory_order_relaxed) & bit(fd)) != 0) {
      word(fd).fetch_and(~bit(fd), std::memory_order_relaxed);
    }
  }
  // `to` gets `from`'s bit (dup2 of `from` onto `to`).
  void copy(int from, int to) noexcept {
    if (test(from)) {
      mark(to);
    } else {
      forget(to);
    }
  }
  // Every bit set in `other` is set here too.
  void merge(const FdBits& other) noexcept {
    for (size_t w = 0; w < kMaxFds / 64; ++w) {
      const uint64_t bits = other.words_[w].load(std::memory_order_relaxed);
      if (bits != 0) words_[w].fetch_or(bits, std::memory_order_relaxed);
    }
  }
  bool test(int fd) const noexcept {
    return in_range(fd) && (words_[fd / 64].load(std::memory_order_relaxed) & bit(fd)) != 0;
  }

 private:
  static bool in_range(int fd) {
    return static_cast<unsigned>(fd) < static_cast<unsigned>(kMaxFds);
  }
  static uint64_t bit(int fd) { return uint64_t{1} << (fd % 64); }
  std::atomic<uint64_t>& word(int fd) { return words_[fd / 64]; }

  std::atomic<uint64_t> words_[kMaxFds / 64] = {};
};

}  // namespace smcpre::preload
