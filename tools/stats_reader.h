// Reading the counters other processes publish (core/stats.h) in <runtime_dir>/stats/<pid>:
// a copy taken while the owner keeps counting (each value whole, the set not atomic), and
// stale files of dead owners removed on the way. For smcpre-stat and tests; not part of
// libsmcpre.so.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/stats_layout.h"

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

// One process's counters, copied out of its segment.
struct Snapshot {
  uint32_t pid = 0;
  uint64_t start_realtime_ns = 0;
  std::string comm;     // bounded, control characters and invalid UTF-8 replaced by '?'
  std::string cmdline;  // likewise
  Values<ProcessCounters> process;
  std::vector<Values<LinkSlot>> links;  // slots in use, in slot order
  std::vector<WorkerSnapshot> workers;  // slots in use, in slot order
};

enum class ReadStatus {
  kOk,
  kAbsent,    // no such file (or it went away while being read)
  kStale,     // its owner is dead: the file was removed (if the directory allowed it)
  kStarting,  // its owner is still setting it up
  kInvalid,   // not a segment this reader understands (error says why)
  kError,     // could not be opened, locked or mapped (error says why)
};

struct ReadResult {
  ReadStatus status = ReadStatus::kAbsent;
  std::string error;  // for kInvalid and kError: one line naming the file
  Snapshot snapshot;  // for kOk
};

// Reads <dir>/<pid>.
ReadResult read_segment(const std::string& dir, uint32_t pid);

// Every pid with a file in `dir`, ascending. A missing directory has none; false with
// *error set if the directory cannot be read.
bool list_pids(const std::string& dir, std::vector<uint32_t>* pids, std::string* error);

}  // namespace smcpre::stats
