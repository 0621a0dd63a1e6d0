#include "core/datapath/link_group.h"

#include <sys/random.h>

#include <cerrno>

#include "config/log.h"
#include "core/datapath/backlog.h"
#include "core/datapath/recv_pool.h"

namespace smcpre::core {
namespace {
constexpr size_t kMaxConnectionsPerGroup = 0xffff;
std::atomic<uint32_t> next_group_id{1};
}  // namespace

LinkGroup::LinkGroup(rdma::Role role, const PeerIdentity& peer) : role_(role), peer_(peer) {
  id_ = next_group_id.fetch_add(1);
}

LinkGroup::~LinkGroup() {
  // The queue pair goes first: once it is destroyed the device reads and writes none of
  // the buffers any more, and they can be deregistered.
  link_.reset();
  free_buffers_.clear();
}

std::shared_ptr<LinkGroup> LinkGroup::create(rdma::Device& device, rdma::Role role,
                                             const PeerIdentity& peer, const config::Config& config,
                                             const GroupTerms& terms, std::string* error) {
  std::shared_ptr<LinkGroup> group(new LinkGroup(role, peer));
  group->device_ = &device;
  group->terms_ = terms;
  group->pd_ = device.alloc_pd(error);
  if (!group->pd_) return nullptr;
  rdma::QpConfig qp_config;
  qp_config.send_depth = config.sq_depth;
  qp_config.recv_depth = config.rq_depth;
  qp_config.max_inline = RecvPool::kBufferSize;
  qp_config.rnr_retry = config.rnr_retry;
  qp_config.min_rnr_timer = config.min_rnr_timer;
  qp_config.timeout = config.ib_timeout;
  qp_config.retry_count = config.ib_retry;
  qp_config.mtu = rdma::path_mtu_at_most(config.ib_mtu);
  auto qp = group->pd_->create_qp(qp_config, error);
  if (!qp) return nullptr;
  RecvPool* pool = RecvPool::get();
  if (pool == nullptr) {
    *error = "no receive buffer pool";
    return nullptr;
  }
  auto pool_region = group->pd_->register_local(pool->base(), pool->bytes(), error);
  if (!pool_region) return nullptr;
  const LinkFacts facts{.group_id = group->id_,
                        .role = role,
                        .device = device.caps().kind,
                        .reports_rnr = device.caps().reports_rnr};
  LinkLlc llc{.version = terms.llc_version};
  if (terms.llc_version == llc::Version::kV2) {
    // Version 2 LLC messages reach 8 KiB; a receive too short for one breaks the QP.
    constexpr uint32_t kOverflowSize = llc::kV2MaxSize - RecvPool::kBufferSize;
    group->overflow_ = std::make_unique<uint8_t[]>(kOverflowSize);
    group->overflow_region_ =
        group->pd_->register_local(group->overflow_.get(), kOverflowSize, error);
    if (!group->overflow_region_) return nullptr;
    if (!qp->set_recv_overflow(group->overflow_.get(), kOverflowSize,
                               group->overflow_region_->lkey())) {
      *error = "the device cannot receive SMC-Rv2's long LLC messages";
      return nullptr;
    }
    llc.overflow = group->overflow_.get();
    llc.overflow_size = kOverflowSize;
  }
  group->link_ = std::make_unique<Link>(*group, facts, llc, std::move(qp), *pool,
                                        std::move(pool_region), config.rq_depth, Backlog::get());
  // Receive buffers go up before the peer can send anything (it learns our QP from CLC).
  if (!group->link_->post_all_receives(error)) return nullptr;
  return group;
}

bool LinkGroup::connect(const rdma::QpEndpoint& remote, int timeout_ms, std::string* error) {
  if (!link_->qp().connect(remote, role_, timeout_ms, error)) return false;
  peer_qp_num_ = remote.qp_num;
  return true;
}

void LinkGroup::set_active() {
  active_.store(true, std::memory_order_release);
}

uint32_t LinkGroup::add_connection(const std::shared_ptr<ConnectionEvents>& connection) {
  std::lock_guard lock(table_mutex_);
  if (retired_.load(std::memory_order_relaxed)) return 0;
  size_t index = 0;
  while (index < connections_.size() && connections_[index]) ++index;
  // SMC-Rv2 (release 1) agreed on a limit; the peer's end holds no more either.
  const size_t limit = terms_.max_conns != 0 ? terms_.max_conns : kMaxConnectionsPerGroup;
  if (index >= limit) return 0;
  if (index == connections_.size()) {
    connections_.emplace_back();
    token_generation_.push_back(0);
  }
  connections_[index] = connection;
  ++live_connections_;
  // Token = generation (high half) | index + 1 (low half): a late CDC for a previous
  // connection in the same slot does not reach the new one.
  const uint16_t generation = ++token_generation_[index];
  const uint32_t token = (uint32_t{generation} << 16) | static_cast<uint32_t>(index + 1);
  connection->set_local_token(token);
  return token;
}

void LinkGroup::remove_connection(uint32_t token) {
  std::shared_ptr<ConnectionEvents> removed;  // destroyed outside the lock
  std::lock_guard lock(table_mutex_);
  const size_t index = (token & 0xffff) - 1;
  if (index >= connections_.size() || !connections_[index]) return;
  if (connections_[index]->local_token() != token) return;
  removed = std::move(connections_[index]);
  --live_connections_;
}

std::shared_ptr<ConnectionEvents> LinkGroup::find_connection(uint32_t token) {
  std::lock_guard lock(table_mutex_);
  const size_t index = (token & 0xffff) - 1;
  if (index >= connections_.size() || !connections_[index]) return nullptr;
  if (connections_[index]->local_token() != token) return nullptr;
  return connections_[index];
}

size_t LinkGroup::connection_count() {
  std::lock_guard lock(table_mutex_);
  return live_connections_;
}

size_t LinkGroup::open_connection_count() {
  std::lock_guard lock(table_mutex_);
  size_t open = 0;
  for (auto& c : connections_) {
    if (c && c->open_both_ways()) ++open;
  }
  return open;
}

std::unique_ptr<rdma::MemoryRegion> LinkGroup::take_buffer(uint32_t size, std::string* error) {
  {
    const int64_t now = now_ns();
    std::lock_guard lock(buffer_mutex_);
    for (auto it = free_buffers_.begin(); it != free_buffers_.end(); ++it) {
      if (it->buffer->length() == size && it->reusable_at_ns <= now) {
        auto buffer = std::move(it->buffer);
        free_buffers_.erase(it);
        return buffer;
      }
    }
  }
  return pd_->register_memory(size, error);
}

void LinkGroup::give_back_buffer(std::unique_ptr<rdma::MemoryRegion> buffer, bool quarantine) {
  // Longer than any RDMA WRITE can stay in flight: transport retries give up after
  // about a second at the default timeout and retry count.
  constexpr int64_t kQuarantineNs = 10'000'000'000;
  std::lock_guard lock(buffer_mutex_);
  free_buffers_.push_back({std::move(buffer), quarantine ? now_ns() + kQuarantineNs : 0});
}

void LinkGroup::maintain(int64_t now, const config::Config& config) {
  if (link_->failed()) return;
  if (delete_sent_ns_ != 0) {
    // The DELETE LINK's completion takes the link down; this is the backstop.
    if (now - delete_sent_ns_ > 2'000'000'000) link_->fail("DELETE LINK not completed");
    return;
  }
  const uint64_t recvs = link_->qp().counters().recvs.load(std::memory_order_relaxed);
  if (last_receipt_ns_ == 0 || recvs != seen_recvs_) {
    seen_recvs_ = recvs;
    last_receipt_ns_ = now;
    test_sent_ns_ = 0;
  }
  if (config.keepalive_ms > 0 && active_.load(std::memory_order_acquire)) {
    const int64_t interval = int64_t{config.keepalive_ms} * 1'000'000;
    if (test_sent_ns_ == 0 && now - last_receipt_ns_ >= interval) {
      // A send queue that is full, with nothing received for a whole interval, is a peer
      // that takes no messages (RNR for good): its clock starts as if the TEST LINK had
      // gone. (It never started before, and such a link was kept for good.)
      const int rc = link_->send_test_link();
      if (rc == 0 || rc == EAGAIN) test_sent_ns_ = now;
    } else if (test_sent_ns_ != 0 && now - test_sent_ns_ >= interval) {
      SMC_LOG_WARN("link group {}: no answer to TEST LINK within {} ms: link down", id_,
                   config.keepalive_ms);
      link_->fail("TEST LINK not answered");
      return;
    }
  }
  if (connection_count() > 0) {
    idle_since_ns_ = 0;
    return;
  }
  if (idle_since_ns_ == 0) idle_since_ns_ = now;
  int64_t linger = int64_t{config.linger_ms} * 1'000'000;
  if (role_ == rdma::Role::kClient) linger += 10'000'000'000;
  if (now - idle_since_ns_ < linger) return;
  {
    std::lock_guard lock(table_mutex_);
    if (live_connections_ > 0) return;  // a connection joined meanwhile
    retired_.store(true, std::memory_order_release);
  }
  SMC_LOG_DEBUG("link group {}: unused for {} ms: deleting its link", id_, linger / 1'000'000);
  if (active_.load(std::memory_order_acquire) && link_->send_delete_link()) {
    delete_sent_ns_ = now;
  } else {
    link_->fail("link group retired");
  }
}

void LinkGroup::on_link_down(const char* why, bool may_run_here) {
  const size_t connections = connection_count();
  const size_t open = open_connection_count();
  if (connections == 0) {
    SMC_LOG_INFO("link: down ({}), no connection on it", why);
  } else if (open == 0) {
    SMC_LOG_INFO("link: down ({}); its {} connection(s) had been closed in order", why,
                 connections);
  } else {
    SMC_LOG_WARN("link: down ({}); {} open connection(s) reset; work completion errors: {}", why,
                 open, link_->error_summary());
  }
  std::vector<std::shared_ptr<ConnectionEvents>> all;
  {
    std::lock_guard lock(table_mutex_);
    for (auto& c : connections_) {
      if (c) all.push_back(c);
    }
  }
  for (auto& c : all) {
    // After the connection's queued messages: an orderly close the peer sent just before
    // the link went is applied as one.
    const uint64_t flow = c->flow_hash();
    dispatch(
        link_->backlog(),
        BacklogItem{
            .connection = std::move(c), .flow_hash = flow, .kind = BacklogItem::Kind::kLinkDown},
        link_->pool(), may_run_here);
  }
}

void LinkGroup::close_all_at_exit() {
  std::vector<std::shared_ptr<ConnectionEvents>> all;
  {
    std::lock_guard lock(table_mutex_);
    for (auto& c : connections_) {
      if (c) all.push_back(c);
    }
  }
  for (auto& c : all) c->close_at_exit();
  // The device goes with the process: make sure the close messages have left first.
  if (!all.empty()) link_->flush_sends(now_ns() + 200'000'000);
}

llc::ConfirmLink LinkGroup::make_confirm_link(bool response) const {
  llc::ConfirmLink msg{};
  const rdma::QpEndpoint local = link_->qp().local_endpoint();
  msg.response = response;
  msg.mac = local.mac;
  msg.gid = local.gid;
  msg.qp_num = local.qp_num;
  msg.link_num = 1;
  msg.link_uid = id_;
  msg.max_links = terms_.max_links;
  msg.max_conns = terms_.max_conns;
  return msg;
}

}  // namespace smcpre::core
