// libFuzzer harness: the configuration (config/config.h parse), the SMCPRE_* environment
// with or without a policy file. The input is an environment block as in
// /proc/PID/environ (NAME=VALUE entries separated by NUL bytes, so that values may hold
// newlines), optionally followed by "\n%%\n" and a policy file's text. Besides crashes and
// sanitizer reports, it fails when:
// - the error is not one printable line (it goes to stderr and the log as one line), or a
//   configuration with an error is not the disabled default;
// - an accepted configuration holds a value outside its documented range;
// - the settings it reports (the debug listing), given back as the environment alone,
//   do not give the same configuration;
// - describe()'s lines are not single printable lines.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "config/config.h"
#include "tests/fuzz/fuzz_check.h"

namespace config = smcpre::config;
using smcpre::fuzz::one_printable_line;

namespace {

constexpr std::string_view kFileMarker = "\n%%\n";
constexpr const char* kProgram = "nginx";

std::map<std::string, std::string> environment_of(std::string_view block) {
  std::map<std::string, std::string> env;
  while (!block.empty()) {
    const size_t nul = block.find('\0');
    const std::string_view entry = block.substr(0, nul);
    block = nul == std::string_view::npos ? std::string_view() : block.substr(nul + 1);
    const size_t eq = entry.find('=');
    if (eq == std::string_view::npos) continue;
    // The first of duplicate names, as getenv() finds it.
    env.emplace(std::string(entry.substr(0, eq)), std::string(entry.substr(eq + 1)));
  }
  return env;
}

bool power_of_two(uint64_t v) {
  return v != 0 && (v & (v - 1)) == 0;
}

// Every documented range (config.h, smcpre(7)) holds for an accepted configuration.
void check_ranges(const config::Config& c) {
  FUZZ_CHECK(power_of_two(c.rmb_size) && c.rmb_size >= 16 * 1024 && c.rmb_size <= 8 << 20);
  FUZZ_CHECK(c.handshake_timeout_ms >= 1 && c.handshake_timeout_ms <= 600000);
  FUZZ_CHECK(c.close_timeout_ms >= 1 && c.close_timeout_ms <= 3600000);
  FUZZ_CHECK(c.pool_size >= 1 && c.pool_size <= 1048576);
  FUZZ_CHECK(c.rq_depth >= 1 && c.rq_depth <= 4096);
  FUZZ_CHECK(c.sq_depth >= 16 && c.sq_depth <= 16384);
  FUZZ_CHECK(c.spin_us <= 100000);
  FUZZ_CHECK(c.rnr_retry <= 7 && c.ib_retry <= 7);
  FUZZ_CHECK(c.min_rnr_timer >= 1 && c.min_rnr_timer <= 31);
  FUZZ_CHECK(c.ib_timeout >= 1 && c.ib_timeout <= 31);
  FUZZ_CHECK(power_of_two(c.ib_mtu) && c.ib_mtu >= 256 && c.ib_mtu <= 4096);
  FUZZ_CHECK(c.keepalive_ms <= 3600000 && c.linger_ms <= 86400000);
  FUZZ_CHECK(c.stats.empty() || c.stats == "exit" || c.stats == "none");
  const std::string_view levels[] = {"trace", "debug", "info", "warn", "error", "critical", "off"};
  FUZZ_CHECK(std::find(std::begin(levels), std::end(levels), c.log_level) != std::end(levels));
  FUZZ_CHECK(one_printable_line(c.log_file) && one_printable_line(c.runtime_dir));
  FUZZ_CHECK(!c.runtime_dir.empty() && c.runtime_dir.front() == '/');
  FUZZ_CHECK(c.runtime_dir == "/" || c.runtime_dir.back() != '/');
  if (c.device == config::DeviceChoice::kVerbs && !c.verbs_device.empty()) {
    FUZZ_CHECK(c.verbs_device.size() <= 63 && c.verbs_port >= 0 && c.verbs_port <= 255);
  } else {
    FUZZ_CHECK(c.verbs_device.empty() && c.verbs_port == 0);
  }
  for (const config::PeerRule& r : c.peers) {
    FUZZ_CHECK(r.port_min >= 1 && r.port_min <= r.port_max);
    FUZZ_CHECK(r.prefix_len <= (r.family == AF_INET6 ? 128 : 32));
  }
  for (const config::PortRange& r : c.exclude_ports) FUZZ_CHECK(r.min >= 1 && r.min <= r.max);
  for (uint32_t uid : c.shm_allowed_uids) FUZZ_CHECK(uid != UINT32_MAX);
  FUZZ_CHECK(!(c.shm_any_uid && !c.shm_allowed_uids.empty()));
  if (c.backlog_cpus) {
    FUZZ_CHECK(!c.backlog_inline);
    std::vector<int> cpus = *c.backlog_cpus;
    std::sort(cpus.begin(), cpus.end());
    FUZZ_CHECK(std::adjacent_find(cpus.begin(), cpus.end()) == cpus.end());
    for (int cpu : cpus) FUZZ_CHECK(cpu >= 0 && cpu <= 4095);
  }
}

// The configuration with what only a file gives (its path, rules, line numbers) and what
// the environment alone may add (unknown names) taken out.
config::Config settings_only(config::Config c) {
  c.config_file.clear();
  c.policy.clear();
  c.unknown_variables.clear();
  for (config::Setting& s : c.settings) s.line = 0;
  return c;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t marker = input.find(kFileMarker);
  const std::map<std::string, std::string> env = environment_of(input.substr(0, marker));
  std::optional<config::FileSource> file;
  if (marker != std::string_view::npos) {
    file = config::FileSource{"/etc/smcpre.conf",
                              std::string(input.substr(marker + kFileMarker.size()))};
  }
  std::string error;
  const config::Config c = config::parse(env, file ? &*file : nullptr, kProgram, &error);
  if (!error.empty()) {
    FUZZ_CHECK(one_printable_line(error));
    FUZZ_CHECK(!c.enabled && c.settings.empty() && c.policy.empty() && c.config_file.empty());
    return 0;
  }
  check_ranges(c);
  for (const std::string& line : config::describe(c)) FUZZ_CHECK(one_printable_line(line));
  std::map<std::string, std::string> given;
  for (const config::Setting& s : c.settings) {
    FUZZ_CHECK(given.emplace(s.name, s.value).second);  // each name once
  }
  std::string error2;
  const config::Config again = config::parse(given, nullptr, kProgram, &error2);
  FUZZ_CHECK(error2.empty());
  FUZZ_CHECK(settings_only(again) == settings_only(c));
  return 0;
}
