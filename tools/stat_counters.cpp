// smcpre-stat processes, connections, show and reasons: the counters that processes running
// smcpre publish (core/stats), collected per process and printed as tables (processes, link
// groups, backlog workers, connections) or as one JSON object, and the fallback reason
// codes those counters name.
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "core/stats/layout.h"
#include "core/stats/reader.h"
#include "core/stats/segment.h"
#include "core/stats/text.h"
#include "core/wire/decline.h"
#include "tools/stat_commands.h"

namespace smcpre::tools::smcpre_stat {
namespace {

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
               "POOL LOW", "RNR", "OPTION", "CMDLINE"},
              {1, 10, 11});
  for (const Snapshot& s : snapshots) {
    const Totals t = totals(s);
    const uint64_t option = s.process[&ProcessCounters::option_program];
    table.add(
        {num(s.pid), s.comm, num(t.connections_smc), num(t.connections_fallback),
         num(s.connections.size()), num(s.links.size()),
         num(s.process[&ProcessCounters::backlog_workers]),
         ratio(s.process[&ProcessCounters::pool_free], s.process[&ProcessCounters::pool_size]),
         num(s.process[&ProcessCounters::pool_low_water]), num(t.rnr_events),
         option == smcpre::stats::kOptionActive     ? "on"
         : option == smcpre::stats::kOptionInactive ? "off"
                                                    : "-",
         s.cmdline});
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
           l[&LinkSlot::rnr_counted] != 0
               ? ratio(l[&LinkSlot::rnr_events], l[&LinkSlot::rnr_retries])
               : std::string("-"),  // the adapter retries RNR in hardware, uncounted
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

}  // namespace

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

}  // namespace smcpre::tools::smcpre_stat
