// The options smcpre-run and smcpre-systemd share, the library lookup and LD_PRELOAD
// appending (launch_options.h). An ordinary program: plain libc and exceptions-free
// std::filesystem calls (error_code overloads) are fine here.
#include "tools/launch_options.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <system_error>
#include <vector>

#include "config/config.h"

#ifndef SMCPRE_BINDIR
#error "SMCPRE_BINDIR must be defined (tools/meson.build)"
#endif
#ifndef SMCPRE_LIBDIR
#error "SMCPRE_LIBDIR must be defined (tools/meson.build)"
#endif

namespace smcpre::tools {
namespace {

namespace fs = std::filesystem;

// Ranges and defaults as config/config.cpp enforces them (and smcpre(7) lists them).
constexpr TuningOption kOptions[] = {
    {"device", "SMCPRE_DEVICE", "DEV",
     "auto (default), shm, verbs, none, or an RDMA device IBDEV[:PORT]"},
    {"rmb-size", "SMCPRE_RMB_SIZE", "SIZE",
     "receive ring per connection: a power of two from 16K to 8M (default 512K)"},
    {"backlog-cpus", "SMCPRE_BACKLOG_CPUS", "LIST",
     "CPUs of the backlog workers, e.g. 2-3,8; none: inline mode"},
    {"pool-size", "SMCPRE_POOL_SIZE", "N",
     "receive buffers per process, 1 to 1048576 (K suffix), default 16384"},
    {"rq-depth", "SMCPRE_RQ_DEPTH", "N", "receive queue depth per link, 1 to 4096 (default 1024)"},
    {"sq-depth", "SMCPRE_SQ_DEPTH", "N", "send queue depth per link, 16 to 16384 (default 256)"},
    {"spin-us", "SMCPRE_SPIN_US", "US",
     "polling before a waiting thread sleeps, 0 to 100000 (default 200)"},
    {"peers", "SMCPRE_PEERS", "RULES",
     "servers to propose SMC to: 10.0.0.0/8:5000-5100,[fd00::]/8:80,*:6379"},
    {"exclude", "SMCPRE_EXCLUDE", "PORTS", "ports never proposed to, e.g. 22,8000-8100"},
    {"shm-uids", "SMCPRE_SHM_UIDS", "UIDS",
     "other uids allowed to attach over shm, e.g. 33,65534, or any"},
    {"handshake-timeout-ms", "SMCPRE_HANDSHAKE_TIMEOUT_MS", "MS",
     "wait for the peer's next CLC message, 1 to 600000 (default 2000)"},
    {"close-timeout-ms", "SMCPRE_CLOSE_TIMEOUT_MS", "MS",
     "the peer's time to close after we did, 1 to 3600000 (default 60000)"},
    {"keepalive-ms", "SMCPRE_KEEPALIVE_MS", "MS",
     "LLC TEST LINK after this long idle, 0 (off) to 3600000 (default 30000)"},
    {"linger-ms", "SMCPRE_LINGER_MS", "MS",
     "an unused link group stays up this long, 0 to 86400000 (default 600000)"},
    {"ib-mtu", "SMCPRE_IB_MTU", "MTU", "cap on the RDMA path MTU: 256, 512, 1024, 2048, 4096"},
    {"ib-timeout", "SMCPRE_IB_TIMEOUT", "CODE",
     "local ACK timeout, 4.096 us x 2^CODE, 1 to 31 (default 15)"},
    {"ib-retry", "SMCPRE_IB_RETRY", "N", "transport retry count, 0 to 7 (default 7)"},
    {"rnr-retry", "SMCPRE_RNR_RETRY", "N", "RNR retry count, 0 to 7 (default 7: forever)"},
    {"rnr-timer", "SMCPRE_RNR_TIMER", "CODE", "IB RNR timer code, 1 to 31 (default 5)"},
    {"log", "SMCPRE_LOG", "LEVEL", "trace, debug, info, warn, error, critical or off (default)"},
    {"log-file", "SMCPRE_LOG_FILE", "FILE", "append the log to FILE instead of stderr", true},
    {"stats", "SMCPRE_STATS", "WHEN",
     "exit: a summary of the counters at exit; none: no counters published"},
    {"runtime-dir", "SMCPRE_RUNTIME_DIR", "DIR",
     "listeners and counters (default: /run/smcpre for root, else per user)", true},
    {"config", "SMCPRE_CONFIG", "FILE",
     "policy file, smcpre.conf(5), or none (default: /etc/smcpre.conf if there)", true},
    {"bpf-dir", "SMCPRE_BPF_DIR", "DIR",
     "the SMC option program's pins, smcpre-bpf(8) (default /sys/fs/bpf/smcpre), or none", true},
};

// SMCPRE_CONFIG's and SMCPRE_BPF_DIR's keyword for "none", which is no path to make
// absolute.
constexpr std::string_view kNone = "none";

const TuningOption* option_named(std::string_view name) {
  for (const TuningOption& o : kOptions) {
    if (o.option == name) return &o;
  }
  return nullptr;
}

// Applies `relative` to a path-valued setting. False (with *error) when refused.
bool resolve_path(const TuningOption& o, RelativePaths relative, std::string* value,
                  std::string* error) {
  if (!o.path || value->empty() || value->front() == '/') return true;
  if ((o.variable == "SMCPRE_CONFIG" || o.variable == "SMCPRE_BPF_DIR") && *value == kNone) {
    return true;
  }
  if (relative == RelativePaths::kRefuse) {
    *error = std::string(o.variable) + "=\"" + *value +
             "\": expected an absolute path (the service does not run in this directory)";
    return false;
  }
  std::error_code ec;
  fs::path abs = fs::absolute(*value, ec);
  if (ec) {
    *error = std::string(o.variable) + "=\"" + *value +
             "\": cannot make the path absolute: " + ec.message();
    return false;
  }
  *value = abs.lexically_normal().string();
  return true;
}

bool is_other_smcpre(std::string_view entry) {
  const std::string_view base = entry.substr(entry.rfind('/') + 1);  // npos + 1 == 0
  return base == kLibraryName ||
         (base.starts_with(kLibraryName) && base[kLibraryName.size()] == '.');
}

bool regular_file(const std::string& path, std::string* why) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    *why = std::error_code(errno, std::generic_category()).message();
    return false;
  }
  if (!S_ISREG(st.st_mode)) {
    *why = "not a regular file";
    return false;
  }
  return true;
}

}  // namespace

const TuningOption* option_for_variable(std::string_view variable) {
  for (const TuningOption& o : kOptions) {
    if (o.variable == variable) return &o;
  }
  return nullptr;
}

std::string tuning_help() {
  std::string out;
  for (const TuningOption& o : kOptions) {
    out += "  --" + std::string(o.option) + " " + std::string(o.metavar) + "  (" +
           std::string(o.variable) + ")\n      " + std::string(o.help) + "\n";
  }
  out +=
      "  --set NAME=VALUE\n"
      "      any other SMCPRE_* variable, e.g. --set SMCPRE_ENABLE=0; checked like the\n"
      "      options. A later option for the same variable replaces an earlier one.\n";
  return out;
}

std::string check_setting(std::string_view variable, std::string_view value) {
  const std::string name(variable);
  if (!variable.starts_with("SMCPRE_") || variable.size() == 7) {
    return "\"" + name + "\" is no smcpre variable (expected SMCPRE_NAME)";
  }
  std::string parse_error;
  const config::Config c = config::parse({{name, std::string(value)}}, &parse_error);
  if (!parse_error.empty()) return parse_error;
  if (std::find(c.unknown_variables.begin(), c.unknown_variables.end(), name) !=
      c.unknown_variables.end()) {
    return "unknown variable " + name + " (smcpre(7) lists them)";
  }
  return {};
}

OptionMatch take_value_option(std::span<const std::string_view> args, size_t* i,
                              std::string_view name, std::string* value, std::string* error) {
  const std::string_view arg = args[*i];
  if (!arg.starts_with("--") || !arg.substr(2).starts_with(name)) return OptionMatch::kNoMatch;
  const std::string_view rest = arg.substr(2 + name.size());
  if (rest.starts_with("=")) {
    *value = std::string(rest.substr(1));
    ++*i;
    return OptionMatch::kTaken;
  }
  if (!rest.empty()) return OptionMatch::kNoMatch;  // --pool-sizes: another option
  if (*i + 1 >= args.size()) {
    *error = "option --" + std::string(name) + " needs a value";
    return OptionMatch::kError;
  }
  *value = std::string(args[*i + 1]);
  *i += 2;
  return OptionMatch::kTaken;
}

OptionMatch take_tuning_option(std::span<const std::string_view> args, size_t* i,
                               RelativePaths relative, Settings* settings, std::string* error) {
  const std::string_view arg = args[*i];
  if (!arg.starts_with("--")) return OptionMatch::kNoMatch;
  const std::string_view name = arg.substr(2, arg.find('=') - 2);
  const TuningOption* option = option_named(name);
  if (option == nullptr && name != "set") return OptionMatch::kNoMatch;
  std::string value;
  const OptionMatch m = take_value_option(args, i, name, &value, error);
  if (m != OptionMatch::kTaken) return m;

  std::string variable;
  if (option != nullptr) {
    variable = std::string(option->variable);
  } else {
    const size_t eq = value.find('=');
    if (eq == std::string::npos) {
      *error = "--set \"" + value + "\": expected NAME=VALUE";
      return OptionMatch::kError;
    }
    variable = value.substr(0, eq);
    value = value.substr(eq + 1);
    option = option_for_variable(variable);
  }
  const std::string shown = "--" + std::string(name) + ": ";
  if (option != nullptr && !resolve_path(*option, relative, &value, error)) {
    *error = shown + *error;
    return OptionMatch::kError;
  }
  if (std::string problem = check_setting(variable, value); !problem.empty()) {
    *error = shown + problem;
    return OptionMatch::kError;
  }
  (*settings)[variable] = value;
  return OptionMatch::kTaken;
}

std::string installed_library_path() {
  return (fs::path(SMCPRE_LIBDIR) / kLibraryName).lexically_normal().string();
}

std::string preload_path_problem(std::string_view path) {
  if (path.empty() || path.front() != '/') return "not an absolute path";
  for (char ch : path) {
    if (ch == ' ' || ch == ':') {
      return "contains a space or a colon, which ld.so takes for LD_PRELOAD separators";
    }
    if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) return "contains a control character";
  }
  return {};
}

bool find_library(std::string* path, std::string* error) {
  std::string why;
  if (const char* env = std::getenv("SMCPRE_LIBRARY"); env != nullptr) {
    if (*env == '\0') {
      *error = "SMCPRE_LIBRARY is set but empty";
      return false;
    }
    std::error_code ec;
    const fs::path abs = fs::absolute(env, ec);
    const std::string candidate = abs.lexically_normal().string();
    if (ec || !regular_file(candidate, &why)) {
      *error = "SMCPRE_LIBRARY=" + std::string(env) + ": " + (ec ? ec.message() : why);
      return false;
    }
    if (std::string problem = preload_path_problem(candidate); !problem.empty()) {
      *error = "SMCPRE_LIBRARY=" + candidate + ": " + problem;
      return false;
    }
    *path = candidate;
    return true;
  }

  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (ec) {
    *error = "cannot find " + std::string(kLibraryName) + ": /proc/self/exe: " + ec.message() +
             " (set SMCPRE_LIBRARY)";
    return false;
  }
  const fs::path dir = exe.parent_path();
  // Both configured directories are absolute (prefix joined): their relation, not their
  // values, is what holds after `meson install --destdir` or moving the tree.
  const fs::path bin_to_lib = fs::path(SMCPRE_LIBDIR).lexically_relative(SMCPRE_BINDIR);
  const std::string installed = (dir / bin_to_lib / kLibraryName).lexically_normal().string();
  // The exe's path is real (no symlinks), so removing ".." lexically is exact.
  const std::string built = (dir / ".." / "preload" / kLibraryName).lexically_normal().string();
  for (const std::string& candidate : {installed, built}) {
    if (!regular_file(candidate, &why)) continue;
    if (std::string problem = preload_path_problem(candidate); !problem.empty()) {
      *error = candidate + ": " + problem + " (install smcpre elsewhere, or set SMCPRE_LIBRARY)";
      return false;
    }
    *path = candidate;
    return true;
  }
  *error = "cannot find " + std::string(kLibraryName) + ": SMCPRE_LIBRARY is not set, and " +
           "neither " + installed + " (installed beside " + exe.string() + ") nor " + built +
           " (build tree) exists";
  return false;
}

bool append_preload(std::string_view existing, std::string_view library,
                    const std::function<bool(std::string_view entry)>& same_library,
                    std::string* out, std::string* error) {
  std::vector<std::string_view> entries;
  for (size_t pos = 0; pos < existing.size();) {
    const size_t end = std::min(existing.find_first_of(" :", pos), existing.size());
    if (end > pos) entries.push_back(existing.substr(pos, end - pos));
    pos = end + 1;
  }
  bool present = false;
  for (std::string_view entry : entries) {
    if (same_library(entry)) {
      present = true;
    } else if (is_other_smcpre(entry)) {
      *error = "LD_PRELOAD already holds another " + std::string(kLibraryName) + " (" +
               std::string(entry) + "), and two copies cannot work in one process; remove it, " +
               "or use that one (SMCPRE_LIBRARY)";
      return false;
    }
  }
  if (present) {
    *out = std::string(existing);
    return true;
  }
  std::string_view kept = existing;
  while (!kept.empty() && (kept.back() == ' ' || kept.back() == ':')) kept.remove_suffix(1);
  *out = entries.empty() ? std::string(library) : std::string(kept) + ":" + std::string(library);
  return true;
}

bool same_file(const std::string& a, const std::string& b) {
  struct stat sa;
  struct stat sb;
  return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}

std::string shell_quote(std::string_view value) {
  constexpr std::string_view kSafe =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789@%+=:,./_-";
  if (!value.empty() && value.find_first_not_of(kSafe) == std::string_view::npos) {
    return std::string(value);
  }
  std::string out = "'";
  for (char ch : value) out += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return out + "'";
}

}  // namespace smcpre::tools
