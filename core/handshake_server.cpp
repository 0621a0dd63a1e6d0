// The server's side of the CLC handshake: the client's Proposal, our Accept, its Confirm,
// and on a first contact the link's CONFIRM LINK; what a stranger may make a server hold
// meanwhile is bounded (doc/design.md §2.3).
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
#include "core/datapath/link_group.h"
#include "core/datapath/progress.h"
#include "core/datapath/wait.h"
#include "core/engine_state.h"
#include "core/handshake.h"
#include "core/handshake_common.h"
#include "core/handshake_v2.h"
#include "core/local_address.h"
#include "core/low_water.h"
#include "core/wire/decline.h"

namespace smcpre::core {

using namespace handshake_detail;

namespace {

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

// Who the client is, as link groups are found by: its version 1 block when there is one
// (smcpre fills it in its version 2 Proposals too, one per process), else its RoCE v2 GID
// (the kernel, one per host, zeroes the block when it offers version 2 only).
PeerIdentity client_identity(const clc::ProposalV2& proposal) {
  if (proposal.local != clc::LocalInfo{}) return identity_of(proposal.local);
  PeerIdentity identity;
  identity.gid = proposal.v2.roce_gid;
  return identity;
}

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
  bool v2 = false;     // SMC-Rv2 (handshake_v2.h)
  V2Agreement agreed;  // what our Accept settled, when v2
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
  clc::ProposalV2 proposal;
  if (!clc::parse_any_proposal(proposal_bytes, &proposal, &error)) {
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
  // The version follows our device, as the client's did (handshake_v2.h).
  const bool v2 = speaks_v2(*device);
  V2Agreement agreed;
  if (v2) {
    if (uint32_t r = agree_v2(config, proposal, &agreed); r != 0) return decline(r);
  } else if (!clc::offers_r(proposal.v1_type)) {
    SMC_LOG_INFO("server: client offers no SMC-R version 1, which our device speaks: declining");
    return decline(code(DeclineCode::kVersMismat));
  } else {
    clc::Proposal v1;
    v1.ipv4_subnet_be = proposal.ipv4_subnet_be;
    v1.ipv4_prefix_len = proposal.ipv4_prefix_len;
    v1.ipv6_prefixes = proposal.ipv6_prefixes;
    LocalSubnets subnets;
    if (!local_subnets(fd, &subnets) || !subnets_match(subnets, v1)) {
      SMC_LOG_INFO("server: client subnet does not match ours: declining");
      return decline(code(DeclineCode::kDiffPrefix));
    }
  }
  const PeerIdentity client = client_identity(proposal);
  PendingServerHandshake p(new ServerPending(engine, client, device));
  p->v2 = v2;
  p->agreed = agreed;
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
    p->pending.group = LinkGroup::create(*device, rdma::Role::kServer, client, config,
                                         v2 ? group_terms(agreed) : GroupTerms{}, &error);
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
  if (!send_all(fd,
                v2 ? clc::encode_accept(accept_v2(agreed, accept)) : clc::encode_accept(accept))) {
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
  bool parsed = false;
  if (header.type == clc::Type::kConfirm && p.v2) {
    clc::AcceptConfirmV2 confirm_v2;
    parsed = clc::parse_confirm_v2(bytes, &confirm_v2, &error);
    confirm = confirm_v2.smcr;
    if (parsed) {
      if (uint32_t r = check_confirm_v2(p.agreed, confirm_v2); r != 0) return decline_late(r);
    }
  } else if (header.type == clc::Type::kConfirm) {
    parsed = clc::parse_confirm(bytes, &confirm, &error);
  }
  if (!parsed) {
    SMC_LOG_WARN("server: bad CLC Confirm ({}): declining",
                 error.empty() ? "not a Confirm" : error);
    return decline_late(code(DeclineCode::kProtocol));
  }
  if (confirm.first_contact != p.first_contact) {
    SMC_LOG_WARN(
        "server: the client's Confirm says first contact {}, our Accept said {}: declining",
        confirm.first_contact, p.first_contact);
    return decline_late(code(DeclineCode::kSyncErr));
  }
  PendingConnection& pending = p.pending;
  // The link's own steps (connecting a new link, CONFIRM LINK) are bounded by the
  // handshake's deadline; a legitimate client answers them within a round trip.
  const int64_t deadline = p.deadline_ns;
  if (p.first_contact) {
    if (!connect_link(pending.group, endpoint_of(confirm), deadline, &error)) {
      SMC_LOG_WARN("server: cannot connect the link: {}", error);
      return decline_late(connect_error_code(error));
    }
  } else if (confirm.qp_num != pending.group->peer_qp_num()) {
    SMC_LOG_WARN("server: Confirm names QP {:#x}, link group has {:#x}: declining", confirm.qp_num,
                 pending.group->peer_qp_num());
    return decline_late(code(DeclineCode::kSyncErr));
  }
  if (uint32_t r =
          attach_peer_rmb(*pending.group, *pending.connection, confirm, timeout_ms_until(deadline));
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
