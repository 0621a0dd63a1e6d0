// The process-wide pool of receive buffers (doc/design.md §3.3): preallocated once,
// registered with each link's protection domain, shared by every link of the process.
//
// The thread reaping a link's receive completions takes a fresh buffer from here to
// re-post at once, and hands the filled one to a backlog worker, which gives it back when
// the message is applied. So the receive queue stays full however slowly messages are
// applied, for as long as the pool lasts; when it is empty, queues are refilled later
// (the reaper tops them up on every pass) and meanwhile a sender may meet RNR — counted,
// never a loss: RC retries after the RNR timer.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace smcpre::core {

class RecvPool {
 public:
  static constexpr uint32_t kBufferSize = 64;  // a CDC or LLC message is 44 bytes

  // The process's pool with SMCPRE_POOL_SIZE buffers, made on first use; nullptr (logged
  // once per attempt) if the memory cannot be had.
  static RecvPool* get();
  // In a fork child: the parent's pool is not even mapped here (MADV_DONTFORK, as the
  // device may have pinned it); the child makes its own on first use.
  static void reset_after_fork();

  // A pool of `count` buffers (tests make their own). nullptr if the memory cannot be had.
  static std::unique_ptr<RecvPool> create(uint32_t count);
  ~RecvPool();
  RecvPool(const RecvPool&) = delete;
  RecvPool& operator=(const RecvPool&) = delete;

  uint32_t size() const { return count_; }
  // The memory to register: size() buffers of kBufferSize bytes, buffer i at i*kBufferSize.
  void* base() const { return base_; }
  size_t bytes() const { return size_t{count_} * kBufferSize; }
  uint8_t* buffer(uint32_t index) const { return base_ + size_t{index} * kBufferSize; }

  // Takes a free buffer; false when the pool is empty (counted as an exhaustion event by
  // the caller, which knows whether it is a new one). Any thread; lock-free.
  bool take(uint32_t* index);
  // Gives a buffer back. Any thread; lock-free. `index` must be one that take() returned
  // and that has not been given back since.
  void give(uint32_t index);

  uint32_t free_count() const {
    return static_cast<uint32_t>(std::max<int64_t>(0, free_.load(std::memory_order_relaxed)));
  }
  // The fewest buffers ever free at once.
  uint32_t low_water() const {
    return static_cast<uint32_t>(low_water_.load(std::memory_order_relaxed));
  }
  // Refills that found the pool empty (noted by the caller).
  void note_exhausted() { exhausted_.fetch_add(1, std::memory_order_relaxed); }
  uint64_t exhausted() const { return exhausted_.load(std::memory_order_relaxed); }

 private:
  RecvPool(uint8_t* base, size_t mapped, uint32_t count);

  uint8_t* const base_;
  const size_t mapped_;
  const uint32_t count_;
  // A Treiber stack of free indices: head_ = (tag << 32) | (index + 1), 0 = empty; the tag
  // changes on every update so that a stale head never compares equal (ABA).
  alignas(64) std::atomic<uint64_t> head_{0};
  std::unique_ptr<std::atomic<uint32_t>[]> next_;  // index + 1 of the next free, 0 = none
  alignas(64) std::atomic<int64_t> free_{0};
  std::atomic<uint64_t> low_water_{0};  // a stats::Counter, lowered with stats::lower_to
  std::atomic<uint64_t> exhausted_{0};
};

}  // namespace smcpre::core
