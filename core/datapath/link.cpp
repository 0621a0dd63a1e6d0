#include "core/datapath/link.h"

#include <fmt/format.h>
#include <sched.h>
#include <time.h>

#include <cstring>

#include "config/log.h"
#include "core/datapath/backlog.h"
#include "core/datapath/recv_pool.h"
#include "core/stats/segment.h"
#include "core/wire/cdc.h"
#include "core/wire/llc.h"

namespace smcpre::core {
namespace {
constexpr int kPollBatch = 16;

// Counts one more event of a kind and says whether to log it: the 1st, 2nd, 4th, 8th...
// so that a peer that sends the same bad thing a million times is heard, not echoed.
bool log_this_one(std::atomic<uint64_t>& count) {
  return log::thinned(count.fetch_add(1, std::memory_order_relaxed) + 1);
}
// Receive completions one pass reaps at most before it turns to the send queue (at least
// the whole receive queue): bounded so that sends are reaped too.
constexpr int kMaxRecvPerPass = 256;
}  // namespace

Link::Link(LinkOwner& owner, const LinkFacts& facts, const LinkLlc& llc,
           std::unique_ptr<rdma::QueuePair> qp, RecvPool& pool,
           std::unique_ptr<rdma::MemoryRegion> pool_region, uint32_t recv_depth, Backlog* backlog)
    : owner_(owner),
      group_id_(facts.group_id),
      llc_(llc),
      qp_(std::move(qp)),
      pool_(pool),
      pool_region_(std::move(pool_region)),
      recv_depth_(recv_depth),
      backlog_(backlog),
      posted_((pool.size() + 63) / 64, 0),
      slot_(stats::acquire_link_slot(facts.group_id)) {
  stats::set(slot_->rq_depth, recv_depth);
  stats::set(slot_->rq_low_water, recv_depth);
  stats::set(slot_->role, facts.role == rdma::Role::kServer ? 1 : 0);
  stats::set(slot_->device,
             facts.device == rdma::DeviceKind::kShm ? stats::kDeviceShm : stats::kDeviceVerbs);
  stats::set(slot_->rnr_counted, facts.reports_rnr ? 1 : 0);
  stats::set(slot_->local_qp_num, qp_->local_endpoint().qp_num);
  stats::set(slot_->state, stats::kLinkActivating);
  stats::add(stats::segment().process.links_total);
}

Link::~Link() {
  // The queue pair first: once it is gone the device fills none of the posted buffers,
  // and they can go back to the pool (their registration with it).
  qp_.reset();
  pool_region_.reset();
  give_back_posted();
  stats::release_link_slot(slot_);
}

void Link::give_back_posted() {
  for (size_t word = 0; word < posted_.size(); ++word) {
    while (posted_[word] != 0) {
      const int bit = __builtin_ctzll(posted_[word]);
      posted_[word] &= posted_[word] - 1;
      pool_.give(static_cast<uint32_t>(word * 64 + static_cast<size_t>(bit)));
    }
  }
  posted_count_.store(0, std::memory_order_relaxed);
}

bool Link::post_buffer(uint32_t index) {
  int rc = qp_->post_recv(pool_.buffer(index), RecvPool::kBufferSize, pool_region_->lkey(), index);
  if (rc != 0) {
    if (!qp_->in_error()) SMC_LOG_WARN("link: post_recv failed: errno {}", rc);
    pool_.give(index);
    return false;
  }
  posted_[index / 64] |= uint64_t{1} << (index % 64);
  posted_count_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void Link::refill() {
  uint32_t posted = posted_count_.load(std::memory_order_relaxed);
  bool short_now = false;
  while (posted < recv_depth_) {
    uint32_t index;
    if (!pool_.take(&index)) {
      short_now = true;
      break;
    }
    if (!post_buffer(index)) break;
    ++posted;
  }
  if (short_now && !refill_short_) {
    // One event per episode of shortage, not per pass while it lasts.
    pool_.note_exhausted();
    stats::add(slot_->rq_refill_short);
  }
  refill_short_ = short_now;
  stats::set(slot_->rq_posted, posted_count_.load(std::memory_order_relaxed));
}

bool Link::post_all_receives(std::string* error) {
  refill();
  if (posted_count_.load(std::memory_order_relaxed) == 0) {
    *error = "no receive buffer: the receive pool (SMCPRE_POOL_SIZE) is used up";
    return false;
  }
  if (refill_short_) {
    SMC_LOG_WARN(
        "link: only {} of {} receive buffers: the receive pool (SMCPRE_POOL_SIZE={}) is "
        "nearly used up",
        posted_count_.load(), recv_depth_, pool_.size());
  }
  return true;
}

int Link::post_message(std::span<const uint8_t, kWrMessageSize> message, uint64_t wr_id,
                       bool signaled) {
  if (failed()) return EPIPE;
  // Never waits: callers hold the send lock, and whoever would reap completions to free
  // the send queue may be waiting for that lock. EAGAIN goes back to the caller.
  int rc = qp_->post_send_inline(message.data(), kWrMessageSize, wr_id, signaled);
  if (rc != 0 && rc != EAGAIN) {
    // Not fail(): it drains the link at once, and draining may answer a TEST LINK or
    // apply a CDC, which take the send lock this caller holds. Whoever polls next (a
    // woken waiter, the progress thread within its idle period) drains and declares it.
    if (!error_pending_.exchange(true, std::memory_order_acq_rel)) {
      SMC_LOG_DEBUG("link: failing (post_send failed: {})", rc);
    }
    events_.wake();
  }
  return rc;
}

int Link::post_llc(std::span<const uint8_t, kWrMessageSize> message, uint64_t wr_id,
                   bool signaled) {
  const int rc = post_message(message, wr_id, signaled);
  if (rc == 0) stats::add(slot_->llc_sent);
  return rc;
}

template <typename Message>
int Link::post_llc_message(const Message& msg, uint64_t wr_id, bool signaled) {
  uint8_t out[kWrMessageSize];
  llc::encode(msg, llc_.version, std::span<uint8_t, kWrMessageSize>(out));
  return post_llc(out, wr_id, signaled);
}

void Link::wait_for_send_room(int* round) {
  constexpr int kSpinRounds = 64;
  constexpr int64_t kFirstSleepNs = 20'000;
  constexpr int64_t kMaxSleepNs = 10'000'000;
  progress();
  const int n = (*round)++;
  if (n < kSpinRounds) {
    cpu_relax();
    return;
  }
  const int doublings = std::min(n - kSpinRounds, 9);
  const int64_t sleep_ns = std::min(kFirstSleepNs << doublings, kMaxSleepNs);
  timespec pause{0, static_cast<long>(sleep_ns)};
  nanosleep(&pause, nullptr);
}

bool Link::progress(Reaper reaper) {
  if (polling_.test_and_set(std::memory_order_acquire)) return false;
  bool any = false;
  rdma::WorkCompletion wc[kPollBatch];
  // After an error, everything the peer completed before it is still delivered (the
  // devices deliver before they flush): drain it all, so that an orderly close the peer
  // sent just before it went away is seen as one, then declare the link down.
  const bool draining = error_pending_.load(std::memory_order_acquire) || qp_->in_error();
  bool flushed = false;
  const uint32_t posted_before = posted_count_.load(std::memory_order_relaxed);
  // A pass may take the whole queue: then what it leaves posted is the queue's true low.
  const int recv_limit = static_cast<int>(recv_depth_);
  int reaped = 0;
  int n;
  do {
    n = qp_->poll_recv(wc);
    reaped += n;
    for (int i = 0; i < n; ++i) {
      any = true;
      const uint64_t index = wc[i].wr_id;
      if (index >= pool_.size() || !(posted_[index / 64] & (uint64_t{1} << (index % 64)))) {
        SMC_LOG_WARN("link: completion for receive buffer {} that is not posted here ignored",
                     index);
        continue;
      }
      posted_[index / 64] &= ~(uint64_t{1} << (index % 64));
      posted_count_.fetch_sub(1, std::memory_order_relaxed);
      const auto buffer = static_cast<uint32_t>(index);
      if (wc[i].status != rdma::WcStatus::kSuccess) {
        count_error("receive", wc[i].status);
        flushed = true;
        error_pending_.store(true, std::memory_order_release);
        pool_.give(buffer);
        continue;
      }
      if (wc[i].byte_len > RecvPool::kBufferSize) {
        // Only version 2 LLC messages are this long (a CDC is 44 bytes): applied here.
        const uint32_t length = assemble_long_message(buffer, wc[i].byte_len);
        if (length > 0) handle_llc(long_message_.data(), length);
      } else if (handle_receive(buffer, wc[i].byte_len, reaper, draining)) {
        continue;  // handed over
      }
      // Applied (or dropped) here: the same buffer goes up again.
      if (draining) {
        pool_.give(buffer);
      } else {
        post_buffer(buffer);
      }
    }
  } while (n == kPollBatch && (draining || reaped < std::max(kMaxRecvPerPass, recv_limit)));
  if (reaped > 0) {
    // What the reaper found: buffers still posted once these completions were taken off
    // the queue; 0 means the queue had run dry and a sender may have met RNR.
    const uint32_t left = posted_before > static_cast<uint32_t>(reaped)
                              ? posted_before - static_cast<uint32_t>(reaped)
                              : 0;
    stats::lower_to(slot_->rq_low_water, left);
    stats::lower_to(stats::segment().process.rq_low_water, left);
  }
  if (!draining) refill();
  n = qp_->poll_send(wc);
  for (int i = 0; i < n; ++i) {
    any = true;
    handle_send_completion(wc[i], reaper);
  }
  if (!draining && (error_pending_.load(std::memory_order_acquire) || qp_->in_error())) {
    // Drain on the next pass (right away, below).
    polling_.clear(std::memory_order_release);
    return progress(reaper) || any;
  }
  if (draining && !failed_.exchange(true, std::memory_order_acq_rel)) {
    stats::set(slot_->state, stats::kLinkDown);
    // What the peer sent before it went (its orderly closes above all) is applied first:
    // a peer process that closed its connections and exited loses nothing, and that is
    // no warning (flushed receives are how every peer's exit looks).
    if (backlog_ != nullptr) backlog_->wait_all_applied();
    events_.wake();
    polling_.clear(std::memory_order_release);
    owner_.on_link_down(flushed ? "peer gone" : "queue pair error", reaper == Reaper::kApplication);
    return true;
  }
  polling_.clear(std::memory_order_release);
  return any;
}

void Link::handle_send_completion(const rdma::WorkCompletion& wc, Reaper reaper) {
  if (wc.status != rdma::WcStatus::kSuccess) {
    count_error("send", wc.status);
    error_pending_.store(true, std::memory_order_release);
  } else if (wc.wr_id & kCdcWrFlag) {
    // The connection's send buffer is free up to that CDC.
    if (auto connection = owner_.find_connection(cdc_wr_token(wc.wr_id))) {
      const uint64_t flow = connection->flow_hash();
      dispatch(backlog_,
               BacklogItem{.connection = std::move(connection),
                           .flow_hash = flow,
                           .wr_id = wc.wr_id,
                           .kind = BacklogItem::Kind::kSendComplete},
               pool_, reaper == Reaper::kApplication);
    }
  } else if (wc.wr_id == kDeleteLinkWrId) {
    fail("DELETE LINK sent");
  } else if (wc.wr_id == kFlushWrId) {
    flush_done_.store(true, std::memory_order_release);
  }
}

void Link::publish_stats(size_t connections, uint32_t peer_qp_num) {
  const rdma::QpCounters& c = qp_->counters();
  stats::set(slot_->rnr_events, c.rnr_events.load(std::memory_order_relaxed));
  stats::set(slot_->rnr_retries, c.rnr_retries.load(std::memory_order_relaxed));
  stats::set(slot_->sends, c.sends.load(std::memory_order_relaxed));
  stats::set(slot_->writes, c.writes.load(std::memory_order_relaxed));
  stats::set(slot_->write_bytes, c.write_bytes.load(std::memory_order_relaxed));
  stats::set(slot_->recvs, c.recvs.load(std::memory_order_relaxed));
  stats::set(slot_->connections, connections);
  stats::set(slot_->peer_qp_num, peer_qp_num);
}

std::string Link::error_summary() const {
  std::string out;
  for (size_t i = 1; i < rdma::kWcStatusCount; ++i) {
    const uint64_t n = wc_errors_[i].load(std::memory_order_relaxed);
    if (n == 0) continue;
    if (!out.empty()) out += ", ";
    out += std::to_string(n) + " " + rdma::to_string(static_cast<rdma::WcStatus>(i));
  }
  return out.empty() ? "none" : out;
}

void Link::count_error(const char* queue, rdma::WcStatus status) {
  const auto index = static_cast<size_t>(status);
  if (index < rdma::kWcStatusCount) wc_errors_[index].fetch_add(1, std::memory_order_relaxed);
  // Flushes follow the first error in numbers; they say nothing new.
  if (status == rdma::WcStatus::kFlushError) {
    SMC_LOG_DEBUG("link: {} work flushed", queue);
  } else {
    SMC_LOG_WARN("link: {} completion error: {}", queue, rdma::to_string(status));
  }
}

bool Link::handle_receive(uint32_t buffer, uint32_t length, Reaper reaper, bool draining) {
  const uint8_t* data = pool_.buffer(buffer);
  if (length == 0) return false;
  if (data[0] != cdc::kType) {
    stats::add(slot_->llc_received);
    handle_llc(data, length);
    return false;
  }
  stats::add(slot_->cdc_received);
  const std::span<const uint8_t> bytes(data, length);
  uint32_t token;
  if (!cdc::peek_token(bytes, &token)) {
    drop_malformed_cdc(fmt::format("{} bytes, type {:#04x}, length byte {}", length, data[0],
                                   length > 1 ? data[1] : 0));
    return false;
  }
  auto connection = owner_.find_connection(token);
  if (!connection) {
    SMC_LOG_DEBUG("link group {}: CDC for unknown token {:#x} dropped", group_id_, token);
    return false;
  }
  if (backlog_ != nullptr) {
    // Handed over: a fresh buffer goes up in its place before the message is applied
    // (while draining, when the link is going down, nothing is re-posted).
    if (!draining) refill();
  } else {
    // Inline mode: applied here; the same buffer is posted again afterwards.
    stats::add(stats::segment().process.cdc_inline);
  }
  const uint64_t flow = connection->flow_hash();
  return dispatch(backlog_,
                  BacklogItem{std::move(connection), flow, 0, buffer, BacklogItem::Kind::kCdc},
                  pool_, reaper == Reaper::kApplication);
}

void Link::handle_llc(const uint8_t* data, uint32_t length) {
  const bool v2 = llc_.version == llc::Version::kV2;
  const llc::Type type = v2 ? llc::classify_message(data[0]).type : llc::classify(data[0]);
  switch (v2 ? llc::disposition_v2(data[0]) : llc::disposition(data[0])) {
    case llc::Disposition::kAct:
      break;
    case llc::Disposition::kIgnore:
      if (log_this_one(ignored_llc_)) {
        SMC_LOG_WARN("link: {} ignored (a single-link group; {} so far)", llc::type_name(type),
                     ignored_llc_.load(std::memory_order_relaxed));
      }
      return;
    case llc::Disposition::kViolation:
      protocol_violation(fmt::format("message of unknown type {:#04x}{}", data[0],
                                     v2 ? " in an SMC-Rv2 link group" : ""));
      return;
  }
  std::string error;
  const std::span<const uint8_t> bytes(data, length);
  // A link that is going down answers nothing (the answer could not arrive).
  const bool may_answer = !error_pending_.load(std::memory_order_acquire);
  switch (type) {
    case llc::Type::kConfirmLink: {
      llc::ConfirmLink msg;
      if (!llc::decode(bytes, llc_.version, &msg, &error)) break;
      if (!msg.response) {
        std::lock_guard lock(send_mutex_);
        if (post_llc_message(owner_.make_confirm_link(true)) != 0) return;
      }
      confirmed_.store(true, std::memory_order_release);
      stats::set(slot_->state, stats::kLinkActive);
      SMC_LOG_DEBUG("link: CONFIRM LINK {} received", msg.response ? "response" : "request");
      events_.wake();
      return;
    }
    case llc::Type::kTestLink: {
      llc::TestLink msg;
      if (!llc::decode(bytes, llc_.version, &msg, &error)) break;
      if (!msg.response && may_answer) {
        msg.response = true;
        std::lock_guard lock(send_mutex_);
        post_llc_message(msg);
      }
      return;
    }
    case llc::Type::kDeleteLink: {
      llc::DeleteLink msg;
      if (!llc::decode(bytes, llc_.version, &msg, &error)) break;
      SMC_LOG_INFO("link: peer deleted the link (reason {:#x})", msg.reason);
      fail("peer sent DELETE LINK");
      return;
    }
    default:
      if (v2) {
        if (handle_llc_v2(type, bytes, may_answer, &error)) return;
        break;
      }
      return;
  }
  protocol_violation("malformed LLC message: " + error);
}

namespace {

// Encodes a version 2 answer, which is 44 bytes for every type smcpre answers.
template <typename Message>
bool encode_answer(const Message& msg, std::span<uint8_t, kWrMessageSize> out) {
  return llc::encode(msg, out) == kWrMessageSize;
}

}  // namespace

bool Link::handle_llc_v2(llc::Type type, std::span<const uint8_t> bytes, bool may_answer,
                         std::string* error) {
  uint8_t out[kWrMessageSize];
  switch (type) {
    case llc::Type::kAddLink: {
      // The peer's server offers a second link. A group here has one link: refused, as
      // Linux's own client refuses when it has no second path, and the peer's group
      // stays single.
      llc::AddLinkV2 msg;
      if (!llc::decode(bytes, &msg, error)) return false;
      if (msg.response || !may_answer) return true;
      SMC_LOG_DEBUG("link: ADD LINK refused (smcpre keeps one link per link group)");
      if (!encode_answer(llc::add_link_reject(msg), out)) return true;
      break;
    }
    case llc::Type::kReqAddLink: {
      // The peer's client invites a second link: answered, adding none.
      llc::ReqAddLinkV2 msg;
      if (!llc::decode(bytes, &msg, error)) return false;
      if (msg.response || !may_answer) return true;
      llc::ReqAddLinkV2 answer;
      answer.response = true;
      if (!encode_answer(answer, out)) return true;
      break;
    }
    case llc::Type::kConfirmRkey: {
      // A new RMB of the peer's, announced for the links of the group. Its one use here
      // (this link's rkey) came in the connection's CLC already: confirmed.
      llc::ConfirmRkey msg;
      if (!llc::decode(bytes, llc_.version, &msg, error)) return false;
      if (msg.response || !may_answer) return true;
      msg.response = true;
      msg.negative = false;
      llc::encode(msg, llc_.version, std::span<uint8_t, kWrMessageSize>(out));
      break;
    }
    case llc::Type::kDeleteRkey: {
      // The peer freed RMBs: no connection of ours writes to them any more (their
      // connections have ended), so there is nothing to forget.
      llc::DeleteRkeyV2 msg;
      if (!llc::decode(bytes, &msg, error)) return false;
      if (msg.response || !may_answer) return true;
      llc::DeleteRkeyV2 answer;
      answer.response = true;
      answer.rkey_count = msg.rkey_count;
      if (!encode_answer(answer, out)) return true;
      break;
    }
    default:
      return true;
  }
  std::lock_guard lock(send_mutex_);
  post_llc(std::span<const uint8_t, kWrMessageSize>(out));
  return true;
}

uint32_t Link::assemble_long_message(uint32_t buffer, uint32_t length) {
  if (llc_.overflow == nullptr || length > RecvPool::kBufferSize + llc_.overflow_size) {
    // Cannot happen: the device fails a receive longer than what was posted.
    protocol_violation(fmt::format("a {}-byte message, longer than a receive", length));
    return 0;
  }
  const uint8_t* head = pool_.buffer(buffer);
  long_message_.assign(head, head + RecvPool::kBufferSize);
  long_message_.insert(long_message_.end(), llc_.overflow,
                       llc_.overflow + (length - RecvPool::kBufferSize));
  return length;
}

void Link::protocol_violation(const std::string& what) {
  // The peer does not speak the protocol: nothing it sends on this link can be trusted
  // any more. Its connections are reset (ECONNRESET), as Linux ends the link group.
  if (!failed() && !error_pending_.load(std::memory_order_acquire)) {
    SMC_LOG_WARN("link: protocol violation from the peer ({}): link down", what);
  }
  fail("protocol violation");
}

int Link::send_test_link() {
  std::lock_guard lock(send_mutex_);
  return post_llc_message(llc::TestLink{});
}

bool Link::send_delete_link() {
  llc::DeleteLink msg;
  msg.all = true;
  msg.orderly = true;
  msg.link_num = 1;
  msg.reason = static_cast<uint32_t>(llc::DeleteReason::kProgramTerminated);
  std::lock_guard lock(send_mutex_);
  return post_llc_message(msg, kDeleteLinkWrId, true) == 0;
}

bool Link::flush_sends(int64_t deadline_ns) {
  if (failed()) return false;
  flush_done_.store(false, std::memory_order_relaxed);
  {
    std::lock_guard lock(send_mutex_);
    if (post_llc_message(llc::TestLink{}, kFlushWrId, true) != 0) return false;
  }
  while (!flush_done_.load(std::memory_order_acquire) && !failed() && now_ns() < deadline_ns) {
    progress();
    sched_yield();
  }
  return flush_done_.load(std::memory_order_acquire);
}

bool Link::send_confirm_link_request() {
  std::lock_guard lock(send_mutex_);
  return post_llc_message(owner_.make_confirm_link(false)) == 0;
}

void Link::fail(const char* why) {
  if (failed() || error_pending_.exchange(true, std::memory_order_acq_rel)) return;
  SMC_LOG_DEBUG("link: failing ({})", why);
  // Whoever polls next drains what arrived and then declares the link down.
  progress();
}

}  // namespace smcpre::core
