// What smcpre-stat's command line (smcpre_stat.cpp) hands to its subcommands: their options,
// entry points and exit statuses, and the JSON string quoting their output shares. `devices`
// is in stat_devices.cpp; `processes`, `connections`, `show` and `reasons` are in
// stat_counters.cpp.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace smcpre::tools::smcpre_stat {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

// `text` as a JSON string, quotes included.
inline std::string json_string(std::string_view text) {
  std::string out = "\"";
  for (char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c < 0x20) {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\u%04x", c);
      out += escaped;
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

struct DevicesOptions {
  bool json = false;
  std::optional<sockaddr_storage> route;
  std::optional<sockaddr_storage> from;
};

// `devices`: the RDMA ports, and with options.route which of them smcpre would use.
int cmd_devices(const DevicesOptions& options);

struct StatsOptions {
  bool json = false;
  std::string runtime_dir;
  std::vector<uint32_t> pids;  // show: the ones asked for (empty: all)
};

// `processes`, `show` and `connections`: the counters of options.pids (empty: every live
// process using smcpre) in options.runtime_dir.
int cmd_processes(const StatsOptions& options);
int cmd_show(const StatsOptions& options);
int cmd_connections(const StatsOptions& options);

// `reasons`: every fallback reason code, as a table or (json) a JSON object.
int cmd_reasons(bool json);

}  // namespace smcpre::tools::smcpre_stat
