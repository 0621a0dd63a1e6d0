#include "core/link.h"

#include <sched.h>

#include <cstring>

#include "config/log.h"
#include "core/cdc.h"
#include "core/link_group.h"
#include "core/llc.h"

namespace smcpre::core {
namespace {
constexpr int kPollBatch = 16;
}

Link::Link(LinkGroup* group, std::unique_ptr<rdma::QueuePair> qp,
           std::unique_ptr<rdma::MemoryRegion> recv_buffers, uint32_t recv_depth)
    : group_(group),
      qp_(std::move(qp)),
      recv_buffers_(std::move(recv_buffers)),
      recv_depth_(recv_depth) {}

Link::~Link() = default;

bool Link::repost(uint64_t index) {
  auto* base = static_cast<uint8_t*>(recv_buffers_->addr());
  int rc =
      qp_->post_recv(base + index * kRecvBufferSize, kRecvBufferSize, recv_buffers_->lkey(), index);
  if (rc != 0) {
    if (!qp_->in_error()) SMC_LOG_WARN("link: post_recv failed: errno {}", rc);
    return false;
  }
  return true;
}

bool Link::post_all_receives(std::string* error) {
  for (uint32_t i = 0; i < recv_depth_; ++i) {
    if (!repost(i)) {
      *error = "cannot post receive buffers";
      return false;
    }
  }
  return true;
}

int Link::post_message(std::span<const uint8_t, kWrMessageSize> message, uint64_t wr_id,
                       bool signaled) {
  if (failed()) return EPIPE;
  // Never waits: callers hold the send lock, and whoever would reap completions to free
  // the send queue may be waiting for that lock. EAGAIN goes back to the caller.
  int rc = qp_->post_send_inline(message.data(), kWrMessageSize, wr_id, signaled);
  if (rc != 0 && rc != EAGAIN) fail("post_send failed");
  return rc;
}

bool Link::progress() {
  if (polling_.test_and_set(std::memory_order_acquire)) return false;
  bool any = false;
  rdma::WorkCompletion wc[kPollBatch];
  // After an error, everything the peer completed before it is still delivered (the
  // devices deliver before they flush): drain it all, so that an orderly close the peer
  // sent just before it went away is seen as one, then declare the link down.
  const bool draining = error_pending_.load(std::memory_order_acquire) || qp_->in_error();
  bool flushed = false;
  int n;
  do {
    n = qp_->poll_recv(wc);
    for (int i = 0; i < n; ++i) {
      any = true;
      if (wc[i].status != rdma::WcStatus::kSuccess) {
        count_error("receive", wc[i].status);
        flushed = true;
        error_pending_.store(true, std::memory_order_release);
        continue;
      }
      if (wc[i].wr_id >= recv_depth_) continue;  // never ours: ignore defensively
      const auto* data =
          static_cast<const uint8_t*>(recv_buffers_->addr()) + wc[i].wr_id * kRecvBufferSize;
      // Copy out first so the buffer can go back to the queue before the work is done.
      uint8_t message[kRecvBufferSize];
      const uint32_t length = std::min<uint32_t>(wc[i].byte_len, kRecvBufferSize);
      std::memcpy(message, data, length);
      if (!draining) repost(wc[i].wr_id);
      handle_receive(message, length);
    }
  } while (draining && n > 0);
  n = qp_->poll_send(wc);
  for (int i = 0; i < n; ++i) {
    any = true;
    if (wc[i].status != rdma::WcStatus::kSuccess) {
      count_error("send", wc[i].status);
      error_pending_.store(true, std::memory_order_release);
    } else if (wc[i].wr_id & kCdcWrFlag) {
      group_->on_send_complete(wc[i].wr_id);
    } else if (wc[i].wr_id == kDeleteLinkWrId) {
      fail("DELETE LINK sent");
    } else if (wc[i].wr_id == kFlushWrId) {
      flush_done_.store(true, std::memory_order_release);
    }
  }
  if (!draining && (error_pending_.load(std::memory_order_acquire) || qp_->in_error())) {
    // Drain on the next pass (right away, below).
    polling_.clear(std::memory_order_release);
    return progress() || any;
  }
  if (draining && !failed_.exchange(true, std::memory_order_acq_rel)) {
    if (group_->connection_count() == 0) {
      // An idle link whose peer process ended: nothing is lost.
      SMC_LOG_INFO("link: down ({}), no connection on it",
                   flushed ? "peer gone" : "queue pair error");
    } else {
      SMC_LOG_WARN("link: down ({}); its connections are reset; work completion errors: {}",
                   flushed ? "peer gone" : "queue pair error", error_summary());
    }
    events_.wake();
    polling_.clear(std::memory_order_release);
    group_->on_link_down();
    return true;
  }
  polling_.clear(std::memory_order_release);
  return any;
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

void Link::handle_receive(const uint8_t* data, uint32_t length) {
  if (length == 0) return;
  if (data[0] == cdc::kType) {
    cdc::Message msg;
    std::string error;
    if (!cdc::decode(std::span<const uint8_t>(data, length), &msg, &error)) {
      SMC_LOG_WARN("link: malformed CDC message dropped: {}", error);
      return;
    }
    group_->on_cdc(msg);
    return;
  }
  handle_llc(data, length);
}

void Link::handle_llc(const uint8_t* data, uint32_t length) {
  std::string error;
  std::span<const uint8_t> bytes(data, length);
  switch (llc::classify(data[0])) {
    case llc::Type::kConfirmLink: {
      llc::ConfirmLink msg;
      if (!llc::decode(bytes, &msg, &error)) break;
      if (msg.response) {
        confirmed_.store(true, std::memory_order_release);
      } else {
        llc::ConfirmLink reply = group_->make_confirm_link(true);
        uint8_t out[kWrMessageSize];
        llc::encode(reply, std::span<uint8_t, kWrMessageSize>(out));
        {
          std::lock_guard lock(send_mutex_);
          if (post_message(out) != 0) break;
        }
        confirmed_.store(true, std::memory_order_release);
      }
      SMC_LOG_DEBUG("link: CONFIRM LINK {} received", msg.response ? "response" : "request");
      events_.wake();
      return;
    }
    case llc::Type::kTestLink: {
      llc::TestLink msg;
      if (!llc::decode(bytes, &msg, &error)) break;
      if (!msg.response) {
        msg.response = true;
        uint8_t out[kWrMessageSize];
        llc::encode(msg, std::span<uint8_t, kWrMessageSize>(out));
        std::lock_guard lock(send_mutex_);
        post_message(out);
      }
      return;
    }
    case llc::Type::kDeleteLink: {
      llc::DeleteLink msg;
      if (!llc::decode(bytes, &msg, &error)) break;
      SMC_LOG_INFO("link: peer deleted the link (reason {:#x})", msg.reason);
      fail("peer sent DELETE LINK");
      return;
    }
    default:
      SMC_LOG_WARN("link: unexpected message type {:#04x} ignored", data[0]);
      return;
  }
  SMC_LOG_WARN("link: malformed LLC message dropped: {}", error);
}

bool Link::send_test_link() {
  llc::TestLink msg;
  uint8_t out[kWrMessageSize];
  llc::encode(msg, std::span<uint8_t, kWrMessageSize>(out));
  std::lock_guard lock(send_mutex_);
  return post_message(out) == 0;
}

bool Link::send_delete_link() {
  llc::DeleteLink msg;
  msg.all = true;
  msg.orderly = true;
  msg.link_num = 1;
  msg.reason = static_cast<uint32_t>(llc::DeleteReason::kProgramTerminated);
  uint8_t out[kWrMessageSize];
  llc::encode(msg, std::span<uint8_t, kWrMessageSize>(out));
  std::lock_guard lock(send_mutex_);
  return post_message(out, kDeleteLinkWrId, true) == 0;
}

bool Link::flush_sends(int64_t deadline_ns) {
  if (failed()) return false;
  llc::TestLink msg;
  uint8_t out[kWrMessageSize];
  llc::encode(msg, std::span<uint8_t, kWrMessageSize>(out));
  flush_done_.store(false, std::memory_order_relaxed);
  {
    std::lock_guard lock(send_mutex_);
    if (post_message(out, kFlushWrId, true) != 0) return false;
  }
  while (!flush_done_.load(std::memory_order_acquire) && !failed() && now_ns() < deadline_ns) {
    progress();
    sched_yield();
  }
  return flush_done_.load(std::memory_order_acquire);
}

bool Link::send_confirm_link_request() {
  llc::ConfirmLink msg = group_->make_confirm_link(false);
  uint8_t out[kWrMessageSize];
  llc::encode(msg, std::span<uint8_t, kWrMessageSize>(out));
  std::lock_guard lock(send_mutex_);
  return post_message(out) == 0;
}

void Link::fail(const char* why) {
  if (failed() || error_pending_.exchange(true, std::memory_order_acq_rel)) return;
  SMC_LOG_DEBUG("link: failing ({})", why);
  // Whoever polls next drains what arrived and then declares the link down.
  progress();
}

}  // namespace smcpre::core
