// A connection's send side: RDMA WRITEs into the peer's RMB element and the CDC messages
// that announce them, their completions and the window the peer grants (doc/design.md
// §2.6), as net/smc's smc_tx.
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

void Connection::on_send_complete(uint64_t wr_id) {
  // Rebuild the full cursor from its low bits: it lies at most one ring behind tx_prod_.
  const uint64_t prod = tx_prod_.load(std::memory_order_acquire);
  const uint64_t completed = prod - ((prod - wr_id) & kCdcWrProdMask);
  uint64_t old = tx_completed_.load(std::memory_order_relaxed);
  while (completed > old &&
         !tx_completed_.compare_exchange_weak(old, completed, std::memory_order_release)) {
  }
  queue_.wake();
  sync_mirror();
}

int Connection::post_cdc_locked(bool write_blocked) {
  cdc::Message msg{};
  msg.seq = static_cast<uint16_t>(tx_seq_ + 1);
  msg.token = peer_token_;
  msg.prod = to_wire(tx_prod_.load(std::memory_order_relaxed), peer_rmb_.length);
  const uint64_t cons = rx_cons_.load(std::memory_order_relaxed);
  msg.cons = to_wire(cons, rmb_size_);
  msg.write_blocked = write_blocked;
  msg.peer_done_writing = shut_wr_.load(std::memory_order_relaxed);
  msg.peer_conn_closed = closed_.load(std::memory_order_relaxed);
  msg.peer_conn_abort = aborted_.load(std::memory_order_relaxed);
  uint8_t wire[cdc::kSize];
  cdc::encode(msg, std::span<uint8_t, cdc::kSize>(wire));
  // The first CDC that announces newly written data asks for a completion: RC
  // completes in order, so it also means the device is done with those WRITEs.
  const uint64_t prod = tx_prod_.load(std::memory_order_relaxed);
  const bool signaled = !direct_writes_ && prod != tx_signaled_;
  // The device counts RNR per queue pair; under the send lock, what it counts during this
  // post is this message's (the shm device executes a SEND as it is posted).
  const std::atomic<uint64_t>& rnr_events = group_->link().qp().counters().rnr_events;
  const uint64_t rnr_before = rnr_events.load(std::memory_order_relaxed);
  const int rc =
      group_->link().post_message(wire, signaled ? cdc_wr_id(local_token_, prod) : 0, signaled);
  if (const uint64_t met = rnr_events.load(std::memory_order_relaxed) - rnr_before; met != 0) {
    if (ConnectionStats* stats = stats_.load(std::memory_order_acquire)) stats->add_rnr(met);
  }
  if (rc == 0) {
    if (signaled) tx_signaled_ = prod;
    tx_seq_ = msg.seq;  // a message not sent leaves its number to the next one
    rx_cons_announced_.store(cons, std::memory_order_relaxed);
    cdc_pending_.store(false, std::memory_order_relaxed);
  }
  return rc;
}

bool Connection::send_cdc(CdcContext context, bool write_blocked) {
  if (!peer_ready_.load(std::memory_order_acquire)) {
    cdc_pending_.store(true, std::memory_order_relaxed);
    return false;
  }
  Link& link = group_->link();
  int round = 0;
  while (true) {
    int rc;
    {
      std::lock_guard lock(link.send_mutex());
      rc = post_cdc_locked(write_blocked);
    }
    if (rc == 0) return true;
    if (rc != EAGAIN || context == CdcContext::kReceiver) {
      cdc_pending_.store(rc == EAGAIN, std::memory_order_relaxed);
      return false;
    }
    link.wait_for_send_room(&round);
  }
}

void Connection::flush_pending_cdc() {
  if (cdc_pending_.load(std::memory_order_relaxed)) send_cdc(CdcContext::kApplication);
}

ssize_t Connection::fail_send(int error, int flags) {
  if (error == EPIPE && !(flags & MSG_NOSIGNAL)) pthread_kill(pthread_self(), SIGPIPE);
  errno = error;
  return -1;
}

bool Connection::writes_possible() const {
  return !peer_closed_.load(std::memory_order_acquire) &&
         !peer_aborted_.load(std::memory_order_acquire) &&
         !link_down_.load(std::memory_order_acquire);
}

ssize_t Connection::send(const iovec* iov, int iovcnt, int flags, bool nonblocking,
                         int64_t timeout_ns) {
  const size_t total = iov_total(iov, iovcnt);
  std::lock_guard lock(tx_mutex_);
  MirrorSync sync{this};
  if (shut_wr_.load() || closed_.load()) return fail_send(EPIPE, flags);
  if (!writes_possible()) {
    int error = pending_error_.exchange(0);
    return fail_send(error != 0 ? error : EPIPE, flags);
  }
  if (total == 0) return 0;
  const bool dontwait = nonblocking || (flags & MSG_DONTWAIT);
  Link& link = group_->link();
  size_t sent = 0;
  int iov_index = 0;
  size_t iov_offset = 0;
  bool announced_blocked = false;
  bool timed_out = false;
  int64_t deadline = -1;
  // Once this call waits, a close() by another thread waits for it (see close()).
  std::optional<CallInFlight> in_flight;
  // Whatever the link has brought meanwhile (the peer's consumer cursor, above all) is
  // taken in by this thread, with no hop to another one: a writer that never has to wait
  // would otherwise leave every cursor update to the background poller and a worker.
  if (tx_space() < total) reap_here(link);
  while (sent < total) {
    uint64_t space = tx_space();
    if (space == 0) {
      if (dontwait) {
        sync.send_blocked = true;
        break;
      }
      if (!announced_blocked) {
        // Ask the peer for a consumer-cursor update as soon as it consumes.
        send_cdc(CdcContext::kApplication, true);
        announced_blocked = true;
      }
      if (timeout_ns > 0 && deadline < 0) deadline = now_ns() + timeout_ns;
      if (!in_flight) in_flight.emplace(this);
      WaitResult r = wait_adaptive(link, queue_, tx_budget_, deadline, [this] {
        return tx_space() > 0 || !writes_possible() || shut_wr_.load(std::memory_order_acquire);
      });
      if (r == WaitResult::kInterrupted) break;
      if (r == WaitResult::kTimeout) {
        timed_out = true;
        break;
      }
      if (r == WaitResult::kLinkDown) on_link_down();
      if (!writes_possible()) {
        if (sent > 0) break;
        int error = pending_error_.exchange(0);
        return fail_send(error != 0 ? error : EPIPE, flags);
      }
      // shutdown(SHUT_WR) by another thread: as TCP, the blocked writer fails with EPIPE
      // (or returns what it wrote before). Without this check it would wait again at once,
      // its predicate true for good: a spin until the peer reads.
      if (shut_wr_.load(std::memory_order_acquire)) {
        if (sent > 0) break;
        return fail_send(EPIPE, flags);
      }
      continue;
    }
    announced_blocked = false;
    size_t chunk = std::min<uint64_t>(space, total - sent);
    uint64_t prod = tx_prod_.load(std::memory_order_relaxed);
    if (!direct_writes_) {
      // Outside the send lock: only this writer touches this part of the send buffer.
      copy_ring(Copy::kToRing, static_cast<uint8_t*>(send_buffer_->addr()), peer_rmb_.length, prod,
                chunk, iov, iovcnt, sent);
    }
    // RDMA WRITE the chunk into the peer's ring (a piece per iovec part and ring wrap),
    // then one CDC with the new producer cursor; RC ordering delivers it after the data.
    // All under one hold of the send lock, released only while the send queue is full.
    std::unique_lock send_lock(link.send_mutex());
    if (shut_wr_.load(std::memory_order_acquire)) {  // shut down or closed meanwhile
      send_lock.unlock();
      if (sent > 0) break;
      return fail_send(EPIPE, flags);
    }
    const int rc = post_writes(send_lock, iov, iov_index, iov_offset, prod, chunk);
    for (size_t left = chunk; left > 0;) {  // step the iovec position past the chunk
      const size_t step = std::min(left, iov[iov_index].iov_len - iov_offset);
      left -= step;
      iov_offset += step;
      if (iov_offset == iov[iov_index].iov_len) {
        ++iov_index;
        iov_offset = 0;
      }
    }
    prod += chunk;
    if (rc != 0) {
      send_lock.unlock();
      link.fail("RDMA WRITE failed");
      on_link_down();
      if (sent > 0) break;
      return fail_send(ECONNRESET, flags);
    }
    // Release: the completion of the CDC below is matched against this cursor.
    tx_prod_.store(prod, std::memory_order_release);
    if (ConnectionStats* stats = stats_.load(std::memory_order_acquire)) stats->set_sent(prod);
    sent += chunk;
    const int cdc_rc = post_cdc_locked(false);
    send_lock.unlock();
    if (cdc_rc != 0) send_cdc(CdcContext::kApplication);  // full queue: retry, or fail the link
  }
  if (sent == 0) {
    if (dontwait || timed_out) {
      errno = EAGAIN;
      return -1;
    }
    errno = EINTR;
    return -1;
  }
  return static_cast<ssize_t>(sent);
}

int Connection::post_writes(std::unique_lock<std::mutex>& send_lock, const iovec* iov,
                            int iov_index, size_t iov_offset, uint64_t prod, size_t length) {
  Link& link = group_->link();
  const uint32_t ring = peer_rmb_.length;
  int rc = 0;
  auto post = [&](const void* src, uint32_t lkey, uint32_t piece, uint32_t offset) {
    int round = 0;
    while ((rc = link.qp().post_write(src, piece, lkey, peer_rmb_.addr + offset, peer_rmb_.rkey, 0,
                                      false)) == EAGAIN) {
      // A link that failed meanwhile (the keepalive gave up on a peer that takes nothing)
      // frees no queue entry any more.
      if (link.failed()) {
        rc = EPIPE;
        break;
      }
      send_lock.unlock();
      link.wait_for_send_room(&round);
      send_lock.lock();
    }
    return rc == 0;
  };
  while (length > 0) {
    const uint32_t offset = static_cast<uint32_t>(prod % ring);
    size_t piece = std::min<size_t>(length, ring - offset);
    if (direct_writes_) {
      // One WRITE per iovec part and ring wrap, straight from the application's memory.
      piece = std::min(piece, iov[iov_index].iov_len - iov_offset);
      if (piece > 0 && !post(static_cast<const uint8_t*>(iov[iov_index].iov_base) + iov_offset, 0,
                             static_cast<uint32_t>(piece), offset)) {
        return rc;
      }
      iov_offset += piece;
      if (iov_offset == iov[iov_index].iov_len) {
        ++iov_index;
        iov_offset = 0;
      }
    } else if (!post(static_cast<const uint8_t*>(send_buffer_->addr()) + offset,
                     send_buffer_->lkey(), static_cast<uint32_t>(piece), offset)) {
      // One WRITE per ring wrap from the send buffer, where the data sits at the very
      // offset it gets in the peer's ring.
      return rc;
    }
    prod += piece;
    length -= piece;
  }
  return 0;
}

}  // namespace smcpre::core
