// The shm device's queue pair: RC semantics between two processes on one host.
//
//   SEND/RECV  through the receiver's ring (rdma/shm/ring.h); no posted buffer = RNR,
//              retried after the receiver's RNR timer, rnr_retry times (7 = forever),
//              with everything posted behind the refused SEND waiting in order.
//   WRITE      a memcpy into the peer's mapping of one of its PD's memfd regions.
//   notify     an epoll fd over our eventfd (written by the peer when we armed) and the
//              rendezvous socket (its hangup means the peer process or QP is gone).
//
// Threads: posts are serialized by the caller's send lock, poll_send may run at the same
// time on another thread; post_recv/poll_recv from one thread at a time. The send queue
// is a software queue only while an RNR stalls it: when it is empty (the usual case) a
// post runs without locks, syscalls or allocations, and the send-side state belongs to
// the posting thread; while it is not, the state belongs to whoever holds sq_mutex_.
// `sq_count_` (release/acquire) hands that ownership over.
//
// fork(): the shared mappings are MADV_DONTFORK, so a QP inherited by a child may only be
// destroyed there (which leaves the parent's connection alone), never used.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "rdma/device.h"
#include "rdma/shm/memory.h"
#include "rdma/shm/ring.h"
#include "rdma/shm/state.h"
#include "rdma/shm/wire.h"

namespace smcpre::rdma::shm {

// IB RNR timer code (0..31) -> nanoseconds.
int64_t rnr_timer_ns(uint8_t code);
// How long to wait before the next retry of a SEND refused `retries_done` times in a row
// by a receiver whose RNR timer is `timer_ns`: the timer, growing after 16 retries.
int64_t rnr_backoff_ns(int64_t timer_ns, uint32_t retries_done);

// The peer's regions by rkey. Lookups are lock-free (the data path); insertions are
// serialized by the caller. Entries are never removed and old generations of the table
// are kept, so a pointer a reader obtained stays valid for the table's lifetime.
class PeerRegionTable {
 public:
  struct Entry {
    std::atomic<uint32_t> rkey{0};  // published last (release)
    uint8_t* base = nullptr;        // our mapping
    uint64_t addr = 0;              // the owner's address for the same byte
    uint64_t length = 0;
  };

  PeerRegionTable();
  const Entry* find(uint32_t rkey) const;
  void insert(uint32_t rkey, uint8_t* base, uint64_t addr, uint64_t length);
  size_t size() const { return count_; }

 private:
  struct Table {
    uint32_t mask = 0;
    std::unique_ptr<Entry[]> entries;
  };
  static uint32_t slot_of(uint32_t rkey, uint32_t mask);
  static void place(Table* table, uint32_t rkey, uint8_t* base, uint64_t addr, uint64_t length);

  std::vector<std::unique_ptr<Table>> generations_;
  std::atomic<Table*> current_{nullptr};
  size_t count_ = 0;
};

// Single-producer single-consumer ring of send completions. The producer role moves
// between threads only with a happens-before edge (see the class comment of ShmQp).
class CompletionRing {
 public:
  explicit CompletionRing(uint32_t min_capacity);
  // False only if full, which the QP's reservation rule excludes.
  bool push(const WorkCompletion& wc);
  int pop(std::span<WorkCompletion> out);
  uint64_t used() const;

 private:
  std::unique_ptr<WorkCompletion[]> slots_;
  uint64_t mask_;
  alignas(kCacheLine) std::atomic<uint64_t> head_{0};  // producer
  alignas(kCacheLine) std::atomic<uint64_t> tail_{0};  // consumer
};

class ShmQp final : public QueuePair {
 public:
  static std::unique_ptr<QueuePair> create(std::shared_ptr<PdState> pd, const QpConfig& config,
                                           std::string* error);
  ~ShmQp() override;

  QpEndpoint local_endpoint() const override;
  bool connect(const QpEndpoint& remote, Role role, int timeout_ms, std::string* error) override;
  bool prepare_remote_region(const RemoteRegion& region, int timeout_ms,
                             std::string* error) override;
  int post_write(const void* local, uint32_t length, uint32_t lkey, uint64_t remote_addr,
                 uint32_t rkey, uint64_t wr_id, bool signaled) override;
  int post_send_inline(const void* data, uint32_t length, uint64_t wr_id, bool signaled) override;
  int post_recv(void* buffer, uint32_t length, uint32_t lkey, uint64_t wr_id) override;
  // shm carries smcpre's own SMC-R v1 only, whose messages are all 44 bytes, and its SENDs
  // are inline (at most max_inline bytes): it keeps receives of one buffer.
  bool set_recv_overflow(void*, uint32_t, uint32_t) override { return false; }
  int poll_send(std::span<WorkCompletion> out) override;
  int poll_recv(std::span<WorkCompletion> out) override;
  int notify_fd() const override { return epoll_fd_.get(); }
  void arm_recv_notify() override;
  void consume_notify() override;
  int64_t next_deadline_ns() const override;
  bool in_error() const override { return error_.load(std::memory_order_acquire); }
  const QpCounters& counters() const override { return counters_; }
  uint32_t posted_recvs() const override { return rx_.outstanding(); }

  // Sends one of our PD's regions to the peer (called by the PD, under its lock, once we
  // are connected). A peer that does not take it puts the QP in error.
  bool announce_region(const AnnouncedRegion& region, int timeout_ms);

 private:
  struct WorkRequest {
    WcOpcode opcode = WcOpcode::kSend;
    bool signaled = false;
    uint32_t length = 0;
    uint32_t rkey = 0;
    uint64_t remote_addr = 0;
    uint64_t wr_id = 0;
    const void* data = nullptr;  // the caller's buffer (direct execution)
  };
  struct QueuedRequest {
    WorkRequest wr;
    std::unique_ptr<uint8_t[]> copy;  // the payload, copied: the caller may reuse its buffer
  };
  enum class Exec { kDone, kRnr, kFailed };

  ShmQp(std::shared_ptr<PdState> pd, const QpConfig& config);
  bool init(std::string* error);

  // Rendezvous.
  bool connect_client(int64_t deadline_ns, std::string* error);
  bool connect_server(int64_t deadline_ns, std::string* error);
  bool finish_connect(UniqueFd sock, std::string* error);
  EndpointMsg endpoint_message(MsgType type) const;
  bool adopt_peer_ring(const EndpointMsg& msg, UniqueFd ring_fd, UniqueFd event_fd,
                       std::string* why);
  bool wait_for_peer();
  template <typename Pred>
  bool read_socket_until(Pred done, int64_t deadline_ns);
  void drain_socket_locked();
  bool handle_message_locked(ReceivedMsg& m, std::string* why);
  bool map_region_locked(const RegionMsg& msg, UniqueFd fd, std::string* why);
  const PeerRegionTable::Entry* find_region(uint32_t rkey);

  // Send side.
  int post(const WorkRequest& wr);
  int post_unqueued(const WorkRequest& wr);
  int queue_after_rnr_locked(const WorkRequest& wr);
  void enqueue_locked(const WorkRequest& wr);
  Exec execute(const WorkRequest& wr);
  Exec execute_send(const WorkRequest& wr);
  Exec execute_write(const WorkRequest& wr);
  void rnr_failed_locked(int64_t now);
  void progress_locked(int64_t now);
  void flush_locked();
  void publish_queue_state_locked();
  void complete(const WorkRequest& wr, WcStatus status);

  void enter_error(const std::string& why, bool ordinary = false);
  void signal_self();

  const std::shared_ptr<PdState> pd_;
  const std::shared_ptr<DeviceState> device_;
  const QpConfig config_;
  const pid_t owner_pid_;
  uint32_t qp_num_ = 0;
  uint32_t psn_ = 0;

  // Our receive ring and notification.
  SharedMemory ring_;
  RingReceiver rx_;
  bool rx_stopped_ = false;  // receive thread only: no more deliveries, only flushes
  UniqueFd event_fd_;
  UniqueFd epoll_fd_;

  // Rendezvous state. sock_ and remote_ are set before connected_ (release).
  std::atomic<bool> connect_called_{false};
  std::atomic<bool> connected_{false};
  Role role_ = Role::kClient;
  QpEndpoint remote_{};
  int timeout_ms_ = 0;
  UniqueFd sock_;
  std::mutex sock_mutex_;  // serializes socket reads and everything they install

  // The peer's side, installed once (peer_ready_, release) by connect or the reply.
  std::atomic<bool> peer_ready_{false};
  SharedMemory peer_ring_;
  RingSender tx_;
  UniqueFd peer_event_fd_;
  int64_t peer_rnr_timer_ns_ = 0;
  uint32_t max_send_inline_ = 0;
  PeerRegionTable regions_;
  std::vector<SharedMemory> region_maps_;  // guarded by sock_mutex_

  // Software send queue (non-empty only behind an RNR) and the send CQ.
  std::mutex sq_mutex_;
  std::atomic<uint32_t> sq_count_{0};
  std::deque<QueuedRequest> sq_;
  bool rnr_waiting_ = false;
  uint32_t rnr_retries_done_ = 0;
  int64_t rnr_deadline_ns_ = 0;
  std::atomic<int64_t> next_deadline_ns_{-1};
  CompletionRing send_cq_;

  std::atomic<bool> error_{false};
  QpCounters counters_;
};

}  // namespace smcpre::rdma::shm
