// Reading the counters other processes publish (core/stats/segment.h) in <runtime_dir>/stats/<pid>:
// a copy taken while the owner keeps counting (each value whole, the set not atomic), and
// stale files of dead owners removed on the way. For smcpre-stat and tests; not part of
// libsmcpre.so.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/stats/snapshot.h"

namespace smcpre::stats {

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

// `dir` is the shared <runtime_dir>/stats; each user's processes publish in its subtree
// <dir>/<uid>/<pid>. Only subtrees that are their uid's alone count (anyone may add a
// directory to <dir>), and only those the caller may read: root sees every user's
// processes, another user its own (0700 subtrees).

// Reads the file of `pid` in whichever subtree holds it.
ReadResult read_segment(const std::string& dir, uint32_t pid);

// Every pid with a file in a subtree we may read, ascending. A missing directory has none;
// false with *error set if `dir` itself cannot be read.
bool list_pids(const std::string& dir, std::vector<uint32_t>* pids, std::string* error);

}  // namespace smcpre::stats
