// A connection's receive side: reading the RMB element (recv, peek, MSG_WAITALL) and
// announcing what was consumed to the peer (doc/design.md §2.6), as net/smc's smc_rx.
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
#include "core/datapath/waiting.h"

namespace smcpre::core {

using ring::Copy;
using ring::copy_ring;
using ring::iov_total;

void Connection::maybe_announce_consumed() {
  const uint64_t unannounced =
      rx_cons_.load(std::memory_order_relaxed) - rx_cons_announced_.load(std::memory_order_relaxed);
  if (unannounced == 0) return;
  if (peer_write_blocked_.exchange(false, std::memory_order_relaxed) ||
      unannounced >= update_limit_ || cdc_pending_.load(std::memory_order_relaxed)) {
    send_cdc(CdcContext::kApplication);
  }
}

ssize_t Connection::recv(const iovec* iov, int iovcnt, int flags, bool nonblocking,
                         int64_t timeout_ns) {
  const size_t want = iov_total(iov, iovcnt);
  if (want == 0) return 0;
  std::lock_guard lock(rx_mutex_);
  MirrorSync sync{this};
  const bool peek = flags & MSG_PEEK;
  const bool dontwait = nonblocking || (flags & MSG_DONTWAIT);
  const bool waitall = (flags & MSG_WAITALL) && !peek;
  size_t copied = 0;
  int64_t deadline = -1;
  // Once this call waits, a close() by another thread waits for it (see close()).
  std::optional<CallInFlight> in_flight;
  // What arrived since the last look is taken in by this thread (see send()): a reader
  // that is never short of data would leave every producer update to a worker.
  if (rx_available() < want) reap_here(group_->link());
  while (true) {
    const uint64_t available = rx_available();
    if (available > 0) {
      const size_t n = std::min<uint64_t>(available, want - copied);
      copy_ring(Copy::kFromRing, static_cast<uint8_t*>(rmb_->addr()), rmb_size_,
                rx_cons_.load(std::memory_order_relaxed), n, iov, iovcnt, copied);
      if (peek) return static_cast<ssize_t>(n);
      const uint64_t consumed = rx_cons_.fetch_add(n, std::memory_order_release) + n;
      // One reader at a time (rx_mutex_): a plain store keeps the published count exact.
      if (ConnectionStats* stats = stats_.load(std::memory_order_acquire)) {
        stats->set_received(consumed);
      }
      copied += n;
      maybe_announce_consumed();
      if (!waitall || copied == want) return static_cast<ssize_t>(copied);
      continue;
    }
    // Nothing buffered: end of stream, error, or wait. After shutdown(SHUT_RD) that is
    // end of stream, while data that arrives is still read (as Linux TCP does). An
    // orderly close the peer sent before its link went away is still an orderly close
    // (EOF), as TCP's FIN would be.
    // TCP's order: the peer's FIN, then a pending error, then our own SHUT_RD.
    if (peer_aborted_.load(std::memory_order_acquire) && !abort_after_fin_.load()) {
      return end_with_reset(copied);
    }
    if (peer_done_writing_.load(std::memory_order_acquire) ||
        peer_closed_.load(std::memory_order_acquire)) {
      // An abortive close sets the abort before the close flags (Connection::on_cdc): one
      // that arrived since the check above is seen now, and is a reset, not EOF.
      if (peer_aborted_.load(std::memory_order_acquire) && !abort_after_fin_.load()) {
        return end_with_reset(copied);
      }
      return static_cast<ssize_t>(copied);
    }
    if (link_down_.load(std::memory_order_acquire)) return end_with_reset(copied);
    if (shut_rd_.load(std::memory_order_relaxed)) return static_cast<ssize_t>(copied);
    if (dontwait) {
      if (copied > 0) return static_cast<ssize_t>(copied);
      errno = EAGAIN;
      return -1;
    }
    if (timeout_ns > 0 && deadline < 0) deadline = now_ns() + timeout_ns;
    if (!in_flight) in_flight.emplace(this);
    WaitResult r = wait_adaptive(group_->link(), queue_, rx_budget_, deadline, [this] {
      return rx_available() > 0 || peer_done_writing_.load(std::memory_order_acquire) ||
             peer_closed_.load(std::memory_order_acquire) ||
             peer_aborted_.load(std::memory_order_acquire) ||
             link_down_.load(std::memory_order_acquire) || shut_rd_.load();
    });
    if (r == WaitResult::kInterrupted || r == WaitResult::kTimeout) {
      if (copied > 0) return static_cast<ssize_t>(copied);
      errno = r == WaitResult::kTimeout ? EAGAIN : EINTR;
      return -1;
    }
    if (r == WaitResult::kLinkDown) on_link_down();
  }
}

ssize_t Connection::end_with_reset(size_t copied) {
  if (copied > 0) return static_cast<ssize_t>(copied);
  // As on TCP, a reset is reported once (by a read or SO_ERROR); reads after that find
  // the connection shut down and return 0.
  const int error = pending_error_.exchange(0);
  if (error == 0) return 0;
  errno = error;
  return -1;
}

}  // namespace smcpre::core
