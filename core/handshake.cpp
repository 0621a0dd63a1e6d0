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
#include "core/link_group.h"
#include "core/local_address.h"
#include "core/low_water.h"
#include "core/progress.h"
#include "core/wait.h"
#include "core/wire/decline.h"

namespace smcpre::core {
namespace handshake_detail {

int64_t deadline_after_ms(uint32_t ms) {
  return now_ns() + int64_t{ms} * 1'000'000;
}

int remaining_ms(int64_t deadline_ns) {
  if (deadline_ns < 0) return -1;
  int64_t left = deadline_ns - now_ns();
  if (left <= 0) return 0;
  return static_cast<int>((left + 999'999) / 1'000'000);
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

ClcRead read_clc(int fd, int64_t deadline_ns, bool wait, std::vector<uint8_t>* message,
                 clc::Header* header, int64_t partial_ns, size_t* needed, bool consume) {
  uint8_t buf[clc::kMaxMessageSize];
  int64_t partial_deadline = -1;  // set when the first part of a message is seen
  // While waiting for the rest of a message, the socket is not readable until it is all
  // there (or the peer closes): one poll, no sleep loop.
  ReceiveLowWater low_water;
  while (true) {
    ssize_t n = sys::recv(fd, buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0) return ClcRead::kEof;
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) return ClcRead::kError;
      n = 0;
    }
    const auto result =
        clc::parse_header(std::span<const uint8_t>(buf, static_cast<size_t>(n)), header);
    if (result == clc::HeaderResult::kNotClc) return ClcRead::kNotClc;
    if (result == clc::HeaderResult::kOk && static_cast<size_t>(n) >= header->length) {
      // A header whose length does not end on a trailer eyecatcher frames no message:
      // a truncated one followed by other bytes, say. Those are the application's.
      if (!std::equal(clc::kEyecatcher.begin(), clc::kEyecatcher.end(),
                      buf + header->length - clc::kTrailerSize)) {
        return ClcRead::kNotClc;
      }
      message->assign(buf, buf + header->length);
      if (!consume) return ClcRead::kMessage;
      // Consume exactly the message; it is all there already.
      ssize_t got = sys::recv(fd, buf, header->length, MSG_DONTWAIT);
      if (got != header->length) return ClcRead::kError;
      return ClcRead::kMessage;
    }
    const size_t need = result == clc::HeaderResult::kOk ? header->length : clc::kHeaderSize;
    if (needed != nullptr) *needed = n > 0 ? need : 0;
    if (n > 0) {
      // Part of a message: if the peer has shut down (or the socket failed), the rest
      // never comes, and what is there is application data, to be delivered at once.
      pollfd p{fd, POLLRDHUP, 0};
      if (sys::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR))) {
        return ClcRead::kNotClc;
      }
      if (partial_deadline < 0) partial_deadline = now_ns() + partial_ns;
    }
    if (!wait) return ClcRead::kNeedMore;
    const int64_t deadline = n > 0 && (deadline_ns < 0 || partial_deadline < deadline_ns)
                                 ? partial_deadline
                                 : deadline_ns;
    const int left = remaining_ms(deadline);
    if (left == 0) return ClcRead::kNeedMore;
    if (n > 0) low_water.hold(fd, static_cast<int>(need));
    pollfd p{fd, POLLIN | POLLRDHUP, 0};
    int r = sys::poll(&p, 1, left);
    if (r < 0 && errno == EINTR) return ClcRead::kInterrupted;
  }
}

bool bytes_waiting(int fd) {
  uint8_t b;
  return sys::recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

void send_decline(int fd, EngineState& engine, uint32_t reason) {
  clc::Decline decline;
  decline.peer_id = engine.peer_id();
  decline.diagnosis = reason;
  decline.out_of_sync = reason == code(DeclineCode::kSyncErr);
  send_all(fd, clc::encode(decline));
}

}  // namespace smcpre::core
