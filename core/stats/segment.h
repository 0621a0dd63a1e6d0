// Publishing this process's counters (layout: core/stats/layout.h) in
// <runtime_dir>/stats/<uid>/<pid>, a file the process maps shared and updates in place.
//
// The process holds flock(LOCK_SH) on the file while it lives; the kernel drops the lock
// when the process dies, so a reader that can take LOCK_EX knows the file is stale and
// removes it (no cleanup daemon, as with the listener registry). When the file cannot be
// made (no runtime dir, no space), the counters live in private memory instead: the data
// path never depends on the file.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <cstdint>
#include <string>

#include "core/stats/layout.h"

namespace smcpre::stats {

// The process's segment, published on first call (private, with no file, when
// SMCPRE_STATS=none or the file cannot be made). Never fails.
Segment& segment();
// Whether segment() was called in this process (since the last fork).
bool published_any();

// A zeroed link slot with in_use = id (nonzero), or a private slot when every published one
// is taken (counted in process.link_slots_overflowed). Never null.
LinkSlot* acquire_link_slot(uint64_t id);
void release_link_slot(LinkSlot* slot);
// A zeroed worker slot with in_use = 1, or a private one when all are taken. Never null.
WorkerSlot* acquire_worker_slot();
void release_worker_slot(WorkerSlot* slot);

// A zeroed connection slot with in_use = a number unique in the process, or a private one
// when every published one is taken (counted in process.connection_slots_overflowed).
// Never null. Releasing it adds its bytes to the process's closed_* totals.
ConnectionSlot* acquire_connection_slot();
void release_connection_slot(ConnectionSlot* slot);
// One more connection stayed on TCP (or was never proposed) for reason `code`
// (core/wire/decline.h).
void count_fallback(uint32_t code);
// Stores an AF_INET/AF_INET6 address in a connection slot's three address counters.
void set_address(Counter& family_port, Counter& hi, Counter& lo, const sockaddr_storage& a);

// In a fork child: the inherited segment is the parent's. The child stops publishing into
// it (the pointers it still holds belong to abandoned objects) and publishes its own on
// next use.
void reset_after_fork();
// At exit: the file goes (a reader would otherwise only remove it once the lock is gone).
void unpublish_at_exit();

// <runtime_dir>/stats: shared by every user of the runtime dir (config/runtime_dir.h).
std::string stats_dir(const std::string& runtime_dir);
// <runtime_dir>/stats/<uid>: the files of that uid's processes, <pid> each.
std::string user_stats_dir(const std::string& runtime_dir, uid_t uid);

// Relaxed updates: the counters are statistics, ordered with nothing.
inline void add(Counter& c, uint64_t n = 1) {
  c.fetch_add(n, std::memory_order_relaxed);
}
inline void set(Counter& c, uint64_t v) {
  c.store(v, std::memory_order_relaxed);
}
// Low- and high-water marks.
inline void lower_to(Counter& c, uint64_t v) {
  uint64_t old = c.load(std::memory_order_relaxed);
  while (v < old && !c.compare_exchange_weak(old, v, std::memory_order_relaxed)) {
  }
}
inline void raise_to(Counter& c, uint64_t v) {
  uint64_t old = c.load(std::memory_order_relaxed);
  while (v > old && !c.compare_exchange_weak(old, v, std::memory_order_relaxed)) {
  }
}

}  // namespace smcpre::stats
