#include "core/datapath/readiness_mirror.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <system_error>

#include "config/high_fd.h"
#include "config/log.h"
#include "config/sys.h"

namespace smcpre::core {

namespace {

// Bytes queued engine_fd -> app_fd stay at most this many: each is one skb (768 bytes of
// kernel memory) that nobody reads until the connection stops being readable. At the
// bound, a new edge is made by queueing one more byte and reading one back.
constexpr unsigned kMaxInBytes = 16;

// app_fd's SO_SNDBUF (the kernel doubles it). An AF_UNIX socket reports OUT while the
// memory of its unread sent skbs is at most a quarter of its send buffer: the primer
// (one 1-byte skb, 768 bytes of memory on Linux 6.x) must fit under that quarter, and a
// small buffer keeps the bytes needed to exceed it few.
constexpr int kAppSndbufRequest = 4096;

constexpr int kSendFlags = MSG_DONTWAIT | MSG_NOSIGNAL;

// fork() calls seen in this process (ReadinessMirror::note_fork).
std::atomic<uint64_t> g_forks{0};

std::string errno_text(const char* what) {
  return std::string(what) + ": " + std::system_category().message(errno);
}

}  // namespace

void ReadinessMirror::note_fork() noexcept {
  g_forks.fetch_add(1, std::memory_order_acq_rel);
}

namespace {
std::atomic<int> g_kernel_waiters{0};
std::atomic<bool> g_watched_unseen{false};
}  // namespace

bool ReadinessMirror::must_show_now(uint64_t forks_at_creation) noexcept {
  return g_kernel_waiters.load(std::memory_order_seq_cst) > 0 ||
         watched_elsewhere(forks_at_creation);
}

bool ReadinessMirror::watched_elsewhere(uint64_t forks_at_creation) noexcept {
  return g_watched_unseen.load(std::memory_order_relaxed) ||
         g_forks.load(std::memory_order_relaxed) != forks_at_creation;
}

void ReadinessMirror::count_kernel_waiter(int delta) noexcept {
  g_kernel_waiters.fetch_add(delta, std::memory_order_seq_cst);
}

void ReadinessMirror::watched_unseen() noexcept {
  g_watched_unseen.store(true, std::memory_order_seq_cst);
}

std::unique_ptr<ReadinessMirror> ReadinessMirror::create(std::string* error) {
  int sv[2];
  if (::syscall(SYS_socketpair, AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) {
    *error = errno_text("socketpair");
    return nullptr;
  }
  sv[0] = sys::move_fd_high(sv[0]);
  sv[1] = sys::move_fd_high(sv[1]);
  // From here on the destructor closes both ends.
  std::unique_ptr<ReadinessMirror> m(new ReadinessMirror(sv[0], sv[1]));
  m->forks_at_creation_ = g_forks.load(std::memory_order_acquire);
  const int request = kAppSndbufRequest;
  int sndbuf = 0;
  socklen_t len = sizeof sndbuf;
  if (sys::setsockopt(m->app_fd_, SOL_SOCKET, SO_SNDBUF, &request, sizeof request) != 0 ||
      sys::getsockopt(m->app_fd_, SOL_SOCKET, SO_SNDBUF, &sndbuf, &len) != 0) {
    *error = errno_text("SO_SNDBUF");
    return nullptr;
  }
  m->fill_bytes_ = static_cast<size_t>(sndbuf) / 4;
  if (!m->ensure_primer()) {
    *error = errno_text("priming the mirror");
    return nullptr;
  }
  // A closed mirror shows OUT with the primer queued. The recipe relies on AF_UNIX's
  // accounting; a kernel whose skbs are much bigger would break it: better no mirror
  // than a wrong one.
  pollfd p{m->app_fd_, POLLOUT, 0};
  if (sys::poll(&p, 1, 0) != 1 || (p.revents & POLLOUT) == 0) {
    *error = "AF_UNIX socket not writable with one byte queued (SO_SNDBUF " +
             std::to_string(sndbuf) + ")";
    return nullptr;
  }
  return m;
}

ReadinessMirror::ReadinessMirror(int app_fd, int engine_fd)
    : app_fd_(app_fd), engine_fd_(engine_fd) {}

ReadinessMirror::~ReadinessMirror() {
  // app_fd first: closing engine_fd while app_fd is open would show it HUP and ERR.
  sys::close(app_fd_);
  if (engine_fd_ >= 0) sys::close(engine_fd_);
}

void ReadinessMirror::apply(const MirrorState& state, bool new_data, bool lazy_unreadable,
                            bool* deferred) {
  std::lock_guard lock(mutex_);
  if (shown_.reset) {
    // Final: only ERR can still go, once the error has been reported.
    if (shown_.error && state.error_reported) clear_error();
    return;
  }
  if (state.reset) {
    do_reset(state.error_reported);
    return;
  }
  const bool closed = state.closed;
  const bool peer_done = state.peer_done || closed;
  // Once closed, TCP reports OUT whatever its send queue (a send fails at once), and
  // app_fd can no longer send to change it.
  if (!shown_.closed) {
    const bool ok = set_writable(state.writable || closed);
    if (!ok && closed) return;  // never HUP without OUT: retried by the next call
  }
  // Once the peer is done, RDHUP implies IN: the queued bytes no longer matter, and
  // engine_fd can no longer send them anyway.
  if (!peer_done && !shown_.peer_done) {
    if (!state.readable && in_bytes_ > 0 && lazy_unreadable && deferred != nullptr) {
      *deferred = true;
    } else {
      set_readable(state.readable, new_data);
    }
  }
  if (closed && !shown_.closed) {
    // app_fd cannot send once closed: the primer must be in place for a later reset.
    if (!ensure_primer()) return;
    if (sys::shutdown(engine_fd_, SHUT_RDWR) != 0) {
      SMC_LOG_WARN("readiness mirror {}: {}", app_fd_, errno_text("shutdown(RDWR)"));
      return;
    }
    shown_.closed = true;
    shown_.peer_done = true;
  } else if (peer_done && !shown_.peer_done) {
    if (sys::shutdown(engine_fd_, SHUT_WR) != 0) {
      SMC_LOG_WARN("readiness mirror {}: {}", app_fd_, errno_text("shutdown(WR)"));
      return;
    }
    shown_.peer_done = true;
  }
}

void ReadinessMirror::set_readable(bool readable, bool new_data) {
  if (readable) {
    // Each byte engine_fd sends wakes app_fd's waiters: the edge EPOLLET needs.
    if (in_bytes_ == 0 || new_data) queue_byte();
    return;
  }
  if (in_bytes_ == 0) return;
  // One read takes everything queued (a stream read goes on across skbs while it has
  // room); the buffer holds more than can be queued.
  char buf[kMaxInBytes + 1];
  if (sys::read(app_fd_, buf, sizeof buf) < 0 && errno != EAGAIN) {
    SMC_LOG_WARN("readiness mirror {}: {}", app_fd_, errno_text("clearing readable"));
    return;
  }
  in_bytes_ = 0;
}

void ReadinessMirror::queue_byte() {
  const char byte = 0;
  if (sys::send(engine_fd_, &byte, 1, kSendFlags) != 1) {
    SMC_LOG_WARN("readiness mirror {}: {}", app_fd_, errno_text("making readable"));
    return;
  }
  if (++in_bytes_ <= kMaxInBytes) return;
  // Taking one back never drops app_fd's queue to empty, so IN never blinks off.
  char buf;
  if (sys::read(app_fd_, &buf, 1) == 1) --in_bytes_;
}

bool ReadinessMirror::set_writable(bool writable) {
  if (writable == shown_.writable) return true;
  if (writable) {
    if (!drain_send_queue()) return false;
    shown_.writable = true;
    return true;
  }
  // The memory of fill_bytes_ of data is more than a quarter of the send buffer: app_fd
  // stops reporting OUT. (If the send stops short, the buffer is full: the same.)
  static const char zeros[4096] = {};
  const size_t len = std::min(fill_bytes_, sizeof zeros);
  const ssize_t r = sys::send(app_fd_, zeros, len, kSendFlags);
  if (r <= 0) {
    SMC_LOG_WARN("readiness mirror {}: {}", app_fd_, errno_text("making unwritable"));
    return false;
  }
  out_bytes_ += static_cast<size_t>(r);
  shown_.writable = false;
  return true;
}

bool ReadinessMirror::drain_send_queue() {
  // All of it: an skb's memory is freed only once all its bytes are read. Then the kernel
  // wakes app_fd's EPOLLOUT waiters.
  char buf[4096];
  while (out_bytes_ > 0) {
    const ssize_t r = sys::read(engine_fd_, buf, std::min(sizeof buf, out_bytes_));
    if (r <= 0) {
      SMC_LOG_WARN("readiness mirror {}: {}", app_fd_, errno_text("making writable"));
      return false;
    }
    out_bytes_ -= static_cast<size_t>(r);
  }
  return true;
}

bool ReadinessMirror::ensure_primer() {
  if (out_bytes_ > 0) return true;
  const char byte = 0;
  if (sys::send(app_fd_, &byte, 1, kSendFlags) != 1) {
    SMC_LOG_WARN("readiness mirror {}: {}", app_fd_, errno_text("priming"));
    return false;
  }
  out_bytes_ = 1;
  return true;
}

void ReadinessMirror::do_reset(bool error_reported) {
  // The kernel leaves ECONNRESET on app_fd when engine_fd goes with bytes unread, and
  // nothing when it goes empty: how TCP looks once the error has been read.
  if (error_reported ? !drain_send_queue() : !ensure_primer()) return;
  // Closing engine_fd gives app_fd HUP and ERR in one step. If a child forked since this
  // mirror was made holds a copy, the close releases nothing: shutting it down first gives
  // HUP all the same (ERR then follows when the last copy goes).
  if (g_forks.load(std::memory_order_acquire) != forks_at_creation_) {
    sys::shutdown(engine_fd_, SHUT_RDWR);
  }
  sys::close(engine_fd_);
  engine_fd_ = -1;
  out_bytes_ = 0;
  in_bytes_ = 0;
  shown_ = Shown{
      .writable = true, .peer_done = true, .closed = true, .reset = true, .error = !error_reported};
}

void ReadinessMirror::clear_error() {
  // Reading SO_ERROR clears sk_err, as it does on the TCP socket.
  int err = 0;
  socklen_t len = sizeof err;
  if (sys::getsockopt(app_fd_, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
    SMC_LOG_WARN("readiness mirror {}: {}", app_fd_, errno_text("clearing the error"));
    return;
  }
  shown_.error = false;
}

}  // namespace smcpre::core
