// Published counters as text for people: the one-screen summary a process prints at exit
// (SMCPRE_STATS=exit) and smcpre-stat's tables, from one definition so that both read the
// same way.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/stats/snapshot.h"

namespace smcpre::stats {

// A text table: columns as wide as their widest cell, numbers right-aligned, text columns
// (listed in `left`) left-aligned; the last column is not padded.
class Table {
 public:
  Table(std::vector<std::string> header, std::vector<size_t> left);
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  size_t rows() const { return rows_.size() - 1; }
  // Every line starts with `indent` and ends with '\n'.
  std::string render(const char* indent) const;

 private:
  std::vector<std::vector<std::string>> rows_;
  std::vector<size_t> left_;
};

// What a snapshot adds up to: closed connections and links are in the process's totals,
// open ones in their slots.
struct Totals {
  uint64_t connections_smc = 0;
  uint64_t connections_fallback = 0;
  uint64_t open_smc = 0;
  uint64_t open_tcp = 0;
  uint64_t open_undecided = 0;
  uint64_t smc_bytes_sent = 0;
  uint64_t smc_bytes_received = 0;
  uint64_t tcp_bytes_sent = 0;
  uint64_t tcp_bytes_received = 0;
  uint64_t cdc_received = 0;
  uint64_t cdc_sent = 0;
  uint64_t llc_received = 0;
  uint64_t llc_sent = 0;
  uint64_t rnr_events = 0;
  uint64_t rnr_retries = 0;
  uint64_t rnr_uncounted_links = 0;  // open links whose RNR events nobody counts
  uint64_t worker_queue_max = 0;
  uint64_t worker_sleeps = 0;
};
Totals totals(const Snapshot& s);

std::string state_name(uint64_t state);  // "active", "closing", ... (ConnectionState)
std::string role_name(uint64_t role);    // "client", "server"
// "SMC-R/shm", "SMC-R/verbs", "TCP (PEERNOSMC)", "-" (not decided yet).
std::string path_text(const Values<ConnectionSlot>& c);
// "127.0.0.1:80", "[::1]:80", "-" (unknown).
std::string address_text(uint64_t family_port, uint64_t hi, uint64_t lo);
std::string local_address_text(const Values<ConnectionSlot>& c);
std::string peer_address_text(const Values<ConnectionSlot>& c);
// "3m05s", "2h01m00s", "1d02h03m" since `start_realtime_ns`.
std::string uptime_text(uint64_t start_realtime_ns);
// 1536 -> "1.5 KiB"
std::string bytes_text(uint64_t bytes);

// The one-line-per-connection table, like smcss (with the process's pid and program when
// `with_process`).
Table connections_table(bool with_process);
void add_connections(Table& table, const Snapshot& s, bool with_process);

// The one-screen summary: connections by outcome and state, fallbacks by reason, bytes,
// messages, links, RNR, receive queue and pool low-water marks, backlog workers.
// `title` ends the first line (e.g. "at exit").
std::string summary_text(const Snapshot& s, const std::string& title);

}  // namespace smcpre::stats
