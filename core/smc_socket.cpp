// An SMC socket's calls, its close and its fork, and the factories that make one for the
// engine's entry points (core/smc_socket.h). What every call meets lives here; the first
// bytes of a stream, which settle an undecided or swallowing socket, are
// smc_socket_settle.cpp's. The class and its state machine: core/smc_socket_impl.h.
#include "core/smc_socket.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cstring>
#include <memory>
#include <mutex>
#include <new>

#include "config/high_fd.h"
#include "config/log.h"
#include "config/sys.h"
#include "core/clc_stream.h"
#include "core/connection.h"
#include "core/datapath/link_group.h"
#include "core/datapath/progress.h"
#include "core/datapath/wait.h"
#include "core/engine_state.h"
#include "core/handshake.h"
#include "core/smc_socket_impl.h"
#include "core/socket.h"
#include "core/stats/connection_counters.h"
#include "core/wire/decline.h"

namespace smcpre::core {

namespace {

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

}  // namespace

SmcSocket::~SmcSocket() {
  parked_.release();
  if (held_fd_ >= 0) sys::close(held_fd_);
}

SmcSocket::SmcSocket(State state, bool nonblocking, ConnectionStats::Role role)
    : state_(state),
      nonblocking_(nonblocking),
      generation_(EngineState::generation()),
      forks_at_creation_(EngineState::forks()),
      role_(role) {}

void SmcSocket::read_timeouts(int fd) {
  rcv_timeout_ns_.store(socket_timeout_ns(fd, SO_RCVTIMEO), std::memory_order_relaxed);
  snd_timeout_ns_.store(socket_timeout_ns(fd, SO_SNDTIMEO), std::memory_order_relaxed);
}

void SmcSocket::adopt_client(const HandshakeResult& r) {
  if (r.connection) {
    connection_ = r.connection;
    publish_smc();
  } else if (stats_) {
    stats_->on_fallback(r.reason);
  }
}

Path SmcSocket::route_recv(int fd, int flags) {
  State s = state_.load(std::memory_order_acquire);
  if (s == State::kSmc) return Path::kSmc;
  if (s == State::kTcp) return Path::kKernel;
  return settle(fd, /*sending=*/false, flags);
}

Path SmcSocket::route_send(int fd, int flags) {
  State s = state_.load(std::memory_order_acquire);
  if (s == State::kSmc) return Path::kSmc;
  if (s == State::kTcp || s == State::kTcpSwallow) return Path::kKernel;
  return settle(fd, /*sending=*/true, flags);
}

ssize_t SmcSocket::recv(const iovec* iov, int iovcnt, int flags) {
  if (int e = take_deferred()) return fail(e);
  if (!usable()) return fail(EOPNOTSUPP);
  // SMC carries no urgent data: TCP says EINVAL when none is pending.
  if (flags & MSG_OOB) return fail(EINVAL);
  // The connection publishes its own byte counts.
  return connection_->recv(iov, iovcnt, flags, nonblocking_.load(std::memory_order_relaxed),
                           rcv_timeout_ns_.load(std::memory_order_relaxed));
}

ssize_t SmcSocket::send(const iovec* iov, int iovcnt, int flags) {
  if (int e = take_deferred()) return fail(e);
  if (!usable()) return fail(EOPNOTSUPP);
  // Urgent data has no SMC equivalent; sending it inline would corrupt the stream.
  if (flags & MSG_OOB) return fail(EOPNOTSUPP);
  return connection_->send(iov, iovcnt, flags, nonblocking_.load(std::memory_order_relaxed),
                           snd_timeout_ns_.load(std::memory_order_relaxed));
}

void SmcSocket::count_kernel_bytes(bool received, uint64_t bytes) {
  if (!stats_) return;
  if (received) {
    stats_->add_received(bytes);
  } else {
    stats_->add_sent(bytes);
  }
}

int SmcSocket::shutdown(int how) {
  if (!usable()) return static_cast<int>(fail(EOPNOTSUPP));
  return connection_->shutdown(how);
}

void SmcSocket::release(int fd) {
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

void SmcSocket::after_fork_in_child() {
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

bool SmcSocket::take_so_error(int* error) {
  if (state_.load() != State::kSmc || !usable()) return false;
  return connection_->take_error(error);
}

Readiness SmcSocket::poll_state() {
  if (!usable()) return Readiness{true, true, true, true, true};
  return connection_->readiness();
}

bool SmcSocket::undecided() const {
  // Sequentially consistent, as the decision's store: see preload's epoll_ctl.
  return state_.load(std::memory_order_seq_cst) == State::kServerUndecided;
}

int SmcSocket::readiness_fd() {
  if (!is_smc() || !usable()) return -1;
  return connection_->readiness_fd();
}

void SmcSocket::want_readiness_edges() {
  if (is_smc() && usable()) connection_->want_readiness_edges();
}

bool SmcSocket::add_readiness_watcher(std::weak_ptr<ReadinessWatcher> watcher) {
  if (!is_smc() || !usable()) return false;
  connection_->add_watcher(std::move(watcher));
  return true;
}

void SmcSocket::drop_readiness_watchers() {
  if (connection_) connection_->drop_watchers();
}

bool SmcSocket::queue_sizes(uint64_t* inq, uint64_t* outq) {
  if (!is_smc() || !usable()) return false;
  *inq = connection_->bytes_readable();
  *outq = connection_->bytes_unwritten();
  return true;
}

void SmcSocket::on_status_flags(int flags) {
  nonblocking_.store(flags & O_NONBLOCK, std::memory_order_relaxed);
}

void SmcSocket::on_sockopt(int level, int name, const void* value, socklen_t length) {
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

void SmcSocket::linger(int fd) {
  EngineState* engine = EngineState::get();
  if (!engine) return;
  const int held = sys::dup_high(fd);
  if (held < 0) return;
  sys::shutdown(held, SHUT_WR);
  progress_thread().linger(swallow_late_clc(
      held, now_ns() + int64_t{engine->config().handshake_timeout_ms} * 1'000'000));
}

void SmcSocket::publish_smc() {
  if (!stats_) return;
  LinkGroup& group = connection_->group();
  const rdma::DeviceCaps& caps = group.device().caps();
  stats_->on_smc(caps.kind != rdma::DeviceKind::kShm, caps.reports_rnr, group.id(),
                 connection_->local_token());
  connection_->attach_stats(stats_);
}

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

std::shared_ptr<Socket> make_server_socket(int fd, bool policy_tcp, bool shared,
                                           bool clc_expected) {
  auto socket = std::make_shared<SmcSocket>(SmcSocket::State::kServerUndecided, fd_nonblocking(fd),
                                            ConnectionStats::Role::kServer);
  socket->read_timeouts(fd);
  if (shared) socket->mark_shared();
  if (policy_tcp) socket->decline_with_policy();
  socket->set_stats(ConnectionStats::open(fd, ConnectionStats::Role::kServer));
  if (!clc_expected) {
    SMC_LOG_DEBUG("fd {}: the client's SYN did not announce SMC: TCP", fd);
    socket->without_clc(static_cast<uint32_t>(DeclineCode::kPeerNoSmc));
  }
  return socket;
}

}  // namespace smcpre::core
