// The shm device's queue pair: creation, the send side, the receive side and notification,
// and the two containers they use. See rdma/shm/qp.h for the model and the threading rules;
// the rendezvous (connecting, the peer's ring and regions) is in qp_rendezvous.cpp.
#include "rdma/shm/qp.h"

#include <fmt/format.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "config/high_fd.h"
#include "config/log.h"
#include "config/sys.h"

namespace smcpre::rdma::shm {
namespace {

constexpr uint32_t kMaxSendDepth = 1u << 16;
constexpr int kQueueIt = -1;  // post_unqueued(): the SEND met RNR, queue it

// IB RNR timer values in units of 10 us, indexed by code (0 is the longest, 655.36 ms).
constexpr uint32_t kRnrTimer10us[32] = {65536, 1,    2,    3,     4,     6,     8,     12,
                                        16,    24,   32,   48,    64,    96,    128,   192,
                                        256,   384,  512,  768,   1024,  1536,  2048,  3072,
                                        4096,  6144, 8192, 12288, 16384, 24576, 32768, 49152};

// Each counter has one writer at a time (the send-side owner, or the receive thread), so
// a plain load and store replaces a locked read-modify-write on the data path.
void bump(std::atomic<uint64_t>& counter, uint64_t by = 1) {
  counter.store(counter.load(std::memory_order_relaxed) + by, std::memory_order_relaxed);
}

}  // namespace

int64_t rnr_timer_ns(uint8_t code) {
  return int64_t{kRnrTimer10us[code & 31]} * 10'000;
}

int64_t rnr_backoff_ns(int64_t timer_ns, uint32_t retries_done) {
  // An adapter retries in hardware; here every retry wakes a thread. The RNR timer is the
  // least a sender must wait, so the wait may grow: doubling every 16 retries (the first
  // 16 at the timer itself, about a millisecond at the default), up to kMaxRnrWaitNs, so
  // that a peer that never posts a receive again costs no CPU while the keepalive finds
  // out. A receiver that is only slow is retried as fast as before.
  constexpr int64_t kMaxRnrWaitNs = 100'000'000;
  const uint32_t doublings = std::min<uint32_t>(retries_done / 16, 20);
  return std::min(timer_ns << doublings, std::max(timer_ns, kMaxRnrWaitNs));
}

// ---- PeerRegionTable ----

PeerRegionTable::PeerRegionTable() {
  auto table = std::make_unique<Table>();
  table->mask = 15;
  table->entries = std::make_unique<Entry[]>(16);
  current_.store(table.get(), std::memory_order_release);
  generations_.push_back(std::move(table));
}

uint32_t PeerRegionTable::slot_of(uint32_t rkey, uint32_t mask) {
  const uint32_t h = rkey * 0x9e3779b1u;
  return (h ^ (h >> 16)) & mask;
}

const PeerRegionTable::Entry* PeerRegionTable::find(uint32_t rkey) const {
  if (rkey == 0) return nullptr;
  const Table* table = current_.load(std::memory_order_acquire);
  // Never more than 3/4 full, so the probe always reaches an empty slot.
  for (uint32_t i = slot_of(rkey, table->mask);; i = (i + 1) & table->mask) {
    const uint32_t key = table->entries[i].rkey.load(std::memory_order_acquire);
    if (key == rkey) return &table->entries[i];
    if (key == 0) return nullptr;
  }
}

void PeerRegionTable::place(Table* table, uint32_t rkey, uint8_t* base, uint64_t addr,
                            uint64_t length) {
  uint32_t i = slot_of(rkey, table->mask);
  while (table->entries[i].rkey.load(std::memory_order_relaxed) != 0) i = (i + 1) & table->mask;
  Entry& entry = table->entries[i];
  entry.base = base;
  entry.addr = addr;
  entry.length = length;
  entry.rkey.store(rkey, std::memory_order_release);
}

void PeerRegionTable::insert(uint32_t rkey, uint8_t* base, uint64_t addr, uint64_t length) {
  Table* table = current_.load(std::memory_order_relaxed);
  if ((count_ + 1) * 4 > (uint64_t{table->mask} + 1) * 3) {
    // Readers may still be probing the old table: build a bigger one beside it and
    // publish it; the old one stays allocated (and correct) until we are destroyed.
    auto bigger = std::make_unique<Table>();
    bigger->mask = table->mask * 2 + 1;
    bigger->entries = std::make_unique<Entry[]>(uint64_t{bigger->mask} + 1);
    for (uint32_t i = 0; i <= table->mask; ++i) {
      const Entry& e = table->entries[i];
      const uint32_t key = e.rkey.load(std::memory_order_relaxed);
      if (key != 0) place(bigger.get(), key, e.base, e.addr, e.length);
    }
    table = bigger.get();
    generations_.push_back(std::move(bigger));
    current_.store(table, std::memory_order_release);
  }
  place(table, rkey, base, addr, length);
  ++count_;
}

// ---- CompletionRing ----

CompletionRing::CompletionRing(uint32_t min_capacity) {
  uint64_t capacity = 1;
  while (capacity < min_capacity) capacity <<= 1;
  slots_ = std::make_unique<WorkCompletion[]>(capacity);
  mask_ = capacity - 1;
}

bool CompletionRing::push(const WorkCompletion& wc) {
  const uint64_t head = head_.load(std::memory_order_relaxed);
  if (head - tail_.load(std::memory_order_acquire) > mask_) return false;
  slots_[head & mask_] = wc;
  head_.store(head + 1, std::memory_order_release);
  return true;
}

int CompletionRing::pop(std::span<WorkCompletion> out) {
  const uint64_t tail = tail_.load(std::memory_order_relaxed);
  const uint64_t head = head_.load(std::memory_order_acquire);
  const uint64_t n = std::min<uint64_t>(head - tail, out.size());
  for (uint64_t i = 0; i < n; ++i) out[i] = slots_[(tail + i) & mask_];
  tail_.store(tail + n, std::memory_order_release);
  return static_cast<int>(n);
}

uint64_t CompletionRing::used() const {
  return head_.load(std::memory_order_relaxed) - tail_.load(std::memory_order_acquire);
}

// ---- ShmQp: creation ----

std::unique_ptr<QueuePair> ShmQp::create(std::shared_ptr<PdState> pd, const QpConfig& config,
                                         std::string* error) {
  if (config.send_depth == 0 || config.send_depth > kMaxSendDepth) {
    *error = "send_depth out of range: " + std::to_string(config.send_depth);
    return nullptr;
  }
  if (!RingGeometry::valid(config.recv_depth, config.max_inline)) {
    *error = "recv_depth or max_inline out of range: " + std::to_string(config.recv_depth) + ", " +
             std::to_string(config.max_inline);
    return nullptr;
  }
  if (config.rnr_retry > 7 || config.min_rnr_timer > 31) {
    *error = "rnr_retry (0..7) or min_rnr_timer (0..31) out of range";
    return nullptr;
  }
  std::unique_ptr<ShmQp> qp(new ShmQp(std::move(pd), config));
  if (!qp->init(error)) return nullptr;
  return qp;
}

ShmQp::ShmQp(std::shared_ptr<PdState> pd, const QpConfig& config)
    : pd_(std::move(pd)),
      device_(pd_->device()),
      config_(config),
      owner_pid_(::getpid()),
      // Reservation rule (see post()): completions pending in the CQ plus queued requests
      // never exceed send_depth; one unreserved error completion may come on top.
      send_cq_(config.send_depth + 1) {}

bool ShmQp::init(std::string* error) {
  if (!device_->allocate_qp_num(&qp_num_, error)) return false;
  psn_ = random_nonzero(24);
  if (psn_ == 0) {
    *error = "getrandom failed: no PSN";
    return false;
  }
  const RingGeometry geometry{config_.recv_depth, config_.max_inline};
  if (!ring_.create("smcpre-rq", geometry.bytes(), error)) return false;
  rx_.init(ring_.addr(), geometry);
  event_fd_.reset(sys::move_fd_high(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)));
  if (!event_fd_.valid()) {
    *error = errno_text("eventfd", errno);
    return false;
  }
  epoll_fd_.reset(sys::move_fd_high(sys::epoll_create1(EPOLL_CLOEXEC)));
  if (!epoll_fd_.valid()) {
    *error = errno_text("epoll_create1", errno);
    return false;
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  if (sys::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, event_fd_.get(), &ev) != 0) {
    *error = errno_text("epoll_ctl", errno);
    return false;
  }
  return true;
}

ShmQp::~ShmQp() {
  pd_->detach(this);  // first: no announcement may run on a dying QP
  // The peer sees the hangup and moves its QP to error. Not from a forked child: the
  // socket is shared with the parent, whose QP this still is.
  if (connected_.load(std::memory_order_acquire) && owner_pid_ == ::getpid()) {
    sys::shutdown(sock_.get(), SHUT_RDWR);
  }
  if (qp_num_ != 0) device_->release_qp_num(qp_num_);
}

QpEndpoint ShmQp::local_endpoint() const {
  return QpEndpoint{device_->gid(), device_->mac(), qp_num_, psn_, config_.mtu};
}

// ---- ShmQp: send side ----

int ShmQp::post_write(const void* local, uint32_t length, uint32_t /*lkey: any memory will do*/,
                      uint64_t remote_addr, uint32_t rkey, uint64_t wr_id, bool signaled) {
  return post(WorkRequest{WcOpcode::kRdmaWrite, signaled, length, rkey, remote_addr, wr_id, local});
}

int ShmQp::post_send_inline(const void* data, uint32_t length, uint64_t wr_id, bool signaled) {
  if (length > config_.max_inline) return EINVAL;
  return post(WorkRequest{WcOpcode::kSend, signaled, length, 0, 0, wr_id, data});
}

// Reservation rule: a request that will produce a completion or that waits in the
// software queue reserves a CQ slot, and reservations never exceed send_depth (else
// EAGAIN), so the CQ cannot overflow even when an error flushes the whole queue.
int ShmQp::post(const WorkRequest& wr) {
  if (error_.load(std::memory_order_acquire)) return EPIPE;
  if (!connected_.load(std::memory_order_acquire)) return ENOTCONN;
  if (!peer_ready_.load(std::memory_order_acquire) && !wait_for_peer()) return EPIPE;
  if (wr.opcode == WcOpcode::kSend && wr.length > max_send_inline_) return EINVAL;
  if (sq_count_.load(std::memory_order_acquire) == 0) {
    // The fast path: nothing queued, so the send side is ours without a lock.
    const int rc = post_unqueued(wr);
    if (rc != kQueueIt) return rc;
    std::lock_guard lock(sq_mutex_);
    return queue_after_rnr_locked(wr);
  }
  std::lock_guard lock(sq_mutex_);
  progress_locked(now_ns());
  if (error_.load(std::memory_order_acquire)) return EPIPE;
  if (sq_.empty()) {
    const int rc = post_unqueued(wr);
    return rc == kQueueIt ? queue_after_rnr_locked(wr) : rc;
  }
  if (sq_.size() + send_cq_.used() >= config_.send_depth) return EAGAIN;
  enqueue_locked(wr);  // RC order: behind the stalled SEND
  publish_queue_state_locked();
  return 0;
}

int ShmQp::post_unqueued(const WorkRequest& wr) {
  if (wr.signaled && send_cq_.used() >= config_.send_depth) return EAGAIN;
  return execute(wr) == Exec::kRnr ? kQueueIt : 0;
}

int ShmQp::queue_after_rnr_locked(const WorkRequest& wr) {
  // An RNR'd SEND has not touched anything yet, so refusing it here is still clean.
  if (sq_.size() + send_cq_.used() >= config_.send_depth) return EAGAIN;
  enqueue_locked(wr);
  rnr_failed_locked(now_ns());
  publish_queue_state_locked();
  return 0;
}

void ShmQp::enqueue_locked(const WorkRequest& wr) {
  QueuedRequest q;
  q.wr = wr;
  if (wr.length > 0) {
    q.copy = std::make_unique_for_overwrite<uint8_t[]>(wr.length);
    std::memcpy(q.copy.get(), wr.data, wr.length);
  }
  q.wr.data = q.copy.get();
  sq_.push_back(std::move(q));
}

ShmQp::Exec ShmQp::execute(const WorkRequest& wr) {
  return wr.opcode == WcOpcode::kSend ? execute_send(wr) : execute_write(wr);
}

ShmQp::Exec ShmQp::execute_send(const WorkRequest& wr) {
  bool notify = false;
  switch (tx_.send(wr.data, wr.length, &notify)) {
    case RingSender::Result::kNoReceive:
      return Exec::kRnr;
    case RingSender::Result::kViolation:
      complete(wr, WcStatus::kGeneralError);
      enter_error("peer advertises more receive buffers than its receive queue holds");
      return Exec::kFailed;
    case RingSender::Result::kDelivered:
      break;
  }
  bump(counters_.sends);
  if (notify) {
    const uint64_t one = 1;
    sys::write(peer_event_fd_.get(), &one, sizeof one);  // EAGAIN: a wakeup is pending anyway
  }
  if (wr.signaled) complete(wr, WcStatus::kSuccess);
  return Exec::kDone;
}

ShmQp::Exec ShmQp::execute_write(const WorkRequest& wr) {
  const PeerRegionTable::Entry* entry = find_region(wr.rkey);
  const uint64_t offset = entry != nullptr ? wr.remote_addr - entry->addr : 0;
  if (entry == nullptr || wr.remote_addr < entry->addr || offset > entry->length ||
      wr.length > entry->length - offset) {
    complete(wr, WcStatus::kRemoteAccessError);
    enter_error(
        fmt::format("RDMA WRITE of {} bytes to {:#x} rkey {:#x} is outside every region "
                    "the peer registered",
                    wr.length, wr.remote_addr, wr.rkey));
    return Exec::kFailed;
  }
  if (wr.length > 0) std::memcpy(entry->base + offset, wr.data, wr.length);
  bump(counters_.writes);
  bump(counters_.write_bytes, wr.length);
  if (wr.signaled) complete(wr, WcStatus::kSuccess);
  return Exec::kDone;
}

// The SEND at the head of the queue was refused (an RNR NAK). Waits the peer's RNR timer
// before the next attempt, or fails the SEND once rnr_retry retries are used up.
void ShmQp::rnr_failed_locked(int64_t now) {
  bump(counters_.rnr_events);
  if (!rnr_waiting_) {
    rnr_waiting_ = true;
    rnr_retries_done_ = 0;
  }
  if (config_.rnr_retry != 7 && rnr_retries_done_ >= config_.rnr_retry) {
    rnr_waiting_ = false;
    complete(sq_.front().wr, WcStatus::kRnrRetryExceeded);
    sq_.pop_front();
    enter_error(fmt::format("RNR retry count exceeded ({} retries): the peer posts no receives",
                            config_.rnr_retry));
    flush_locked();
    return;
  }
  rnr_deadline_ns_ = now + rnr_backoff_ns(peer_rnr_timer_ns_, rnr_retries_done_);
}

void ShmQp::progress_locked(int64_t now) {
  while (!sq_.empty() && !error_.load(std::memory_order_acquire)) {
    const WorkRequest& head = sq_.front().wr;
    if (head.opcode == WcOpcode::kSend && rnr_waiting_) {
      if (now < rnr_deadline_ns_) break;
      ++rnr_retries_done_;
      bump(counters_.rnr_retries);
    }
    if (execute(head) == Exec::kRnr) {
      rnr_failed_locked(now);
      break;
    }
    rnr_waiting_ = false;
    sq_.pop_front();
  }
  if (error_.load(std::memory_order_acquire)) flush_locked();
  publish_queue_state_locked();
}

void ShmQp::flush_locked() {
  for (const QueuedRequest& q : sq_) complete(q.wr, WcStatus::kFlushError);
  sq_.clear();
  rnr_waiting_ = false;
}

void ShmQp::publish_queue_state_locked() {
  // The queue is non-empty only while its head SEND waits for its RNR timer.
  next_deadline_ns_.store(sq_.empty() ? -1 : rnr_deadline_ns_, std::memory_order_relaxed);
  // Release: hands the send-side state to the next lock-free poster.
  sq_count_.store(static_cast<uint32_t>(sq_.size()), std::memory_order_release);
}

void ShmQp::complete(const WorkRequest& wr, WcStatus status) {
  if (!send_cq_.push(WorkCompletion{wr.wr_id, status, wr.opcode, 0})) {
    SMC_LOG_ERROR("shm: QP {:#x} send completion queue overflow; completion lost", qp_num_);
  }
}

int ShmQp::poll_send(std::span<WorkCompletion> out) {
  if (sq_count_.load(std::memory_order_acquire) != 0) {
    std::lock_guard lock(sq_mutex_);
    progress_locked(now_ns());
  }
  return send_cq_.pop(out);
}

int64_t ShmQp::next_deadline_ns() const {
  if (sq_count_.load(std::memory_order_acquire) == 0) return -1;
  if (error_.load(std::memory_order_acquire)) return 0;  // flush completions are due
  return next_deadline_ns_.load(std::memory_order_relaxed);
}

// ---- ShmQp: receive side and notification ----

int ShmQp::post_recv(void* buffer, uint32_t length, uint32_t /*lkey*/, uint64_t wr_id) {
  if (error_.load(std::memory_order_acquire)) return EPIPE;
  return rx_.post(buffer, length, wr_id);
}

int ShmQp::poll_recv(std::span<WorkCompletion> out) {
  // Read the error flag first: messages the peer completed before the error are still
  // delivered (their SENDs succeeded), then outstanding buffers are flushed.
  const bool error = error_.load(std::memory_order_acquire);
  int n = 0;
  if (!rx_stopped_) {
    const char* violation = nullptr;
    n = rx_.poll(out, &violation);
    uint64_t delivered = 0;
    for (int i = 0; i < n; ++i) delivered += out[i].status == WcStatus::kSuccess;
    if (delivered > 0) bump(counters_.recvs, delivered);
    if (violation != nullptr) {
      rx_stopped_ = true;
      enter_error(std::string("receive queue: ") + violation);
    } else if (error && n < static_cast<int>(out.size())) {
      rx_stopped_ = true;
    }
  }
  if (rx_stopped_ && error_.load(std::memory_order_acquire)) {
    n += rx_.flush(out.subspan(static_cast<size_t>(n)));
  }
  return n;
}

void ShmQp::arm_recv_notify() {
  if (rx_.arm() || error_.load(std::memory_order_acquire)) signal_self();
}

void ShmQp::consume_notify() {
  uint64_t value = 0;
  sys::read(event_fd_.get(), &value, sizeof value);
  if (connected_.load(std::memory_order_acquire) && !error_.load(std::memory_order_acquire)) {
    std::lock_guard lock(sock_mutex_);
    drain_socket_locked();  // region announcements, the reply, or the peer's hangup
  }
}

void ShmQp::signal_self() {
  const uint64_t one = 1;
  sys::write(event_fd_.get(), &one, sizeof one);
}

void ShmQp::enter_error(const std::string& why, bool ordinary) {
  if (error_.exchange(true, std::memory_order_acq_rel)) return;
  if (ordinary) {
    SMC_LOG_DEBUG("shm: QP {:#x} (peer QP {:#x}) in error: {}", qp_num_, remote_.qp_num, why);
  } else {
    SMC_LOG_WARN("shm: QP {:#x} (peer QP {:#x}) in error: {}", qp_num_, remote_.qp_num, why);
  }
  signal_self();
  if (connected_.load(std::memory_order_acquire) && owner_pid_ == ::getpid()) {
    // The peer learns at once from the hangup, as an IB peer would from its retries.
    // Our own end then stays readable forever: take it out of the notification set.
    sys::shutdown(sock_.get(), SHUT_RDWR);
    sys::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, sock_.get(), nullptr);
  }
}

}  // namespace smcpre::rdma::shm
