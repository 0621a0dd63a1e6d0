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
#include "core/stats/layout.h"
#include "core/stats/reader.h"
#include "core/stats/segment.h"
#include "core/stats/text.h"
#include "core/wire/decline.h"
#include "tools/stat_commands.h"

namespace {

using smcpre::tools::smcpre_stat::cmd_devices;
using smcpre::tools::smcpre_stat::DevicesOptions;
using smcpre::tools::smcpre_stat::json_string;
using smcpre::tools::smcpre_stat::kExitFailure;
using smcpre::tools::smcpre_stat::kExitOk;
using smcpre::tools::smcpre_stat::kExitUsage;

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
      receive pool free/size and low water, RNR events, command line. Prints "no
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
      queue and pool low water, backlog), then its link groups (id, role, device, state,
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

// ---------------------------------------------------------------------------------------------
// processes, show

using smcpre::stats::add_connections;
using smcpre::stats::connections_table;
using smcpre::stats::ConnectionSlot;
using smcpre::stats::LinkSlot;
using smcpre::stats::ProcessCounters;
using smcpre::stats::ReadResult;
using smcpre::stats::ReadStatus;
using smcpre::stats::role_name;
using smcpre::stats::Snapshot;
using smcpre::stats::summary_text;
using smcpre::stats::Table;
using smcpre::stats::Totals;
using smcpre::stats::totals;
using smcpre::stats::WorkerSlot;

struct StatsOptions {
  bool json = false;
  std::string runtime_dir;
  std::vector<uint32_t> pids;  // show: the ones asked for (empty: all)
};

// SMCPRE_RUNTIME_DIR read the way the library reads it, else the library's default.
bool default_runtime_dir(std::string* dir, std::string* error) {
  const char* value = std::getenv("SMCPRE_RUNTIME_DIR");
  if (value == nullptr) {
    *dir = smcpre::config::runtime_dir_default();
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

// The snapshots asked for (all live processes if options.pids is empty). Says on stderr
// why one cannot be read, and sets *failed; a process that is gone or still starting up
// counts as a failure only if it was asked for by pid.
std::vector<Snapshot> collect(const StatsOptions& options, bool* failed) {
  const std::string dir = smcpre::stats::stats_dir(options.runtime_dir);
  *failed = false;
  std::vector<uint32_t> pids = options.pids;
  const bool all = pids.empty();
  if (all) {
    std::string error;
    if (!smcpre::stats::list_pids(dir, &pids, &error)) {
      std::fprintf(stderr, "smcpre-stat: %s\n", error.c_str());
      *failed = true;
      return {};
    }
  }
  std::vector<Snapshot> out;
  for (uint32_t pid : pids) {
    ReadResult r = smcpre::stats::read_segment(dir, pid);
    switch (r.status) {
      case ReadStatus::kOk:
        out.push_back(std::move(r.snapshot));
        continue;
      case ReadStatus::kAbsent:
      case ReadStatus::kStale:
        if (all) continue;
        std::fprintf(stderr, "smcpre-stat: no live process with pid %u publishes in %s\n", pid,
                     dir.c_str());
        break;
      case ReadStatus::kStarting:
        if (all) continue;
        std::fprintf(stderr, "smcpre-stat: pid %u is still setting up its counters\n", pid);
        break;
      case ReadStatus::kInvalid:
      case ReadStatus::kError:
        std::fprintf(stderr, "smcpre-stat: %s\n", r.error.c_str());
        break;
    }
    *failed = true;
  }
  return out;
}

// Counters of one struct as a JSON object, keyed by their names (stats_layout.h).
template <typename T>
std::string counters_json(const smcpre::stats::Values<T>& v) {
  std::string out;
  for (size_t i = 0; i < v.values.size(); ++i) {
    out += (i == 0 ? "" : ",") + json_string(v.kFields[i].name) + ":" + std::to_string(v.values[i]);
  }
  return out;
}

std::string snapshots_json(const std::vector<Snapshot>& snapshots) {
  std::string out = "{\"processes\":[";
  for (size_t i = 0; i < snapshots.size(); ++i) {
    const Snapshot& s = snapshots[i];
    out += (i == 0 ? "{" : ",{");
    out += "\"pid\":" + std::to_string(s.pid) + ",\"comm\":" + json_string(s.comm) +
           ",\"cmdline\":" + json_string(s.cmdline) + ",\"process\":{" + counters_json(s.process) +
           "},\"links\":[";
    for (size_t j = 0; j < s.links.size(); ++j) {
      out += (j == 0 ? "{" : ",{");
      out += "\"id\":" + std::to_string(s.links[j][&LinkSlot::in_use]) + "," +
             counters_json(s.links[j]) + "}";
    }
    out += "],\"workers\":[";
    for (size_t j = 0; j < s.workers.size(); ++j) {
      out += (j == 0 ? "{" : ",{");
      out += "\"index\":" + std::to_string(s.workers[j].index) + "," +
             counters_json(s.workers[j].counters) + "}";
    }
    out += "],\"fallbacks\":[";
    for (size_t j = 0; j < s.fallbacks.size(); ++j) {
      const auto& f = s.fallbacks[j];
      out += (j == 0 ? "{" : ",{");
      out += "\"code\":" + std::to_string(f.code) +
             ",\"name\":" + json_string(smcpre::core::decline_name(f.code)) +
             ",\"explanation\":" + json_string(smcpre::core::decline_explanation(f.code)) +
             ",\"count\":" + std::to_string(f.count) + "}";
    }
    out += "],\"connections\":[";
    for (size_t j = 0; j < s.connections.size(); ++j) {
      const auto& c = s.connections[j];
      out += (j == 0 ? "{" : ",{");
      out +=
          "\"local\":" + json_string(smcpre::stats::local_address_text(c)) +
          ",\"peer\":" + json_string(smcpre::stats::peer_address_text(c)) +
          ",\"role_name\":" + json_string(role_name(c[&ConnectionSlot::role])) +
          ",\"state_name\":" + json_string(smcpre::stats::state_name(c[&ConnectionSlot::state])) +
          ",\"path_name\":" + json_string(smcpre::stats::path_text(c)) + ",\"reason_name\":" +
          json_string(
              c[&ConnectionSlot::path] == smcpre::stats::kPathTcp
                  ? smcpre::core::decline_name(static_cast<uint32_t>(c[&ConnectionSlot::reason]))
                  : "") +
          "," + counters_json(c) + "}";
    }
    const Totals t = totals(s);
    out += "],\"totals\":{\"connections_smc\":" + std::to_string(t.connections_smc) +
           ",\"connections_fallback\":" + std::to_string(t.connections_fallback) +
           ",\"open_smc\":" + std::to_string(t.open_smc) +
           ",\"open_tcp\":" + std::to_string(t.open_tcp) +
           ",\"open_undecided\":" + std::to_string(t.open_undecided) +
           ",\"smc_bytes_sent\":" + std::to_string(t.smc_bytes_sent) +
           ",\"smc_bytes_received\":" + std::to_string(t.smc_bytes_received) +
           ",\"tcp_bytes_sent\":" + std::to_string(t.tcp_bytes_sent) +
           ",\"tcp_bytes_received\":" + std::to_string(t.tcp_bytes_received) +
           ",\"cdc_sent\":" + std::to_string(t.cdc_sent) +
           ",\"cdc_received\":" + std::to_string(t.cdc_received) +
           ",\"llc_sent\":" + std::to_string(t.llc_sent) +
           ",\"llc_received\":" + std::to_string(t.llc_received) +
           ",\"rnr_events\":" + std::to_string(t.rnr_events) +
           ",\"rnr_retries\":" + std::to_string(t.rnr_retries) + "}}";
  }
  return out + "]}";
}

std::string num(uint64_t v) {
  return std::to_string(v);
}

std::string ratio(uint64_t a, uint64_t b) {
  return std::to_string(a) + "/" + std::to_string(b);
}

void print_processes_text(const std::vector<Snapshot>& snapshots) {
  if (snapshots.empty()) {
    std::printf("no processes use smcpre\n");
    return;
  }
  Table table({"PID", "COMM", "SMC", "TCP", "OPEN", "LINKS", "WORKERS", "POOL FREE/SIZE",
               "POOL LOW", "RNR", "CMDLINE"},
              {1, 10});
  for (const Snapshot& s : snapshots) {
    const Totals t = totals(s);
    table.add(
        {num(s.pid), s.comm, num(t.connections_smc), num(t.connections_fallback),
         num(s.connections.size()), num(s.links.size()),
         num(s.process[&ProcessCounters::backlog_workers]),
         ratio(s.process[&ProcessCounters::pool_free], s.process[&ProcessCounters::pool_size]),
         num(s.process[&ProcessCounters::pool_low_water]), num(t.rnr_events), s.cmdline});
  }
  std::fputs(table.render("").c_str(), stdout);
}

std::string qp_hex(uint64_t qp) {
  char text[24];
  std::snprintf(text, sizeof text, "0x%06llx", static_cast<unsigned long long>(qp));
  return text;
}

std::string link_state_name(uint64_t state) {
  switch (state) {
    case smcpre::stats::kLinkActivating:
      return "activating";
    case smcpre::stats::kLinkActive:
      return "active";
    case smcpre::stats::kLinkDown:
      return "down";
    default:
      return "state " + num(state);
  }
}

std::string device_name(uint64_t device) {
  if (device == smcpre::stats::kDeviceShm) return "shm";
  if (device == smcpre::stats::kDeviceVerbs) return "verbs";
  return "-";
}

void print_show_text(const Snapshot& s) {
  std::fputs(summary_text(s, s.cmdline).c_str(), stdout);
  if (s.links.empty()) {
    std::printf("  no link groups\n");
  } else {
    // One link per link group: the group's id names both.
    Table links({"GROUP", "ROLE", "DEVICE", "STATE", "QP LOCAL/PEER", "RQ POSTED/DEPTH", "RQ LOW",
                 "REFILL SHORT", "CDC IN", "LLC IN/OUT", "RNR EVENTS/RETRIES", "SENDS", "WRITES",
                 "BYTES", "RECVS", "CONNS"},
                {1, 2, 3, 4});
    for (const auto& l : s.links) {
      links.add(
          {num(l[&LinkSlot::in_use]), role_name(l[&LinkSlot::role]),
           device_name(l[&LinkSlot::device]), link_state_name(l[&LinkSlot::state]),
           qp_hex(l[&LinkSlot::local_qp_num]) + "/" + qp_hex(l[&LinkSlot::peer_qp_num]),
           ratio(l[&LinkSlot::rq_posted], l[&LinkSlot::rq_depth]), num(l[&LinkSlot::rq_low_water]),
           num(l[&LinkSlot::rq_refill_short]), num(l[&LinkSlot::cdc_received]),
           ratio(l[&LinkSlot::llc_received], l[&LinkSlot::llc_sent]),
           l[&LinkSlot::device] == smcpre::stats::kDeviceVerbs
               ? std::string("-")  // the adapter retries RNR in hardware, uncounted
               : ratio(l[&LinkSlot::rnr_events], l[&LinkSlot::rnr_retries]),
           num(l[&LinkSlot::sends]), num(l[&LinkSlot::writes]), num(l[&LinkSlot::write_bytes]),
           num(l[&LinkSlot::recvs]), num(l[&LinkSlot::connections])});
    }
    std::fputs(links.render("  ").c_str(), stdout);
  }
  if (!s.workers.empty()) {
    Table workers({"WORKER", "CPU", "CDC", "OTHER", "QUEUE NOW/MAX", "SLEEPS"}, {});
    for (const auto& w : s.workers) {
      const auto& c = w.counters;
      workers.add({num(w.index), num(c[&WorkerSlot::cpu]), num(c[&WorkerSlot::cdc_processed]),
                   num(c[&WorkerSlot::other_processed]),
                   ratio(c[&WorkerSlot::queue_depth], c[&WorkerSlot::queue_max]),
                   num(c[&WorkerSlot::sleeps])});
    }
    std::fputs(workers.render("  ").c_str(), stdout);
  }
  if (s.connections.empty()) {
    std::printf("  no open connections\n");
  } else {
    Table connections = connections_table(false);
    add_connections(connections, s, false);
    std::fputs(connections.render("  ").c_str(), stdout);
  }
}

int cmd_processes(const StatsOptions& options) {
  bool failed = false;
  const std::vector<Snapshot> snapshots = collect(options, &failed);
  if (options.json) {
    std::printf("%s\n", snapshots_json(snapshots).c_str());
  } else {
    print_processes_text(snapshots);
  }
  return failed ? kExitFailure : kExitOk;
}

int cmd_show(const StatsOptions& options) {
  bool failed = false;
  const std::vector<Snapshot> snapshots = collect(options, &failed);
  if (options.json) {
    std::printf("%s\n", snapshots_json(snapshots).c_str());
  } else if (snapshots.empty() && options.pids.empty()) {
    std::printf("no processes use smcpre\n");
  } else {
    for (size_t i = 0; i < snapshots.size(); ++i) {
      if (i != 0) std::printf("\n");
      print_show_text(snapshots[i]);
    }
  }
  return failed ? kExitFailure : kExitOk;
}

int cmd_connections(const StatsOptions& options) {
  bool failed = false;
  const std::vector<Snapshot> snapshots = collect(options, &failed);
  if (options.json) {
    std::printf("%s\n", snapshots_json(snapshots).c_str());
    return failed ? kExitFailure : kExitOk;
  }
  Table table = connections_table(true);
  for (const Snapshot& s : snapshots) add_connections(table, s, true);
  if (table.rows() == 0) {
    std::printf("no open connections\n");
  } else {
    std::fputs(table.render("").c_str(), stdout);
  }
  return failed ? kExitFailure : kExitOk;
}

// Every reason code a connection may fall back (or be declined) for.
int cmd_reasons(bool json) {
  const auto& codes = smcpre::core::all_decline_codes();
  if (json) {
    std::string out = "{\"reasons\":[";
    for (size_t i = 0; i < codes.size(); ++i) {
      out += (i == 0 ? "{" : ",{");
      out += "\"code\":" + std::to_string(codes[i]) +
             ",\"name\":" + json_string(smcpre::core::decline_name(codes[i])) +
             ",\"explanation\":" + json_string(smcpre::core::decline_explanation(codes[i])) + "}";
    }
    std::printf("%s]}\n", out.c_str());
    return kExitOk;
  }
  Table table({"CODE", "NAME", "EXPLANATION"}, {0, 1, 2});
  for (uint32_t code : codes) {
    char hex[16];
    std::snprintf(hex, sizeof hex, "0x%08x", code);
    table.add({hex, smcpre::core::decline_name(code), smcpre::core::decline_explanation(code)});
  }
  std::fputs(table.render("").c_str(), stdout);
  return kExitOk;
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
