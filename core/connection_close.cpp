// A connection's end: shutdown, close and abort, the peer's close and its TCP
// connection ending, the link going down (doc/design.md §2.7), as net/smc's smc_close.
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>

#include "config/config.h"
#include "config/high_fd.h"
#include "config/log.h"
#include "config/sys.h"
#include "core/connection.h"
#include "core/connection_ring.h"
#include "core/datapath/link_group.h"
#include "core/datapath/progress.h"
#include "core/datapath/waiting.h"

namespace smcpre::core {

using ring::Copy;
using ring::copy_ring;
using ring::iov_total;

int Connection::shutdown(int how) {
  if (how != SHUT_RD && how != SHUT_WR && how != SHUT_RDWR) {
    errno = EINVAL;
    return -1;
  }
  if (how != SHUT_WR) {
    shut_rd_.store(true);
    queue_.wake();
  }
  if (how != SHUT_RD && !shut_wr_.exchange(true)) {
    // Ordered with writes by the link's send lock: a writer checks shut_wr_ under it
    // before it posts, so no data follows this CDC. A writer blocked for ring space is
    // woken and fails with EPIPE, as no more data may go.
    queue_.wake();
    send_cdc(CdcContext::kApplication);
  }
  sync_mirror();
  publish_state();
  return 0;
}

void Connection::close(int held_fd, bool abort) {
  // The application's last fd is gone, and with it (as with any closed fd) every epoll
  // registration and poll interest in it.
  drop_mirror();
  // A thread still blocked in recv() or send() on the socket holds it, as a system call
  // holds the file in the kernel: TCP's close() by another thread neither wakes it nor
  // ends the connection, which is released when that call returns. So does this one.
  deferred_close_fd_ = held_fd;
  deferred_close_abort_ = abort;
  close_deferred_.store(true);  // after the two above; seq_cst with calls_in_flight_
  if (calls_in_flight_.load() == 0 && close_deferred_.exchange(false)) close_now();
}

void Connection::leave_call() {
  if (calls_in_flight_.fetch_sub(1) == 1 && close_deferred_.load() &&
      close_deferred_.exchange(false)) {
    close_now();
  }
}

void Connection::close_now() {
  const int held_fd = deferred_close_fd_;
  const bool abort = deferred_close_abort_;
  held_fd_.store(held_fd);
  // Unread data makes the close abortive, as TCP answers it with a RST.
  const bool unread = rx_available() > 0;
  // Never waits for a writer blocked in another thread (TCP's close() does not either):
  // the send lock orders this CDC after any data already posted, see shutdown().
  if ((unread || abort) && writes_possible()) aborted_.store(true);
  shut_wr_.store(true);
  closed_.store(true);
  queue_.wake();
  if (!link_down_.load()) send_cdc(CdcContext::kApplication);
  finish_if_closed();
  if (!finished()) {
    const int64_t timeout = int64_t{config::current().close_timeout_ms} * 1'000'000;
    progress_thread().watch_close(weak_from_this(), now_ns() + timeout);
  }
  publish_state();
}

void Connection::close_timed_out() {
  SMC_LOG_INFO("connection {:#x}: peer did not close within {} ms: torn down", local_token_,
               config::current().close_timeout_ms);
  if (!aborted_.exchange(true) && !link_down_.load()) send_cdc(CdcContext::kReceiver);
  finish();
}

void Connection::close_at_exit() {
  if (closed_.load() || link_down_.load()) return;
  // The process exits with the socket open: the kernel would close it (FIN, or RST with
  // unread data). Do the same so the peer sees EOF, not a reset, when the link goes.
  const bool unread = rx_available() > 0;
  if (unread) aborted_.store(true);
  shut_wr_.store(true);
  closed_.store(true);
  send_cdc(CdcContext::kReceiver);
  publish_state();
}

void Connection::finish_if_closed() {
  if (!closed_.load()) return;
  if (aborted_.load() || peer_closed_.load() || peer_aborted_.load() || link_down_.load()) {
    finish();
  }
}

void Connection::watch_tcp(int fd) {
  const int dup = sys::dup_high(fd);
  if (dup < 0) return;  // the keepalive still notices a dead peer, only later
  tcp_watch_.store(progress_thread().watch_tcp(weak_from_this(), dup));
  if (finished()) {
    if (uint64_t id = tcp_watch_.exchange(0)) progress_thread().unwatch_tcp(id);
  }
}

void Connection::on_tcp_ended() {
  tcp_watch_.store(0);  // the watch is gone with the event
  // What the peer sent before it went is delivered first: its close, if it sent one.
  apply_arrived(group_->link(), flow_hash_, now_ns() + 100'000'000);
  if (peer_gone_or_closed()) return;
  // A user-space peer can only have died (or timed out its own close): whatever it
  // wrote last may never have left its machine, so this is a reset, not an end of file.
  SMC_LOG_INFO("connection {:#x}: the peer's TCP connection ended without an SMC close: reset",
               local_token_);
  pending_error_.store(ECONNRESET);
  peer_aborted_.store(true, std::memory_order_release);
  queue_.wake();
  sync_mirror();
  finish_if_closed();
  publish_state();
}

void Connection::finish() {
  if (finished_.exchange(true)) return;
  if (uint64_t id = tcp_watch_.exchange(0)) progress_thread().unwatch_tcp(id);
  const int fd = held_fd_.exchange(-1);
  if (fd >= 0) sys::close(fd);
  group_->remove_connection(local_token_);
  publish_state();
}

void Connection::protocol_error(const char* what) {
  SMC_LOG_WARN("connection {:#x}: protocol error from peer ({}): aborting", local_token_, what);
  abort_here();
}

void Connection::abort_here() {
  pending_error_.store(ECONNRESET);
  if (!aborted_.exchange(true)) send_cdc(CdcContext::kReceiver);
  peer_aborted_.store(true);  // no more data accepted from the peer
  queue_.wake();
  sync_mirror();
  finish_if_closed();
  publish_state();
}

void Connection::on_link_down() {
  if (link_down_.load()) return;
  // The error first: whoever sees the link down (the readiness mirror) sees it too.
  if (!closed_.load() && !peer_closed_.load()) pending_error_.store(ECONNRESET);
  if (link_down_.exchange(true)) return;
  queue_.wake();
  sync_mirror();
  finish_if_closed();
  publish_state();
}

}  // namespace smcpre::core
