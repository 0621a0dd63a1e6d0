// The policy file: reading it without trusting it, and splitting it into its settings and
// its rules, each line checked where it stands so that the first bad line is the one
// reported.
#include "config/policy_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>
#include <utility>

#include "config/policy.h"
#include "config/settings_table.h"
#include "config/sys.h"
#include "config/value_syntax.h"

namespace smcpre::config {
namespace {

using syntax::quote_value;

std::string errno_text(int err) {
  return std::generic_category().message(err);
}

// Blanks around a line, a setting's name and its value. '\r' too: a file written on
// Windows ends its lines with "\r\n".
std::string_view trim(std::string_view s) {
  constexpr std::string_view kBlank = " \t\r";
  size_t start = s.find_first_not_of(kBlank);
  if (start == std::string_view::npos) return {};
  return s.substr(start, s.find_last_not_of(kBlank) - start + 1);
}

// A setting line "NAME = VALUE", checked against the settings before it; "" if good.
std::string check_file_setting(std::string_view line, const std::map<std::string, Given>& seen,
                               std::string* name_out, std::string_view* value_out) {
  const size_t eq = line.find('=');
  const std::string name(trim(line.substr(0, eq)));
  const std::string_view value = trim(line.substr(eq + 1));
  if (name.empty()) return "expected a setting name before =";
  if (name == "SMCPRE_CONFIG") {
    return "SMCPRE_CONFIG can only be set in the environment (it names this file)";
  }
  const Variable* var = find_variable(name);
  if (var == nullptr) {
    return "unknown setting " + quote_value(name) +
           " (expected an SMCPRE_* variable name, as in the environment)";
  }
  if (auto it = seen.find(name); it != seen.end()) {
    return name + " given twice (first on line " + std::to_string(it->second.line) + ")";
  }
  // Everything after '=' is the value: quotes would be taken literally, which a shell user
  // would not expect (SMCPRE_LOG_FILE="/tmp/x" would name a relative file with quotes).
  if (!value.empty() && (value.front() == '"' || value.front() == '\'')) {
    return name + "=" + quote_value(value) + ": expected the value without quotes";
  }
  Config scratch;
  if (std::string expected = var->parse(value, scratch); !expected.empty()) {
    return name + "=" + quote_value(value) + ": " + expected;
  }
  *name_out = name;
  *value_out = value;
  return {};
}

}  // namespace

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

std::string parse_policy_file(const FileSource& file, std::string_view program,
                              std::map<std::string, Given>* settings,
                              std::vector<PolicyRule>* rules) {
  if (file.text.size() > kMaxPolicyFileBytes) {
    return file.path + ": larger than 1 MiB (" + std::to_string(kMaxPolicyFileBytes) + " bytes)";
  }
  const std::string_view text = file.text;
  int line_no = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    ++line_no;
    const size_t nl = text.find('\n', pos);
    const std::string_view raw =
        text.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
    pos = nl == std::string_view::npos ? text.size() : nl + 1;
    auto at = [&](const std::string& what) {
      return file.path + ":" + std::to_string(line_no) + ": " + what;
    };
    if (raw.size() > kMaxPolicyLineBytes) {
      return at("line longer than " + std::to_string(kMaxPolicyLineBytes) + " bytes");
    }
    if (raw.find('\0') != std::string_view::npos) return at("a NUL byte (not a text file?)");
    const std::string_view line = trim(raw);
    // Control characters have no place in any field; in a message they would break the
    // line. Tabs separate fields.
    for (char ch : line) {
      const auto byte = static_cast<unsigned char>(ch);
      if ((byte < 0x20 && ch != '\t') || byte == 0x7f) {
        return at("a control character (" + quote_value(std::string_view(&ch, 1)) + ")");
      }
    }
    if (line.empty() || line.front() == '#') continue;

    const std::string_view first = line.substr(0, line.find_first_of(" \t"));
    if (first != "smc" && first != "tcp" && line.find('=') != std::string_view::npos) {
      std::string name;
      std::string_view value;
      std::string problem = check_file_setting(line, *settings, &name, &value);
      if (!problem.empty()) return at(problem);
      (*settings)[name] = Given{std::string(value), line_no};
      continue;
    }
    PolicyRule rule;
    if (std::string problem = parse_policy_rule(line, &rule); !problem.empty()) {
      return at(problem);
    }
    rule.line = line_no;
    // Every rule is checked, but only this program's are kept: the others can never match.
    if (policy_program_matches(rule, program)) rules->push_back(std::move(rule));
  }
  return {};
}

}  // namespace smcpre::config
