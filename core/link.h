// One link of a link group: an RC queue pair, its posted receive buffers, the send lock
// that keeps posts (and CDC sequence numbers) in order, and the LLC exchanges that
// confirm and keep the link.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>

#include "core/wait.h"
#include "rdma/device.h"

namespace smcpre::core {

class LinkGroup;

inline constexpr uint32_t kWrMessageSize = 44;  // CDC and LLC messages
inline constexpr uint32_t kRecvBufferSize = 64;

class Link {
 public:
  Link(LinkGroup* group, std::unique_ptr<rdma::QueuePair> qp,
       std::unique_ptr<rdma::MemoryRegion> recv_buffers, uint32_t recv_depth);
  ~Link();
  Link(const Link&) = delete;
  Link& operator=(const Link&) = delete;

  // Posts every receive buffer. Must precede the peer's first SEND.
  bool post_all_receives(std::string* error);

  rdma::QueuePair& qp() { return *qp_; }

  // Reaps send and receive completions unless another thread is already doing so, and
  // dispatches what arrived. Returns true if anything was reaped.
  bool progress();

  // Posts one 44-byte message (CDC or LLC) inline. The caller holds send_mutex() when
  // the message content depends on state that must go out in order (CDC sequence).
  int post_message(std::span<const uint8_t, kWrMessageSize> message);
  std::mutex& send_mutex() { return send_mutex_; }

  // LLC CONFIRM LINK (first contact). The server sends the request; the client answers
  // it when it arrives (in progress()). Both wait for confirmed().
  bool send_confirm_link_request();
  bool confirmed() const { return confirmed_.load(std::memory_order_acquire); }

  // Waits, polling adaptively then sleeping, until pred() or deadline; returns pred().
  template <typename Pred>
  bool wait_until(Pred pred, int64_t deadline_ns);

  bool failed() const { return failed_.load(std::memory_order_acquire); }
  // The QP went to error or the peer asked to delete the link: connections on it end.
  void fail(const char* why);

  WaitQueue& events() { return events_; }

  // Adaptive polling bookkeeping, read by the background progress thread: while an
  // application thread polls this link itself, the background thread stays out of the way.
  std::atomic<int32_t> app_pollers{0};
  std::atomic<int64_t> last_app_poll_ns{0};

 private:
  void handle_receive(const uint8_t* data, uint32_t length);
  void handle_llc(const uint8_t* data, uint32_t length);
  bool repost(uint64_t index);

  LinkGroup* group_;
  std::unique_ptr<rdma::QueuePair> qp_;
  std::unique_ptr<rdma::MemoryRegion> recv_buffers_;
  uint32_t recv_depth_;
  std::mutex send_mutex_;
  std::atomic_flag polling_ = ATOMIC_FLAG_INIT;
  std::atomic<bool> confirmed_{false};
  std::atomic<bool> failed_{false};
  std::atomic<bool> error_pending_{false};  // failing: drain, then failed_
  WaitQueue events_;
};

}  // namespace smcpre::core
