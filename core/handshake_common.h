// What the client's and the server's handshakes share (handshake_client.cpp,
// handshake_server.cpp), defined in handshake.cpp. Internal to the handshake: nothing
// else includes it, and it includes no engine header, so that it joins no include cycle.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config/fd_budget.h"
#include "core/wire/clc.h"
#include "core/wire/decline.h"
#include "rdma/device.h"

namespace smcpre::core {

class Connection;
class EngineState;
class LinkGroup;
struct HandshakeResult;
struct PeerIdentity;

namespace handshake_detail {

constexpr uint32_t code(DeclineCode c) {
  return static_cast<uint32_t>(c);
}

int64_t deadline_after_ms(uint32_t ms);
// Connects the group's queue pair to the peer's (by the deadline) and gives the link to
// the progress thread; false, with *error, if either fails.
bool connect_link(const std::shared_ptr<LinkGroup>& group, const rdma::QpEndpoint& remote,
                  int64_t deadline_ns, std::string* error);
// Sends all of `bytes` on the TCP socket (a CLC message); false if the connection failed.
bool send_all(int fd, const std::vector<uint8_t>& bytes);

clc::LocalInfo local_info(EngineState& engine, rdma::Device& device);
PeerIdentity identity_of(const clc::LocalInfo& info);
// Accept/Confirm fields describing our side of a connection.
clc::AcceptConfirm describe(EngineState& engine, rdma::Device& device, LinkGroup& group,
                            Connection& connection, bool first_contact);

// A connection under construction; removed from its group unless handed out.
struct PendingConnection {
  std::shared_ptr<LinkGroup> group;
  std::shared_ptr<Connection> connection;
  ~PendingConnection();
  std::shared_ptr<Connection> release();
};

// Creates our RMB element and registers the connection in the group.
uint32_t create_connection(EngineState& engine, int fd, PendingConnection* pending);
// Makes the peer's RMB element (from its Accept or Confirm) the connection's target.
uint32_t attach_peer_rmb(LinkGroup& group, Connection& connection, const clc::AcceptConfirm& msg,
                         int timeout_ms);
bool wait_link_confirmed(LinkGroup& group, int64_t deadline_ns);
uint32_t connect_error_code(const std::string& error);

// Descriptors an SMC connection may take: its readiness mirror's two ends (made when the
// application first polls it; after its close, the one that keeps the TCP socket until
// the peer closes) and, where the link would not notice the peer's exit, a watch on its
// TCP socket. A link group: its queue pair's (at most 5 on shm) and a memory area's.
int connection_fds(const rdma::Device& device);
constexpr int kLinkGroupFds = 6;
// Reserves `count` descriptors for a connection on `fd`: empty (and said once per
// process) when smcpre's share of the limit is used up.
config::FdReservation reserve_fds(int count, int fd);

HandshakeResult fallback(uint32_t reason, bool swallow = false);

}  // namespace handshake_detail
}  // namespace smcpre::core
