// The per-TCP-socket state machine between the interposer and the engine:
//
//   client:  connect() -> handshake -> kSmc | kTcp | kTcpSwallow
//   server:  accept() -> kServerUndecided -(first data call)-> kSmc | kTcp | kTcpSwallow
//   kTcpSwallow -(the peer's late CLC messages consumed)-> kTcp
//
// kTcpSwallow exists because after a fallback the peer may still have CLC messages in
// flight (a Proposal that arrived after our application spoke, an Accept that crossed our
// Decline); they are consumed, never shown to the application.
#include "core/smc_socket.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <functional>
#include <mutex>
#include <new>
#include <vector>

#include "config/high_fd.h"
#include "config/listener_lookup.h"
#include "config/log.h"
#include "config/policy.h"
#include "config/registry.h"
#include "config/sys.h"
#include "core/backlog.h"
#include "core/connection.h"
#include "core/engine_state.h"
#include "core/handshake.h"
#include "core/link_group.h"
#include "core/local_address.h"
#include "core/low_water.h"
#include "core/progress.h"
#include "core/socket.h"
#include "core/stats/connection_counters.h"
#include "core/stats/segment.h"
#include "core/stream_start.h"
#include "core/wire/decline.h"

namespace smcpre::core {

namespace {

// A route_* decision that must fail the application's call (e.g. EINTR while waiting for
// the first bytes of an undecided connection) hands the error to the recv/send that
// follows on the same thread.
thread_local int t_deferred_errno = 0;

// SO_RCVTIMEO / SO_SNDTIMEO as nanoseconds (0 = none).
int64_t timeval_ns(const void* value, socklen_t length) {
  if (value == nullptr || length < sizeof(timeval)) return 0;
  timeval tv;
  std::memcpy(&tv, value, sizeof tv);
  if (tv.tv_sec < 0 || tv.tv_usec < 0) return 0;
  return int64_t{tv.tv_sec} * 1'000'000'000 + int64_t{tv.tv_usec} * 1000;
}

int64_t socket_timeout_ns(int fd, int name) {
  timeval tv{};
  socklen_t length = sizeof tv;
  if (sys::getsockopt(fd, SOL_SOCKET, name, &tv, &length) != 0) return 0;
  return timeval_ns(&tv, length);
}

bool fd_nonblocking(int fd) {
  int flags = sys::fcntl(fd, F_GETFL);
  return flags >= 0 && (flags & O_NONBLOCK);
}

class SmcSocket final : public Socket,
                        public DeadlineOwner,
                        public std::enable_shared_from_this<SmcSocket> {
 public:
  enum class State { kServerUndecided, kSmc, kTcpSwallow, kTcp };

  ~SmcSocket() override {
    parked_.release();
    if (held_fd_ >= 0) sys::close(held_fd_);
  }

  SmcSocket(State state, bool nonblocking, ConnectionStats::Role role)
      : state_(state),
        nonblocking_(nonblocking),
        generation_(EngineState::generation()),
        forks_at_creation_(EngineState::forks()),
        role_(role) {}

  // The socket's timeouts as they are when smcpre takes it over (later changes arrive
  // through on_sockopt).
  void read_timeouts(int fd) {
    rcv_timeout_ns_.store(socket_timeout_ns(fd, SO_RCVTIMEO), std::memory_order_relaxed);
    snd_timeout_ns_.store(socket_timeout_ns(fd, SO_SNDTIMEO), std::memory_order_relaxed);
  }

  // Accepted on a listener the policy keeps on TCP (before the socket is published).
  void decline_with_policy() { policy_tcp_ = true; }
  // The connection's published line; may be null (then nothing is counted).
  void set_stats(std::shared_ptr<ConnectionStats> stats) { stats_ = std::move(stats); }
  // The client handshake's outcome.
  void adopt_client(const HandshakeResult& r) {
    if (r.connection) {
      connection_ = r.connection;
      publish_smc();
    } else if (stats_) {
      stats_->on_fallback(r.reason);
    }
  }

  Path route_recv(int fd, int flags) override {
    State s = state_.load(std::memory_order_acquire);
    if (s == State::kSmc) return Path::kSmc;
    if (s == State::kTcp) return Path::kKernel;
    return settle(fd, /*sending=*/false, flags);
  }

  Path route_send(int fd, int flags) override {
    State s = state_.load(std::memory_order_acquire);
    if (s == State::kSmc) return Path::kSmc;
    if (s == State::kTcp || s == State::kTcpSwallow) return Path::kKernel;
    return settle(fd, /*sending=*/true, flags);
  }

  ssize_t recv(const iovec* iov, int iovcnt, int flags) override {
    if (int e = take_deferred()) return fail(e);
    if (!usable()) return fail(EOPNOTSUPP);
    // SMC carries no urgent data: TCP says EINVAL when none is pending.
    if (flags & MSG_OOB) return fail(EINVAL);
    // The connection publishes its own byte counts.
    return connection_->recv(iov, iovcnt, flags, nonblocking_.load(std::memory_order_relaxed),
                             rcv_timeout_ns_.load(std::memory_order_relaxed));
  }

  ssize_t send(const iovec* iov, int iovcnt, int flags) override {
    if (int e = take_deferred()) return fail(e);
    if (!usable()) return fail(EOPNOTSUPP);
    // Urgent data has no SMC equivalent; sending it inline would corrupt the stream.
    if (flags & MSG_OOB) return fail(EOPNOTSUPP);
    return connection_->send(iov, iovcnt, flags, nonblocking_.load(std::memory_order_relaxed),
                             snd_timeout_ns_.load(std::memory_order_relaxed));
  }

  void count_kernel_bytes(bool received, uint64_t bytes) override {
    if (!stats_) return;
    if (received) {
      stats_->add_received(bytes);
    } else {
      stats_->add_sent(bytes);
    }
  }

  int shutdown(int how) override {
    if (!usable()) return static_cast<int>(fail(EOPNOTSUPP));
    return connection_->shutdown(how);
  }

  void release(int fd) override {
    // A fork child's copy of a parent's socket is the parent's to close: the child's
    // close only drops its fd (a lingering close would shut the shared socket down).
    if (!current()) return;
    {
      // A handshake in progress ends with the application's interest: what it holds
      // (an RMB element, a half-made link) goes now, not at its deadline.
      std::lock_guard lock(mutex_);
      pending_.reset();
      turn_park_.reset();
      partial_since_ns_ = -1;
      drop_held_fd();
    }
    const State state = state_.load();
    if (state == State::kServerUndecided || state == State::kTcpSwallow) {
      // Another process may hold this socket and serve it (the child of a
      // fork-per-connection server, a worker it was passed to): only its last close,
      // wherever that happens, may end the connection, so ours leaves it alone.
      if (!shared()) linger(fd);
      return;
    }
    if (state != State::kSmc || !connection_) return;
    connection_->close(sys::dup_high(fd), abort_on_close_.load());
  }

  void mark_shared() override { shared_.store(true, std::memory_order_release); }

  void after_fork_in_child() override {
    if (current()) return;  // met already through another fd of the same socket
    const State state = state_.load();
    if (state != State::kServerUndecided && state != State::kTcpSwallow) return;
    // The child is single-threaded here: a lock a parent thread held at fork() is
    // nobody's now. The parent's published line stays the parent's; the child takes a
    // line of its own when it first settles the socket.
    new (&mutex_) std::mutex();
    // A handshake the parent had under way is the parent's (its link group, its
    // progress thread): the child's copy is left as it is, never freed here, and the
    // child treats the connection as TCP, swallowing the client's late CLC messages.
    if (pending_) {
      (void)pending_.release();  // NOLINT: deliberately leaked, see above
      state_.store(State::kTcpSwallow, std::memory_order_seq_cst);
    }
    parked_.release();
    if (turn_park_) {
      turn_park_->end();
      turn_park_.reset();
    }
    if (held_fd_ >= 0) sys::close(held_fd_);
    held_fd_ = -1;
    partial_since_ns_ = -1;
    watched_deadline_ns_ = -1;
    stats_.reset();
    reopen_stats_ = true;
    shared_.store(true, std::memory_order_release);
    generation_.store(EngineState::generation(), std::memory_order_release);
  }

  bool take_so_error(int* error) override {
    if (state_.load() != State::kSmc || !usable()) return false;
    return connection_->take_error(error);
  }

  Readiness poll_state() override {
    if (!usable()) return Readiness{true, true, true, true};
    return connection_->readiness();
  }

  bool is_smc() const override { return state_.load(std::memory_order_acquire) == State::kSmc; }
  bool undecided() const override {
    // Sequentially consistent, as the decision's store: see preload's epoll_ctl.
    return state_.load(std::memory_order_seq_cst) == State::kServerUndecided;
  }

  int readiness_fd() override {
    if (!is_smc() || !usable()) return -1;
    return connection_->readiness_fd();
  }

  void want_readiness_edges() override {
    if (is_smc() && usable()) connection_->want_readiness_edges();
  }

  bool queue_sizes(uint64_t* inq, uint64_t* outq) override {
    if (!is_smc() || !usable()) return false;
    *inq = connection_->bytes_readable();
    *outq = connection_->bytes_unwritten();
    return true;
  }

  void on_status_flags(int flags) override {
    nonblocking_.store(flags & O_NONBLOCK, std::memory_order_relaxed);
  }

  void on_sockopt(int level, int name, const void* value, socklen_t length) override {
    if (level != SOL_SOCKET) return;
    if (name == SO_RCVTIMEO) rcv_timeout_ns_.store(timeval_ns(value, length));
    if (name == SO_SNDTIMEO) snd_timeout_ns_.store(timeval_ns(value, length));
    if (name == SO_LINGER && value != nullptr && length >= sizeof(::linger)) {
      ::linger l;
      std::memcpy(&l, value, sizeof l);
      // SO_LINGER with a zero timeout makes close() abortive (TCP sends RST). A non-zero
      // timeout waits for unsent data: SMC data is in the peer's ring once written.
      abort_on_close_.store(l.l_onoff != 0 && l.l_linger == 0);
    }
  }

 private:
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
  void linger(int fd) {
    EngineState* engine = EngineState::get();
    if (!engine) return;
    const int held = sys::dup_high(fd);
    if (held < 0) return;
    sys::shutdown(held, SHUT_WR);
    progress_thread().linger_close(
        held, now_ns() + int64_t{engine->config().handshake_timeout_ms} * 1'000'000);
  }

  bool usable() const { return connection_ && current(); }
  // Created (or taken over) in this process since its last fork.
  bool current() const {
    return generation_.load(std::memory_order_acquire) == EngineState::generation();
  }
  // Another process may hold the kernel socket too.
  bool shared() const {
    return shared_.load(std::memory_order_acquire) || forks_at_creation_ != EngineState::forks();
  }

  void finish_tcp(uint32_t reason, bool swallow) {
    if (stats_) stats_->on_fallback(reason);
    state_.store(swallow ? State::kTcpSwallow : State::kTcp, std::memory_order_seq_cst);
  }

  void publish_smc() {
    if (!stats_) return;
    LinkGroup& group = connection_->group();
    stats_->on_smc(group.device().caps().kind != rdma::DeviceKind::kShm, group.id(),
                   connection_->local_token());
    connection_->attach_stats(stats_);
  }

  // Slow path: the server's handshake, or swallowing after a fallback. Never waits in a
  // non-blocking call; a blocking one waits as long as its own call would under TCP
  // (SO_RCVTIMEO / SO_SNDTIMEO), and a handshake step no longer than its deadline.
  Path settle(int fd, bool sending, int flags) {
    std::lock_guard lock(mutex_);
    if (reopen_stats_ && current()) {
      reopen_stats_ = false;
      set_stats(ConnectionStats::open(fd, role_));
    }
    const bool wait = !(flags & MSG_DONTWAIT) && !nonblocking_.load();
    const int64_t timeout = sending ? snd_timeout_ns_.load() : rcv_timeout_ns_.load();
    const int64_t wait_until = !wait ? 0 : timeout > 0 ? now_ns() + timeout : -1;
    if (state_.load() == State::kServerUndecided) {
      if (!decide_server(fd, sending, wait_until)) return Path::kSmc;  // deferred error
    }
    if (state_.load() == State::kTcpSwallow && !sending) {
      if (!swallow(fd, wait_until)) return Path::kSmc;  // deferred error
    }
    switch (state_.load()) {
      case State::kSmc:
        return Path::kSmc;
      case State::kTcpSwallow:
        if (sending) return Path::kKernel;  // only what arrives is swallowed
        [[fallthrough]];
      case State::kServerUndecided:
        // Nothing for the application yet. With nothing at all in the socket and no
        // wait made, the kernel's own answer (EAGAIN, an error) is the one TCP gives.
        if (wait || pending_ || partial_since_ns_ >= 0 || turn_park_) {
          t_deferred_errno = EAGAIN;
          return Path::kSmc;
        }
        return Path::kKernel;
      default:
        return Path::kKernel;
    }
  }

  int64_t handshake_timeout_ns() const {
    EngineState* engine = EngineState::get();
    return int64_t{engine ? engine->config().handshake_timeout_ms : 2000} * 1'000'000;
  }

  // The next CLC message at the start of the stream, complete ones only. With part of
  // one there, the socket is parked (not readable, see ReceiveLowWater) until the rest
  // comes, for at most the handshake timeout from its first byte; then, or on the
  // peer's EOF, those bytes are the application's (kNotClc). Waits until `wait_until`
  // (0: not at all, -1: no end) or `phase_deadline` (-1: none), whichever is first.
  ClcRead next_clc(int fd, int64_t wait_until, int64_t phase_deadline,
                   std::vector<uint8_t>* message, clc::Header* header, bool consume = true) {
    while (true) {
      size_t needed = 0;
      const ClcRead read = read_clc(fd, -1, false, message, header, 0, &needed, consume);
      const int64_t now = now_ns();
      if (read == ClcRead::kNeedMore && needed > 0) {
        if (partial_since_ns_ < 0) partial_since_ns_ = now;
        if (now - partial_since_ns_ >= handshake_timeout_ns()) {
          SMC_LOG_INFO("incomplete CLC message within {} ms: application data",
                       handshake_timeout_ns() / 1'000'000);
          unpark();
          return ClcRead::kNotClc;
        }
        park(fd, needed);
      } else if (read != ClcRead::kNeedMore) {
        unpark();
        if (read == ClcRead::kNotClc && partial_since_ns_ >= 0) {
          SMC_LOG_INFO("incomplete CLC message, then the peer's EOF: application data");
        }
        partial_since_ns_ = -1;
        return read;
      }
      // The wait ends at the caller's time, the phase's deadline or the partial
      // message's, whichever comes first (-1: none of them).
      int64_t until = wait_until;
      if (until == 0 || (until > 0 && now >= until)) return ClcRead::kNeedMore;
      for (const int64_t d : {phase_deadline, own_deadline()}) {
        if (d < 0) continue;
        if (now >= d) return ClcRead::kNeedMore;
        if (until < 0 || d < until) until = d;
      }
      const int64_t left = until < 0 ? -1 : (until - now + 999'999) / 1'000'000;
      pollfd p{fd, POLLIN | POLLRDHUP, 0};
      if (sys::poll(&p, 1, static_cast<int>(std::min<int64_t>(left, INT32_MAX))) < 0 &&
          errno == EINTR) {
        return ClcRead::kInterrupted;
      }
    }
  }

  // Consumes a CLC message found with consume=false (all of it is there).
  static void take_off(int fd, size_t length) {
    uint8_t buf[clc::kMaxMessageSize];
    sys::recv(fd, buf, std::min(length, sizeof buf), MSG_DONTWAIT);
  }

  // The deadline of the partial message in the stream, if any.
  int64_t own_deadline() const {
    return partial_since_ns_ < 0 ? -1 : partial_since_ns_ + handshake_timeout_ns();
  }

  // Holds back the `needed` - (what is there) bytes of a partial message: see next_clc.
  // The progress thread keeps the deadline (through a descriptor of its own: the
  // application's fd number may be closed and reused meanwhile).
  void park(int fd, size_t needed) {
    if (!hold_fd(fd)) return;
    if (!parked_.hold(held_fd_, static_cast<int>(needed))) return;
    watch_deadline(own_deadline());
  }
  void unpark() { parked_.release(); }

  bool hold_fd(int fd) {
    if (held_fd_ < 0) held_fd_ = sys::dup_high(fd);
    return held_fd_ >= 0;
  }
  // Nothing pending any more: the descriptor the progress thread would use goes.
  void drop_held_fd() {
    if (pending_ || partial_since_ns_ >= 0 || turn_park_) return;
    unpark();
    if (held_fd_ >= 0) sys::close(held_fd_);
    held_fd_ = -1;
  }

  void watch_deadline(int64_t deadline) {
    if (deadline < 0 || watched_deadline_ns_ == deadline) return;
    watched_deadline_ns_ = deadline;
    progress_thread().watch_deadline(weak_from_this(), deadline);
  }

  // The progress thread: a handshake step's deadline passed with no application call
  // to notice. Decided here (TCP), so that what it held is freed, the client hears our
  // Decline in time, and a partial message reaches the application (un-parking it is
  // the application's wake-up).
  int64_t on_deadline(int64_t now) override {
    std::unique_lock lock(mutex_, std::try_to_lock);
    if (!lock) return now + 1'000'000;  // in a call right now: look again soon
    watched_deadline_ns_ = -1;
    if (held_fd_ < 0 || !current()) return -1;
    EngineState* engine = EngineState::get();
    if (pending_ && engine && now >= pending_deadline_ns(*pending_)) {
      adopt(server_confirm_missing(held_fd_, *engine, *pending_));
    }
    if (partial_since_ns_ >= 0 && now >= own_deadline()) {
      SMC_LOG_INFO("incomplete CLC message within {} ms: application data",
                   handshake_timeout_ns() / 1'000'000);
      partial_since_ns_ = -1;
      unpark();
      if (state_.load() == State::kServerUndecided && !pending_) {
        finish_tcp(static_cast<uint32_t>(DeclineCode::kProtocol), false);
      } else if (state_.load() == State::kTcpSwallow) {
        state_.store(State::kTcp, std::memory_order_seq_cst);
      }
    }
    if (turn_park_ && now >= turn_park_deadline_ns_) {
      // The other first contact outlived its own deadline's reach: the application
      // looks again (and makes a group of its own if it still may not wait).
      turn_park_->end();
      turn_park_.reset();
    }
    int64_t next = own_deadline();
    if (turn_park_ && (next < 0 || turn_park_deadline_ns_ < next)) next = turn_park_deadline_ns_;
    if (pending_) {
      const int64_t d = pending_deadline_ns(*pending_);
      if (next < 0 || d < next) next = d;
    }
    drop_held_fd();
    if (next >= 0) watched_deadline_ns_ = next;
    return next;
  }

  // The server's side of the handshake: the Proposal, then (Accept sent) the client's
  // Confirm. Returns false if the caller's call must fail with t_deferred_errno; true
  // with the state still kServerUndecided while the handshake waits for the client.
  bool decide_server(int fd, bool sending, int64_t wait_until) {
    EngineState* engine = EngineState::get();
    if (!engine) {
      finish_tcp(static_cast<uint32_t>(DeclineCode::kDisabled), false);
      return true;
    }
    std::vector<uint8_t> message;
    clc::Header header;
    if (!pending_) {
      // Parked for another connection's first contact (see below): look again now.
      if (turn_park_) {
        turn_park_->end();
        turn_park_.reset();
      }
      // A Proposal is not waited for by a send (rule 2: the server that speaks first
      // stays on TCP), only by a receive. It stays in the socket until it is answered.
      const ClcRead read =
          next_clc(fd, sending ? 0 : wait_until, -1, &message, &header, /*consume=*/false);
      switch (read) {
        case ClcRead::kInterrupted:
          t_deferred_errno = EINTR;
          return false;
        case ClcRead::kNeedMore:
          if (sending) {
            SMC_LOG_DEBUG("server: application spoke first: TCP");
            finish_tcp(static_cast<uint32_t>(DeclineCode::kLateProposal), true);
          }
          return true;
        case ClcRead::kMessage:
          if (header.type != clc::Type::kProposal || policy_tcp_) take_off(fd, message.size());
          break;
        default:  // not CLC (a plain client, or a message that never completed), EOF, error
          finish_tcp(static_cast<uint32_t>(partial_since_ns_ >= 0 ? DeclineCode::kProtocol
                                                                  : DeclineCode::kPeerNoSmc),
                     false);
          return true;
      }
      if (header.type != clc::Type::kProposal) {
        // A Decline (the client gave up waiting) or garbage in CLC clothing.
        if (header.type != clc::Type::kDecline) {
          send_decline(fd, *engine, static_cast<uint32_t>(DeclineCode::kProtocol));
        }
        finish_tcp(static_cast<uint32_t>(DeclineCode::kPeerDecl), true);
        return true;
      }
      if (policy_tcp_) {
        // A client that proposes anyway (its SMCPRE_PEERS or policy says smc) learns why.
        SMC_LOG_INFO("server: Proposal declined: policy says tcp");
        send_decline(fd, *engine, static_cast<uint32_t>(DeclineCode::kPolicy));
        finish_tcp(static_cast<uint32_t>(DeclineCode::kPolicy), true);
        return true;
      }
      // A call that may not wait, when another connection is making this client's first
      // link group, parks the socket with the Proposal in it (not readable) until that
      // one ends: then the kernel wakes whoever waits on the socket, and the call that
      // follows answers the Proposal on the new group.
      std::shared_ptr<SharedLowWater> park;
      std::function<void()> on_turn_free;
      if (wait_until == 0) {
        park = std::make_shared<SharedLowWater>();
        on_turn_free = [park] { park->end(); };
      }
      HandshakeResult r;
      bool wait_for_turn = false;
      pending_ = server_accept(fd, *engine, message, on_turn_free, &wait_for_turn, &r);
      if (wait_for_turn) {
        park->hold(fd, static_cast<int>(message.size()) + 1);
        turn_park_ = std::move(park);
        turn_park_deadline_ns_ = now_ns() + handshake_timeout_ns();
        if (hold_fd(fd)) watch_deadline(turn_park_deadline_ns_);
        return true;
      }
      take_off(fd, message.size());
      if (!pending_) return adopt(r);
      if (hold_fd(fd)) watch_deadline(pending_deadline_ns(*pending_));
    }
    // Accept sent: the client's Confirm (or Decline), usually a round trip away.
    const ClcRead read =
        next_clc(fd, wait_until, pending_deadline_ns(*pending_), &message, &header);
    switch (read) {
      case ClcRead::kInterrupted:
        t_deferred_errno = EINTR;
        return false;
      case ClcRead::kNeedMore:
        if (now_ns() >= pending_deadline_ns(*pending_)) {
          return adopt(server_confirm_missing(fd, *engine, *pending_));
        }
        return true;
      case ClcRead::kMessage:
        return adopt(server_confirm(fd, *engine, *pending_, message, header));
      default:
        return adopt(HandshakeResult{nullptr, static_cast<uint32_t>(DeclineCode::kPeerNoSmc)});
    }
  }

  bool adopt(const HandshakeResult& r) {
    pending_.reset();
    turn_park_.reset();
    if (r.connection) {
      connection_ = r.connection;
      publish_smc();
      state_.store(State::kSmc, std::memory_order_seq_cst);
      SMC_LOG_INFO("connection SMC established (token {:#x})", connection_->local_token());
    } else {
      finish_tcp(r.reason, r.swallow);
    }
    drop_held_fd();
    return true;
  }

  // Consumes CLC messages at the start of the stream, complete ones only: bytes that do
  // not make one within the handshake timeout (or before the peer's EOF) end the
  // swallowing and stay for the application. Returns false on a deferred error.
  bool swallow(int fd, int64_t wait_until) {
    while (true) {
      std::vector<uint8_t> message;
      clc::Header header;
      const ClcRead read = next_clc(fd, wait_until, -1, &message, &header);
      if (read == ClcRead::kInterrupted) {
        t_deferred_errno = EINTR;
        return false;
      }
      if (read == ClcRead::kNeedMore) {
        drop_held_fd();
        return true;  // nothing (more) yet
      }
      if (read != ClcRead::kMessage) {
        state_.store(State::kTcp, std::memory_order_release);
        drop_held_fd();
        return true;
      }
      SMC_LOG_DEBUG("swallowed a late CLC message (type {})", static_cast<int>(header.type));
    }
  }

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

}  // namespace

std::shared_ptr<Socket> make_client_socket(int fd, HandshakeResult& result) {
  // A non-blocking connect hands over a non-blocking socket.
  const bool nonblocking = fd_nonblocking(fd);
  std::shared_ptr<SmcSocket> socket;
  if (result.connection) {
    socket = std::make_shared<SmcSocket>(SmcSocket::State::kSmc, nonblocking,
                                         ConnectionStats::Role::kClient);
    socket->read_timeouts(fd);
    SMC_LOG_INFO("connection SMC established (token {:#x})", result.connection->local_token());
  } else {
    socket = std::make_shared<SmcSocket>(
        result.swallow ? SmcSocket::State::kTcpSwallow : SmcSocket::State::kTcp, nonblocking,
        ConnectionStats::Role::kClient);
    SMC_LOG_INFO("connection falls back to TCP: {}", decline_name(result.reason));
  }
  socket->set_stats(ConnectionStats::open(fd, ConnectionStats::Role::kClient));
  socket->adopt_client(result);
  return socket;
}

std::shared_ptr<Socket> make_server_socket(int fd, bool policy_tcp, bool shared) {
  auto socket = std::make_shared<SmcSocket>(SmcSocket::State::kServerUndecided, fd_nonblocking(fd),
                                            ConnectionStats::Role::kServer);
  socket->read_timeouts(fd);
  if (shared) socket->mark_shared();
  if (policy_tcp) socket->decline_with_policy();
  socket->set_stats(ConnectionStats::open(fd, ConnectionStats::Role::kServer));
  return socket;
}

}  // namespace smcpre::core
