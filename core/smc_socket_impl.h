// SmcSocket, the engine's Socket, for the two files that implement it and no others (the
// engine gets sockets through core/smc_socket.h's factories): smc_socket.cpp holds a
// socket's calls and its life across close and fork, smc_socket_settle.cpp how an
// undecided or swallowing socket settles. The split is between what every call meets and
// what only the first bytes of a stream do.
//
// The per-TCP-socket state machine between the interposer and the engine:
//
//   client:  connect() -> handshake -> kSmc | kTcp | kTcpSwallow
//   server:  accept() -> kServerUndecided -(first data call)-> kSmc | kTcp | kTcpSwallow
//   kTcpSwallow -(the peer's late CLC messages consumed)-> kTcp
//
// kTcpSwallow exists because after a fallback the peer may still have CLC messages in
// flight (a Proposal that arrived after our application spoke, an Accept that crossed our
// Decline); they are consumed, never shown to the application.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "core/datapath/progress.h"
#include "core/engine_state.h"
#include "core/handshake.h"
#include "core/low_water.h"
#include "core/socket.h"
#include "core/stats/connection_counters.h"
#include "core/wire/clc.h"

namespace smcpre::core {

class SmcSocket final : public Socket,
                        public DeadlineOwner,
                        public std::enable_shared_from_this<SmcSocket> {
 public:
  enum class State { kServerUndecided, kSmc, kTcpSwallow, kTcp };

  ~SmcSocket() override;
  SmcSocket(State state, bool nonblocking, ConnectionStats::Role role);

  // The socket's timeouts as they are when smcpre takes it over (later changes arrive
  // through on_sockopt).
  void read_timeouts(int fd);
  // Accepted on a listener the policy keeps on TCP (before the socket is published).
  void decline_with_policy() { policy_tcp_ = true; }
  // Accepted from a client that did not announce SMC in its SYN: TCP from the first byte,
  // nothing looked for in the stream, nothing swallowed.
  void without_clc(uint32_t reason) { finish_tcp(reason, false); }
  // The connection's published line; may be null (then nothing is counted).
  void set_stats(std::shared_ptr<ConnectionStats> stats) { stats_ = std::move(stats); }
  // The client handshake's outcome.
  void adopt_client(const HandshakeResult& r);

  // Socket (core/socket.h).
  Path route_recv(int fd, int flags) override;
  Path route_send(int fd, int flags) override;
  ssize_t recv(const iovec* iov, int iovcnt, int flags) override;
  ssize_t send(const iovec* iov, int iovcnt, int flags) override;
  void count_kernel_bytes(bool received, uint64_t bytes) override;
  int shutdown(int how) override;
  void release(int fd) override;
  void mark_shared() override { shared_.store(true, std::memory_order_release); }
  void after_fork_in_child() override;
  bool take_so_error(int* error) override;
  Readiness poll_state() override;
  bool is_smc() const override { return state_.load(std::memory_order_acquire) == State::kSmc; }
  bool undecided() const override;
  int readiness_fd() override;
  void want_readiness_edges() override;
  bool add_readiness_watcher(std::weak_ptr<ReadinessWatcher> watcher) override;
  void drop_readiness_watchers() override;
  bool queue_sizes(uint64_t* inq, uint64_t* outq) override;
  void on_status_flags(int flags) override;
  void on_sockopt(int level, int name, const void* value, socklen_t length) override;

 private:
  // A route_* decision that must fail the application's call (e.g. EINTR while waiting for
  // the first bytes of an undecided connection) hands the error to the recv/send that
  // follows on the same thread.
  static inline thread_local int t_deferred_errno = 0;

  static ssize_t fail(int error) {
    errno = error;
    return -1;
  }

  static int take_deferred() {
    int e = t_deferred_errno;
    t_deferred_errno = 0;
    return e;
  }

  // The peer may still send CLC bytes nobody will read; closing now would turn the
  // application's orderly close into a RST. FIN now, swallow them, close later.
  void linger(int fd);

  bool usable() const { return connection_ && current(); }
  // Created (or taken over) in this process since its last fork.
  bool current() const {
    return generation_.load(std::memory_order_acquire) == EngineState::generation();
  }
  // Another process may hold the kernel socket too.
  bool shared() const {
    return shared_.load(std::memory_order_acquire) || forks_at_creation_ != EngineState::forks();
  }

  void publish_smc();

  // --- settling (smc_socket_settle.cpp) ---

  void finish_tcp(uint32_t reason, bool swallow);

  // Slow path: the server's handshake, or swallowing after a fallback. Never waits in a
  // non-blocking call; a blocking one waits as long as its own call would under TCP
  // (SO_RCVTIMEO / SO_SNDTIMEO), and a handshake step no longer than its deadline.
  Path settle(int fd, bool sending, int flags);

  int64_t handshake_timeout_ns() const;

  // The next CLC message at the start of the stream, complete ones only. With part of
  // one there, the socket is parked (not readable, see ReceiveLowWater) until the rest
  // comes, for at most the handshake timeout from its first byte; then, or on the
  // peer's EOF, those bytes are the application's (kNotClc). Waits until `wait_until`
  // (0: not at all, -1: no end) or `phase_deadline` (-1: none), whichever is first.
  ClcRead next_clc(int fd, int64_t wait_until, int64_t phase_deadline,
                   std::vector<uint8_t>* message, clc::Header* header, bool consume = true);

  // Consumes a CLC message found with consume=false (all of it is there).
  static void take_off(int fd, size_t length);

  // The deadline of the partial message in the stream, if any.
  int64_t own_deadline() const;

  // Holds back the `needed` - (what is there) bytes of a partial message: see next_clc.
  // The progress thread keeps the deadline (through a descriptor of its own: the
  // application's fd number may be closed and reused meanwhile).
  void park(int fd, size_t needed);
  void unpark() { parked_.release(); }

  bool hold_fd(int fd);
  // Nothing pending any more: the descriptor the progress thread would use goes.
  void drop_held_fd();

  void watch_deadline(int64_t deadline);

  // The progress thread: a handshake step's deadline passed with no application call
  // to notice. Decided here (TCP), so that what it held is freed, the client hears our
  // Decline in time, and a partial message reaches the application (un-parking it is
  // the application's wake-up).
  int64_t on_deadline(int64_t now) override;

  // The server's side of the handshake: the Proposal, then (Accept sent) the client's
  // Confirm. Returns false if the caller's call must fail with t_deferred_errno; true
  // with the state still kServerUndecided while the handshake waits for the client.
  bool decide_server(int fd, bool sending, int64_t wait_until);

  bool adopt(const HandshakeResult& r);

  // Consumes CLC messages at the start of the stream, complete ones only: bytes that do
  // not make one within the handshake timeout (or before the peer's EOF) end the
  // swallowing and stay for the application. Returns false on a deferred error.
  bool swallow(int fd, int64_t wait_until);

  std::mutex mutex_;
  std::atomic<State> state_;
  std::atomic<bool> nonblocking_;
  std::atomic<int64_t> rcv_timeout_ns_{0};
  std::atomic<int64_t> snd_timeout_ns_{0};
  std::atomic<bool> abort_on_close_{false};  // SO_LINGER {1, 0}
  // The engine generation the socket belongs to: a fork child takes over undecided ones.
  std::atomic<uint64_t> generation_;
  const uint64_t forks_at_creation_;
  std::atomic<bool> shared_{false};
  const ConnectionStats::Role role_;
  bool reopen_stats_ = false;  // under mutex_: a fork child's socket needs its own line
  std::shared_ptr<Connection> connection_;
  std::shared_ptr<ConnectionStats> stats_;
  bool policy_tcp_ = false;
  // The handshake in progress (under mutex_): our Accept is out, the client's Confirm
  // awaited; the first byte of a partial CLC message (-1: none); the socket parked on
  // it; a descriptor of the socket for the progress thread, held while either lasts.
  PendingServerHandshake pending_;
  int64_t partial_since_ns_ = -1;
  ReceiveLowWater parked_;
  int held_fd_ = -1;
  int64_t watched_deadline_ns_ = -1;
  // Parked until another connection's first contact with this client ends.
  std::shared_ptr<SharedLowWater> turn_park_;
  int64_t turn_park_deadline_ns_ = 0;
};

}  // namespace smcpre::core
