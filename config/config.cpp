// Strict parsing of the SMCPRE_* environment (DESIGN.md section 7). Every parser accepts
// exactly its documented syntax: no surrounding whitespace, no trailing garbage, no
// overflow, no empty values. The first bad variable (in name order) is reported.
#include "config/config.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstring>
#include <limits>

#include "config/log.h"
#include "config/sys.h"

extern char** environ;

namespace smcpre::config {
namespace {

constexpr std::string_view kPrefix = "SMCPRE_";
constexpr int kMaxCpu = 4095;  // CPU numbers 0..4095: at most 4096 backlog workers

// --- small lexical helpers -------------------------------------------------------------

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           auto lower = [](char c) {
             return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c;
           };
           return lower(x) == lower(y);
         });
}

// A plain decimal number: digits only (no sign, no space), at most `max`.
bool parse_uint(std::string_view s, uint64_t max, uint64_t* out) {
  if (s.empty() || s.front() < '0' || s.front() > '9') return false;
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v > max) return false;
  *out = v;
  return true;
}

// A decimal number with an optional binary suffix: K/KiB (x1024) and, if allow_mega,
// M/MiB (x1048576); suffix letters in any case.
bool parse_size(std::string_view s, bool allow_mega, uint64_t* out) {
  size_t digits = 0;
  while (digits < s.size() && s[digits] >= '0' && s[digits] <= '9') ++digits;
  std::string_view suffix = s.substr(digits);
  uint64_t mult = 1;
  if (suffix.empty()) {
    mult = 1;
  } else if (iequals(suffix, "k") || iequals(suffix, "kib")) {
    mult = uint64_t{1} << 10;
  } else if (allow_mega && (iequals(suffix, "m") || iequals(suffix, "mib"))) {
    mult = uint64_t{1} << 20;
  } else {
    return false;
  }
  uint64_t v = 0;
  if (!parse_uint(s.substr(0, digits), std::numeric_limits<uint64_t>::max() / mult, &v)) {
    return false;
  }
  *out = v * mult;
  return true;
}

// Splits a comma list; false if any item is empty ("a,,b", ",a", "a,").
bool split_list(std::string_view s, std::vector<std::string_view>* items) {
  items->clear();
  size_t start = 0;
  while (true) {
    size_t comma = s.find(',', start);
    std::string_view item =
        s.substr(start, comma == std::string_view::npos ? s.npos : comma - start);
    if (item.empty()) return false;
    items->push_back(item);
    if (comma == std::string_view::npos) return true;
    start = comma + 1;
  }
}

// `P` or `P-Q` with 1 <= P <= Q <= 65535.
bool parse_port_range(std::string_view s, PortRange* out) {
  size_t dash = s.find('-');
  uint64_t lo = 0;
  uint64_t hi = 0;
  if (dash == std::string_view::npos) {
    if (!parse_uint(s, 65535, &lo) || lo == 0) return false;
    hi = lo;
  } else {
    if (!parse_uint(s.substr(0, dash), 65535, &lo) || lo == 0) return false;
    if (!parse_uint(s.substr(dash + 1), 65535, &hi) || hi < lo) return false;
  }
  out->min = static_cast<uint16_t>(lo);
  out->max = static_cast<uint16_t>(hi);
  return true;
}

// A path: non-empty, no control characters, no leading or trailing whitespace (almost
// certainly a quoting mistake). Spaces inside are legal file name characters.
bool plausible_path(std::string_view s) {
  if (s.empty() || s.front() == ' ' || s.back() == ' ') return false;
  return std::none_of(s.begin(), s.end(),
                      [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
}

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

// Applies a prefix mask: the rule "10.1.2.3/8" means 10.0.0.0/8.
void mask_address(uint8_t* addr, size_t len, unsigned prefix) {
  for (size_t i = 0; i < len; ++i) {
    unsigned bits_here = prefix >= 8 * (i + 1) ? 8 : (prefix > 8 * i ? prefix - 8 * i : 0);
    addr[i] &= static_cast<uint8_t>(0xff00u >> bits_here);
  }
}

// One SMCPRE_PEERS rule; "" on success, else what was expected in this rule.
std::string parse_peer_rule(std::string_view rule, PeerRule* out) {
  PeerRule r;
  std::string_view rest;
  if (rule == "*") {
    *out = r;  // any address, any port
    return {};
  }
  if (rule.front() == '*') {
    rest = rule.substr(1);
    if (rest.empty() || rest.front() != ':') return "expected *:PORT[-PORT]";
  } else {
    std::string_view addr_text;
    if (rule.front() == '[') {
      size_t close = rule.find(']');
      if (close == std::string_view::npos) return "expected ] after the IPv6 address";
      addr_text = rule.substr(1, close - 1);
      rest = rule.substr(close + 1);
      r.family = AF_INET6;
    } else {
      if (std::count(rule.begin(), rule.end(), ':') > 1) {
        return "expected an IPv6 address in brackets, e.g. [fd00::]/8:80";
      }
      size_t end = rule.find_first_of("/:");
      addr_text = rule.substr(0, end);
      rest = end == std::string_view::npos ? std::string_view() : rule.substr(end);
      r.family = AF_INET;
    }
    // inet_pton needs a NUL-terminated string; an address longer than this is invalid.
    char buf[INET6_ADDRSTRLEN + 1] = {};
    const char* kBadAddress =
        r.family == AF_INET6 ? "expected an IPv6 address" : "expected an IPv4 address";
    if (addr_text.empty() || addr_text.size() >= sizeof(buf)) return kBadAddress;
    std::memcpy(buf, addr_text.data(), addr_text.size());
    if (inet_pton(r.family, buf, r.addr) != 1) return kBadAddress;
    const unsigned max_prefix = r.family == AF_INET6 ? 128 : 32;
    r.prefix_len = static_cast<uint8_t>(max_prefix);
    if (!rest.empty() && rest.front() == '/') {
      size_t colon = rest.find(':');
      uint64_t prefix = 0;
      if (!parse_uint(rest.substr(1, colon == std::string_view::npos ? rest.npos : colon - 1),
                      max_prefix, &prefix)) {
        return r.family == AF_INET6 ? "expected an IPv6 prefix length from 0 to 128"
                                    : "expected an IPv4 prefix length from 0 to 32";
      }
      r.prefix_len = static_cast<uint8_t>(prefix);
      mask_address(r.addr, r.family == AF_INET6 ? 16 : 4, r.prefix_len);
      rest = colon == std::string_view::npos ? std::string_view() : rest.substr(colon);
    }
  }
  if (!rest.empty()) {
    PortRange ports;
    if (rest.front() != ':' || !parse_port_range(rest.substr(1), &ports)) {
      return "expected :PORT or :PORT-PORT after the address (ports 1 to 65535, ascending)";
    }
    r.port_min = ports.min;
    r.port_max = ports.max;
  }
  *out = r;
  return {};
}

std::string parse_peers(std::string_view v, Config& c) {
  static constexpr const char* kSyntax =
      "expected a comma-separated list of ADDR[/PREFIX][:PORT[-PORT]], "
      "[IPV6][/PREFIX][:PORT[-PORT]] or *:PORT[-PORT]";
  std::vector<std::string_view> items;
  if (!split_list(v, &items)) return kSyntax;
  std::vector<PeerRule> rules;
  for (std::string_view item : items) {
    PeerRule rule;
    std::string problem = parse_peer_rule(item, &rule);
    if (!problem.empty()) {
      return "rule \"" + std::string(item) + "\": " + problem;
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
    ok = parse_port_range(items[i], &range);
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
    {"SMCPRE_DEVICE", parse_device},
    {"SMCPRE_ENABLE", parse_enable},
    {"SMCPRE_EXCLUDE", parse_exclude},
    {"SMCPRE_HANDSHAKE_TIMEOUT_MS", parse_handshake_timeout},
    {"SMCPRE_IB_MTU", parse_ib_mtu},
    {"SMCPRE_IB_RETRY", parse_ranged<uint8_t, &Config::ib_retry, 0, 7>},
    {"SMCPRE_IB_TIMEOUT", parse_ranged<uint8_t, &Config::ib_timeout, 1, 31>},
    {"SMCPRE_KEEPALIVE_MS", parse_ranged<uint32_t, &Config::keepalive_ms, 0, 3600000>},
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

// The value as shown in an error line: quoted, control characters escaped (the line must
// stay one line), long values shortened.
std::string quote_value(std::string_view v) {
  constexpr size_t kMaxShown = 200;
  std::string out = "\"";
  for (size_t i = 0; i < v.size() && i < kMaxShown; ++i) {
    unsigned char ch = static_cast<unsigned char>(v[i]);
    if (ch < 0x20 || ch == 0x7f || ch == '"' || ch == '\\') {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[ch >> 4];
      out += kHex[ch & 15];
    } else {
      out += static_cast<char>(ch);
    }
  }
  if (v.size() > kMaxShown) out += "...";
  out += '"';
  return out;
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

const Loaded& loaded() {
  // Heap-allocated and never freed: engine threads may still read the configuration while
  // static destructors run at exit.
  static const Loaded* const instance = [] {
    auto* l = new Loaded;
    l->config = parse(smcpre_environment(), &l->error);
    return l;
  }();
  return *instance;
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

const char* device_name(DeviceChoice d) {
  switch (d) {
    case DeviceChoice::kAuto:
      return "auto";
    case DeviceChoice::kShm:
      return "shm";
    case DeviceChoice::kVerbs:
      return "verbs";
    case DeviceChoice::kNone:
      return "none";
  }
  return "?";
}

void report(const Loaded& l) {
  if (!l.error.empty()) {
    // Always visible, whatever SMCPRE_LOG says: the user asked for smcpre and gets TCP.
    write_stderr("smcpre: " + l.error + "; smcpre disabled\n");
    // Also into the log file, if any (stderr already has it).
    if (!l.config.log_file.empty()) SMC_LOG_ERROR("{}; smcpre disabled", l.error);
  }
  for (const std::string& name : l.config.unknown_variables) {
    SMC_LOG_WARN("unknown variable {} ignored", name);
  }
  const Config& c = l.config;
  SMC_LOG_DEBUG(
      "configuration: enabled={} device={}{} rmb_size={} handshake_timeout_ms={} "
      "runtime_dir={} peers={} exclude={} pool_size={} rq_depth={} sq_depth={} spin_us={}",
      c.enabled, device_name(c.device), c.verbs_device.empty() ? "" : ":" + c.verbs_device,
      c.rmb_size, c.handshake_timeout_ms, c.runtime_dir, c.peers.size(), c.exclude_ports.size(),
      c.pool_size, c.rq_depth, c.sq_depth, c.spin_us);
}

}  // namespace

Config parse(const std::map<std::string, std::string>& env, std::string* error) {
  Config c;
  std::string first_error;
  for (const auto& [name, value] : env) {
    if (!std::string_view(name).starts_with(kPrefix)) continue;
    const Variable* var = std::find_if(std::begin(kVariables), std::end(kVariables),
                                       [&](const Variable& v) { return v.name == name; });
    if (var == std::end(kVariables)) {
      c.unknown_variables.push_back(name);
      continue;
    }
    // Parsers only assign on success, so a bad value leaves the default in place.
    std::string expected = var->parse(value, c);
    if (!expected.empty() && first_error.empty()) {
      first_error = name + "=" + quote_value(value) + ": " + expected;
    }
  }
  if (c.runtime_dir.empty()) c.runtime_dir = runtime_dir_default();
  if (error != nullptr) *error = first_error;
  if (first_error.empty()) return c;

  // Disabled, with defaults, but keeping what is needed to report the problem where the
  // user looks for smcpre's messages.
  Config disabled;
  disabled.enabled = false;
  disabled.log_level = c.log_level;
  disabled.log_file = c.log_file;
  disabled.runtime_dir = c.runtime_dir;
  disabled.unknown_variables = std::move(c.unknown_variables);
  return disabled;
}

namespace detail {
const Config& parsed_environment() {
  return loaded().config;
}
}  // namespace detail

const Config& current() {
  const Loaded& l = loaded();
  // Reported by exactly one caller; the others need not wait for it. Logging from here
  // is safe: the logger's setup reads detail::parsed_environment(), not current().
  static std::atomic<bool> reported{false};
  if (!reported.load(std::memory_order_acquire) &&
      !reported.exchange(true, std::memory_order_acq_rel)) {
    report(l);
  }
  return l.config;
}

std::string runtime_dir_default() {
  const uid_t uid = geteuid();
  if (uid == 0) return "/run/smcpre";
  // secure_getenv: a set-user-ID program must not let its caller choose the directory.
  const char* xdg = secure_getenv("XDG_RUNTIME_DIR");
  if (xdg != nullptr && xdg[0] == '/') return std::string(xdg) + "/smcpre";
  return "/tmp/smcpre-" + std::to_string(uid);
}

namespace {

bool prefix_matches(const uint8_t* addr, const uint8_t* net, unsigned prefix_len) {
  unsigned full = prefix_len / 8;
  if (std::memcmp(addr, net, full) != 0) return false;
  unsigned bits = prefix_len % 8;
  if (bits == 0) return true;
  uint8_t mask = static_cast<uint8_t>(0xff00u >> bits);
  return (addr[full] & mask) == (net[full] & mask);
}

}  // namespace

bool peer_rules_match(const std::vector<PeerRule>& rules, const sockaddr* addr) {
  if (addr == nullptr) return false;
  const uint8_t* v4 = nullptr;
  const uint8_t* v6 = nullptr;
  uint16_t port = 0;
  // Copies, not casts of `addr` to the wider types: the caller's storage may be only as
  // large (and aligned) as its own family needs.
  sockaddr_in sin;
  sockaddr_in6 sin6;
  if (addr->sa_family == AF_INET) {
    std::memcpy(&sin, addr, sizeof(sin));
    v4 = reinterpret_cast<const uint8_t*>(&sin.sin_addr);
    port = ntohs(sin.sin_port);
  } else if (addr->sa_family == AF_INET6) {
    std::memcpy(&sin6, addr, sizeof(sin6));
    v6 = sin6.sin6_addr.s6_addr;
    port = ntohs(sin6.sin6_port);
    // An IPv4 peer reached through a dual-stack socket (::ffff:a.b.c.d) matches IPv4 rules.
    if (IN6_IS_ADDR_V4MAPPED(&sin6.sin6_addr)) v4 = v6 + 12;
  } else {
    return false;
  }
  for (const PeerRule& r : rules) {
    if (port < r.port_min || port > r.port_max) continue;
    if (r.family == AF_UNSPEC) return true;
    if (r.family == AF_INET && v4 != nullptr && prefix_matches(v4, r.addr, r.prefix_len)) {
      return true;
    }
    if (r.family == AF_INET6 && v6 != nullptr && prefix_matches(v6, r.addr, r.prefix_len)) {
      return true;
    }
  }
  return false;
}

bool port_excluded(const std::vector<PortRange>& ranges, uint16_t port) {
  return std::any_of(ranges.begin(), ranges.end(),
                     [port](const PortRange& r) { return port >= r.min && port <= r.max; });
}

}  // namespace smcpre::config
