// A connection as the layers beneath it see it (doc/design.md §1): the link group routes
// CDC messages to it by its token, the receive path applies what arrives in the
// connection's order (its flow hash picks the backlog worker), and the progress thread
// watches its close and its TCP connection. Connection implements it; nothing below
// core/connection knows more of a connection than this.
#pragma once

#include <cstdint>

#include "core/wire/cdc.h"

namespace smcpre::core {

class ConnectionEvents {
 public:
  virtual ~ConnectionEvents() = default;

  // A hash of the TCP 4-tuple: chooses the connection's backlog worker.
  uint64_t flow_hash() const { return flow_hash_; }
  // Our alert token (CDCs addressed to us carry it), given by the link group.
  uint32_t local_token() const { return local_token_; }
  void set_local_token(uint32_t token) { local_token_ = token; }

  // Receive processing (the thread reaping the link, or its backlog worker; in order per
  // connection).
  virtual void on_cdc(const cdc::Message& message) = 0;
  // A signaled CDC this connection sent has completed (wr_id from cdc_wr_id()).
  virtual void on_send_complete(uint64_t wr_id) = 0;
  // The link went down after everything received before was applied.
  virtual void on_link_down() = 0;

  // Neither end has closed or aborted the connection: one a link failure resets.
  virtual bool open_both_ways() const = 0;
  // Orderly close of a connection the exiting process never closed.
  virtual void close_at_exit() = 0;

  // The close protocol has ended (both sides closed, or the connection was reset).
  virtual bool finished() const = 0;
  // The peer did not close its side within the close timeout after our close.
  virtual void close_timed_out() = 0;
  // The peer's SMC close (or abort) has arrived, or the link is down.
  virtual bool peer_gone_or_closed() const = 0;
  // The TCP connection ended (FIN or reset) a grace period ago: unless the peer's SMC
  // close has come meanwhile, the peer is gone and the connection is reset.
  virtual void on_tcp_ended() = 0;

 protected:
  uint64_t flow_hash_ = 0;
  uint32_t local_token_ = 0;
};

}  // namespace smcpre::core
