// Policy rules: parsing one rule line, matching, and reading the file.
#include "config/policy.h"

#include <fcntl.h>
#include <fnmatch.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>
#include <vector>

#include "config/peer_rules.h"
#include "config/sys.h"

namespace smcpre::config {
namespace {

bool is_blank(char c) {
  return c == ' ' || c == '\t';
}

std::vector<std::string_view> split_fields(std::string_view line) {
  std::vector<std::string_view> fields;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && is_blank(line[i])) ++i;
    size_t start = i;
    while (i < line.size() && !is_blank(line[i])) ++i;
    if (i > start) fields.push_back(line.substr(start, i - start));
  }
  return fields;
}

// A field as shown in a message: quoted, shortened, control characters replaced (the file
// parser rejects them before, but the message must stay one line whoever calls).
std::string shown(std::string_view field) {
  constexpr size_t kMaxShown = 60;
  std::string out = "\"";
  for (size_t i = 0; i < field.size() && i < kMaxShown; ++i) {
    const auto byte = static_cast<unsigned char>(field[i]);
    out += (byte < 0x20 || byte == 0x7f) ? '?' : field[i];
  }
  if (field.size() > kMaxShown) out += "...";
  return out + "\"";
}

std::string errno_text(int err) {
  return std::generic_category().message(err);
}

}  // namespace

std::string parse_policy_rule(std::string_view line, PolicyRule* out) {
  const std::vector<std::string_view> f = split_fields(line);
  if (f.empty()) return "expected a rule: smc|tcp PROGRAM ROLE ADDRESS";
  PolicyRule r;
  if (f[0] == "smc") {
    r.action = PolicyAction::kSmc;
  } else if (f[0] == "tcp") {
    r.action = PolicyAction::kTcp;
  } else {
    return "expected a setting SMCPRE_NAME=VALUE or a rule starting with smc or tcp, not " +
           shown(f[0]);
  }
  if (f.size() < 4) {
    return "expected 4 fields: smc|tcp PROGRAM ROLE ADDRESS[/PREFIX][:PORTS], got " +
           std::to_string(f.size());
  }
  if (f.size() > 4) {
    return "unexpected " + shown(f[4]) +
           " after the address (one rule per line; a comment takes a whole line)";
  }
  // program_invocation_short_name has no directory: a path would silently never match.
  if (f[1].find('/') != std::string_view::npos) {
    return "expected a program name glob without / (it matches the short program name, "
           "e.g. nginx*), not " +
           shown(f[1]);
  }
  r.program = std::string(f[1]);
  if (f[2] == "client") {
    r.role = PolicyRole::kClient;
  } else if (f[2] == "server") {
    r.role = PolicyRole::kServer;
  } else if (f[2] != "*") {
    return "expected the role client, server or *, not " + shown(f[2]);
  }
  if (std::string problem = parse_peer_rule(f[3], &r.address); !problem.empty()) {
    return "address " + shown(f[3]) + ": " + problem;
  }
  r.text = std::string(f[0]) + " " + r.program + " " + std::string(f[2]) + " " + std::string(f[3]);
  *out = std::move(r);
  return {};
}

bool policy_program_matches(const PolicyRule& rule, std::string_view program) {
  // No flags: `*` matches a leading dot too, and letter case matters, as in the name.
  return ::fnmatch(rule.program.c_str(), std::string(program).c_str(), 0) == 0;
}

PolicyAction policy_decide(const Config& c, PolicyRole role, const sockaddr* addr) {
  for (const PolicyRule& r : c.policy) {
    if (r.role.has_value() && *r.role != role) continue;
    if (peer_rule_matches(r.address, addr)) return r.action;
  }
  return PolicyAction::kNone;
}

FileStatus read_policy_file(const std::string& path, FileSource* out, std::string* error) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer (it is rejected below); it
  // changes nothing for a regular file.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) {
    if (errno == ENOENT) return FileStatus::kMissing;
    *error = path + ": cannot open: " + errno_text(errno);
    return FileStatus::kError;
  }
  auto fail = [&](const std::string& why) {
    sys::close(fd);
    *error = path + ": " + why;
    return FileStatus::kError;
  };
  struct stat st {};
  if (::fstat(fd, &st) != 0) return fail("cannot stat: " + errno_text(errno));
  if (!S_ISREG(st.st_mode)) return fail("not a regular file");
  // The file can set SMCPRE_LOG_FILE: whoever may write it chooses which file a process
  // appends to, as that process's user. Only root and the user itself may.
  if (st.st_uid != 0 && st.st_uid != ::geteuid()) {
    return fail("owned by uid " + std::to_string(st.st_uid) +
                ", expected root or this process's user");
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    return fail("writable by group or others (chmod go-w)");
  }
  // In steps, so that a small file costs a small buffer; one byte past the limit tells
  // parse() that the file is too large.
  constexpr size_t kStep = 64 * 1024;
  std::string text;
  while (text.size() <= kMaxPolicyFileBytes) {
    const size_t old_size = text.size();
    const size_t want = std::min(kStep, kMaxPolicyFileBytes + 1 - old_size);
    text.resize(old_size + want);
    const ssize_t n = sys::read(fd, text.data() + old_size, want);
    const int err = errno;
    text.resize(old_size + static_cast<size_t>(n > 0 ? n : 0));
    if (n < 0 && err == EINTR) continue;
    if (n < 0) return fail("cannot read: " + errno_text(err));
    if (n == 0) break;
  }
  sys::close(fd);
  out->path = path;
  out->text = std::move(text);
  return FileStatus::kRead;
}

}  // namespace smcpre::config
