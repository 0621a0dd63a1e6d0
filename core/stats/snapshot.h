// A copy of a process's published counters (core/stats/layout.h), taken while their owner
// keeps counting: each value whole, the set not atomic. smcpre-stat takes it from another
// process's file (core/stats/reader.h); the library takes its own for the summary at exit
// (SMCPRE_STATS=exit). Nothing in the segment is trusted: strings are bounded and
// sanitized, a slot reused while it was copied is left out.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/stats/layout.h"

namespace smcpre::stats {

constexpr const auto& fields_of(const ProcessCounters*) {
  return kProcessFields;
}
constexpr const auto& fields_of(const LinkSlot*) {
  return kLinkFields;
}
constexpr const auto& fields_of(const WorkerSlot*) {
  return kWorkerFields;
}
constexpr const auto& fields_of(const ConnectionSlot*) {
  return kConnectionFields;
}

// The values of one struct's counters, in the order of its field list (stats_layout.h).
template <typename T>
struct Values {
  static constexpr const auto& kFields = fields_of(static_cast<const T*>(nullptr));
  std::array<uint64_t, std::size(kFields)> values{};

  // The list names every member exactly once (checked in stats_layout.h).
  static constexpr size_t index_of(Counter T::*member) {
    size_t i = 0;
    while (i + 1 < std::size(kFields) && kFields[i].member != member) ++i;
    return i;
  }
  uint64_t operator[](Counter T::*member) const { return values[index_of(member)]; }
  uint64_t& operator[](Counter T::*member) { return values[index_of(member)]; }
};

struct WorkerSnapshot {
  size_t index = 0;  // the worker's slot
  Values<WorkerSlot> counters;
};

struct FallbackCount {
  uint32_t code = 0;  // core/wire/decline.h
  uint64_t count = 0;
};

// One process's counters.
struct Snapshot {
  uint32_t pid = 0;
  uint64_t start_realtime_ns = 0;
  std::string comm;     // bounded, control characters and invalid UTF-8 replaced by '?'
  std::string cmdline;  // likewise
  Values<ProcessCounters> process;
  std::vector<Values<LinkSlot>> links;              // slots in use, in slot order
  std::vector<WorkerSnapshot> workers;              // slots in use, in slot order
  std::vector<FallbackCount> fallbacks;             // codes seen, by count (most first)
  std::vector<Values<ConnectionSlot>> connections;  // slots in use, oldest first
};

// Copies `segment` (its header must be complete: magic stored).
Snapshot take_snapshot(const Segment& segment);

// A NUL-terminated field of at most `size` bytes that its writer may have left
// unterminated or cut mid-character: control characters and malformed UTF-8 become '?',
// so that the text is safe on a terminal and valid in JSON.
std::string bounded_text(const char* field, size_t size);

}  // namespace smcpre::stats
