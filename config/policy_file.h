// The policy file (/etc/smcpre.conf or SMCPRE_CONFIG, smcpre.conf(5)): reading it, and
// splitting it into its settings, checked by the settings table, and its rules, parsed by
// config/policy.h. config/config.h's parse() and load() merge the result with the
// environment.
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "config/config_types.h"

namespace smcpre::config {

// A policy file's path and contents, as read.
struct FileSource {
  std::string path;
  std::string text;
};

// Limits on the file: larger files and longer lines are rejected (never truncated).
inline constexpr size_t kMaxPolicyFileBytes = size_t{1} << 20;
inline constexpr size_t kMaxPolicyLineBytes = 4096;

enum class FileStatus { kRead, kMissing, kError };

// Reads the policy file at `path` into *out. kMissing: it does not exist (ENOENT).
// kError (*error says why, naming the path): it cannot be opened or read, is not a regular
// file, or is writable by someone other than its owner, or owned by someone other than
// root or this process's effective user (it could then change where a root process logs).
// Reads at most kMaxPolicyFileBytes + 1 bytes: parse_policy_file() rejects more.
//
// Runs inside the preloaded library, at the process's first socket call: it uses open
// and fstat (not interposed) and sys::read/sys::close, so the interposer never sees it.
FileStatus read_policy_file(const std::string& path, FileSource* out, std::string* error);

// A setting's value as given, and where: its line in the policy file, or 0 for the
// environment (whose variables override the file's, name by name).
struct Given {
  std::string value;
  int line = 0;
};

// Parses the whole file: its settings (checked, not yet applied) into *settings, its rules
// whose PROGRAM matches `program` into *rules. "" on success, else the first problem as
// "<path>:<line>: ..." (or "<path>: ..." for the file as a whole).
std::string parse_policy_file(const FileSource& file, std::string_view program,
                              std::map<std::string, Given>* settings,
                              std::vector<PolicyRule>* rules);

}  // namespace smcpre::config
