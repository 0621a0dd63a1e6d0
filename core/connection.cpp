#include "core/connection.h"

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
#include "core/abandoned.h"
#include "core/backlog.h"
#include "core/link_group.h"

namespace smcpre::core {
namespace {

// Linux announces consumed bytes once they reach min(RMBE size / 10, ~2 KiB), or at
// once when the peer asked (write_blocked, cons_curs_upd_req).
uint32_t update_limit_for(uint32_t rmb_size) {
  return std::min<uint32_t>(rmb_size / 10, 2048);
}

size_t iov_total(const iovec* iov, int iovcnt) {
  size_t total = 0;
  for (int i = 0; i < iovcnt; ++i) total += iov[i].iov_len;
  return total;
}

enum class Copy { kFromRing, kToRing };

// Copies `length` bytes between a ring, at absolute position `pos` (wrapping), and the
// iovec array, after its first `skip` bytes.
void copy_ring(Copy direction, uint8_t* ring, uint32_t ring_size, uint64_t pos, size_t length,
               const iovec* iov, int iovcnt, size_t skip) {
  int i = 0;
  while (i < iovcnt && skip >= iov[i].iov_len) skip -= iov[i++].iov_len;
  while (length > 0 && i < iovcnt) {
    auto* mem = static_cast<uint8_t*>(iov[i].iov_base) + skip;
    const size_t room = std::min(iov[i].iov_len - skip, length);
    for (size_t done = 0; done < room;) {
      const uint32_t offset = static_cast<uint32_t>((pos + done) % ring_size);
      const size_t piece = std::min<size_t>(room - done, ring_size - offset);
      if (direction == Copy::kFromRing) {
        std::memcpy(mem + done, ring + offset, piece);
      } else {
        std::memcpy(ring + offset, mem + done, piece);
      }
      done += piece;
    }
    pos += room;
    length -= room;
    skip = 0;
    ++i;
  }
}

}  // namespace

Connection::Connection(std::shared_ptr<LinkGroup> group, std::unique_ptr<rdma::MemoryRegion> rmb)
    : group_(std::move(group)),
      rmb_(std::move(rmb)),
      rmb_size_(static_cast<uint32_t>(rmb_->length())),
      update_limit_(update_limit_for(rmb_size_)),
      direct_writes_(group_->device().caps().write_from_any_memory) {}

namespace {

// The bytes of an address that identify it (family, port, IP), for hashing.
void hash_address(const sockaddr_storage& a, uint64_t* h) {
  auto mix = [h](const void* data, size_t length) {
    const auto* p = static_cast<const uint8_t*>(data);
    for (size_t i = 0; i < length; ++i) *h = (*h ^ p[i]) * 0x100000001b3;  // FNV-1a
  };
  mix(&a.ss_family, sizeof a.ss_family);
  if (a.ss_family == AF_INET) {
    const auto& in = reinterpret_cast<const sockaddr_in&>(a);
    mix(&in.sin_port, sizeof in.sin_port);
    mix(&in.sin_addr, sizeof in.sin_addr);
  } else if (a.ss_family == AF_INET6) {
    const auto& in6 = reinterpret_cast<const sockaddr_in6&>(a);
    mix(&in6.sin6_port, sizeof in6.sin6_port);
    mix(&in6.sin6_addr, sizeof in6.sin6_addr);
  }
}

}  // namespace

void Connection::set_flow(int fd) {
  socklen_t length = sizeof local_address_;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local_address_), &length) != 0) {
    local_address_ = {};
  }
  length = sizeof peer_address_;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer_address_), &length) != 0) {
    peer_address_ = {};
  }
  uint64_t h = 0xcbf29ce484222325;
  hash_address(local_address_, &h);
  hash_address(peer_address_, &h);
  // FNV's low bits mix poorly; the worker index is taken modulo a small count.
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccd;
  h ^= h >> 33;
  flow_hash_ = h;
}

Connection::~Connection() {
  if (uint64_t id = tcp_watch_.exchange(0)) progress_thread().unwatch_tcp(id);
  const int fd = held_fd_.exchange(-1);
  if (fd >= 0) sys::close(fd);
  // The RMB goes back for immediate reuse only if the peer can no longer write into it;
  // the send buffer only if the device has finished every WRITE from it.
  const bool clean = closed_.load() && peer_closed_.load() && !aborted_.load() &&
                     !peer_aborted_.load() && !link_down_.load();
  if (rmb_) group_->give_back_buffer(std::move(rmb_), !clean);
  if (send_buffer_) {
    const bool drained = tx_completed_.load() == tx_prod_.load();
    group_->give_back_buffer(std::move(send_buffer_), !drained);
  }
}

bool Connection::set_peer(const rdma::RemoteRegion& peer_rmb, uint32_t peer_token,
                          std::string* error) {
  if (!direct_writes_) {
    send_buffer_ = group_->take_buffer(peer_rmb.length, error);
    if (!send_buffer_) return false;
  }
  peer_rmb_ = peer_rmb;
  peer_token_ = peer_token;
  peer_ready_.store(true, std::memory_order_release);
  flush_pending_cdc();
  return true;
}

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
      if (dontwait) break;
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
  group_->link().progress();
  if (Backlog* backlog = group_->link().backlog()) {
    backlog->wait_applied(flow_hash_, now_ns() + 100'000'000);
  }
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

void Connection::on_cdc(const cdc::Message& msg) {
  // A message a worker applies after the connection ended (it was queued before) changes
  // nothing any more.
  if (peer_aborted_.load(std::memory_order_relaxed) || finished()) return;
  if (rx_seq_valid_ && !seq_newer(msg.seq, rx_seq_)) return;  // stale or duplicate
  rx_seq_ = msg.seq;
  rx_seq_valid_ = true;

  // Cursors are checked before anything of the message is applied: a peer that breaks
  // the ring's rules gets a reset, as TCP answers a segment it cannot place.
  const uint64_t old_prod = rx_peer_prod_.load(std::memory_order_relaxed);
  uint64_t prod = old_prod;
  switch (step_cursor(msg.prod, old_prod, rx_cons_.load(std::memory_order_acquire) + rmb_size_,
                      rmb_size_, &prod)) {
    case CursorStep::kOutsideRing:
      return protocol_error("producer cursor outside the ring");
    case CursorStep::kBackwards:
      return protocol_error("producer cursor moved backwards");
    case CursorStep::kBeyondLimit:
      return protocol_error("producer cursor more than one ring ahead");
    case CursorStep::kSame:
    case CursorStep::kAdvanced:
      break;
  }
  uint64_t cons = 0;
  CursorStep cons_step = CursorStep::kSame;
  if (peer_ready_.load(std::memory_order_acquire)) {
    const uint64_t old_cons = tx_peer_cons_.load(std::memory_order_relaxed);
    cons_step = step_cursor(msg.cons, old_cons, tx_prod_.load(std::memory_order_acquire),
                            peer_rmb_.length, &cons);
    switch (cons_step) {
      case CursorStep::kOutsideRing:
        return protocol_error("consumer cursor outside the ring");
      case CursorStep::kBackwards:
        return protocol_error("consumer cursor moved backwards");
      case CursorStep::kBeyondLimit:
        return protocol_error("consumer cursor ahead of what was sent");
      case CursorStep::kSame:
      case CursorStep::kAdvanced:
        break;
    }
  }
  if (prod > old_prod) {
    if (shut_rd_.load() && shut_wr_.load()) {
      // Data for a socket shut in both directions: TCP drops it and answers with a
      // reset (RFC 793; the peer's writes fail from then on), and so do we.
      SMC_LOG_DEBUG("connection {:#x}: data after shutdown(SHUT_RDWR): reset", local_token_);
      return abort_here();
    }
    rx_peer_prod_.store(prod, std::memory_order_release);
  }
  if (cons_step == CursorStep::kAdvanced) tx_peer_cons_.store(cons, std::memory_order_release);
  // Whether the peer's FIN (done writing or closed) came before this message.
  const bool fin_before = peer_done_writing_.load() || peer_closed_.load();
  if (msg.write_blocked || msg.cons_curs_upd_req) peer_write_blocked_.store(true);
  if (msg.peer_done_writing) peer_done_writing_.store(true, std::memory_order_release);
  if (msg.peer_conn_closed) peer_closed_.store(true, std::memory_order_release);
  if (msg.peer_conn_abort) {
    // As TCP on a reset: after the peer's FIN (CLOSE_WAIT) reads still end in EOF and
    // writes fail with EPIPE; otherwise both fail with ECONNRESET.
    abort_after_fin_.store(fin_before);
    pending_error_.store(fin_before ? EPIPE : ECONNRESET);
    peer_aborted_.store(true, std::memory_order_release);
  }
  queue_.wake();
  if (mirror_.load(std::memory_order_acquire) != nullptr) {
    sync_mirror(rx_peer_prod_.load(std::memory_order_relaxed) > old_prod);
  }

  // A blocked writer on the other side waits for our consumer cursor: send it now if we
  // consumed since the last announcement (the reader may be asleep waiting for more).
  if (peer_write_blocked_.load(std::memory_order_relaxed) || cdc_pending_.load()) {
    const uint64_t cons = rx_cons_.load(std::memory_order_relaxed);
    if (cons != rx_cons_announced_.load(std::memory_order_relaxed) || cdc_pending_.load()) {
      peer_write_blocked_.store(false);
      send_cdc(CdcContext::kReceiver);
    }
  }
  finish_if_closed();
  if (msg.peer_done_writing || msg.peer_conn_closed || msg.peer_conn_abort) publish_state();
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

void Connection::attach_stats(std::shared_ptr<ConnectionStats> stats) {
  if (!stats || stats_owner_) return;
  stats_owner_ = std::move(stats);
  stats_.store(stats_owner_.get(), std::memory_order_release);
  publish_state();
}

void Connection::publish_state() {
  ConnectionStats* stats = stats_.load(std::memory_order_acquire);
  if (stats == nullptr) return;
  const bool reset = aborted_.load() || peer_aborted_.load() || reset_by_link_down();
  const bool we_done = closed_.load() || shut_wr_.load();
  const bool peer_done = peer_closed_.load() || peer_done_writing_.load();
  stats::ConnectionState state = stats::kConnActive;
  if (reset) {
    state = stats::kConnAborted;
  } else if (finished()) {
    state = stats::kConnClosed;
  } else if (we_done) {
    state = stats::kConnClosing;
  } else if (peer_done) {
    state = stats::kConnPeerClosed;
  }
  stats->set_state(state);
}

Readiness Connection::readiness() {
  // The same view the readiness mirror shows, as poll bits.
  const MirrorState m = mirror_state();
  Readiness r;
  r.readable = m.readable || m.peer_done || m.reset;
  r.writable = m.writable || m.reset;
  r.error = pending_error_.load() != 0;
  r.hangup = m.closed || m.reset;
  return r;
}

int Connection::readiness_fd() {
  std::lock_guard lock(mirror_mutex_);
  if (!mirror_owner_) {
    std::string error;
    mirror_owner_ = ReadinessMirror::create(&error);
    if (!mirror_owner_) {
      SMC_LOG_WARN("connection {:#x}: no readiness mirror ({}): polled the slow way", local_token_,
                   error);
      return -1;
    }
    mirror_owner_->apply(mirror_state(), false);
    mirror_.store(mirror_owner_.get(), std::memory_order_release);
  }
  return mirror_owner_->app_fd();
}

MirrorState Connection::mirror_state() const {
  MirrorState m;
  const bool reset = reset_by_link_down() || peer_aborted_.load();
  const bool peer_done = peer_done_writing_.load() || peer_closed_.load();
  m.readable = rx_available() > 0;
  m.writable = (peer_ready_.load() && tx_space() > 0) || shut_wr_.load() || peer_closed_.load();
  m.peer_done = peer_done || shut_rd_.load();
  // TCP's HUP: both directions shut, whichever end shut the receiving one.
  m.closed = (peer_done || shut_rd_.load()) && shut_wr_.load();
  m.reset = reset;
  // TCP's ERR goes once the error has been taken by a read or SO_ERROR.
  m.error_reported = reset && pending_error_.load() == 0;
  return m;
}

namespace {

std::mutex g_stale_mutex;
std::vector<std::shared_ptr<Connection>>* g_stale = new std::vector<std::shared_ptr<Connection>>;
std::atomic<bool> g_any_stale{false};

}  // namespace

void Connection::sync_mirror(bool new_data, bool lazy) {
  if (mirror_.load(std::memory_order_acquire) == nullptr) return;
  bool deferred = false;
  {
    // The state is read inside the mirror's lock: two threads syncing at once cannot
    // leave it showing the older of their two views.
    std::lock_guard lock(mirror_mutex_);
    if (!mirror_owner_) return;
    mirror_owner_->apply(mirror_state(), new_data && mirror_edges_.load(std::memory_order_relaxed),
                         lazy, &deferred);
  }
  if (deferred && !mirror_stale_.exchange(true)) {
    std::lock_guard lock(g_stale_mutex);
    try {
      g_stale->push_back(shared_from_this());
      g_any_stale.store(true, std::memory_order_release);
    } catch (const std::exception&) {
      // No memory for the list (or no owner): bring the mirror up to date right away.
      mirror_stale_.store(false);
      std::lock_guard mirror_lock(mirror_mutex_);
      if (mirror_owner_) mirror_owner_->apply(mirror_state(), false);
    }
  }
}

void flush_stale_mirrors() {
  if (!g_any_stale.load(std::memory_order_acquire)) return;
  // The lock is held until every listed mirror is settled, and the flag stays up until
  // then: a thread about to wait must not find the list empty while another thread is
  // still settling the mirrors it took from it.
  std::lock_guard lock(g_stale_mutex);
  while (!g_stale->empty()) {
    std::vector<std::shared_ptr<Connection>> stale;
    stale.swap(*g_stale);
    for (const auto& c : stale) {
      // Cleared first: a read racing with this flush lists the connection again.
      c->mirror_stale_.store(false);
      c->sync_mirror(false, false);
    }
  }
  g_any_stale.store(false, std::memory_order_release);
}

void forget_stale_mirrors_after_fork() {
  // Abandoned, not destroyed: destroying the parent's connections here would act on them.
  new (&g_stale_mutex) std::mutex();
  keep_abandoned(g_stale);
  g_stale = new std::vector<std::shared_ptr<Connection>>;
  g_any_stale.store(false);
}

void Connection::drop_mirror() {
  std::lock_guard lock(mirror_mutex_);
  mirror_.store(nullptr, std::memory_order_release);
  mirror_owner_.reset();  // closes it: the kernel drops it from every epoll set
}

bool Connection::take_error(int* error) {
  int e = pending_error_.exchange(0);
  if (e == 0) return false;
  *error = e;
  sync_mirror();  // TCP's ERR goes once SO_ERROR has been read
  return true;
}

}  // namespace smcpre::core
