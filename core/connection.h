// One SMC connection: our RMB element (the ring the peer RDMA-WRITEs into), the peer's,
// and the cursors and flags that CDC messages carry (doc/design.md §2.6).
//
// Cursors are kept as monotonically increasing 64-bit byte counts:
//   tx_prod_      bytes we have written into the peer's ring
//   tx_peer_cons_ bytes of those the peer has consumed (its consumer cursor)
//   rx_peer_prod_ bytes the peer has written into our ring
//   rx_cons_      bytes of those we have consumed
// Data in flight in either direction never exceeds the ring size.
#pragma once

#include <sys/socket.h>
#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "config/fd_budget.h"
#include "core/datapath/connection_events.h"
#include "core/datapath/readiness_mirror.h"
#include "core/datapath/wait.h"
#include "core/socket.h"
#include "core/stats/connection_counters.h"
#include "core/wire/cdc.h"
#include "core/wire/cursor.h"
#include "rdma/device.h"

namespace smcpre::core {

class LinkGroup;

class Connection final : public ConnectionEvents, public std::enable_shared_from_this<Connection> {
 public:
  Connection(std::shared_ptr<LinkGroup> group, std::unique_ptr<rdma::MemoryRegion> rmb);
  ~Connection() override;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  LinkGroup& group() { return *group_; }
  // The TCP connection's addresses, taken from its socket before the connection is
  // published: a hash of this 4-tuple chooses the connection's backlog worker, and the
  // addresses name the connection in statistics.
  void set_flow(int fd);
  const sockaddr_storage& local_address() const { return local_address_; }
  const sockaddr_storage& peer_address() const { return peer_address_; }
  const rdma::MemoryRegion& rmb() const { return *rmb_; }
  // The peer's RMB element and alert token, learned from CLC Accept/Confirm. Until this
  // is set, nothing is sent to the peer. On a device that cannot WRITE from any memory
  // this also takes the registered send buffer; false (with *error) if there is none.
  bool set_peer(const rdma::RemoteRegion& peer_rmb, uint32_t peer_token, std::string* error);

  // Blocking-socket semantics of TCP; `nonblocking` is the socket's O_NONBLOCK,
  // `timeout_ns` its SO_RCVTIMEO / SO_SNDTIMEO (0 = wait as long as it takes).
  ssize_t recv(const iovec* iov, int iovcnt, int flags, bool nonblocking, int64_t timeout_ns = 0);
  ssize_t send(const iovec* iov, int iovcnt, int flags, bool nonblocking, int64_t timeout_ns = 0);
  int shutdown(int how);
  // The application closed the socket. `held_fd` is a private duplicate of the TCP
  // socket, closed once SMC close has finished.
  // abort: SO_LINGER with a zero timeout, an abortive close (the peer gets ECONNRESET).
  void close(int held_fd, bool abort = false);
  void close_timed_out() override;
  bool finished() const override { return finished_.load(std::memory_order_acquire); }
  void close_at_exit() override;
  Readiness readiness();
  bool take_error(int* error);
  // The fd whose poll/epoll readiness mirrors this connection's (created on first use,
  // kept until the connection goes), or -1 if it cannot be made. See readiness_mirror.h.
  int readiness_fd();
  // The mirror is watched edge-triggered (EPOLLET) somewhere: it needs an edge per arrival
  // of data. Level-triggered watchers (poll, select, plain epoll) do not, which saves a
  // syscall per arrival while the connection is readable anyway.
  void want_readiness_edges() { mirror_edges_.store(true, std::memory_order_relaxed); }
  // User-space epoll members (core/epoll_set.h): told of each change, from sync_mirror.
  void add_watcher(std::weak_ptr<ReadinessWatcher> watcher);
  void drop_watchers();

  // Receive processing: ConnectionEvents.
  void on_cdc(const cdc::Message& message) override;
  void on_link_down() override;
  // Watch the TCP connection (fd: the application's socket; a duplicate is taken) so that
  // a peer process that dies is noticed at once, not at the next keepalive.
  void watch_tcp(int fd);
  // The descriptors this connection may take (readiness mirror, TCP watch, the socket
  // kept after close), reserved before it went SMC: config/fd_budget.h.
  void hold_fds(config::FdReservation fds) { fds_ = std::move(fds); }
  void on_tcp_ended() override;
  // The link went down while the connection was still open both ways as far as the peer
  // knew (neither end had closed it): its calls fail with ECONNRESET. A link that goes
  // after the peer's orderly close (a peer process that closed and exited) resets nothing.
  bool reset_by_link_down() const {
    return link_down_.load() && !peer_closed_.load() && !closed_.load();
  }
  bool open_both_ways() const override {
    return !peer_closed_.load() && !closed_.load() && !peer_aborted_.load() && !aborted_.load() &&
           !finished();
  }
  bool peer_gone_or_closed() const override {
    return peer_closed_.load() || peer_aborted_.load() || link_down_.load() || finished();
  }
  void on_send_complete(uint64_t wr_id) override;
  // The connection's line in the published counters: from now on its state (and the
  // RNR events its CDC messages meet) are reported there. Called once.
  void attach_stats(std::shared_ptr<ConnectionStats> stats);

  uint64_t bytes_sent() const { return tx_prod_.load(std::memory_order_relaxed); }
  // FIONREAD: what a read would return now. SIOCOUTQ: written bytes still in our send
  // buffer (WRITE not completed; always 0 when writing straight from the caller's memory),
  // as kernel SMC answers it.
  uint64_t bytes_readable() const { return rx_available(); }
  uint64_t bytes_unwritten() const {
    if (direct_writes_) return 0;
    return tx_prod_.load(std::memory_order_acquire) - tx_completed_.load(std::memory_order_acquire);
  }
  uint64_t bytes_received() const { return rx_cons_.load(std::memory_order_relaxed); }

 private:
  enum class CdcContext { kApplication, kReceiver };
  // Builds a CDC from the current state and posts it. The receiver context never waits
  // (it may hold the link's poll role): a full send queue leaves the update pending.
  bool send_cdc(CdcContext context, bool write_blocked = false);
  // Builds and posts one CDC; the caller holds the link's send lock. Returns the errno.
  int post_cdc_locked(bool write_blocked);
  void flush_pending_cdc();
  void maybe_announce_consumed();
  // Aborts the connection from our side: the peer is sent an abort, our reads and writes
  // fail with ECONNRESET, nothing more is accepted from the peer.
  void abort_here();
  void protocol_error(const char* what);
  void finish_if_closed();
  void finish();
  bool writes_possible() const;
  uint64_t rx_available() const {
    return rx_peer_prod_.load(std::memory_order_acquire) - rx_cons_.load(std::memory_order_relaxed);
  }
  // Ring space the next write may use: what the peer has consumed and, with a send
  // buffer, what the device has finished reading from it (it mirrors the peer's ring).
  uint64_t tx_space() const {
    uint64_t freed = tx_peer_cons_.load(std::memory_order_acquire);
    if (!direct_writes_) freed = std::min(freed, tx_completed_.load(std::memory_order_acquire));
    return peer_rmb_.length - (tx_prod_.load(std::memory_order_relaxed) - freed);
  }
  // Posts the RDMA WRITEs for `length` bytes at producer position `prod`, taking them
  // from the application's iovecs (direct) or from the send buffer they were copied to.
  // Called with the link's send lock held (released only while the send queue is full).
  int post_writes(std::unique_lock<std::mutex>& send_lock, const iovec* iov, int iov_index,
                  size_t iov_offset, uint64_t prod, size_t length);
  ssize_t fail_send(int error, int flags);
  // After a change (any thread): brings the readiness mirror, if there is one, up to date,
  // or, while nobody may be blocked on it (ReadinessMirror::must_show_now), only puts the
  // connection on the stale list (flush_stale_mirrors), so that a busy connection's
  // mirror costs no syscall per message. new_data: an edge is owed to EPOLLET watchers.
  // lazy: a mirror that would only stop being readable is left readable and listed
  // instead, so that a reader that drains the ring pays no syscall if more data comes
  // before anyone waits.
  void sync_mirror(bool new_data = false, bool lazy = false);
  void notify_watchers();
  // Shows the current state on the mirror now (with the edge owed, if any).
  void apply_mirror(bool lazy);
  // Puts the connection on the stale list (once).
  void list_stale_mirror();
  friend void flush_stale_mirrors();
  friend void forget_stale_mirrors_after_fork();
  void drop_mirror();
  MirrorState mirror_state() const;
  // Syncs the mirror when a recv/send returns, whichever way it returns.
  struct MirrorSync {
    Connection* c;
    bool send_blocked = false;  // a non-blocking send found the ring full
    ~MirrorSync() {
      if (c->mirror_.load(std::memory_order_acquire) == nullptr) return;
      if (send_blocked) c->show_send_blocked();
      c->sync_mirror(false, true);
    }
  };
  // A non-blocking send found the ring full: the mirror shows that at once. TCP gives an
  // EPOLLET waiter for OUT an edge when space comes back; the mirror gives one only if it
  // went unwritable first, which a change noted while nobody blocks would not show.
  void show_send_blocked();
  ssize_t end_with_reset(size_t copied);
  // A recv() or send() that has waited, until it returns: a close() meanwhile is deferred
  // to its end (see close()).
  struct CallInFlight {
    Connection* c;
    explicit CallInFlight(Connection* connection) : c(connection) { c->calls_in_flight_++; }
    ~CallInFlight() { c->leave_call(); }
    CallInFlight(const CallInFlight&) = delete;
    CallInFlight& operator=(const CallInFlight&) = delete;
  };
  void leave_call();
  void close_now();
  // Reports the state the close protocol has reached (after any change of the flags).
  void publish_state();

  std::shared_ptr<LinkGroup> group_;
  sockaddr_storage local_address_{};
  sockaddr_storage peer_address_{};
  std::unique_ptr<rdma::MemoryRegion> rmb_;
  const uint32_t rmb_size_;
  const uint32_t update_limit_;
  const bool direct_writes_;
  uint32_t peer_token_ = 0;
  rdma::RemoteRegion peer_rmb_{};
  // Staged writes: data is copied here at the offsets it will have in the peer's ring.
  std::unique_ptr<rdma::MemoryRegion> send_buffer_;
  std::atomic<bool> peer_ready_{false};

  std::mutex tx_mutex_;  // one writer at a time
  std::mutex rx_mutex_;  // one reader at a time
  std::atomic<uint64_t> tx_prod_{0};
  std::atomic<uint64_t> tx_peer_cons_{0};
  std::atomic<uint64_t> rx_peer_prod_{0};
  std::atomic<uint64_t> rx_cons_{0};
  std::atomic<uint64_t> rx_cons_announced_{0};
  std::atomic<uint64_t> tx_completed_{0};  // send buffer bytes the device is done with
  uint64_t tx_signaled_ = 0;               // producer cursor of the last signaled CDC
  uint16_t tx_seq_ = 0;                    // under the link's send lock
  uint16_t rx_seq_ = 0;                    // receiver context only
  bool rx_seq_valid_ = false;

  // What the peer told us.
  std::atomic<bool> peer_write_blocked_{false};
  std::atomic<bool> peer_done_writing_{false};
  std::atomic<bool> peer_closed_{false};
  std::atomic<bool> peer_aborted_{false};
  // What we did.
  std::atomic<bool> abort_after_fin_{false};  // the peer aborted after its FIN
  std::atomic<bool> shut_rd_{false};
  std::atomic<bool> shut_wr_{false};
  std::atomic<bool> closed_{false};
  std::atomic<bool> aborted_{false};
  std::atomic<bool> link_down_{false};
  std::atomic<bool> cdc_pending_{false};
  std::atomic<bool> finished_{false};
  std::atomic<int> pending_error_{0};
  std::atomic<int> calls_in_flight_{0};
  std::atomic<bool> close_deferred_{false};
  int deferred_close_fd_ = -1;  // written before close_deferred_ is set
  bool deferred_close_abort_ = false;
  std::atomic<int> held_fd_{-1};
  std::atomic<uint64_t> tcp_watch_{0};
  config::FdReservation fds_;  // set once, before the connection is handed out

  std::mutex mirror_mutex_;
  std::unique_ptr<ReadinessMirror> mirror_owner_;  // under mirror_mutex_
  std::atomic<ReadinessMirror*> mirror_{nullptr};
  std::atomic<bool> mirror_edges_{false};
  std::atomic<bool> mirror_stale_{false};      // on the stale list
  std::atomic<bool> mirror_edge_owed_{false};  // data came since the mirror last showed it
  std::atomic<uint64_t> mirror_forks_{0};  // the mirror's forks_at_creation(), set before mirror_
  std::mutex watchers_mutex_;
  std::vector<std::weak_ptr<ReadinessWatcher>> watchers_;  // under watchers_mutex_
  std::atomic<bool> any_watchers_{false};
  // Kept by stats_owner_ (set once, before stats_ is published); read through stats_,
  // which receive processing may load while attach_stats() runs.
  std::shared_ptr<ConnectionStats> stats_owner_;
  std::atomic<ConnectionStats*> stats_{nullptr};
  WaitQueue queue_;
  SpinBudget rx_budget_;
  SpinBudget tx_budget_;
};

// Readiness mirrors left readable after a read drained their connection (lazy sync) are
// brought up to date: to be called before any kernel wait on mirrors (epoll_wait, poll,
// select, an epoll_ctl that registers one), so that no wait ever sees a stale IN. Cheap
// when there are none.
void flush_stale_mirrors();
// In a fork child: the list names the parent's connections, which the child must leave
// alone (draining a mirror it shares with the parent would hide the parent's data).
void forget_stale_mirrors_after_fork();

}  // namespace smcpre::core
