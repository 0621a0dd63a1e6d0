#include "core/handshake.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>

#include <atomic>
#include <cerrno>
#include <functional>
#include <string>
#include <unordered_map>

#include "config/fd_budget.h"
#include "config/log.h"
#include "config/sys.h"
#include "core/connection.h"
#include "core/engine_state.h"
#include "core/handshake_common.h"
#include "core/datapath/link_group.h"
#include "core/local_address.h"
#include "core/low_water.h"
#include "core/datapath/progress.h"
#include "core/datapath/wait.h"
#include "core/datapath/waiting.h"
#include "core/wire/decline.h"

namespace smcpre::core {
namespace handshake_detail {

int64_t deadline_after_ms(uint32_t ms) {
  return now_ns() + int64_t{ms} * 1'000'000;
}

bool connect_link(const std::shared_ptr<LinkGroup>& group, const rdma::QpEndpoint& remote,
                  int64_t deadline_ns, std::string* error) {
  if (!group->connect(remote, timeout_ms_until(deadline_ns), error)) return false;
  if (!progress_thread().add_link(group)) {
    *error = "cannot start the progress thread";
    return false;
  }
  return true;
}

bool send_all(int fd, const std::vector<uint8_t>& bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = sys::send(fd, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      pollfd p{fd, POLLOUT, 0};
      sys::poll(&p, 1, 100);
      continue;
    }
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

clc::LocalInfo local_info(EngineState& engine, rdma::Device& device) {
  clc::LocalInfo info;
  info.peer_id = engine.peer_id();
  info.gid = device.gid();
  info.mac = device.mac();
  return info;
}

PeerIdentity identity_of(const clc::LocalInfo& info) {
  return PeerIdentity{info.peer_id, info.gid, info.mac};
}

clc::AcceptConfirm describe(EngineState& engine, rdma::Device& device, LinkGroup& group,
                            Connection& connection, bool first_contact) {
  clc::AcceptConfirm msg;
  msg.first_contact = first_contact;
  msg.local = local_info(engine, device);
  set_endpoint(group.local_endpoint(), &msg);
  msg.rmb_rkey = connection.rmb().rkey();
  msg.conn_idx = 1;
  msg.rmbe_alert_token = connection.local_token();
  msg.rmbe_size_code = clc::rmbe_size_code(static_cast<uint32_t>(connection.rmb().length()));
  msg.rmb_vaddr = connection.rmb().remote_addr();
  return msg;
}

PendingConnection::~PendingConnection() {
  if (group && connection) group->remove_connection(connection->local_token());
  // A link group this handshake created and never completed is of no use to anyone.
  if (group && !group->active()) group->link().fail("handshake did not complete");
}

std::shared_ptr<Connection> PendingConnection::release() {
  group.reset();
  return std::move(connection);
}

uint32_t create_connection(EngineState& engine, int fd, PendingConnection* pending) {
  std::string error;
  auto rmb = pending->group->take_buffer(engine.config().rmb_size, &error);
  if (!rmb) {
    SMC_LOG_WARN("cannot register an RMB of {} bytes: {}", engine.config().rmb_size, error);
    return code(DeclineCode::kMem);
  }
  pending->connection = std::make_shared<Connection>(pending->group, std::move(rmb));
  pending->connection->set_flow(fd);
  if (pending->group->add_connection(pending->connection) == 0) {
    pending->connection.reset();
    return code(DeclineCode::kMem);
  }
  return 0;
}

uint32_t attach_peer_rmb(LinkGroup& group, Connection& connection, const clc::AcceptConfirm& msg,
                         int timeout_ms) {
  rdma::RemoteRegion region;
  region.addr = msg.rmb_vaddr;
  region.rkey = msg.rmb_rkey;
  region.length = clc::rmbe_size_bytes(msg.rmbe_size_code);
  std::string error;
  if (!group.link().qp().prepare_remote_region(region, timeout_ms, &error)) {
    SMC_LOG_WARN("peer RMB unusable: {}", error);
    return code(DeclineCode::kErrRtok);
  }
  if (!connection.set_peer(region, msg.rmbe_alert_token, &error)) {
    SMC_LOG_WARN("cannot register a send buffer of {} bytes: {}", region.length, error);
    return code(DeclineCode::kMem);
  }
  return 0;
}

bool wait_link_confirmed(LinkGroup& group, int64_t deadline_ns) {
  SpinBudget budget;
  Link& link = group.link();
  return wait_adaptive(link, link.events(), budget, deadline_ns,
                       [&link] { return link.confirmed(); }) == WaitResult::kReady;
}

uint32_t connect_error_code(const std::string& error) {
  if (error.find("rendezvous full") != std::string::npos) {
    return code(DeclineCode::kRendezvousFull);
  }
  if (error.find("credential") != std::string::npos) return code(DeclineCode::kPeerCred);
  return code(DeclineCode::kErrRdyLnk);
}

int connection_fds(const rdma::Device& device) {
  return device.caps().link_notices_peer_exit ? 2 : 3;
}

config::FdReservation reserve_fds(int count, int fd) {
  config::FdReservation fds = config::reserve_fds(count, fd);
  if (!fds) {
    static std::atomic<bool> said{false};
    if (!said.exchange(true)) {
      SMC_LOG_WARN(
          "file descriptors short (RLIMIT_NOFILE {}, smcpre holds {}, socket fd {}): "
          "new connections stay TCP (NO_FDS)",
          config::nofile_limit(), config::fds_held(), fd);
    } else {
      SMC_LOG_DEBUG("file descriptors short: TCP (NO_FDS)");
    }
  }
  return fds;
}

HandshakeResult fallback(uint32_t reason, bool swallow) {
  HandshakeResult r;
  r.reason = reason;
  r.swallow = swallow;
  return r;
}

}  // namespace handshake_detail

using namespace handshake_detail;

void set_endpoint(const rdma::QpEndpoint& ep, clc::AcceptConfirm* msg) {
  msg->local.gid = ep.gid;
  msg->local.mac = ep.mac;
  msg->qp_num = ep.qp_num;
  msg->psn = ep.psn;
  msg->qp_mtu = static_cast<uint8_t>(ep.mtu);
}

rdma::QpEndpoint endpoint_of(const clc::AcceptConfirm& msg) {
  rdma::QpEndpoint ep;
  ep.gid = msg.local.gid;
  ep.mac = msg.local.mac;
  ep.qp_num = msg.qp_num;
  ep.psn = msg.psn;
  ep.mtu = static_cast<rdma::PathMtu>(msg.qp_mtu);
  return ep;
}

void send_decline(int fd, EngineState& engine, uint32_t reason) {
  clc::Decline decline;
  decline.peer_id = engine.peer_id();
  decline.diagnosis = reason;
  decline.out_of_sync = reason == code(DeclineCode::kSyncErr);
  send_all(fd, clc::encode(decline));
}

}  // namespace smcpre::core
