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
#include "core/datapath/abandoned.h"
#include "core/datapath/link_group.h"
#include "core/datapath/progress.h"

namespace smcpre::core {
namespace {

// Linux announces consumed bytes once they reach min(RMBE size / 10, ~2 KiB), or at
// once when the peer asked (write_blocked, cons_curs_upd_req).
uint32_t update_limit_for(uint32_t rmb_size) {
  return std::min<uint32_t>(rmb_size / 10, 2048);
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
  // The abort is published before the close flags that travel with it in the same CDC:
  // a reader that sees the close sees the abort too (connection_rx.cpp), and never takes
  // an abortive close for an orderly one.
  if (msg.peer_conn_abort) {
    // As TCP on a reset: after the peer's FIN (CLOSE_WAIT) reads still end in EOF and
    // writes fail with EPIPE; otherwise both fail with ECONNRESET.
    abort_after_fin_.store(fin_before);
    pending_error_.store(fin_before ? EPIPE : ECONNRESET);
    peer_aborted_.store(true, std::memory_order_release);
  }
  if (msg.peer_done_writing) peer_done_writing_.store(true, std::memory_order_release);
  if (msg.peer_conn_closed) peer_closed_.store(true, std::memory_order_release);
  queue_.wake();
  sync_mirror(rx_peer_prod_.load(std::memory_order_relaxed) > old_prod);

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
  r.rdhup = m.peer_done || m.closed || m.reset;
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
    mirror_forks_.store(mirror_owner_->forks_at_creation(), std::memory_order_relaxed);
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

void Connection::add_watcher(std::weak_ptr<ReadinessWatcher> watcher) {
  std::lock_guard lock(watchers_mutex_);
  // Expired ones (their sets closed) go now, so the list stays as long as the live ones.
  std::erase_if(watchers_, [](const auto& w) { return w.expired(); });
  watchers_.push_back(std::move(watcher));
  any_watchers_.store(true, std::memory_order_seq_cst);
}

void Connection::drop_watchers() {
  std::vector<std::weak_ptr<ReadinessWatcher>> dropped;
  {
    std::lock_guard lock(watchers_mutex_);
    dropped.swap(watchers_);
    any_watchers_.store(false, std::memory_order_relaxed);
  }
  for (const auto& w : dropped) {
    if (auto watcher = w.lock()) watcher->socket_released();
  }
}

void Connection::notify_watchers() {
  std::lock_guard lock(watchers_mutex_);
  for (const auto& w : watchers_) {
    if (auto watcher = w.lock()) watcher->readiness_changed();
  }
}

void Connection::sync_mirror(bool new_data, bool lazy) {
  // A read or send returning (lazy) only takes readiness away: the watchers' harvest
  // looks at the state anyway.
  if (!lazy && any_watchers_.load(std::memory_order_seq_cst)) notify_watchers();
  if (mirror_.load(std::memory_order_acquire) == nullptr) return;
  // The copy, not the mirror: close() may be destroying the mirror meanwhile.
  const uint64_t forks = mirror_forks_.load(std::memory_order_relaxed);
  if (new_data && mirror_edges_.load(std::memory_order_relaxed)) {
    mirror_edge_owed_.store(true, std::memory_order_relaxed);
  }
  if (!ReadinessMirror::must_show_now(forks)) {
    list_stale_mirror();
    // Looked at again after listing: a waiter that entered its kernel wait meanwhile may
    // have flushed the list before the connection was on it.
    if (!ReadinessMirror::must_show_now(forks)) return;
  }
  apply_mirror(lazy && !ReadinessMirror::watched_elsewhere(forks));
}

void Connection::apply_mirror(bool lazy) {
  bool deferred = false;
  {
    // The state is read inside the mirror's lock: two threads syncing at once cannot
    // leave it showing the older of their two views.
    std::lock_guard lock(mirror_mutex_);
    if (!mirror_owner_) return;
    const bool edge = mirror_edge_owed_.exchange(false, std::memory_order_relaxed);
    mirror_owner_->apply(mirror_state(), edge, lazy, &deferred);
  }
  if (deferred) list_stale_mirror();
}

void Connection::show_send_blocked() {
  std::lock_guard lock(mirror_mutex_);
  if (!mirror_owner_) return;
  MirrorState state = mirror_state();
  state.writable = false;
  mirror_owner_->apply(state, false);
}

void Connection::list_stale_mirror() {
  // The flag goes up only once the connection is on the list, both under the list's
  // lock: a flag seen up means the next flush settles this mirror. (A flag raised before
  // the push let a flush run in between, find the list without this connection, and a
  // wait see its mirror stale: wrk read EAGAIN after an EPOLLIN.) The fence orders the
  // change just made before the look at the flag, against the flush's store and look at
  // the state (flush_stale_mirrors): either this thread sees the flag down and lists the
  // connection again, or the flush sees the change.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (mirror_stale_.load(std::memory_order_relaxed)) return;
  std::lock_guard lock(g_stale_mutex);
  if (mirror_stale_.load(std::memory_order_relaxed)) return;
  try {
    g_stale->push_back(shared_from_this());
    mirror_stale_.store(true, std::memory_order_relaxed);
    g_any_stale.store(true, std::memory_order_seq_cst);
  } catch (const std::exception&) {
    // No memory for the list (or no owner): bring the mirror up to date right away.
    std::lock_guard mirror_lock(mirror_mutex_);
    if (mirror_owner_) {
      mirror_owner_->apply(mirror_state(), mirror_edge_owed_.exchange(false));
    }
  }
}

void flush_stale_mirrors() {
  if (!g_any_stale.load(std::memory_order_seq_cst)) return;
  // The lock is held until every listed mirror is settled, and the flag stays up until
  // then: a thread about to wait must not find the list empty while another thread is
  // still settling the mirrors it took from it.
  std::lock_guard lock(g_stale_mutex);
  // Nobody lists a connection meanwhile (that takes the lock): the list is settled in
  // place and keeps its memory for the next round.
  for (const auto& c : *g_stale) {
    // Cleared first, then the state looked at (see list_stale_mirror): a change racing
    // with this flush is either shown now or lists the connection again.
    c->mirror_stale_.store(false, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    c->apply_mirror(false);
  }
  g_stale->clear();
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
