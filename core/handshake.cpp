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
#include "core/link_group.h"
#include "core/local_address.h"
#include "core/low_water.h"
#include "core/progress.h"
#include "core/wait.h"
#include "core/wire/decline.h"

namespace smcpre::core {
namespace {

constexpr uint32_t code(DeclineCode c) {
  return static_cast<uint32_t>(c);
}

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

// Accept/Confirm fields describing our side of a connection.
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

// The server's turn to make a first contact with one client on one device (see
// EngineState::begin_first_contact), given back when the handshake ends either way.
class FirstContactTurn {
 public:
  FirstContactTurn(EngineState& engine, const PeerIdentity& peer, rdma::Device* device)
      : engine_(engine), peer_(peer), device_(device) {}
  ~FirstContactTurn() {
    if (taken_) engine_.end_first_contact(peer_, device_);
  }
  FirstContactTurn(const FirstContactTurn&) = delete;
  FirstContactTurn& operator=(const FirstContactTurn&) = delete;
  void take(int64_t deadline_ns) {
    taken_ = engine_.begin_first_contact(peer_, device_, deadline_ns);
    if (!taken_)
      SMC_LOG_INFO("server: another first contact with this client is slow: a new link group");
  }
  // Never waits: false (and on_free called when the turn ends) if another has it.
  bool try_take(std::function<void()> on_free) {
    taken_ = engine_.try_first_contact(peer_, device_, std::move(on_free));
    return taken_;
  }

 private:
  EngineState& engine_;
  const PeerIdentity peer_;
  rdma::Device* const device_;
  bool taken_ = false;
};

// A connection under construction; removed from its group unless handed out.
struct PendingConnection {
  std::shared_ptr<LinkGroup> group;
  std::shared_ptr<Connection> connection;
  ~PendingConnection() {
    if (group && connection) group->remove_connection(connection->local_token());
    // A link group this handshake created and never completed is of no use to anyone.
    if (group && !group->active()) group->link().fail("handshake did not complete");
  }
  std::shared_ptr<Connection> release() {
    group.reset();
    return std::move(connection);
  }
};

// Creates our RMB element and registers the connection in the group.
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

// The client's wait for CONFIRM LINK also watches the TCP connection: a server that gave
// up on the new link declines there, and then no Decline of ours may follow it.
enum class ConfirmWait { kConfirmed, kTimeout, kDeclined };
ConfirmWait client_wait_link_confirmed(int fd, LinkGroup& group, int64_t deadline_ns,
                                       uint32_t* reason) {
  constexpr int64_t kSliceNs = 5'000'000;
  while (true) {
    const int64_t now = now_ns();
    const int64_t slice_end = std::min(deadline_ns, now + kSliceNs);
    if (wait_link_confirmed(group, slice_end)) return ConfirmWait::kConfirmed;
    std::vector<uint8_t> bytes;
    clc::Header header;
    if (read_clc(fd, -1, false, &bytes, &header, 0) == ClcRead::kMessage) {
      clc::Decline decline;
      std::string error;
      *reason = code(DeclineCode::kPeerDecl);
      if (header.type == clc::Type::kDecline && clc::parse_decline(bytes, &decline, &error)) {
        *reason = decline.diagnosis;
      }
      return ConfirmWait::kDeclined;
    }
    if (now_ns() >= deadline_ns) return ConfirmWait::kTimeout;
  }
}

uint32_t connect_error_code(const std::string& error) {
  if (error.find("rendezvous full") != std::string::npos) {
    return code(DeclineCode::kRendezvousFull);
  }
  if (error.find("credential") != std::string::npos) return code(DeclineCode::kPeerCred);
  return code(DeclineCode::kErrRdyLnk);
}

// Descriptors an SMC connection may take: its readiness mirror's two ends (made when the
// application first polls it; after its close, the one that keeps the TCP socket until
// the peer closes) and, where the link would not notice the peer's exit, a watch on its
// TCP socket. A link group: its queue pair's (at most 5 on shm) and a memory area's.
int connection_fds(const rdma::Device& device) {
  return device.caps().link_notices_peer_exit ? 2 : 3;
}
constexpr int kLinkGroupFds = 6;

// Reserves `count` descriptors for a connection on `fd`: empty (and said once per
// process) when smcpre's share of the limit is used up.
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

HandshakeResult fallback(uint32_t reason, bool swallow = false) {
  HandshakeResult r;
  r.reason = reason;
  r.swallow = swallow;
  return r;
}

}  // namespace

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

HandshakeResult client_handshake(int fd, EngineState& engine) {
  const config::Config& config = engine.config();
  uint32_t reason = 0;
  rdma::Device* device = engine.device_for(fd, &reason);
  if (!device) return fallback(reason);  // nothing proposed: plain TCP
  config::FdReservation fds = reserve_fds(connection_fds(*device), fd);
  if (!fds) return fallback(code(DeclineCode::kNoFds));  // nothing proposed either

  LocalSubnets subnets;
  local_subnets(fd, &subnets);
  clc::Proposal proposal;
  proposal.local = local_info(engine, *device);
  proposal.ipv4_subnet_be = subnets.ipv4_subnet_be;
  proposal.ipv4_prefix_len = subnets.ipv4_prefix_len;
  proposal.ipv6_prefixes = subnets.ipv6_prefixes;
  if (!send_all(fd, clc::encode(proposal))) return fallback(code(DeclineCode::kIntErr));

  const int64_t deadline = deadline_after_ms(config.handshake_timeout_ms);
  const int64_t partial_ns = int64_t{config.handshake_timeout_ms} * 1'000'000;
  std::vector<uint8_t> bytes;
  clc::Header header;
  ClcRead read;
  while ((read = read_clc(fd, deadline, true, &bytes, &header, partial_ns)) ==
         ClcRead::kInterrupted) {
  }
  switch (read) {
    case ClcRead::kMessage:
      break;
    case ClcRead::kNotClc:
      // The server's application spoke first: the server stays TCP and swallows our
      // Proposal; its bytes stay in the stream for our application.
      SMC_LOG_DEBUG("client: server answered with application data: TCP");
      return fallback(code(DeclineCode::kPeerNoSmc));
    case ClcRead::kNeedMore:
      SMC_LOG_INFO("client: no CLC answer within {} ms: TCP", config.handshake_timeout_ms);
      send_decline(fd, engine, code(DeclineCode::kHandshakeTimeout));
      // Part of a message that never completed is the start of the application's
      // stream: swallowing would take it, and whatever follows it, for a late message.
      return fallback(code(DeclineCode::kHandshakeTimeout), !bytes_waiting(fd));
    default:
      return fallback(code(DeclineCode::kPeerNoSmc));
  }
  std::string error;
  if (header.type == clc::Type::kDecline) {
    clc::Decline decline;
    HandshakeResult r = fallback(code(DeclineCode::kPeerDecl));
    if (clc::parse_decline(bytes, &decline, &error)) {
      r.reason = decline.diagnosis;
      SMC_LOG_INFO("client: server declined: {} ({:#010x}): TCP", decline_name(decline.diagnosis),
                   decline.diagnosis);
    }
    r.peer_declined = true;
    return r;
  }
  clc::AcceptConfirm accept;
  if (header.type != clc::Type::kAccept || !clc::parse_accept(bytes, &accept, &error)) {
    SMC_LOG_WARN("client: bad CLC answer ({}): declining", error.empty() ? "not an Accept" : error);
    send_decline(fd, engine, code(DeclineCode::kProtocol));
    return fallback(code(DeclineCode::kProtocol));
  }

  const PeerIdentity server = identity_of(accept.local);
  PendingConnection pending;
  if (accept.first_contact) {
    config::FdReservation group_fds = reserve_fds(kLinkGroupFds, fd);
    if (!group_fds) {
      send_decline(fd, engine, code(DeclineCode::kNoFds));
      return fallback(code(DeclineCode::kNoFds));
    }
    pending.group = LinkGroup::create(*device, rdma::Role::kClient, server, config, &error);
    if (!pending.group) {
      SMC_LOG_WARN("client: cannot create a link group: {}", error);
      send_decline(fd, engine, code(DeclineCode::kMem));
      return fallback(code(DeclineCode::kMem));
    }
    pending.group->hold_fds(std::move(group_fds));
  } else {
    // The server reuses a link group as soon as its side is confirmed; ours may still be
    // finishing its first contact in another thread: wait for it.
    pending.group = engine.find_group(server, rdma::Role::kClient, device, accept.qp_num, true);
    while (pending.group && !pending.group->active() && !pending.group->retired() &&
           now_ns() < deadline) {
      timespec pause{0, 500'000};
      nanosleep(&pause, nullptr);
    }
    if (pending.group && !pending.group->active()) pending.group.reset();
    if (!pending.group) {
      SMC_LOG_WARN("client: server reuses a link group we do not have: declining");
      send_decline(fd, engine, code(DeclineCode::kSyncErr));
      return fallback(code(DeclineCode::kSyncErr));
    }
  }
  if (uint32_t r = create_connection(engine, fd, &pending); r != 0) {
    send_decline(fd, engine, r);
    return fallback(r);
  }
  pending.connection->hold_fds(std::move(fds));
  if (accept.first_contact) {
    if (!pending.group->connect(endpoint_of(accept), remaining_ms(deadline), &error)) {
      SMC_LOG_WARN("client: cannot connect the link: {}", error);
      uint32_t r = connect_error_code(error);
      send_decline(fd, engine, r);
      return fallback(r);
    }
    // Known from now on, so that concurrent handshakes the server answers with this link
    // group wait for it instead of declining.
    engine.add_group(pending.group);
  }
  // On a link group in use, the server's new RMB was announced over the link already; on
  // a new link the server announces it only after our Confirm (it connects its side then).
  if (!accept.first_contact) {
    if (uint32_t r =
            attach_peer_rmb(*pending.group, *pending.connection, accept, remaining_ms(deadline));
        r != 0) {
      send_decline(fd, engine, r);
      return fallback(r);
    }
  }
  clc::AcceptConfirm confirm =
      describe(engine, *device, *pending.group, *pending.connection, accept.first_contact);
  if (!send_all(fd, clc::encode_confirm(confirm))) return fallback(code(DeclineCode::kIntErr));
  if (accept.first_contact) {
    // The server confirms the new link over the link itself; we answer (in the link's
    // receive processing) and only then is the link usable.
    uint32_t declined = 0;
    switch (client_wait_link_confirmed(fd, *pending.group, deadline, &declined)) {
      case ConfirmWait::kConfirmed:
        break;
      case ConfirmWait::kDeclined: {
        SMC_LOG_INFO("client: server declined the new link: {} ({:#010x}): TCP",
                     decline_name(declined), declined);
        HandshakeResult r = fallback(declined, true);
        r.peer_declined = true;
        return r;
      }
      case ConfirmWait::kTimeout:
        SMC_LOG_WARN("client: no CONFIRM LINK from the server: TCP");
        send_decline(fd, engine, code(DeclineCode::kTimeoutCl));
        return fallback(code(DeclineCode::kTimeoutCl), true);
    }
    if (uint32_t r =
            attach_peer_rmb(*pending.group, *pending.connection, accept, remaining_ms(deadline));
        r != 0) {
      pending.group->link().fail("peer RMB unusable after CONFIRM LINK");
      send_decline(fd, engine, r);
      return fallback(r, true);
    }
    pending.group->set_active();
    SMC_LOG_DEBUG("client: link group created (id {})", pending.group->id());
  } else {
    SMC_LOG_DEBUG("client: link group reused (id {})", pending.group->id());
  }
  HandshakeResult result;
  result.connection = pending.release();
  if (!device->caps().link_notices_peer_exit) result.connection->watch_tcp(fd);
  return result;
}

namespace {

// Handshakes between our Accept and the client's Confirm hold an RMB element and a
// descriptor; those of a first contact hold a link group in the making too, and its
// receive queue's share of the receive pool. A stranger (a client address) may keep only
// so many of either: the cost of every Proposal it sends and never confirms is bounded.
struct SlotLimits {
  int per_peer;
  int total;
};
constexpr SlotLimits kPendingLimits{128, 512};
constexpr SlotLimits kFirstContactLimits{4, 8};

class SlotCounts {
 public:
  explicit SlotCounts(SlotLimits limits) : limits_(limits) {}
  bool take(const std::string& peer) {
    std::lock_guard lock(mutex_);
    int& mine = counts_[peer];
    if (mine >= limits_.per_peer || total_ >= limits_.total) {
      if (mine == 0) counts_.erase(peer);
      return false;
    }
    ++mine;
    ++total_;
    return true;
  }
  void give(const std::string& peer) {
    std::lock_guard lock(mutex_);
    auto it = counts_.find(peer);
    if (it != counts_.end() && --it->second == 0) counts_.erase(it);
    --total_;
  }

 private:
  const SlotLimits limits_;
  std::mutex mutex_;
  std::unordered_map<std::string, int> counts_;
  int total_ = 0;
};

// Heap-allocated and never freed, like every object engine threads may touch at exit.
SlotCounts& pending_counts() {
  static SlotCounts& counts = *new SlotCounts(kPendingLimits);
  return counts;
}
SlotCounts& first_contact_counts() {
  static SlotCounts& counts = *new SlotCounts(kFirstContactLimits);
  return counts;
}

// The client's address, as the key its slots are counted by.
std::string peer_key(int fd) {
  sockaddr_storage peer{};
  socklen_t length = sizeof peer;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &length) != 0) return {};
  if (peer.ss_family == AF_INET) {
    const auto& a = reinterpret_cast<const sockaddr_in&>(peer).sin_addr;
    return std::string(reinterpret_cast<const char*>(&a), sizeof a);
  }
  const auto& a = reinterpret_cast<const sockaddr_in6&>(peer).sin6_addr;
  return std::string(reinterpret_cast<const char*>(&a), sizeof a);
}

// One slot in `counts`, given back when the handshake ends either way.
class Slot {
 public:
  explicit Slot(SlotCounts& counts) : counts_(counts) {}
  ~Slot() {
    if (taken_) counts_.give(peer_);
  }
  Slot(const Slot&) = delete;
  Slot& operator=(const Slot&) = delete;
  bool take(const std::string& peer) {
    peer_ = peer;
    taken_ = counts_.take(peer);
    return taken_;
  }

 private:
  SlotCounts& counts_;
  std::string peer_;
  bool taken_ = false;
};

}  // namespace

// Everything a server handshake holds between its Accept and the client's Confirm.
struct ServerPending {
  ServerPending(EngineState& engine, const PeerIdentity& client, rdma::Device* device)
      : device(device), turn(engine, client, device) {}
  rdma::Device* device;
  Slot slot{pending_counts()};
  Slot first_contact_slot{first_contact_counts()};
  config::FdReservation fds;
  PendingConnection pending;  // after turn: released before the turn is given back
  FirstContactTurn turn;
  bool first_contact = false;
  int64_t deadline_ns = 0;
};

void ServerPendingDeleter::operator()(ServerPending* p) const {
  delete p;
}

int64_t pending_deadline_ns(const ServerPending& pending) {
  return pending.deadline_ns;
}

PendingServerHandshake server_accept(int fd, EngineState& engine,
                                     const std::vector<uint8_t>& proposal_bytes,
                                     std::function<void()> on_turn_free, bool* wait_for_turn,
                                     HandshakeResult* result) {
  *wait_for_turn = false;
  const config::Config& config = engine.config();
  std::string error;
  clc::Proposal proposal;
  if (!clc::parse_proposal(proposal_bytes, &proposal, &error)) {
    SMC_LOG_WARN("server: malformed CLC Proposal ({}): declining", error);
    send_decline(fd, engine, code(DeclineCode::kProtocol));
    *result = fallback(code(DeclineCode::kProtocol));
    return nullptr;
  }
  auto decline = [&](uint32_t reason) {
    send_decline(fd, engine, reason);
    *result = fallback(reason);
    return nullptr;
  };
  uint32_t reason = 0;
  rdma::Device* device = engine.device_for(fd, &reason);
  if (!device) return decline(reason);
  LocalSubnets subnets;
  if (!local_subnets(fd, &subnets) || !subnets_match(subnets, proposal)) {
    SMC_LOG_INFO("server: client subnet does not match ours: declining");
    return decline(code(DeclineCode::kDiffPrefix));
  }
  const PeerIdentity client = identity_of(proposal.local);
  PendingServerHandshake p(new ServerPending(engine, client, device));
  const std::string peer = peer_key(fd);
  if (!p->slot.take(peer)) {
    SMC_LOG_INFO("server: too many handshakes pending from this client: declining");
    return decline(code(DeclineCode::kPendingFull));
  }
  p->fds = reserve_fds(connection_fds(*device), fd);
  if (!p->fds) return decline(code(DeclineCode::kNoFds));

  p->pending.group = engine.find_group(client, rdma::Role::kServer, device, std::nullopt);
  if (!p->pending.group) {
    // Another handshake may be creating the group this client needs. A blocking call
    // waits for it (at most its handshake timeout), then looks again; a non-blocking one
    // never waits: it comes back when that one has ended (on_turn_free), having sent
    // nothing. (A group per waiting Proposal instead would let one client use up the
    // receive pool with a handful of unconfirmed handshakes.)
    if (!on_turn_free) {
      p->turn.take(deadline_after_ms(config.handshake_timeout_ms));
    } else if (!p->turn.try_take(std::move(on_turn_free))) {
      *wait_for_turn = true;
      return nullptr;
    }
    p->pending.group = engine.find_group(client, rdma::Role::kServer, device, std::nullopt);
  }
  p->first_contact = !p->pending.group;
  if (p->first_contact && !p->first_contact_slot.take(peer)) {
    SMC_LOG_INFO("server: too many new link groups pending from this client: declining");
    return decline(code(DeclineCode::kPendingFull));
  }
  if (p->first_contact) {
    config::FdReservation group_fds = reserve_fds(kLinkGroupFds, fd);
    if (!group_fds) return decline(code(DeclineCode::kNoFds));
    p->pending.group = LinkGroup::create(*device, rdma::Role::kServer, client, config, &error);
    if (!p->pending.group) {
      SMC_LOG_WARN("server: cannot create a link group: {}", error);
      return decline(code(DeclineCode::kMem));
    }
    p->pending.group->hold_fds(std::move(group_fds));
  }
  if (uint32_t r = create_connection(engine, fd, &p->pending); r != 0) return decline(r);
  p->pending.connection->hold_fds(std::move(p->fds));
  clc::AcceptConfirm accept =
      describe(engine, *device, *p->pending.group, *p->pending.connection, p->first_contact);
  if (!send_all(fd, clc::encode_accept(accept))) {
    *result = fallback(code(DeclineCode::kIntErr));
    return nullptr;
  }
  p->deadline_ns = deadline_after_ms(config.handshake_timeout_ms);
  return p;
}

HandshakeResult server_confirm_missing(int fd, EngineState& engine, ServerPending& pending) {
  (void)pending;
  SMC_LOG_INFO("server: no CLC Confirm within {} ms: TCP", engine.config().handshake_timeout_ms);
  send_decline(fd, engine, code(DeclineCode::kHandshakeTimeout));
  // From here on the client may still send a Confirm or a Decline: swallowed. An
  // incomplete message, though, is application data, not one to swallow.
  return fallback(code(DeclineCode::kHandshakeTimeout), !bytes_waiting(fd));
}

HandshakeResult server_confirm(int fd, EngineState& engine, ServerPending& p,
                               const std::vector<uint8_t>& bytes, const clc::Header& header) {
  std::string error;
  // From here on the client may send a Decline of its own at any time (it gave up
  // waiting for CONFIRM LINK, say): whatever we decide, a late CLC message is swallowed.
  auto decline_late = [&](uint32_t reason) {
    send_decline(fd, engine, reason);
    return fallback(reason, true);
  };
  if (header.type == clc::Type::kDecline) {
    clc::Decline d;
    HandshakeResult r = fallback(code(DeclineCode::kPeerDecl));
    if (clc::parse_decline(bytes, &d, &error)) r.reason = d.diagnosis;
    r.peer_declined = true;
    SMC_LOG_INFO("server: client declined: {}: TCP", decline_name(r.reason));
    return r;
  }
  clc::AcceptConfirm confirm;
  if (header.type != clc::Type::kConfirm || !clc::parse_confirm(bytes, &confirm, &error)) {
    SMC_LOG_WARN("server: bad CLC Confirm ({}): declining", error);
    return decline_late(code(DeclineCode::kProtocol));
  }
  PendingConnection& pending = p.pending;
  // The link's own steps (connecting a new link, CONFIRM LINK) are bounded by the
  // handshake's deadline; a legitimate client answers them within a round trip.
  const int64_t deadline = p.deadline_ns;
  if (p.first_contact) {
    if (!pending.group->connect(endpoint_of(confirm), remaining_ms(deadline), &error)) {
      SMC_LOG_WARN("server: cannot connect the link: {}", error);
      return decline_late(connect_error_code(error));
    }
  } else if (confirm.qp_num != pending.group->peer_qp_num()) {
    SMC_LOG_WARN("server: Confirm names QP {:#x}, link group has {:#x}: declining", confirm.qp_num,
                 pending.group->peer_qp_num());
    return decline_late(code(DeclineCode::kSyncErr));
  }
  if (uint32_t r =
          attach_peer_rmb(*pending.group, *pending.connection, confirm, remaining_ms(deadline));
      r != 0) {
    return decline_late(r);
  }
  if (p.first_contact) {
    if (!pending.group->link().send_confirm_link_request() ||
        !wait_link_confirmed(*pending.group, deadline)) {
      SMC_LOG_WARN("server: CONFIRM LINK not answered: TCP");
      return decline_late(code(DeclineCode::kTimeoutCl));
    }
    pending.group->set_active();
    engine.add_group(pending.group);
    SMC_LOG_DEBUG("server: link group created (id {})", pending.group->id());
  } else {
    SMC_LOG_DEBUG("server: link group reused (id {})", pending.group->id());
  }
  HandshakeResult result;
  result.connection = pending.release();
  if (!p.device->caps().link_notices_peer_exit) result.connection->watch_tcp(fd);
  return result;
}

}  // namespace smcpre::core
