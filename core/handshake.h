// The CLC handshake on a fresh TCP connection (RFC 7609; doc/design.md §2.3). Every
// failure ends in a fallback to TCP on the same connection: a Decline with a reason code
// goes to the peer whenever it may still be waiting for a CLC message.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "core/clc_stream.h"
#include "core/wire/clc.h"
#include "rdma/device.h"

namespace smcpre::core {

class Connection;
class EngineState;

struct HandshakeResult {
  std::shared_ptr<Connection> connection;  // set: SMC; null: fallback to TCP
  uint32_t reason = 0;                     // fallback reason (DeclineCode or the peer's)
  bool peer_declined = false;
  // The peer may still send CLC messages we must not hand to the application.
  bool swallow = false;
};

// Client: after a successful connect() to an eligible server. `peer_announced`: the
// server's SYN-ACK carried the SMC option, so it waits for a CLC message even if we
// cannot propose (doc/design.md §2.9).
HandshakeResult client_handshake(int fd, EngineState& engine, bool peer_announced = false);

// The queue pair endpoint that CLC Accept/Confirm carry (GID, MAC, QP number, PSN, MTU):
// ours into a message, the peer's out of one (the device validates it when connecting).
void set_endpoint(const rdma::QpEndpoint& endpoint, clc::AcceptConfirm* msg);
rdma::QpEndpoint endpoint_of(const clc::AcceptConfirm& msg);

// Server, in steps that never wait for the client (each runs in whichever call finds
// the client's message there): the Proposal is answered with an Accept, then the
// handshake is pending until the client's Confirm (or Decline) arrives or its deadline
// passes.
struct ServerPending;
struct ServerPendingDeleter {
  void operator()(ServerPending* pending) const;
};
using PendingServerHandshake = std::unique_ptr<ServerPending, ServerPendingDeleter>;

// `proposal_bytes` is the Proposal at the start of the stream (the caller consumes it
// unless *wait_for_turn). Returns the pending handshake once the Accept is out; null with
// *result set when it ended (a Decline). When another handshake is making this client's
// first link group: without `on_turn_free` (a blocking call) it waits for that one
// (bounded by the handshake timeout); with it, it returns null at once with
// *wait_for_turn set and nothing sent, and on_turn_free runs when that one has ended.
PendingServerHandshake server_accept(int fd, EngineState& engine,
                                     const std::vector<uint8_t>& proposal_bytes,
                                     std::function<void()> on_turn_free, bool* wait_for_turn,
                                     HandshakeResult* result);
// The client's answer (a Confirm or a Decline, just consumed) ends the handshake.
HandshakeResult server_confirm(int fd, EngineState& engine, ServerPending& pending,
                               const std::vector<uint8_t>& bytes, const clc::Header& header);
// No answer by the deadline: a Decline, then TCP.
HandshakeResult server_confirm_missing(int fd, EngineState& engine, ServerPending& pending);
int64_t pending_deadline_ns(const ServerPending& pending);

// Sends a Decline (best effort).
void send_decline(int fd, EngineState& engine, uint32_t code);

}  // namespace smcpre::core
