// One tracked TCP connection's line in the published counters (core/stats/layout.h
// ConnectionSlot): what smcpre-stat shows per connection. Shared by the socket (which
// decides the path and counts the bytes the application moves) and, on SMC, by the
// Connection (which reports its state as the close protocol goes on); the slot is released
// when the last of them lets go, so a connection closing after the application closed its
// socket stays listed until it is done.
//
// Every update is one relaxed store or add into memory only this connection writes: no
// syscall, no shared cache line.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <memory>

#include "core/stats/segment.h"

namespace smcpre::core {

class ConnectionStats {
 public:
  enum class Role { kClient, kServer };
  // Takes a slot and fills in the connection's addresses from the socket `fd`.
  static std::shared_ptr<ConnectionStats> open(int fd, Role role);
  ~ConnectionStats();
  ConnectionStats(const ConnectionStats&) = delete;
  ConnectionStats& operator=(const ConnectionStats&) = delete;

  // The handshake moved the connection onto SMC.
  // `rnr_counted`: the device tells which message met RNR (rdma::DeviceCaps::reports_rnr).
  void on_smc(bool verbs_device, bool rnr_counted, uint64_t link_group, uint32_t local_token);
  // The connection stays on TCP for `reason` (core/wire/decline.h); counted once.
  void on_fallback(uint32_t reason);
  void set_state(stats::ConnectionState state) { stats::set(slot_->state, state); }

  // The kernel path: bytes as they move (any thread, hence atomic adds).
  void add_sent(uint64_t bytes) { stats::add(slot_->bytes_sent, bytes); }
  void add_received(uint64_t bytes) { stats::add(slot_->bytes_received, bytes); }
  // The SMC path: the connection's own cursors, stored by their one writer (no locked
  // instruction on the data path).
  void set_sent(uint64_t total) { stats::set(slot_->bytes_sent, total); }
  void set_received(uint64_t total) { stats::set(slot_->bytes_received, total); }
  void add_rnr(uint64_t events) { stats::add(slot_->rnr, events); }

 private:
  explicit ConnectionStats(stats::ConnectionSlot* slot) : slot_(slot) {}
  stats::ConnectionSlot* const slot_;
  bool counted_ = false;  // on_smc/on_fallback ran
};

}  // namespace smcpre::core
