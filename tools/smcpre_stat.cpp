// smcpre-stat: what smcpre sees and does on this host. One subcommand per concern: `devices`
// (RDMA ports and GID tables like `ibv_devinfo -v`, condensed, and which port smcpre would
// pick for a route), `processes`, `connections` and `show` (the counters that processes
// running smcpre publish in <runtime_dir>/stats), `reasons` (the fallback reason codes).
// This file is the command line: the usage text, the arguments and the dispatch to the
// subcommands (stat_commands.h). This is an ordinary program, not part of libsmcpre.so, so
// plain libc calls are fine here.
#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "config/config.h"
#include "config/runtime_dir.h"
#include "tools/stat_commands.h"

namespace {

using smcpre::tools::smcpre_stat::cmd_connections;
using smcpre::tools::smcpre_stat::cmd_devices;
using smcpre::tools::smcpre_stat::cmd_processes;
using smcpre::tools::smcpre_stat::cmd_reasons;
using smcpre::tools::smcpre_stat::cmd_show;
using smcpre::tools::smcpre_stat::DevicesOptions;
using smcpre::tools::smcpre_stat::kExitOk;
using smcpre::tools::smcpre_stat::kExitUsage;
using smcpre::tools::smcpre_stat::StatsOptions;

constexpr const char* kUsage = R"(usage: smcpre-stat COMMAND [OPTIONS]
       smcpre-stat --help | --version

Shows what smcpre (the LD_PRELOAD library moving TCP connections onto SMC-R) sees on
this host.

commands:
  devices [--json] [--route ADDR[:PORT] [--from ADDR[:PORT]]]
      Every RDMA device port, as `ibv_devinfo -v` would show it, condensed: state, link
      layer, active MTU, netdev and MAC, and the GID table (index, GID, type RoCEv1,
      RoCEv2 or IB, netdev). Prints "no RDMA devices" when there are none.
      --route ADDR[:PORT]  also show the kernel's route for a TCP connection to ADDR and
                           which port and GID smcpre would use for it (following
                           SMCPRE_DEVICE), or why none fits. IPv6 with a port:
                           [fe80::1%eth0]:80.
      --from ADDR[:PORT]   the connection's local address (default: the kernel's choice);
                           policy routing may depend on it.
      --json               one JSON object on stdout instead of text.
  processes [--json] [--runtime-dir DIR]
      One line per live process using smcpre (a process appears with its first listener
      or tracked connection): pid, program, connections moved onto SMC and kept on TCP
      since it started, connections open now, links, backlog workers (0: inline mode),
      receive pool free/size and low water, RNR events, whether the SMC TCP option
      program is active for it (on: it marks its sockets, smcpre-bpf(8); off: no
      pinned map it may use; -: not looked for yet), command line. Prints "no
      processes use smcpre" when there are none.
  connections [PID...] [--json] [--runtime-dir DIR]     (also: conns)
      One line per open connection smcpre tracks, like smcss: pid, program, role, local
      and peer address, state (handshake, active, peer-closed, closing, aborted, closed),
      path (SMC-R/shm, SMC-R/verbs, or TCP with the fallback reason's name; "-" while
      undecided), bytes sent and received by the application, and RNR (CDC messages of
      the connection that met an empty receive queue at the peer; shm device: "-" on
      verbs, whose adapter retries RNR in hardware unseen).
      Tracked: every accepted connection and every client connection smcpre proposed
      SMC on; client connections it did not propose on are counted as fallbacks
      (PEER_UNKNOWN, EXCLUDED, POLICY) but not listed.
  show [PID...] [--json] [--runtime-dir DIR]
      For each PID (default: every live process using smcpre): the summary that
      SMCPRE_STATS=exit prints (connections by outcome, fallbacks by reason with name and
      explanation, bytes each way on SMC and TCP, CDC and LLC messages, RNR, receive
      queue and pool low water, backlog, the option program: active or not, handshakes
      it recorded and how many of them the peer announced SMC in), then its link groups (id, role, device, state,
      local/peer QP, receive queue posted/depth and low water, refills cut short, CDC in,
      LLC in/out, RNR events/retries, sends, RDMA writes and bytes, receives,
      connections), its backlog workers (index, CPU, CDC and other messages applied,
      queue now/max, sleeps) and its connections.
  reasons [--json]
      Every fallback reason code: code, name, one-line explanation.
  common options of processes, connections and show:
      --runtime-dir DIR    where the processes publish (default: SMCPRE_RUNTIME_DIR, else
                           the library's default: /run/smcpre for root,
                           $XDG_RUNTIME_DIR/smcpre or /tmp/smcpre-UID for others).
      --json               {"processes": [{"pid", "comm", "cmdline", "process": {...},
                           "links": [{"id", ...}], "workers": [{"index", ...}],
                           "fallbacks": [{"code", "name", "explanation", "count"}],
                           "connections": [{"local", "peer", "role_name",
                           "state_name", "path_name", "reason_name", ...}],
                           "totals": {...}}]} on stdout, counters under their names in
                           core/stats/layout.h.
  help
      This text.

environment:
  SMCPRE_DEVICE       auto|shm|verbs|none|<ibdev>[:port], as for the library: an ibdev
                      name restricts --route's choice to that device (and port).
  SMCPRE_RUNTIME_DIR  as for the library: the default of --runtime-dir.

exit status:
  0  done (also when there are no RDMA devices or no port fits the route, or no process
     uses smcpre)
  1  a device could not be queried, there is no route to ADDR, a PID given to show or
     connections has no live smcpre counters, or a process's counters could not be read
  2  usage error
)";

// ---------------------------------------------------------------------------------------------
// Arguments

// ADDR, ADDR:PORT (IPv4), [ADDR]:PORT or a bare IPv6 address (with %scope if link-local).
bool parse_endpoint(const std::string& text, sockaddr_storage* out, std::string* error) {
  std::string host = text;
  std::string port;
  if (!text.empty() && text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string::npos ||
        (close + 1 < text.size() && (text[close + 1] != ':' || close + 2 == text.size()))) {
      *error = "bad address '" + text + "' (expected [IPV6]:PORT)";
      return false;
    }
    host = text.substr(1, close - 1);
    if (close + 1 < text.size()) port = text.substr(close + 2);
  } else if (std::count(text.begin(), text.end(), ':') == 1) {
    const size_t colon = text.find(':');
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (port.empty()) {
      *error = "bad address '" + text + "' (empty port)";
      return false;
    }
  }
  // getaddrinfo also takes inet_aton's forms ("1.2.3" is 1.2.0.3): a typo must not pass.
  if (host.find(':') == std::string::npos) {
    in_addr probe{};
    if (::inet_pton(AF_INET, host.c_str(), &probe) != 1) {
      *error = "bad address '" + text + "' (expected IPv4 a.b.c.d or IPv6)";
      return false;
    }
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  addrinfo* result = nullptr;
  const int rc =
      ::getaddrinfo(host.c_str(), port.empty() ? nullptr : port.c_str(), &hints, &result);
  if (rc != 0 || result == nullptr) {
    *error = "bad address '" + text + "': " + ::gai_strerror(rc);
    return false;
  }
  *out = {};
  std::memcpy(out, result->ai_addr, std::min<size_t>(result->ai_addrlen, sizeof *out));
  ::freeaddrinfo(result);
  return true;
}

// SMCPRE_RUNTIME_DIR read the way the library reads it, else the library's default.
bool default_runtime_dir(std::string* dir, std::string* error) {
  const char* value = std::getenv("SMCPRE_RUNTIME_DIR");
  if (value == nullptr) {
    *dir = smcpre::runtime_dir::default_path();
    return true;
  }
  const smcpre::config::Config c = smcpre::config::parse({{"SMCPRE_RUNTIME_DIR", value}}, error);
  if (!error->empty()) return false;
  *dir = c.runtime_dir;
  return true;
}

// A process id: a positive decimal number.
bool parse_pid(const std::string& text, uint32_t* pid) {
  if (text.empty() || text.front() < '1' || text.front() > '9') return false;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *pid);
  return ec == std::errc() && end == text.data() + text.size();
}

int usage_error(const std::string& text) {
  std::fprintf(stderr, "smcpre-stat: %s\nTry 'smcpre-stat --help'.\n", text.c_str());
  return kExitUsage;
}

int run_devices(const std::vector<std::string>& args) {
  DevicesOptions options;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "-h" || arg == "--help") {
      std::fputs(kUsage, stdout);
      return kExitOk;
    }
    if (arg == "--json") {
      options.json = true;
      continue;
    }
    if (arg == "--route" || arg == "--from") {
      if (i + 1 == args.size()) return usage_error(arg + " needs an address");
      sockaddr_storage address;
      std::string error;
      if (!parse_endpoint(args[++i], &address, &error)) return usage_error(error);
      (arg == "--route" ? options.route : options.from) = address;
      continue;
    }
    return usage_error("devices: unknown argument '" + arg + "'");
  }
  if (options.from && !options.route) return usage_error("--from needs --route");
  return cmd_devices(options);
}

// The arguments of processes, connections and show (the last two take PIDs).
int run_stats(const std::string& command, const std::vector<std::string>& args) {
  StatsOptions options;
  bool dir_given = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "-h" || arg == "--help") {
      std::fputs(kUsage, stdout);
      return kExitOk;
    }
    if (arg == "--json") {
      options.json = true;
      continue;
    }
    if (arg == "--runtime-dir") {
      if (i + 1 == args.size() || args[i + 1].empty()) {
        return usage_error("--runtime-dir needs a directory");
      }
      options.runtime_dir = args[++i];
      dir_given = true;
      continue;
    }
    uint32_t pid = 0;
    if (command != "processes" && parse_pid(arg, &pid)) {
      options.pids.push_back(pid);
      continue;
    }
    return usage_error(command + ": unknown argument '" + arg + "'");
  }
  if (!dir_given) {
    std::string error;
    if (!default_runtime_dir(&options.runtime_dir, &error)) {
      std::fprintf(stderr, "smcpre-stat: %s\n", error.c_str());
      return kExitUsage;
    }
  }
  if (command == "show") return cmd_show(options);
  if (command == "connections") return cmd_connections(options);
  return cmd_processes(options);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + std::min(argc, 1), argv + argc);
  if (args.empty()) return usage_error("no command given");
  const std::string command = args.front();
  args.erase(args.begin());
  if (command == "-h" || command == "--help" || command == "help") {
    std::fputs(kUsage, stdout);
    return kExitOk;
  }
  if (command == "--version") {
    std::printf("smcpre-stat %s\n", SMCPRE_VERSION);
    return kExitOk;
  }
  if (command == "devices") return run_devices(args);
  if (command == "processes" || command == "show") return run_stats(command, args);
  if (command == "connections" || command == "conns") return run_stats("connections", args);
  if (command == "reasons") {
    if (args.size() > 1 || (args.size() == 1 && args[0] != "--json")) {
      return usage_error("reasons takes only --json");
    }
    return cmd_reasons(args.size() == 1);
  }
  return usage_error("unknown command '" + command + "'");
}
