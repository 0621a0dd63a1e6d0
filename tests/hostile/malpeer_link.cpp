// malpeer's link set-up: the CLC Proposal and Confirm, the shm rendezvous (our ring, our
// RMB as a region, the victim's regions mapped) and CONFIRM LINK answered, the way an
// smcpre client does it but with none of its logic.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "config/config_types.h"
#include "core/wire/clc_v2.h"
#include "malpeer.h"

namespace malpeer {

bool MalPeer::handshake(const char* host, int port,
                        const std::function<void(clc::AcceptConfirm&)>& tamper,
                        uint32_t* declined) {
  std::string error;
  const RingGeometry geometry{kRingDepth, kRingPayload};
  if (!ring_.create("malpeer-ring", geometry.bytes(), &error)) die("ring: %s", error.c_str());
  rx_.init(ring_.addr(), geometry);
  for (uint32_t i = 0; i < kRingDepth; ++i) rx_.post(buffers_[i], kRingPayload, i);
  event_.reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!rmb_.create("malpeer-rmb", kRmbSize, &error)) die("rmb: %s", error.c_str());
  rmb_rkey_ = random_nonzero(32);
  own_token_ = random32() | 1;
  instance_ = (uint64_t{random32()} << 32) | random32() | 1;
  qp_num_ = random_nonzero(24);
  psn_ = random_nonzero(24);

  tcp_.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (bind_ != nullptr) {
    sockaddr_in local{};
    local.sin_family = AF_INET;
    if (::inet_pton(AF_INET, bind_, &local.sin_addr) != 1 ||
        ::bind(tcp_.get(), reinterpret_cast<sockaddr*>(&local), sizeof local) != 0) {
      die("bind %s: %s", bind_, std::strerror(errno));
    }
  }
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, host, &sin.sin_addr) != 1) die("bad host %s", host);
  if (::connect(tcp_.get(), reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0) {
    die("connect: %s", std::strerror(errno));
  }
  core::LocalSubnets subnets;
  if (!core::local_subnets(tcp_.get(), &subnets)) die("no local subnet");
  local_.gid = gid_for_instance(instance_);
  local_.mac = {0x02, 0x6d, 0x61, 0x6c, 0x70, 0x72};
  clc::AcceptConfirm verbs_confirm{};
  if (verbs_) {
    verbs_->fill(&local_, &verbs_confirm);
    qp_num_ = verbs_confirm.qp_num;
    psn_ = verbs_confirm.psn;
  }
  random_bytes(local_.peer_id.data(), 2);
  std::copy(local_.mac.begin(), local_.mac.end(), local_.peer_id.begin() + 2);
  // Over verbs (RoCE v2 GIDs) the victim speaks SMC-Rv2, on shm version 1.
  std::vector<uint8_t> proposal_bytes;
  if (verbs_) {
    clc::ProposalV2 proposal;
    proposal.v1_type = clc::SmcType::kNone;
    proposal.v2_type = clc::SmcType::kR;
    proposal.local = local_;
    proposal.v2.ueids = {*clc::Eid::from_text(config::kDefaultEid, nullptr)};
    proposal.v2.roce_gid = local_.gid;
    proposal.v2.max_conns = 255;
    proposal.v2.max_links = 1;
    proposal_bytes = clc::encode(proposal);
  } else {
    clc::Proposal proposal;
    proposal.local = local_;
    proposal.ipv4_subnet_be = subnets.ipv4_subnet_be;
    proposal.ipv4_prefix_len = subnets.ipv4_prefix_len;
    proposal_bytes = clc::encode(proposal);
  }
  send_all(tcp_.get(), proposal_bytes.data(), proposal_bytes.size());

  uint8_t header[clc::kHeaderSize];
  if (!read_exact(tcp_.get(), header, sizeof header, 5000)) die("no CLC answer");
  clc::Header h;
  if (clc::parse_header(header, &h) != clc::HeaderResult::kOk) die("answer is not CLC");
  std::vector<uint8_t> msg(header, header + sizeof header);
  msg.resize(h.length);
  if (!read_exact(tcp_.get(), msg.data() + sizeof header, h.length - sizeof header, 5000)) {
    die("short CLC answer");
  }
  if (h.type == clc::Type::kDecline) die("victim declined the Proposal");
  clc::AcceptConfirmV2 accept_v2;
  if (verbs_) {
    if (!clc::parse_accept_v2(msg, &accept_v2, &error)) die("bad Accept: %s", error.c_str());
    accept_ = accept_v2.smcr;
  } else if (!clc::parse_accept(msg, &accept_, &error)) {
    die("bad Accept: %s", error.c_str());
  }
  if (!accept_.first_contact) die("Accept is not a first contact");
  victim_rmb_size_ = clc::rmbe_size_bytes(accept_.rmbe_size_code);
  victim_token_ = accept_.rmbe_alert_token;
  uint64_t victim_instance = 0;
  if (verbs_) {
    verbs_->connect(accept_, victim_rmb_size_);
  } else if (!instance_from_gid(accept_.local.gid, &victim_instance)) {
    die("victim GID is not shm");
  }

  // The rendezvous: hello with our ring and eventfd, then our RMB as a region.
  if (!verbs_) rendezvous(victim_instance);

  clc::AcceptConfirm confirm{};
  confirm.first_contact = true;
  confirm.local = local_;
  confirm.qp_num = qp_num_;
  confirm.psn = psn_;
  confirm.rmb_rkey = rmb_rkey_;
  confirm.conn_idx = 1;
  confirm.rmbe_alert_token = own_token_;
  confirm.rmbe_size_code = clc::rmbe_size_code(kRmbSize);
  confirm.qp_mtu = accept_.qp_mtu;
  confirm.rmb_vaddr = reinterpret_cast<uint64_t>(rmb_.addr());
  if (verbs_) {
    confirm.qp_mtu = verbs_confirm.qp_mtu;
    confirm.rmb_rkey = verbs_confirm.rmb_rkey;
    confirm.rmb_vaddr = verbs_confirm.rmb_vaddr;
  }
  if (tamper) tamper(confirm);
  std::vector<uint8_t> confirm_bytes;
  if (verbs_) {
    clc::AcceptConfirmV2 confirm_v2 = accept_v2;  // the EID and the agreed limits, repeated
    confirm_v2.smcr = confirm;
    confirm_v2.gids = {local_.gid};
    confirm_bytes = clc::encode_confirm(confirm_v2);
  } else {
    confirm_bytes = clc::encode_confirm(confirm);
  }
  send_all(tcp_.get(), confirm_bytes.data(), confirm_bytes.size());
  return await_link(declined);
}

void MalPeer::rendezvous(uint64_t victim_instance) {
  std::string error;
  rv_.reset(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  sockaddr_un addr;
  const socklen_t len = rendezvous_address(victim_instance, &addr);
  if (::connect(rv_.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    die("rendezvous connect: %s", std::strerror(errno));
  }
  EndpointMsg hello{};
  hello.header = MsgHeader{kWireMagic, kWireVersion, static_cast<uint16_t>(MsgType::kHello)};
  hello.from_qp_num = qp_num_;
  hello.from_psn = psn_;
  hello.to_qp_num = accept_.qp_num;
  hello.to_psn = accept_.psn;
  hello.pid = static_cast<uint32_t>(::getpid());
  hello.ring_depth = kRingDepth;
  hello.ring_payload = kRingPayload;
  hello.min_rnr_timer = 5;
  const int hello_fds[2] = {ring_.fd(), event_.get()};
  if (!send_message(rv_.get(), &hello, sizeof hello, hello_fds, deadline_after_ms(5000), &error)) {
    die("hello: %s", error.c_str());
  }
  if (!announce_region(rmb_rkey_, reinterpret_cast<uint64_t>(rmb_.addr()), kRmbSize, 0,
                       rmb_.fd())) {
    die("cannot announce our RMB");
  }
}

bool MalPeer::await_link(uint32_t* declined) {
  std::string error;
  clc::Header h;
  // A Decline may come instead of the link: look for one while waiting for the reply.
  const int64_t deadline = deadline_after_ms(8000);
  bool have_reply = false;
  while (now_ns() < deadline) {
    pollfd p[2] = {{tcp_.get(), POLLIN, 0}, {rv_.get(), POLLIN, 0}};
    ::poll(p, verbs_ ? 1 : 2, 10);
    if (verbs_) {
      verbs_->poll(
          [&](const uint8_t* msg, uint32_t length) { early_.emplace_back(msg, msg + length); });
      if (!early_.empty()) return true;
      if (!(p[0].revents & POLLIN)) continue;
    }
    if (p[0].revents & POLLIN) {
      uint8_t d[clc::kDeclineV2Size];
      if (read_exact(tcp_.get(), d, clc::kHeaderSize, 1000) &&
          clc::parse_header(std::span<const uint8_t>(d, clc::kHeaderSize), &h) ==
              clc::HeaderResult::kOk &&
          h.type == clc::Type::kDecline && h.length <= sizeof d &&
          read_exact(tcp_.get(), d + clc::kHeaderSize, h.length - clc::kHeaderSize, 1000)) {
        clc::Decline decline;
        if (clc::parse_decline(std::span<const uint8_t>(d, h.length), &decline, &error)) {
          *declined = decline.diagnosis;
          return false;
        }
      }
      die("unexpected bytes on TCP during the handshake");
    }
    if (!have_reply && (p[1].revents & (POLLIN | POLLHUP))) {
      ReceivedMsg m;
      const RecvStatus s = recv_message(rv_.get(), &m, &error);
      if (s == RecvStatus::kWouldBlock) continue;
      if (s != RecvStatus::kMessage || m.msg.header.type != uint16_t(MsgType::kReply)) {
        // The victim gave up on the link; its Decline is on the way.
        pause_us(100'000);
        continue;
      }
      const EndpointMsg& r = m.msg.endpoint;
      peer_geometry_ = RingGeometry{r.ring_depth, r.ring_payload};
      if (!peer_ring_.map_peer(std::move(m.fds[0]), peer_geometry_.bytes(), &error)) {
        die("victim ring: %s", error.c_str());
      }
      tx_.init(peer_ring_.addr(), peer_geometry_);
      peer_event_ = std::move(m.fds[1]);
      have_reply = true;
    }
    // The link is ours once the victim's first message (CONFIRM LINK) is in our ring;
    // until then it may still decline (an RMB it cannot use).
    auto* first = static_cast<SlotHeader*>(
        static_cast<void*>(static_cast<uint8_t*>(ring_.addr()) + sizeof(RingHeader)));
    if (have_reply && std::atomic_ref<uint64_t>(first->seq).load() == 1) return true;
  }
  die("no CONFIRM LINK and no Decline");
}

bool MalPeer::announce_region(uint32_t rkey, uint64_t addr, uint64_t length, uint64_t offset,
                              int fd) {
  RegionMsg region{};
  region.header = MsgHeader{kWireMagic, kWireVersion, static_cast<uint16_t>(MsgType::kRegion)};
  region.rkey = rkey;
  region.addr = addr;
  region.length = length;
  region.offset_pages = static_cast<uint32_t>(offset / page_size());
  std::string error;
  const int fds[1] = {fd};
  return send_message(rv_.get(), &region, sizeof region, fds, deadline_after_ms(2000), &error);
}

void MalPeer::drain_rendezvous() {
  if (verbs_) return;  // the QP's error says it: take_messages
  while (!link_down) {
    ReceivedMsg m;
    std::string error;
    const RecvStatus s = recv_message(rv_.get(), &m, &error);
    if (s == RecvStatus::kWouldBlock) return;
    if (s != RecvStatus::kMessage) {
      link_down = true;
      say("link-down%s", since_attack().c_str());
      return;
    }
    if (m.msg.header.type != uint16_t(MsgType::kRegion)) continue;
    const RegionMsg& r = m.msg.region;
    VictimRegion region;
    region.addr = r.addr;
    region.length = r.length;
    if (!region.memory.map_peer(std::move(m.fds[0]), r.length, &error,
                                uint64_t{r.offset_pages} * page_size())) {
      die("victim region: %s", error.c_str());
    }
    if (r.rkey == accept_.rmb_rkey && accept_.rmb_vaddr >= r.addr &&
        accept_.rmb_vaddr - r.addr + victim_rmb_size_ <= r.length) {
      victim_rmb_ = static_cast<uint8_t*>(region.memory.addr()) + (accept_.rmb_vaddr - r.addr);
    }
    regions_[r.rkey] = std::move(region);
  }
}

void MalPeer::bring_up() {
  const int64_t deadline = deadline_after_ms(8000);
  bool confirmed = false;
  auto answer = [&](const uint8_t* msg, uint32_t length) {
    if (llc_type(msg[0]) == llc::Type::kConfirmLink) {
      llc::ConfirmLink request;
      std::string error;
      if (!llc::decode(std::span<const uint8_t>(msg, length), llc_version(), &request, &error)) {
        die("bad CONFIRM LINK: %s", error.c_str());
      }
      llc::ConfirmLink reply{};
      reply.response = true;
      reply.mac = local_.mac;
      reply.gid = local_.gid;
      reply.qp_num = qp_num_;
      reply.link_num = request.link_num;
      reply.link_uid = request.link_uid;
      reply.max_links = 1;
      reply.max_conns = request.max_conns;
      uint8_t out[llc::kSize];
      llc::encode(reply, llc_version(), std::span<uint8_t, llc::kSize>(out));
      if (!send_raw(out, sizeof out)) die("cannot answer CONFIRM LINK");
      confirmed = true;
    }
  };
  for (const auto& msg : early_) answer(msg.data(), static_cast<uint32_t>(msg.size()));
  early_.clear();
  while (now_ns() < deadline && (!confirmed || (!verbs_ && victim_rmb_ == nullptr))) {
    drain_rendezvous();
    if (take_messages(answer) == 0) pause_us(200);
  }
  if (!confirmed) die("no CONFIRM LINK from the victim");
  if (!verbs_ && victim_rmb_ == nullptr) die("the victim never announced its RMB");
  say("established");
}

}  // namespace malpeer
