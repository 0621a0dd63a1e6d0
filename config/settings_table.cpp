// The settings table: one parser per SMCPRE_* variable, and the table that names them.
// Every parser accepts exactly its documented syntax (smcpre(7), smcpre.conf(5)): no
// surrounding whitespace, no trailing garbage, no overflow, no empty values.
#include "config/settings_table.h"

#include <algorithm>
#include <iterator>
#include <limits>
#include <utility>
#include <vector>

#include "config/peer_rules.h"
#include "config/value_syntax.h"

namespace smcpre::config {
namespace {

using syntax::iequals;
using syntax::parse_port_range;
using syntax::parse_size;
using syntax::parse_uint;
using syntax::plausible_path;
using syntax::quote_value;
using syntax::split_list;

constexpr int kMaxCpu = 4095;  // CPU numbers 0..4095: at most 4096 backlog workers

// One parser per variable: "" on success, else what was expected (and `c` untouched).
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

// An absolute directory, stored without trailing slashes; false (and *out untouched) if
// `v` is not one. Room is left for the names smcpre makes in it ("/listeners/tcp-65535",
// "/option_map") below PATH_MAX.
bool parse_directory(std::string_view v, std::string* out) {
  if (!plausible_path(v) || v.front() != '/' || v.size() > 3800) return false;
  while (v.size() > 1 && v.back() == '/') v.remove_suffix(1);
  *out = std::string(v);
  return true;
}

std::string parse_runtime_dir(std::string_view v, Config& c) {
  if (!parse_directory(v, &c.runtime_dir)) return "expected an absolute directory path";
  return {};
}

std::string parse_bpf_dir(std::string_view v, Config& c) {
  if (v == "none") {
    c.bpf_dir = "none";
    return {};
  }
  if (!parse_directory(v, &c.bpf_dir)) return "expected an absolute directory path, or none";
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

// The kernel's rule for a user EID (smc_clc_ueid_add): up to 32 of A-Z 0-9 '.' '-', the
// first a letter or digit; lower case is refused rather than folded, as the kernel does, so
// that an EID reads the same in smcpre's settings and in the kernel's table.
bool valid_eid(std::string_view eid) {
  if (eid.empty() || eid.size() > kMaxEidSize) return false;
  auto alnum = [](char ch) { return (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'); };
  if (!alnum(eid.front())) return false;
  return std::all_of(eid.begin(), eid.end(),
                     [&](char ch) { return alnum(ch) || ch == '.' || ch == '-'; });
}

std::string parse_eids(std::string_view v, Config& c) {
  std::vector<std::string_view> items;
  if (!split_list(v, &items) || items.size() > kMaxEids) {
    return "expected a comma-separated list of 1 to 8 EIDs";
  }
  std::vector<std::string> eids;
  for (std::string_view item : items) {
    if (!valid_eid(item)) {
      return "EID " + quote_value(item) +
             ": expected 1 to 32 of A-Z, 0-9, '.' and '-', the first a letter or digit";
    }
    if (std::find(eids.begin(), eids.end(), item) == eids.end()) eids.emplace_back(item);
  }
  c.eids = std::move(eids);
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
    {"SMCPRE_BPF_DIR", parse_bpf_dir},
    {"SMCPRE_CLOSE_TIMEOUT_MS", parse_ranged<uint32_t, &Config::close_timeout_ms, 1, 3600000>},
    {"SMCPRE_CONFIG", parse_config_path},
    {"SMCPRE_DEVICE", parse_device},
    {"SMCPRE_EID", parse_eids},
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

}  // namespace

// An absolute path: the file is read at the process's first socket call, whatever its
// working directory is then.
std::string check_config_path(std::string_view v) {
  if (v == "none" || (plausible_path(v) && v.front() == '/')) return {};
  return "expected an absolute file path, or none for no policy file";
}

const Variable* find_variable(std::string_view name) {
  const Variable* var = std::find_if(std::begin(kVariables), std::end(kVariables),
                                     [&](const Variable& v) { return v.name == name; });
  return var == std::end(kVariables) ? nullptr : var;
}

}  // namespace smcpre::config
