// Strict parsing of the SMCPRE_* environment (doc/design.md §1.1) and of the policy
// file's settings and rules (smcpre.conf(5)). Every parser accepts exactly its documented
// syntax: no surrounding whitespace, no trailing garbage, no overflow, no empty values. The
// first bad variable (in name order) or the first malformed file line is reported.
#include "config/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/auxv.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstring>
#include <limits>

#include "config/log.h"
#include "config/peer_rules.h"
#include "config/policy.h"
#include "config/runtime_dir.h"
#include "config/sys.h"
#include "config/value_syntax.h"

extern char** environ;

namespace smcpre::config {
namespace {

using syntax::iequals;
using syntax::parse_port_range;
using syntax::parse_size;
using syntax::parse_uint;
using syntax::plausible_path;
using syntax::quote_value;
using syntax::split_list;

constexpr std::string_view kPrefix = "SMCPRE_";
constexpr int kMaxCpu = 4095;  // CPU numbers 0..4095: at most 4096 backlog workers

// --- one parser per variable: "" on success, else what was expected --------------------

using Parser = std::string (*)(std::string_view value, Config& c);

std::string parse_enable(std::string_view v, Config& c) {
  for (std::string_view yes : {"1", "yes", "true", "on"}) {
    if (iequals(v, yes)) {
      c.enabled = true;
      return {};
    }
  }
  for (std::string_view no : {"0", "no", "false", "off"}) {
    if (iequals(v, no)) {
      c.enabled = false;
      return {};
    }
  }
  return "expected 0, 1, yes, no, true, false, on or off";
}

std::string parse_device(std::string_view v, Config& c) {
  static constexpr const char* kExpected =
      "expected auto, shm, verbs, none or an RDMA device name ([A-Za-z0-9_.-], 1 to 63 "
      "characters) with an optional :port (1 to 255)";
  // Keywords are matched exactly: device names are case-sensitive, so "SHM" could be one.
  if (v == "auto") {
    c.device = DeviceChoice::kAuto;
    return {};
  }
  if (v == "shm") {
    c.device = DeviceChoice::kShm;
    return {};
  }
  if (v == "verbs") {
    c.device = DeviceChoice::kVerbs;
    return {};
  }
  if (v == "none") {
    c.device = DeviceChoice::kNone;
    return {};
  }
  std::string_view name = v;
  uint64_t port = 0;
  if (size_t colon = v.find(':'); colon != std::string_view::npos) {
    name = v.substr(0, colon);
    if (!parse_uint(v.substr(colon + 1), 255, &port) || port == 0) return kExpected;
  }
  if (name.empty() || name.size() > 63) return kExpected;
  for (char ch : name) {
    bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '.' || ch == '-';
    if (!ok) return kExpected;
  }
  // "auto:1" and friends: a keyword cannot take a port, and is no device name either.
  if (name == "auto" || name == "shm" || name == "verbs" || name == "none") return kExpected;
  c.device = DeviceChoice::kVerbs;
  c.verbs_device = std::string(name);
  c.verbs_port = static_cast<int>(port);  // 0: the device's first active port
  return {};
}

std::string parse_rmb_size(std::string_view v, Config& c) {
  uint64_t size = 0;
  // The CLC proposal encodes the RMB size as a 4-bit exponent of 16K units.
  if (!parse_size(v, true, &size) || size < (16u << 10) || size > (8u << 20) ||
      (size & (size - 1)) != 0) {
    return "expected a power of two from 16K to 8M";
  }
  c.rmb_size = static_cast<uint32_t>(size);
  return {};
}

std::string parse_log(std::string_view v, Config& c) {
  for (std::string_view level : {"trace", "debug", "info", "warn", "error", "critical", "off"}) {
    if (iequals(v, level)) {
      c.log_level = std::string(level);
      return {};
    }
  }
  if (iequals(v, "warning")) {
    c.log_level = "warn";
    return {};
  }
  return "expected trace, debug, info, warn, error, critical or off";
}

std::string parse_log_file(std::string_view v, Config& c) {
  if (!plausible_path(v)) return "expected a file path";
  c.log_file = std::string(v);
  return {};
}

// smcpre-run's and smcpre-systemd's library location: known here so that a user who
// exports it is not warned about an unknown variable; the library itself has no use for it.
std::string parse_library(std::string_view v, Config&) {
  if (!plausible_path(v)) return "expected a file path";
  return {};
}

std::string parse_handshake_timeout(std::string_view v, Config& c) {
  uint64_t ms = 0;
  if (!parse_uint(v, 600000, &ms) || ms == 0) return "expected milliseconds from 1 to 600000";
  c.handshake_timeout_ms = static_cast<uint32_t>(ms);
  return {};
}

std::string parse_runtime_dir(std::string_view v, Config& c) {
  // Room for "/listeners/tcp-65535" and other per-port names below PATH_MAX.
  if (!plausible_path(v) || v.front() != '/' || v.size() > 3800) {
    return "expected an absolute directory path";
  }
  while (v.size() > 1 && v.back() == '/') v.remove_suffix(1);
  c.runtime_dir = std::string(v);
  return {};
}

std::string parse_peers(std::string_view v, Config& c) {
  static constexpr const char* kSyntax =
      "expected a comma-separated list of ADDR[/PREFIX][:PORTS], [IPV6][/PREFIX][:PORTS] or "
      "*[:PORTS] (PORTS: P, P-Q or *)";
  std::vector<std::string_view> items;
  if (!split_list(v, &items)) return kSyntax;
  std::vector<PeerRule> rules;
  for (std::string_view item : items) {
    PeerRule rule;
    std::string problem = parse_peer_rule(item, &rule);
    if (!problem.empty()) {
      return "rule " + quote_value(item) + ": " + problem;
    }
    rules.push_back(rule);
  }
  c.peers = std::move(rules);
  return {};
}

std::string parse_exclude(std::string_view v, Config& c) {
  std::vector<std::string_view> items;
  std::vector<PortRange> ranges;
  bool ok = split_list(v, &items);
  for (size_t i = 0; ok && i < items.size(); ++i) {
    PortRange range;
    ok = parse_port_range(items[i], &range.min, &range.max);
    ranges.push_back(range);
  }
  if (!ok) {
    return "expected a comma-separated list of ports or port ranges like 22,8000-8100 (ports 1 "
           "to 65535, ranges ascending)";
  }
  c.exclude_ports = std::move(ranges);
  return {};
}

std::string parse_shm_uids(std::string_view v, Config& c) {
  if (v == "any") {
    c.shm_any_uid = true;
    c.shm_allowed_uids.clear();
    return {};
  }
  std::vector<std::string_view> items;
  std::vector<uint32_t> uids;
  bool ok = split_list(v, &items);
  for (size_t i = 0; ok && i < items.size(); ++i) {
    uint64_t uid = 0;
    // (uid_t)-1 is "no uid" for the kernel (setresuid's "unchanged"), never a real user.
    ok = parse_uint(items[i], std::numeric_limits<uint32_t>::max() - 1, &uid);
    uids.push_back(static_cast<uint32_t>(uid));
  }
  if (!ok) return "expected `any` or a comma-separated list of uids (0 to 4294967294)";
  c.shm_allowed_uids = std::move(uids);
  c.shm_any_uid = false;
  return {};
}

std::string parse_backlog_cpus(std::string_view v, Config& c) {
  static constexpr const char* kExpected =
      "expected none or a CPU list like 0-3,8 (CPUs 0 to 4095, ranges ascending, no CPU twice)";
  if (iequals(v, "none")) {
    c.backlog_inline = true;
    c.backlog_cpus.reset();
    return {};
  }
  std::vector<std::string_view> items;
  if (!split_list(v, &items)) return kExpected;
  std::vector<int> cpus;
  std::vector<bool> seen(kMaxCpu + 1, false);
  for (std::string_view item : items) {
    size_t dash = item.find('-');
    uint64_t lo = 0;
    uint64_t hi = 0;
    if (!parse_uint(item.substr(0, dash), kMaxCpu, &lo)) return kExpected;
    hi = lo;
    if (dash != std::string_view::npos &&
        (!parse_uint(item.substr(dash + 1), kMaxCpu, &hi) || hi < lo)) {
      return kExpected;
    }
    for (uint64_t cpu = lo; cpu <= hi; ++cpu) {
      if (seen[cpu]) return kExpected;
      seen[cpu] = true;
      cpus.push_back(static_cast<int>(cpu));
    }
  }
  c.backlog_inline = false;
  c.backlog_cpus = std::move(cpus);
  return {};
}

std::string parse_pool_size(std::string_view v, Config& c) {
  uint64_t n = 0;
  if (!parse_size(v, false, &n) || n == 0 || n > 1048576) {
    return "expected a buffer count from 1 to 1048576 (K suffix allowed)";
  }
  c.pool_size = static_cast<uint32_t>(n);
  return {};
}

// Plain integers within [lo, hi], stored into a field of type T.
template <typename T, T Config::*Field, uint64_t Lo, uint64_t Hi>
std::string parse_ranged(std::string_view v, Config& c) {
  static_assert(Hi <= std::numeric_limits<T>::max());
  uint64_t n = 0;
  if (!parse_uint(v, Hi, &n) || n < Lo) {
    return "expected an integer from " + std::to_string(Lo) + " to " + std::to_string(Hi);
  }
  c.*Field = static_cast<T>(n);
  return {};
}

// SMCPRE_CONFIG: checked here, read by load(). An absolute path: the file is read at the
// process's first socket call, whatever its working directory is then.
std::string check_config_path(std::string_view v) {
  if (v == "none" || (plausible_path(v) && v.front() == '/')) return {};
  return "expected an absolute file path, or none for no policy file";
}

std::string parse_config_path(std::string_view v, Config&) {
  return check_config_path(v);
}

std::string parse_stats(std::string_view v, Config& c) {
  if (iequals(v, "exit") || iequals(v, "none")) {
    c.stats = iequals(v, "exit") ? "exit" : "none";
    return {};
  }
  return "expected exit or none";
}

struct Variable {
  std::string_view name;
  Parser parse;
};

std::string parse_ib_mtu(std::string_view v, Config& c) {
  uint64_t mtu = 0;
  if (!parse_uint(v, 4096, &mtu) ||
      (mtu != 256 && mtu != 512 && mtu != 1024 && mtu != 2048 && mtu != 4096)) {
    return "expected an IB path MTU: 256, 512, 1024, 2048 or 4096";
  }
  c.ib_mtu = static_cast<uint16_t>(mtu);
  return {};
}

constexpr Variable kVariables[] = {
    {"SMCPRE_BACKLOG_CPUS", parse_backlog_cpus},
    {"SMCPRE_CLOSE_TIMEOUT_MS", parse_ranged<uint32_t, &Config::close_timeout_ms, 1, 3600000>},
    {"SMCPRE_CONFIG", parse_config_path},
    {"SMCPRE_DEVICE", parse_device},
    {"SMCPRE_ENABLE", parse_enable},
    {"SMCPRE_EXCLUDE", parse_exclude},
    {"SMCPRE_HANDSHAKE_TIMEOUT_MS", parse_handshake_timeout},
    {"SMCPRE_IB_MTU", parse_ib_mtu},
    {"SMCPRE_IB_RETRY", parse_ranged<uint8_t, &Config::ib_retry, 0, 7>},
    {"SMCPRE_IB_TIMEOUT", parse_ranged<uint8_t, &Config::ib_timeout, 1, 31>},
    {"SMCPRE_KEEPALIVE_MS", parse_ranged<uint32_t, &Config::keepalive_ms, 0, 3600000>},
    {"SMCPRE_LIBRARY", parse_library},
    {"SMCPRE_LINGER_MS", parse_ranged<uint32_t, &Config::linger_ms, 0, 86400000>},
    {"SMCPRE_LOG", parse_log},
    {"SMCPRE_LOG_FILE", parse_log_file},
    {"SMCPRE_PEERS", parse_peers},
    {"SMCPRE_POOL_SIZE", parse_pool_size},
    {"SMCPRE_RMB_SIZE", parse_rmb_size},
    {"SMCPRE_RNR_RETRY", parse_ranged<uint8_t, &Config::rnr_retry, 0, 7>},
    {"SMCPRE_RNR_TIMER", parse_ranged<uint8_t, &Config::min_rnr_timer, 1, 31>},
    {"SMCPRE_RQ_DEPTH", parse_ranged<uint32_t, &Config::rq_depth, 1, 4096>},
    {"SMCPRE_RUNTIME_DIR", parse_runtime_dir},
    {"SMCPRE_SHM_UIDS", parse_shm_uids},
    {"SMCPRE_SPIN_US", parse_ranged<uint32_t, &Config::spin_us, 0, 100000>},
    {"SMCPRE_SQ_DEPTH", parse_ranged<uint32_t, &Config::sq_depth, 16, 16384>},
    {"SMCPRE_STATS", parse_stats},
};

// --- the policy file -----------------------------------------------------------------------

// A value and where it was given.
struct Given {
  std::string value;
  int line = 0;  // line in the policy file; 0: the environment
};

const Variable* find_variable(std::string_view name) {
  const Variable* var = std::find_if(std::begin(kVariables), std::end(kVariables),
                                     [&](const Variable& v) { return v.name == name; });
  return var == std::end(kVariables) ? nullptr : var;
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

// Parses the whole file: its settings (checked, not yet applied) into *settings, its rules
// whose PROGRAM matches `program` into *rules. "" on success, else the first problem as
// "<path>:<line>: ..." (or "<path>: ..." for the file as a whole).
std::string parse_file(const FileSource& file, std::string_view program,
                       std::map<std::string, Given>* settings, std::vector<PolicyRule>* rules) {
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

// The configuration smcpre runs with after an error: disabled, with defaults, but keeping
// what is needed to report the problem where the user looks for smcpre's messages.
Config disabled_config(Config c) {
  Config disabled;
  disabled.enabled = false;
  disabled.log_level = std::move(c.log_level);
  disabled.log_file = std::move(c.log_file);
  disabled.runtime_dir = std::move(c.runtime_dir);
  disabled.unknown_variables = std::move(c.unknown_variables);
  return disabled;
}

// Applies the settings in name order; the first bad one (the environment's: the file's
// were checked line by line) goes to *first_error.
Config apply(const std::map<std::string, Given>& given, const std::string& file_path,
             std::string* first_error) {
  Config defaults;
  defaults.runtime_dir = runtime_dir::default_path();
  Config c;
  for (const auto& [name, g] : given) {
    if (!std::string_view(name).starts_with(kPrefix)) continue;
    const Variable* var = find_variable(name);
    if (var == nullptr) {
      c.unknown_variables.push_back(name);
      continue;
    }
    // Parsers only assign on success, so a bad value leaves the default in place.
    std::string expected = var->parse(g.value, c);
    if (!expected.empty()) {
      if (first_error->empty()) {
        *first_error = (g.line > 0 ? file_path + ":" + std::to_string(g.line) + ": " : "") + name +
                       "=" + quote_value(g.value) + ": " + expected;
      }
      continue;
    }
    // Whether this value changes anything, for the debug listing: the same value applied
    // to the defaults alone. SMCPRE_CONFIG sets no field (the file it names is what
    // changes), so it always counts.
    Config probe = defaults;
    var->parse(g.value, probe);
    c.settings.push_back(
        Setting{name, g.value, g.line, name != "SMCPRE_CONFIG" && probe == defaults});
  }
  if (c.runtime_dir.empty()) c.runtime_dir = defaults.runtime_dir;
  return c;
}

// --- the process's configuration --------------------------------------------------------

struct Loaded {
  Config config;
  std::string error;
};

std::map<std::string, std::string> smcpre_environment() {
  std::map<std::string, std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string_view entry(*e);
    size_t eq = entry.find('=');
    if (!entry.starts_with(kPrefix) || eq == std::string_view::npos) continue;
    // emplace keeps the first of duplicate names, as getenv() does.
    env.emplace(std::string(entry.substr(0, eq)), std::string(entry.substr(eq + 1)));
  }
  return env;
}

void write_stderr(const std::string& line) {
  size_t done = 0;
  while (done < line.size()) {
    ssize_t n = sys::write(STDERR_FILENO, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // nowhere else to report to
    done += static_cast<size_t>(n);
  }
}

// SMCPRE_LOG's canonical names (parse_log stores no other) as the logger's levels.
spdlog::level::level_enum log_level(const std::string& name) {
  if (name == "trace") return spdlog::level::trace;
  if (name == "debug") return spdlog::level::debug;
  if (name == "info") return spdlog::level::info;
  if (name == "warn") return spdlog::level::warn;
  if (name == "error") return spdlog::level::err;
  if (name == "critical") return spdlog::level::critical;
  return spdlog::level::off;
}

const Loaded& loaded() {
  // Heap-allocated and never freed: engine threads may still read the configuration while
  // static destructors run at exit.
  static const Loaded* const instance = [] {
    auto* l = new Loaded;
    Environment env;
    env.variables = smcpre_environment();
    env.program = program_invocation_short_name;
    env.secure = ::getauxval(AT_SECURE) != 0;
    l->config = load(env, &l->error);
    // Always visible, whatever SMCPRE_LOG says: the user asked for smcpre and gets TCP.
    // Before the logger's setup, so that this line comes first on stderr (a log file
    // that cannot be opened adds a line of its own).
    if (!l->error.empty()) write_stderr("smcpre: " + l->error + "; smcpre disabled\n");
    // Before any caller gets the configuration: whoever holds it logs at its level.
    log::init(log_level(l->config.log_level), l->config.log_file);
    return l;
  }();
  return *instance;
}

void report(const Loaded& l) {
  // The error is on stderr already (loaded()); into the log file too, if there is one.
  if (!l.error.empty() && !l.config.log_file.empty()) {
    SMC_LOG_ERROR("{}; smcpre disabled", l.error);
  }
  for (const std::string& name : l.config.unknown_variables) {
    SMC_LOG_WARN("unknown variable {} ignored", name);
  }
  if (log::should_log(spdlog::level::debug)) {
    for (const std::string& line : describe(l.config)) SMC_LOG_DEBUG("{}", line);
  }
}

}  // namespace

Config parse(const std::map<std::string, std::string>& env, std::string* error) {
  return parse(env, nullptr, {}, error);
}

Config parse(const std::map<std::string, std::string>& env, const FileSource* file,
             std::string_view program, std::string* error) {
  std::map<std::string, Given> given;
  std::vector<PolicyRule> rules;
  std::string first_error;
  if (file != nullptr) {
    first_error = parse_file(*file, program, &given, &rules);
    // Never half-applied: a malformed file contributes nothing.
    if (!first_error.empty()) {
      given.clear();
      rules.clear();
    }
  }
  // The environment overrides the file, name by name.
  for (const auto& [name, value] : env) given[name] = Given{value, 0};
  Config c = apply(given, file != nullptr ? file->path : std::string(), &first_error);
  if (error != nullptr) *error = first_error;
  if (!first_error.empty()) return disabled_config(std::move(c));
  if (file != nullptr) c.config_file = file->path;
  c.policy = std::move(rules);
  return c;
}

Config load(const Environment& env, std::string* error) {
  std::map<std::string, std::string> vars = env.variables;
  std::string path = env.default_file;
  bool named = false;  // by SMCPRE_CONFIG: then it must exist
  if (auto it = vars.find("SMCPRE_CONFIG"); it != vars.end()) {
    if (env.secure) {
      vars.erase(it);
    } else if (!check_config_path(it->second).empty()) {
      return parse(vars, nullptr, env.program, error);  // reports the bad value
    } else {
      named = it->second != "none";
      path = named ? it->second : std::string();
    }
  }
  if (path.empty()) return parse(vars, nullptr, env.program, error);
  FileSource file;
  std::string read_error;
  switch (read_policy_file(path, &file, &read_error)) {
    case FileStatus::kRead:
      return parse(vars, &file, env.program, error);
    case FileStatus::kMissing:
      if (!named) return parse(vars, nullptr, env.program, error);  // defaults
      read_error = path + ": no such file (named by SMCPRE_CONFIG)";
      break;
    case FileStatus::kError:
      break;
  }
  if (error != nullptr) *error = read_error;
  return disabled_config(parse(vars, nullptr, env.program, nullptr));
}

std::vector<std::string> describe(const Config& c) {
  std::vector<std::string> lines;
  auto where = [&](int line) {
    return line > 0 ? c.config_file + ":" + std::to_string(line) : std::string("the environment");
  };
  if (c.config_file.empty()) {
    lines.push_back("policy file: none");
  } else {
    lines.push_back("policy file: " + c.config_file + " (" + std::to_string(c.policy.size()) +
                    (c.policy.size() == 1 ? " rule" : " rules") + " for this program)");
  }
  for (const Setting& s : c.settings) {
    if (!s.is_default) {
      lines.push_back("setting " + s.name + "=" + s.value + " (from " + where(s.line) + ")");
    }
  }
  for (const PolicyRule& r : c.policy) {
    lines.push_back("rule " + r.text + " (from " + where(r.line) + ")");
  }
  return lines;
}

const Config& current() {
  const Loaded& l = loaded();
  // Reported by exactly one caller; the others need not wait for it.
  static std::atomic<bool> reported{false};
  if (!reported.load(std::memory_order_acquire) &&
      !reported.exchange(true, std::memory_order_acq_rel)) {
    report(l);
  }
  return l.config;
}

}  // namespace smcpre::config
