// The client's side of the CLC handshake: Proposal, the server's Accept or Decline, our
// Confirm, and on a first contact the link's CONFIRM LINK (doc/design.md §2.3).
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

}  // namespace

HandshakeResult client_handshake(int fd, EngineState& engine, bool peer_announced) {
  const config::Config& config = engine.config();
  // Nothing proposed: plain TCP. A server whose SYN-ACK announced SMC waits for our first
  // CLC message, though (the kernel's would end the connection on application data): it
  // gets a Decline, as the kernel's client sends one.
  auto not_proposed = [&](uint32_t reason) {
    if (peer_announced) send_decline(fd, engine, reason);
    return fallback(reason);
  };
  uint32_t reason = 0;
  rdma::Device* device = engine.device_for(fd, &reason);
  if (!device) return not_proposed(reason);
  config::FdReservation fds = reserve_fds(connection_fds(*device), fd);
  if (!fds) return not_proposed(code(DeclineCode::kNoFds));

  // SMC-Rv2 where the device has a RoCE v2 GID, as the kernel does; version 1 otherwise.
  const bool v2 = speaks_v2(*device);
  std::vector<uint8_t> proposal_bytes;
  if (v2) {
    clc::ProposalV2 proposal = proposal_v2(config, *device);
    // The kernel zeroes the version 1 block when it offers version 2 only; smcpre fills in
    // its identity there, which a kernel server reads as the client's system id: one per
    // smcpre process, so that two processes on one host never share a link group.
    proposal.local = local_info(engine, *device);
    proposal_bytes = clc::encode(proposal);
  } else {
    LocalSubnets subnets;
    local_subnets(fd, &subnets);
    clc::Proposal proposal;
    proposal.local = local_info(engine, *device);
    proposal.ipv4_subnet_be = subnets.ipv4_subnet_be;
    proposal.ipv4_prefix_len = subnets.ipv4_prefix_len;
    proposal.ipv6_prefixes = subnets.ipv6_prefixes;
    proposal_bytes = clc::encode(proposal);
  }
  if (!send_all(fd, proposal_bytes)) return fallback(code(DeclineCode::kIntErr));

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
  V2Agreement agreed;
  bool parsed = false;
  if (header.type == clc::Type::kAccept && v2) {
    clc::AcceptConfirmV2 accept_v2;
    parsed = clc::parse_accept_v2(bytes, &accept_v2, &error);
    accept = accept_v2.smcr;
    if (parsed) {
      if (uint32_t r = check_accept_v2(config, accept_v2, &agreed); r != 0) {
        send_decline(fd, engine, r);
        return fallback(r);
      }
    }
  } else if (header.type == clc::Type::kAccept) {
    parsed = clc::parse_accept(bytes, &accept, &error);
  }
  if (!parsed) {
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
    pending.group = LinkGroup::create(*device, rdma::Role::kClient, server, config,
                                      v2 ? group_terms(agreed) : GroupTerms{}, &error);
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
    if (!connect_link(pending.group, endpoint_of(accept), deadline, &error)) {
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
    if (uint32_t r = attach_peer_rmb(*pending.group, *pending.connection, accept,
                                     timeout_ms_until(deadline));
        r != 0) {
      send_decline(fd, engine, r);
      return fallback(r);
    }
  }
  clc::AcceptConfirm confirm =
      describe(engine, *device, *pending.group, *pending.connection, accept.first_contact);
  const std::vector<uint8_t> confirm_bytes =
      v2 ? clc::encode_confirm(confirm_v2(agreed, confirm, *device)) : clc::encode_confirm(confirm);
  if (!send_all(fd, confirm_bytes)) return fallback(code(DeclineCode::kIntErr));
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
    if (uint32_t r = attach_peer_rmb(*pending.group, *pending.connection, accept,
                                     timeout_ms_until(deadline));
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

}  // namespace smcpre::core
