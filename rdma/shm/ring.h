// The shm device's receive queue: a ring in a memfd owned by the receiving process and
// mapped by the sending one. Only *posted* receive buffers can be filled, so a sender
// that finds no free slot has met RNR, exactly as an RC QP would.
//
// Shared words (each written by one side only, except `armed`):
//   posted  receiver: receive buffers posted so far (release)
//   filled  sender:   messages delivered so far (seq_cst, see RingSender::send)
//   armed   receiver sets it before sleeping, the sender clears it when it notifies
// Slot i % depth carries message i (counting from 0): {seq = i + 1, length, payload}.
// A polling receiver watches the seq of its next slot rather than `filled`, so a 44-byte
// message costs one cache line transfer, not two; `filled` serves the sleep/wake
// handshake. Everything else (wr_ids, buffer pointers, the consumed count) stays
// private, so a peer can at worst corrupt its own messages. Values read from shared
// memory are copied once and validated before use: the peer process is not trusted.
//
// Header-only: these are the data path's inner loops and must inline into the QP.
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>

#include "rdma/device.h"

namespace smcpre::rdma::shm {

inline constexpr size_t kCacheLine = 64;
inline constexpr uint32_t kMaxRingDepth = 1u << 16;
// Largest inline payload a QP may be configured with (caps() advertises 64).
inline constexpr uint32_t kMaxInlinePayload = 1024;

// The three shared words, each on its own cache line so the sender's and the receiver's
// stores never share a line.
struct RingHeader {
  alignas(kCacheLine) uint64_t posted;
  alignas(kCacheLine) uint64_t filled;
  alignas(kCacheLine) uint32_t armed;
};
static_assert(sizeof(RingHeader) == 3 * kCacheLine);

struct SlotHeader {
  uint64_t seq;  // message number + 1, stored last (release)
  uint32_t length;
  uint32_t reserved;
};

inline size_t page_size() {
  static const size_t size = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  return size;
}

inline constexpr size_t round_up(size_t value, size_t align) {
  return (value + align - 1) / align * align;
}

// Dimensions of one ring; both sides derive the layout from these two numbers only.
struct RingGeometry {
  uint32_t depth = 0;
  uint32_t payload = 0;  // inline payload bytes per slot

  static bool valid(uint32_t depth, uint32_t payload) {
    return depth >= 1 && depth <= kMaxRingDepth && payload >= 1 && payload <= kMaxInlinePayload;
  }
  size_t slot_stride() const { return round_up(sizeof(SlotHeader) + payload, kCacheLine); }
  // Size of the memfd: header plus slots, whole pages.
  size_t bytes() const {
    return round_up(sizeof(RingHeader) + size_t{depth} * slot_stride(), page_size());
  }
};

namespace detail {
template <typename T>
std::atomic_ref<T> shared_word(T& word) {
  return std::atomic_ref<T>(word);
}
}  // namespace detail

// The receiving side. Single-threaded by contract (post_recv/poll_recv from one thread at
// a time), except the counters that arm()/outstanding() read from other threads.
class RingReceiver {
 public:
  void init(void* base, RingGeometry geometry) {
    header_ = static_cast<RingHeader*>(base);
    slots_ = static_cast<uint8_t*>(base) + sizeof(RingHeader);
    geometry_ = geometry;
    stride_ = geometry.slot_stride();
    posted_list_ = std::make_unique<PostedBuffer[]>(geometry.depth);
  }

  // Appends a buffer; ENOMEM when `depth` buffers are already outstanding.
  int post(void* buffer, uint32_t length, uint64_t wr_id) {
    const uint64_t posted = posted_.load(std::memory_order_relaxed);
    const uint64_t consumed = consumed_.load(std::memory_order_relaxed);
    if (posted - consumed >= geometry_.depth) return ENOMEM;
    posted_list_[posted % geometry_.depth] = PostedBuffer{buffer, length, wr_id};
    posted_.store(posted + 1, std::memory_order_relaxed);
    // Release: the sender must not see the slot as free before our reads of the message
    // that previously occupied it are complete.
    detail::shared_word(header_->posted).store(posted + 1, std::memory_order_release);
    return 0;
  }

  // Completes delivered messages into `out`. Only slots we posted are ever read, and
  // one counts as filled only if its seq is exactly the next message number, so no
  // value the peer writes can make us consume a buffer twice or read a slot we did not
  // hand out. A message longer than its buffer yields a kLocalLengthError completion
  // and sets *violation (the caller puts the QP in error).
  int poll(std::span<WorkCompletion> out, const char** violation) {
    const uint64_t consumed = consumed_.load(std::memory_order_relaxed);
    const uint64_t outstanding = posted_.load(std::memory_order_relaxed) - consumed;
    const size_t limit = std::min<uint64_t>(outstanding, out.size());
    size_t n = 0;
    for (; n < limit; ++n) {
      const uint64_t index = (consumed + n) % geometry_.depth;
      uint8_t* slot = slots_ + index * stride_;
      auto* slot_header = reinterpret_cast<SlotHeader*>(slot);
      // Acquire: the length and payload stored before the seq are visible.
      if (detail::shared_word(slot_header->seq).load(std::memory_order_acquire) !=
          consumed + n + 1) {
        break;
      }
      const uint32_t length =
          detail::shared_word(slot_header->length).load(std::memory_order_relaxed);
      const PostedBuffer& buffer = posted_list_[index];
      if (length > geometry_.payload || length > buffer.length) {
        out[n] = WorkCompletion{buffer.wr_id, WcStatus::kLocalLengthError, WcOpcode::kRecv, 0};
        consumed_.store(consumed + n + 1, std::memory_order_relaxed);
        *violation = "received message longer than the posted buffer";
        return static_cast<int>(n + 1);
      }
      std::memcpy(buffer.data, slot + sizeof(SlotHeader), length);
      out[n] = WorkCompletion{buffer.wr_id, WcStatus::kSuccess, WcOpcode::kRecv, length};
    }
    consumed_.store(consumed + n, std::memory_order_release);
    return static_cast<int>(n);
  }

  // After the QP went to error: completes every outstanding buffer with kFlushError.
  int flush(std::span<WorkCompletion> out) {
    uint64_t consumed = consumed_.load(std::memory_order_relaxed);
    const uint64_t posted = posted_.load(std::memory_order_relaxed);
    size_t n = 0;
    for (; n < out.size() && consumed != posted; ++n, ++consumed) {
      const PostedBuffer& buffer = posted_list_[consumed % geometry_.depth];
      out[n] = WorkCompletion{buffer.wr_id, WcStatus::kFlushError, WcOpcode::kRecv, 0};
    }
    consumed_.store(consumed, std::memory_order_relaxed);
    return static_cast<int>(n);
  }

  // Asks the sender to notify us, then reports whether a message is waiting. Pairs with
  // RingSender::send: we store `armed` then load `filled`, the sender stores `filled`
  // then loads `armed`, all seq_cst. In the single total order one of the two loads comes
  // last and sees the other side's store, so either the sender notifies or we see its
  // message here; a wakeup cannot be lost. May run concurrently with poll().
  //
  // `filled` is the peer's word, a promise only: a message is waiting when the slot of
  // the next message carries its number, which an honest sender stores before `filled`
  // (the acquire load of `filled` makes it visible here). Trusting `filled` alone let a
  // hostile peer that sets it and never fills a slot keep us waking up for nothing, for
  // good: a spin.
  bool arm() {
    detail::shared_word(header_->armed).store(1, std::memory_order_seq_cst);
    const uint64_t filled = detail::shared_word(header_->filled).load(std::memory_order_seq_cst);
    const uint64_t consumed = consumed_.load(std::memory_order_acquire);
    if (filled == consumed || posted_.load(std::memory_order_relaxed) == consumed) return false;
    const auto* slot_header =
        reinterpret_cast<const SlotHeader*>(slots_ + (consumed % geometry_.depth) * stride_);
    if (detail::shared_word(const_cast<SlotHeader*>(slot_header)->seq)
            .load(std::memory_order_acquire) == consumed + 1) {
      return true;
    }
    // A poll() on another thread may have taken that message and the sender filled the
    // slot again: then that poll's count is visible now (the refill happened after it,
    // and we acquired the refill), and there may be more to take.
    return consumed_.load(std::memory_order_acquire) != consumed;
  }

  uint32_t outstanding() const {
    return static_cast<uint32_t>(posted_.load(std::memory_order_relaxed) -
                                 consumed_.load(std::memory_order_relaxed));
  }

 private:
  struct PostedBuffer {
    void* data = nullptr;
    uint32_t length = 0;
    uint64_t wr_id = 0;
  };

  RingHeader* header_ = nullptr;
  uint8_t* slots_ = nullptr;
  RingGeometry geometry_;
  size_t stride_ = 0;
  std::unique_ptr<PostedBuffer[]> posted_list_;
  // Private counts; atomics only so that other threads may read them.
  std::atomic<uint64_t> posted_{0};
  std::atomic<uint64_t> consumed_{0};
};

// The sending side, over the peer's ring. Serialized by the QP's send path.
class RingSender {
 public:
  enum class Result { kDelivered, kNoReceive, kViolation };

  void init(void* base, RingGeometry geometry) {
    header_ = static_cast<RingHeader*>(base);
    slots_ = static_cast<uint8_t*>(base) + sizeof(RingHeader);
    geometry_ = geometry;
    stride_ = geometry.slot_stride();
  }

  uint32_t payload_capacity() const { return geometry_.payload; }

  // Copies `data` into the next slot if the peer posted one. *notify is set when the
  // peer had armed its notification (the caller then writes the peer's eventfd).
  Result send(const void* data, uint32_t length, bool* notify) {
    if (posted_seen_ == filled_) {
      // Re-read the receiver's cache line only when the slots we know of are used up.
      posted_seen_ = detail::shared_word(header_->posted).load(std::memory_order_acquire);
      if (posted_seen_ == filled_) return Result::kNoReceive;
      // An honest receiver never has more than `depth` buffers outstanding; more would
      // make us overwrite slots it has not read yet.
      if (posted_seen_ - filled_ > geometry_.depth) return Result::kViolation;
    }
    uint8_t* slot = slots_ + slot_index_ * stride_;
    auto* slot_header = reinterpret_cast<SlotHeader*>(slot);
    detail::shared_word(slot_header->length).store(length, std::memory_order_relaxed);
    std::memcpy(slot + sizeof(SlotHeader), data, length);
    if (++slot_index_ == geometry_.depth) slot_index_ = 0;
    ++filled_;
    // Release: a receiver that sees the seq sees the message.
    detail::shared_word(slot_header->seq).store(filled_, std::memory_order_release);
    // seq_cst store then seq_cst load: see RingReceiver::arm. A polling receiver never
    // reads `filled`, so its line stays in our cache.
    detail::shared_word(header_->filled).store(filled_, std::memory_order_seq_cst);
    auto armed = detail::shared_word(header_->armed);
    *notify = armed.load(std::memory_order_seq_cst) != 0 &&
              armed.exchange(0, std::memory_order_seq_cst) != 0;
    return Result::kDelivered;
  }

 private:
  RingHeader* header_ = nullptr;
  uint8_t* slots_ = nullptr;
  RingGeometry geometry_;
  size_t stride_ = 0;
  uint64_t filled_ = 0;       // our private copy; never read back from shared memory
  uint64_t posted_seen_ = 0;  // last validated value of the peer's `posted`
  uint32_t slot_index_ = 0;   // filled_ % depth
};

}  // namespace smcpre::rdma::shm
