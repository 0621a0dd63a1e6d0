// The interposer's fd table: fd -> the object smcpre tracks for it (a connection or a
// listener). Every read/write of every fd in the process looks here first, so a lookup
// takes no mutex, allocates nothing and makes no syscall; for an untracked fd it is one
// or two loads.
//
// Layout: a fixed array of kChunks chunk pointers (constant-initialized, no constructor),
// each chunk kChunkSlots slots, allocated on first use and never freed (the table must
// outlive every thread that may still call read() during exit). fds >= kMaxFds are never
// tracked: their calls pass straight through.
//
// Safety against a concurrent close: each slot is a std::shared_ptr<Entry> guarded by a
// one-byte state word that is both the slot's spin lock and its "present" flag. A
// lookup copies the shared_ptr out under the lock (a CAS, a reference-count increment
// and a release store: no syscall, nothing allocated), so an entry that another thread
// removes meanwhile stays alive until the looking thread drops its copy — no
// use-after-free and no epoch/hazard-pointer machinery to get wrong. The lock is held
// only for that copy or a pointer swap; an old entry is destroyed after unlocking.
// (std::atomic<std::shared_ptr> does the same internally, but libstdc++ 12 releases its
// lock bit with a relaxed store after a load, which the memory model — and
// ThreadSanitizer — count as a data race.) Untracked fds in a populated chunk (pipes,
// files next to tracked sockets) are answered from the present bit alone, lock-free.
//
// Entry must have a member `std::atomic<int> fd_refs`: the table counts in it how many
// fds refer to the entry (dup'd fds share one entry), so the caller learns which remove()
// dropped the last one.
#pragma once

#include <sched.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <utility>

#include "core/engine.h"

namespace smcpre::preload {

template <typename Entry>
class FdTable {
 public:
  static constexpr int kChunkBits = 12;
  static constexpr int kChunkSlots = 1 << kChunkBits;  // 4096
  static constexpr int kChunks = 256;
  static constexpr int kMaxFds = kChunks * kChunkSlots;  // fds below 1M can be tracked

  // What remove() (or a replacing install()) took out of a slot.
  struct Removed {
    std::shared_ptr<Entry> entry;  // null if the fd was not tracked
    bool last = false;             // it was the last fd referring to `entry`
  };

  constexpr FdTable() = default;
  FdTable(const FdTable&) = delete;
  FdTable& operator=(const FdTable&) = delete;
  // Chunks are deliberately not freed: see the file comment. Instances in tests leak
  // their chunks too; they are few and small.
  ~FdTable() = default;

  // True while any fd is tracked. One relaxed load: the whole cost an untracked process
  // pays per call. Relaxed suffices: a thread that uses a tracked fd learned its number
  // through something that synchronized with the thread that tracked it.
  bool any() const noexcept { return tracked_.load(std::memory_order_relaxed) != 0; }

  // Number of fds currently tracked.
  long count() const noexcept { return tracked_.load(std::memory_order_relaxed); }

  // The entry for `fd`, or null. Safe against a concurrent remove() of the same fd.
  std::shared_ptr<Entry> lookup(int fd) const noexcept {
    Chunk* chunk = chunk_of(fd);
    if (chunk == nullptr) return nullptr;
    const unsigned i = slot_of(fd);
    if ((chunk->state[i].load(std::memory_order_relaxed) & kPresent) == 0) return nullptr;
    const uint8_t was = lock(chunk->state[i]);
    std::shared_ptr<Entry> entry = chunk->entry[i];
    unlock(chunk->state[i], was & kPresent);
    return entry;
  }

  // Makes sure the chunk holding `fd` exists, so that a following install() cannot fail.
  // False if fd is out of range or memory is exhausted.
  bool reserve(int fd) noexcept {
    if (!in_range(fd)) return false;
    std::atomic<Chunk*>& head = chunks_[static_cast<unsigned>(fd) >> kChunkBits];
    if (head.load(std::memory_order_acquire) != nullptr) return true;
    Chunk* fresh = new (std::nothrow) Chunk();
    if (fresh == nullptr) return false;
    Chunk* expected = nullptr;
    if (!head.compare_exchange_strong(expected, fresh, std::memory_order_acq_rel,
                                      std::memory_order_acquire)) {
      delete fresh;  // another thread published this chunk first
    }
    return true;
  }

  // Tracks `fd` as one more fd referring to `entry` (non-null). Requires reserve(fd).
  // Returns what the slot held before (normally nothing; a stale entry if the fd was
  // closed behind the interposer's back), already counted down.
  Removed install(int fd, std::shared_ptr<Entry> entry) noexcept {
    Chunk* chunk = chunk_of(fd);
    if (chunk == nullptr || entry == nullptr) return {};
    const unsigned i = slot_of(fd);
    entry->fd_refs.fetch_add(1, std::memory_order_relaxed);
    lock(chunk->state[i]);
    std::shared_ptr<Entry> old = std::exchange(chunk->entry[i], std::move(entry));
    unlock(chunk->state[i], kPresent);
    if (old == nullptr) tracked_.fetch_add(1, std::memory_order_relaxed);
    return count_down(std::move(old));
  }

  // Stops tracking `fd`. Exactly one of several racing callers gets the entry.
  Removed remove(int fd) noexcept {
    Chunk* chunk = chunk_of(fd);
    if (chunk == nullptr) return {};
    const unsigned i = slot_of(fd);
    if ((chunk->state[i].load(std::memory_order_relaxed) & kPresent) == 0) return {};
    lock(chunk->state[i]);
    std::shared_ptr<Entry> old = std::exchange(chunk->entry[i], nullptr);
    unlock(chunk->state[i], 0);
    if (old != nullptr) tracked_.fetch_sub(1, std::memory_order_relaxed);
    return count_down(std::move(old));
  }

  // In a fork child, before it starts a thread: calls fn(fd, Entry&) for every tracked
  // fd. Slot locks held by parent threads at fork() are stale here (those threads do not
  // exist in the child) and are dropped first.
  template <typename Fn>
  void for_each_in_fork_child(Fn&& fn) noexcept(noexcept(fn(0, std::declval<Entry&>()))) {
    for (unsigned c = 0; c < static_cast<unsigned>(kChunks); ++c) {
      Chunk* chunk = chunks_[c].load(std::memory_order_acquire);
      if (chunk == nullptr) continue;
      for (unsigned i = 0; i < static_cast<unsigned>(kChunkSlots); ++i) {
        const uint8_t state = chunk->state[i].load(std::memory_order_relaxed);
        if (state & kLocked) chunk->state[i].store(state & kPresent, std::memory_order_relaxed);
        if ((state & kPresent) == 0 || chunk->entry[i] == nullptr) continue;
        fn(static_cast<int>((c << kChunkBits) | i), *chunk->entry[i]);
      }
    }
  }

  // Removes every tracked fd in [first, last] (inclusive, like close_range), calling
  // fn(fd, Removed&&) for each. Visits only chunks that exist.
  template <typename Fn>
  void remove_range(unsigned first, unsigned last, Fn&& fn) noexcept(noexcept(fn(0, Removed{}))) {
    if (first >= static_cast<unsigned>(kMaxFds)) return;
    if (last >= static_cast<unsigned>(kMaxFds)) last = kMaxFds - 1;
    for (unsigned fd = first; fd <= last;) {
      const unsigned c = fd >> kChunkBits;
      const unsigned chunk_end = ((c + 1) << kChunkBits) - 1;
      const unsigned stop = last < chunk_end ? last : chunk_end;
      if (chunks_[c].load(std::memory_order_acquire) != nullptr) {
        for (unsigned f = fd; f <= stop; ++f) {
          Removed r = remove(static_cast<int>(f));
          if (r.entry != nullptr) fn(static_cast<int>(f), std::move(r));
        }
      }
      fd = stop + 1;
    }
  }

 private:
  static constexpr uint8_t kPresent = 1;  // the slot holds an entry
  static constexpr uint8_t kLocked = 2;   // someone is reading or swapping the entry

  struct Chunk {
    std::atomic<uint8_t> state[kChunkSlots] = {};
    std::shared_ptr<Entry> entry[kChunkSlots];  // guarded by kLocked of the same index
  };

  // Spins until the slot is ours; returns its state before locking. Holders keep the
  // lock for a few instructions, so spinning is right; yielding after a while covers
  // a holder that was preempted.
  static uint8_t lock(std::atomic<uint8_t>& state) noexcept {
    uint8_t current = state.load(std::memory_order_relaxed);
    for (unsigned spins = 0;; ++spins) {
      if ((current & kLocked) == 0 &&
          state.compare_exchange_weak(current, current | kLocked, std::memory_order_acquire,
                                      std::memory_order_relaxed)) {
        return current;
      }
      if (spins >= 64) sched_yield();
      core::cpu_relax();
      current = state.load(std::memory_order_relaxed);
    }
  }
  static void unlock(std::atomic<uint8_t>& state, uint8_t present) noexcept {
    state.store(present, std::memory_order_release);
  }

  static bool in_range(int fd) noexcept {
    return static_cast<unsigned>(fd) < static_cast<unsigned>(kMaxFds);
  }
  static unsigned slot_of(int fd) noexcept { return static_cast<unsigned>(fd) & (kChunkSlots - 1); }
  Chunk* chunk_of(int fd) const noexcept {
    if (!in_range(fd)) return nullptr;
    return chunks_[static_cast<unsigned>(fd) >> kChunkBits].load(std::memory_order_acquire);
  }

  static Removed count_down(std::shared_ptr<Entry> old) noexcept {
    if (old == nullptr) return {};
    const bool last = old->fd_refs.fetch_sub(1, std::memory_order_acq_rel) == 1;
    return {std::move(old), last};
  }

  std::atomic<long> tracked_{0};
  std::atomic<Chunk*> chunks_[kChunks] = {};
};

}  // namespace smcpre::preload
