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
#include <vector>

#include "core/datapath/connection_events.h"
#include "core/datapath/wait.h"
#include "core/stats/layout.h"
#include "core/wire/llc.h"
#include "core/wire/llc_v2.h"
#include "rdma/device.h"

namespace smcpre::core {

class Backlog;
class RecvPool;

inline constexpr uint32_t kWrMessageSize = 44;  // CDC and LLC messages

// Who reaps a link's completions. Only an application thread (waiting on one of its
// sockets) may apply a message itself, and only when the message's backlog worker is idle
// (backlog.h); the background poller and threads inside a connection's locks hand over.
enum class Reaper : uint8_t { kBackground, kApplication };

// Work request id of a signaled CDC send: bit 63 set, the sending connection's token in
// bits 31..62 and the low 31 bits of the producer cursor the CDC announced (the sender
// is never more than one ring, at most 8 MiB, past it). Its completion frees the
// connection's send buffer up to that cursor.
inline constexpr uint64_t kCdcWrFlag = uint64_t{1} << 63;
inline constexpr uint64_t kCdcWrProdMask = 0x7fffffff;
inline uint64_t cdc_wr_id(uint32_t token, uint64_t prod) {
  return kCdcWrFlag | (uint64_t{token} << 31) | (prod & kCdcWrProdMask);
}
inline uint32_t cdc_wr_token(uint64_t wr_id) {
  return static_cast<uint32_t>(wr_id >> 31);
}
// Work request ids of a signaled DELETE LINK and of the TEST LINK flush_sends() posts.
inline constexpr uint64_t kDeleteLinkWrId = 1;
inline constexpr uint64_t kFlushWrId = 2;

// What a link asks of the link group that owns it (LinkGroup implements it): the link
// knows its queue pair and the message types; the connections and the group's identity
// are the group's.
class LinkOwner {
 public:
  // The connection our alert token `token` names, or null.
  virtual std::shared_ptr<ConnectionEvents> find_connection(uint32_t token) = 0;
  // The link is down and what arrived before has been applied: the group says so and
  // resets its connections (`may_run_here`: see Reaper).
  virtual void on_link_down(const char* why, bool may_run_here) = 0;
  // Our CONFIRM LINK, request or response.
  virtual llc::ConfirmLink make_confirm_link(bool response) const = 0;

 protected:
  ~LinkOwner() = default;
};

// What the published counters say about a link from its start.
struct LinkFacts {
  uint32_t group_id = 0;
  rdma::Role role = rdma::Role::kClient;
  rdma::DeviceKind device = rdma::DeviceKind::kShm;
  bool reports_rnr = false;  // rdma::DeviceCaps::reports_rnr
};

// The LLC a link speaks: the version of its group's CLC handshake (version 2 in an
// SMC-Rv2 group, as Linux does), and for version 2 the region where messages longer than
// a receive buffer continue (rdma::QueuePair::set_recv_overflow), already set on the QP.
struct LinkLlc {
  llc::Version version = llc::Version::kV1;
  const uint8_t* overflow = nullptr;
  uint32_t overflow_size = 0;
};

class Link {
 public:
  // `pool_region`: the receive pool registered with the link's protection domain.
  // `backlog`: the process's workers, nullptr in inline mode (the reaper applies CDC
  // messages itself and re-posts the same buffer afterwards, as the kernel's SMC does).
  Link(LinkOwner& owner, const LinkFacts& facts, const LinkLlc& llc,
       std::unique_ptr<rdma::QueuePair> qp, RecvPool& pool,
       std::unique_ptr<rdma::MemoryRegion> pool_region, uint32_t recv_depth, Backlog* backlog);
  ~Link();
  Link(const Link&) = delete;
  Link& operator=(const Link&) = delete;

  // Posts receive buffers from the pool, up to the queue depth. Must precede the peer's
  // first SEND. Fails only when the pool cannot give a single buffer.
  bool post_all_receives(std::string* error);

  rdma::QueuePair& qp() { return *qp_; }

  // Reaps send and receive completions unless another thread is already doing so, and
  // dispatches what arrived (see Reaper). Tops the receive queue up from the pool.
  // Returns true if anything was reaped.
  bool progress(Reaper reaper = Reaper::kBackground);
  // The receive queue is short of its depth (the pool ran empty): whoever polls should
  // come back soon, as buffers return, instead of sleeping on the notification.
  bool needs_refill() const { return posted_count_.load(std::memory_order_relaxed) < recv_depth_; }
  // Copies the queue pair's counters into the published slot (progress thread).
  void publish_stats(size_t connections, uint32_t peer_qp_num);
  stats::LinkSlot& stats() { return *slot_; }
  Backlog* backlog() const { return backlog_; }
  RecvPool& pool() const { return pool_; }

  // Posts one 44-byte message (CDC or LLC) inline. The caller holds send_mutex() when
  // the message content depends on state that must go out in order (CDC sequence).
  int post_message(std::span<const uint8_t, kWrMessageSize> message, uint64_t wr_id = 0,
                   bool signaled = false);
  std::mutex& send_mutex() { return send_mutex_; }
  // post_message for an LLC message (counted as one in the published counters).
  int post_llc(std::span<const uint8_t, kWrMessageSize> message, uint64_t wr_id = 0,
               bool signaled = false);

  // LLC TEST LINK request (keepalive); the answer, like any receipt, shows the peer alive.
  // Returns post_llc's errno (EAGAIN: the send queue is full).
  int send_test_link();
  // LLC DELETE LINK (orderly, whole link group); once it has gone out (its completion),
  // the link goes down here too.
  bool send_delete_link();

  // Waits (polling, until deadline) until everything posted so far has left: a signaled
  // TEST LINK completes after all earlier sends. For process exit, where the device is
  // closed with the process and unsent work would be lost.
  bool flush_sends(int64_t deadline_ns);

  // LLC CONFIRM LINK (first contact). The server sends the request; the client answers
  // it when it arrives (in progress()). Both wait for confirmed().
  bool send_confirm_link_request();
  bool confirmed() const { return confirmed_.load(std::memory_order_acquire); }

  // Waits, polling adaptively then sleeping, until pred() or deadline; returns pred().
  template <typename Pred>
  bool wait_until(Pred pred, int64_t deadline_ns);

  // The send queue was full (EAGAIN): reaps, and waits a little before the caller posts
  // again (without the send lock). Spins at first, as completions usually come within
  // microseconds, then sleeps ever longer (up to 10 ms), so that a peer that stops
  // taking messages costs no CPU while the keepalive finds out. `round` counts the
  // caller's attempts (0 at first).
  void wait_for_send_room(int* round);

  bool failed() const { return failed_.load(std::memory_order_acquire); }
  // The QP went to error or the peer asked to delete the link: connections on it end.
  void fail(const char* why);

  WaitQueue& events() { return events_; }

  // Work completions with an error, counted by status (each logged by name as it
  // happens): "2 remote access error, 63 work request flushed", or "none".
  std::string error_summary() const;

  // Adaptive polling bookkeeping, read by the background progress thread: while an
  // application thread polls this link itself, the background thread stays out of the way.
  std::atomic<int32_t> app_pollers{0};
  std::atomic<int64_t> last_app_poll_ns{0};

 private:
  void count_error(const char* queue, rdma::WcStatus status);
  // Receive processing of one completed buffer; returns whether the buffer was handed to
  // a worker (else it is free for re-posting).
  bool handle_receive(uint32_t buffer, uint32_t length, Reaper reaper, bool draining);
  void handle_llc(const uint8_t* data, uint32_t length);
  // Version 2 (LinkLlc): the messages Linux sends in an SMC-Rv2 group, each answered as
  // Linux's own end would (handle_llc dispatches here).
  // Returns false with *error for a malformed message (a violation).
  bool handle_llc_v2(llc::Type type, std::span<const uint8_t> bytes, bool may_answer,
                     std::string* error);
  // A message longer than its receive buffer, put together from the buffer and the
  // overflow region into long_message_; its length, or 0 if it cannot be (then the link
  // has failed).
  uint32_t assemble_long_message(uint32_t buffer, uint32_t length);
  // Encodes `msg` in the link's LLC version and posts it.
  template <typename Message>
  int post_llc_message(const Message& msg, uint64_t wr_id = 0, bool signaled = false);
  // The peer sent what no SMC peer sends (garbage in the receive queue): the link fails.
  void protocol_violation(const std::string& what);
  void handle_send_completion(const rdma::WorkCompletion& wc, Reaper reaper);
  bool post_buffer(uint32_t index);
  // Posts pool buffers until the queue is full or the pool is empty.
  void refill();
  void give_back_posted();

  LinkOwner& owner_;
  const uint32_t group_id_;
  const LinkLlc llc_;
  // A long message put together (assemble_long_message); used by the thread that holds
  // polling_.
  std::vector<uint8_t> long_message_;
  std::unique_ptr<rdma::QueuePair> qp_;
  RecvPool& pool_;
  std::unique_ptr<rdma::MemoryRegion> pool_region_;
  const uint32_t recv_depth_;
  Backlog* const backlog_;
  // Pool buffers posted to this queue pair (bit per pool index) and their count: a
  // completion for a buffer not posted here is never trusted. Changed only by the thread
  // holding polling_ (and before the link is shared).
  std::vector<uint64_t> posted_;
  std::atomic<uint32_t> posted_count_{0};
  bool refill_short_ = false;  // the last refill found the pool empty
  stats::LinkSlot* slot_;
  std::mutex send_mutex_;
  std::atomic_flag polling_ = ATOMIC_FLAG_INIT;
  std::atomic<bool> confirmed_{false};
  std::atomic<bool> failed_{false};
  std::atomic<bool> error_pending_{false};  // failing: drain, then failed_
  std::atomic<bool> flush_done_{false};
  WaitQueue events_;
  std::atomic<uint64_t> wc_errors_[rdma::kWcStatusCount] = {};
  // LLC messages ignored, counted so that their log lines thin out (1, 2, 4...).
  std::atomic<uint64_t> ignored_llc_{0};
};

}  // namespace smcpre::core
