#include "core/stats/text.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "core/wire/decline.h"

namespace smcpre::stats {

Table::Table(std::vector<std::string> header, std::vector<size_t> left) : left_(std::move(left)) {
  rows_.push_back(std::move(header));
}

std::string Table::render(const char* indent) const {
  std::vector<size_t> width(rows_.front().size(), 0);
  for (const auto& row : rows_) {
    for (size_t c = 0; c < row.size() && c < width.size(); ++c) {
      width[c] = std::max(width[c], row[c].size());
    }
  }
  std::string out;
  for (const auto& row : rows_) {
    std::string line = indent;
    for (size_t c = 0; c < row.size() && c < width.size(); ++c) {
      const std::string pad(width[c] - row[c].size(), ' ');
      if (c != 0) line += "  ";
      if (std::find(left_.begin(), left_.end(), c) == left_.end()) {
        line += pad + row[c];
      } else {
        line += c + 1 == width.size() ? row[c] : row[c] + pad;
      }
    }
    out += line + "\n";
  }
  return out;
}

namespace {

bool on_smc(const Values<ConnectionSlot>& c) {
  const uint64_t path = c[&ConnectionSlot::path];
  return path == kPathSmcShm || path == kPathSmcVerbs;
}

std::string num(uint64_t v) {
  return std::to_string(v);
}

}  // namespace

Totals totals(const Snapshot& s) {
  Totals t;
  const auto& p = s.process;
  t.connections_smc = p[&ProcessCounters::connections_smc];
  t.connections_fallback = p[&ProcessCounters::connections_fallback];
  t.smc_bytes_sent = p[&ProcessCounters::closed_smc_bytes_sent];
  t.smc_bytes_received = p[&ProcessCounters::closed_smc_bytes_received];
  t.tcp_bytes_sent = p[&ProcessCounters::closed_tcp_bytes_sent];
  t.tcp_bytes_received = p[&ProcessCounters::closed_tcp_bytes_received];
  for (const auto& c : s.connections) {
    const bool smc = on_smc(c);
    (smc ? t.smc_bytes_sent : t.tcp_bytes_sent) += c[&ConnectionSlot::bytes_sent];
    (smc ? t.smc_bytes_received : t.tcp_bytes_received) += c[&ConnectionSlot::bytes_received];
    // A closed connection's bytes count, but it is not open any more (its slot goes
    // with the last reference to it).
    if (c[&ConnectionSlot::state] == kConnClosed) continue;
    if (smc) {
      ++t.open_smc;
    } else if (c[&ConnectionSlot::path] == kPathTcp) {
      ++t.open_tcp;
    } else {
      ++t.open_undecided;
    }
  }
  t.cdc_received = p[&ProcessCounters::closed_links_cdc_received];
  t.llc_received = p[&ProcessCounters::closed_links_llc_received];
  t.llc_sent = p[&ProcessCounters::closed_links_llc_sent];
  uint64_t sends = p[&ProcessCounters::closed_links_sends];
  t.rnr_events = p[&ProcessCounters::closed_links_rnr_events];
  t.rnr_retries = p[&ProcessCounters::closed_links_rnr_retries];
  for (const auto& l : s.links) {
    if (l[&LinkSlot::rnr_counted] == 0) ++t.rnr_uncounted_links;
    t.cdc_received += l[&LinkSlot::cdc_received];
    t.llc_received += l[&LinkSlot::llc_received];
    t.llc_sent += l[&LinkSlot::llc_sent];
    sends += l[&LinkSlot::sends];
    t.rnr_events += l[&LinkSlot::rnr_events];
    t.rnr_retries += l[&LinkSlot::rnr_retries];
  }
  // Every SEND is a CDC or an LLC message. The device's send count is copied now and
  // then while LLC messages are counted as they go: the difference may lag, never drop
  // below zero.
  t.cdc_sent = sends > t.llc_sent ? sends - t.llc_sent : 0;
  for (const auto& w : s.workers) {
    t.worker_queue_max = std::max(t.worker_queue_max, w.counters[&WorkerSlot::queue_max]);
    t.worker_sleeps += w.counters[&WorkerSlot::sleeps];
  }
  return t;
}

std::string state_name(uint64_t state) {
  switch (state) {
    case kConnHandshake:
      return "handshake";
    case kConnActive:
      return "active";
    case kConnPeerClosed:
      return "peer-closed";
    case kConnClosing:
      return "closing";
    case kConnAborted:
      return "aborted";
    case kConnClosed:
      return "closed";
    default:
      return "state " + num(state);
  }
}

std::string role_name(uint64_t role) {
  if (role == 0) return "client";
  if (role == 1) return "server";
  return "role " + num(role);
}

std::string path_text(const Values<ConnectionSlot>& c) {
  switch (c[&ConnectionSlot::path]) {
    case kPathUndecided:
      return "-";
    case kPathSmcShm:
      return "SMC-R/shm";
    case kPathSmcVerbs:
      return "SMC-R/verbs";
    case kPathTcp:
      return std::string("TCP (") +
             core::decline_name(static_cast<uint32_t>(c[&ConnectionSlot::reason])) + ")";
    default:
      return "path " + num(c[&ConnectionSlot::path]);
  }
}

std::string address_text(uint64_t family_port, uint64_t hi, uint64_t lo) {
  const uint64_t family = family_port >> 16;
  const unsigned port = static_cast<unsigned>(family_port & 0xffff);
  uint8_t bytes[16];
  for (int i = 0; i < 8; ++i) {
    bytes[i] = static_cast<uint8_t>(hi >> (56 - 8 * i));
    bytes[8 + i] = static_cast<uint8_t>(lo >> (56 - 8 * i));
  }
  char text[INET6_ADDRSTRLEN] = {};
  if (family == AF_INET && ::inet_ntop(AF_INET, bytes, text, sizeof text) != nullptr) {
    return std::string(text) + ":" + num(port);
  }
  if (family == AF_INET6 && ::inet_ntop(AF_INET6, bytes, text, sizeof text) != nullptr) {
    return "[" + std::string(text) + "]:" + num(port);
  }
  return "-";
}

std::string local_address_text(const Values<ConnectionSlot>& c) {
  return address_text(c[&ConnectionSlot::local_family_port], c[&ConnectionSlot::local_addr_hi],
                      c[&ConnectionSlot::local_addr_lo]);
}

std::string peer_address_text(const Values<ConnectionSlot>& c) {
  return address_text(c[&ConnectionSlot::peer_family_port], c[&ConnectionSlot::peer_addr_hi],
                      c[&ConnectionSlot::peer_addr_lo]);
}

std::string uptime_text(uint64_t start_realtime_ns) {
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  const uint64_t now_ns =
      static_cast<uint64_t>(now.tv_sec) * 1000000000u + static_cast<uint64_t>(now.tv_nsec);
  const unsigned long long s =
      now_ns > start_realtime_ns ? (now_ns - start_realtime_ns) / 1000000000u : 0;
  char text[64];
  if (s >= 86400) {
    std::snprintf(text, sizeof text, "%llud%02lluh%02llum", s / 86400, s / 3600 % 24, s / 60 % 60);
  } else if (s >= 3600) {
    std::snprintf(text, sizeof text, "%lluh%02llum%02llus", s / 3600, s / 60 % 60, s % 60);
  } else {
    std::snprintf(text, sizeof text, "%llum%02llus", s / 60, s % 60);
  }
  return text;
}

std::string bytes_text(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024) return num(bytes) + " B";
  double value = static_cast<double>(bytes) / 1024;
  size_t unit = 0;
  while (value >= 1024 && unit + 1 < std::size(kUnits)) {
    value /= 1024;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof text, "%.1f %s", value, kUnits[unit]);
  return text;
}

Table connections_table(bool with_process) {
  std::vector<std::string> header = {"ROLE", "LOCAL", "PEER",     "STATE",
                                     "PATH", "SENT",  "RECEIVED", "RNR"};
  std::vector<size_t> left = {0, 1, 2, 3, 4};
  if (with_process) {
    header.insert(header.begin(), {"PID", "PROGRAM"});
    left = {1, 2, 3, 4, 5, 6};
  }
  return Table(std::move(header), std::move(left));
}

void add_connections(Table& table, const Snapshot& s, bool with_process) {
  for (const auto& c : s.connections) {
    std::vector<std::string> row = {
        role_name(c[&ConnectionSlot::role]), local_address_text(c), peer_address_text(c),
        state_name(c[&ConnectionSlot::state]), path_text(c), num(c[&ConnectionSlot::bytes_sent]),
        num(c[&ConnectionSlot::bytes_received]),
        // An RDMA adapter cannot tell (see summary_text).
        on_smc(c) && c[&ConnectionSlot::rnr_counted] == 0 ? std::string("-")
                                                          : num(c[&ConnectionSlot::rnr])};
    if (with_process) row.insert(row.begin(), {num(s.pid), s.comm});
    table.add(std::move(row));
  }
}

std::string summary_text(const Snapshot& s, const std::string& title) {
  const Totals t = totals(s);
  const auto& p = s.process;
  std::string out = "smcpre: pid " + num(s.pid) + " (" + s.comm + "), up " +
                    uptime_text(s.start_realtime_ns) + ", " + title + "\n";
  auto line = [&out](const char* label, const std::string& text) {
    char head[24];
    std::snprintf(head, sizeof head, "  %-12s", label);
    out += head + text + "\n";
  };
  // The open ones by state, where any is not simply active.
  std::string states;
  for (uint64_t state :
       {kConnHandshake, kConnActive, kConnPeerClosed, kConnClosing, kConnAborted}) {
    const auto n = std::count_if(s.connections.begin(), s.connections.end(),
                                 [&](const auto& c) { return c[&ConnectionSlot::state] == state; });
    if (n != 0) states += (states.empty() ? " (" : ", ") + num(n) + " " + state_name(state);
  }
  if (states == " (" + num(t.open_smc + t.open_tcp + t.open_undecided) + " active") states.clear();
  if (!states.empty()) states += ")";
  line("connections", num(t.connections_smc) + " SMC, " + num(t.connections_fallback) +
                          " TCP; open now " + num(t.open_smc) + " SMC, " + num(t.open_tcp) +
                          " TCP, " + num(t.open_undecided) + " in handshake" + states);
  if (s.fallbacks.empty()) {
    line("fallbacks", "none");
  } else {
    // One reason per line, most frequent first; a screen has room for the usual few.
    constexpr size_t kShown = 8;
    uint64_t others = 0;
    for (size_t i = 0; i < s.fallbacks.size(); ++i) {
      const FallbackCount& f = s.fallbacks[i];
      if (i >= kShown) {
        others += f.count;
        continue;
      }
      char code[16];
      std::snprintf(code, sizeof code, "%#010x", f.code);
      line(i == 0 ? "fallbacks" : "", num(f.count) + " " + core::decline_name(f.code) + " (" +
                                          code + "): " + core::decline_explanation(f.code));
    }
    if (others != 0) line("", num(others) + " for other reasons (smcpre-stat show lists all)");
  }
  line("bytes", "SMC " + bytes_text(t.smc_bytes_sent) + " sent, " +
                    bytes_text(t.smc_bytes_received) + " received; TCP " +
                    bytes_text(t.tcp_bytes_sent) + " sent, " + bytes_text(t.tcp_bytes_received) +
                    " received");
  line("messages", "CDC " + num(t.cdc_sent) + " sent, " + num(t.cdc_received) + " received; LLC " +
                       num(t.llc_sent) + " sent, " + num(t.llc_received) + " received");
  const uint64_t rq_low = p[&ProcessCounters::rq_low_water];
  line("links",
       num(s.links.size()) + " open, " + num(p[&ProcessCounters::links_total]) + " ever; RNR " +
           num(t.rnr_events) + " events, " + num(t.rnr_retries) + " retries" +
           (t.rnr_uncounted_links != 0 ? " (not counted on RDMA adapter links)" : "") +
           "; receive queue low water " + (rq_low == kNoLowWater ? std::string("-") : num(rq_low)));
  line("pool", num(p[&ProcessCounters::pool_size]) + " buffers, " +
                   num(p[&ProcessCounters::pool_free]) + " free, low water " +
                   num(p[&ProcessCounters::pool_low_water]) + ", exhausted " +
                   num(p[&ProcessCounters::pool_exhausted]) + " times");
  const uint64_t workers = p[&ProcessCounters::backlog_workers];
  line("backlog", (workers == 0 ? std::string("inline (no workers)") : num(workers) + " workers") +
                      "; CDC " + num(p[&ProcessCounters::cdc_inline]) + " applied inline, " +
                      num(p[&ProcessCounters::cdc_backlogged]) + " by workers; queue max " +
                      num(t.worker_queue_max) + ", sleeps " + num(t.worker_sleeps));
  switch (p[&ProcessCounters::option_program]) {
    case kOptionActive:
      // The map is open; whether the program runs for this process shows in what it
      // recorded (it runs only in the cgroups it is attached to).
      line("option", "program active: " + num(p[&ProcessCounters::option_handshakes]) +
                         " handshakes recorded, " + num(p[&ProcessCounters::option_peer_smc]) +
                         " with the peer's SMC option");
      break;
    case kOptionInactive:
      line("option", "program not active (the listener registry and SMCPRE_PEERS decide)");
      break;
    default:
      line("option", "program not looked for yet");
      break;
  }
  const uint64_t unlisted = p[&ProcessCounters::connection_slots_overflowed];
  if (unlisted != 0) line("note", num(unlisted) + " connections were not listed (slots full)");
  return out;
}

}  // namespace smcpre::stats
