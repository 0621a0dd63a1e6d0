// The verbs device's queue pair: an RC QP with a send and a receive CQ on one completion
// channel (the engine's notify fd). Send work requests carry a sequence number of ours, so
// that a completion, even an error one, names the caller's wr_id and opcode, and so that
// unsignaled requests free their send-queue slots when a later one completes. The device
// that creates it, and whose async event handler may put it into error, is in device.cpp.
#include <fcntl.h>
#include <infiniband/verbs.h>
#include <sys/random.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "config/log.h"
#include "config/sys.h"
#include "rdma/device.h"
#include "rdma/verbs/attrs.h"
#include "rdma/verbs/context.h"

namespace smcpre::rdma::verbs {

class VerbsQp final : public QueuePair {
 public:
  VerbsQp(std::shared_ptr<Pd> pd, const QpConfig& config)
      : pd_(std::move(pd)), context_(*pd_->context), config_(config) {}

  ~VerbsQp() override {
    if (registered_) {
      // First, so that the async handler no longer touches this QP. ibv_destroy_qp below
      // then waits until the handler has acked any event it holds for it.
      const std::lock_guard lock(context_.qps_mutex);
      context_.qps.erase(this);
    }
    if (qp_ != nullptr) {
      const int rc = ::ibv_destroy_qp(qp_);
      if (rc != 0) SMC_LOG_WARN("verbs: ibv_destroy_qp: {}", std::strerror(rc));
    }
    // Every CQ event consume_notify() took is acked already; unread ones die with the CQ.
    for (ibv_cq* cq : {send_cq_, recv_cq_}) {
      if (cq == nullptr) continue;
      const int rc = ::ibv_destroy_cq(cq);
      if (rc != 0) SMC_LOG_WARN("verbs: ibv_destroy_cq: {}", std::strerror(rc));
    }
    if (channel_ != nullptr) {
      const int rc = ::ibv_destroy_comp_channel(channel_);
      if (rc != 0) SMC_LOG_WARN("verbs: ibv_destroy_comp_channel: {}", std::strerror(rc));
    }
  }

  bool init(std::string* error) {
    if (!validate_qp_config(config_, error)) return false;
    ring_.resize(config_.send_depth);
    ibv_context* ctx = context_.ctx;
    channel_ = ::ibv_create_comp_channel(ctx);
    if (channel_ == nullptr) return fail(error, "ibv_create_comp_channel");
    // consume_notify() must never block the event loop; no fd leaks into exec'd children.
    const int flags = sys::fcntl(channel_->fd, F_GETFL);
    if (flags < 0 || sys::fcntl(channel_->fd, F_SETFL, flags | O_NONBLOCK) != 0 ||
        sys::fcntl(channel_->fd, F_SETFD, FD_CLOEXEC) != 0) {
      return fail(error, "fcntl(completion channel)");
    }
    // Both CQs report to the one channel: the engine sleeps on it until a message arrives
    // or a signaled send completes (which frees a staged send buffer). cq_context names
    // the QP for a CQ error event.
    send_cq_ = ::ibv_create_cq(ctx, static_cast<int>(config_.send_depth), this, channel_, 0);
    if (send_cq_ == nullptr) return fail(error, "ibv_create_cq(send)");
    recv_cq_ = ::ibv_create_cq(ctx, static_cast<int>(config_.recv_depth), this, channel_, 0);
    if (recv_cq_ == nullptr) return fail(error, "ibv_create_cq(recv)");

    ibv_qp_init_attr attr{};
    attr.qp_context = this;  // how an async QP event finds us
    attr.send_cq = send_cq_;
    attr.recv_cq = recv_cq_;
    attr.qp_type = IBV_QPT_RC;
    attr.sq_sig_all = 0;
    attr.cap.max_send_wr = config_.send_depth;
    attr.cap.max_recv_wr = config_.recv_depth;
    attr.cap.max_send_sge = 1;
    attr.cap.max_recv_sge = 2;  // a receive buffer and the overflow region
    attr.cap.max_inline_data = config_.max_inline;
    qp_ = ::ibv_create_qp(pd_->pd, &attr);
    if (qp_ == nullptr) return fail(error, "ibv_create_qp");
    max_inline_ = attr.cap.max_inline_data;
    {
      const std::lock_guard lock(context_.qps_mutex);
      context_.qps.insert(this);
      registered_ = true;
    }

    QpTransition init = init_attrs(context_.port);
    const int rc = ::ibv_modify_qp(qp_, &init.attr, init.mask);
    if (rc != 0) return fail(error, "ibv_modify_qp(INIT)", rc);

    uint32_t random = 0;
    if (::getrandom(&random, sizeof random, 0) != sizeof random) random = qp_->qp_num * 2654435761u;
    psn_ = random & 0xffffff;
    return true;
  }

  QpEndpoint local_endpoint() const override {
    QpEndpoint ep;
    ep.gid = context_.gid;
    ep.mac = context_.mac;
    ep.qp_num = qp_->qp_num;
    ep.psn = psn_;
    ep.mtu = std::min(context_.active_mtu, config_.mtu);
    return ep;
  }

  bool connect(const QpEndpoint& remote, Role role, int timeout_ms, std::string* error) override {
    (void)role;        // verbs needs no rendezvous: both sides only program their own QP
    (void)timeout_ms;  // modify_qp does not wait for the peer
    if (connected_) {
      *error = "connect() called twice on one QP";
      return false;
    }
    auto rtr =
        rtr_attrs(remote, context_.active_mtu, config_, context_.port, context_.gid_index, error);
    if (!rtr) {
      SMC_LOG_WARN("verbs: QP {:#x}: peer endpoint rejected: {}", qp_->qp_num, *error);
      return false;
    }
    int rc = ::ibv_modify_qp(qp_, &rtr->attr, rtr->mask);
    if (rc != 0) return fail(error, "ibv_modify_qp(RTR)", rc);
    QpTransition rts = rts_attrs(psn_, config_);
    rc = ::ibv_modify_qp(qp_, &rts.attr, rts.mask);
    if (rc != 0) return fail(error, "ibv_modify_qp(RTS)", rc);
    connected_ = true;
    SMC_LOG_DEBUG("verbs: QP {:#x} connected to QP {:#x}, path MTU code {}", qp_->qp_num,
                  remote.qp_num, static_cast<int>(rtr->attr.path_mtu));
    return true;
  }

  bool prepare_remote_region(const RemoteRegion& region, int, std::string* error) override {
    if (region.length == 0) {
      *error = "peer region is empty";
      return false;
    }
    return true;
  }

  int post_write(const void* local, uint32_t length, uint32_t lkey, uint64_t remote_addr,
                 uint32_t rkey, uint64_t wr_id, bool signaled) override {
    ibv_sge sge{reinterpret_cast<uint64_t>(local), length, lkey};
    ibv_send_wr wr{};
    wr.opcode = IBV_WR_RDMA_WRITE;
    wr.wr.rdma.remote_addr = remote_addr;
    wr.wr.rdma.rkey = rkey;
    const int rc = post(&wr, &sge, wr_id, WcOpcode::kRdmaWrite, signaled, 0);
    if (rc == 0) {
      counters_.writes.fetch_add(1, std::memory_order_relaxed);
      counters_.write_bytes.fetch_add(length, std::memory_order_relaxed);
    }
    return rc;
  }

  int post_send_inline(const void* data, uint32_t length, uint64_t wr_id, bool signaled) override {
    if (length > max_inline_) return EMSGSIZE;
    ibv_sge sge{reinterpret_cast<uint64_t>(data), length, 0};
    ibv_send_wr wr{};
    wr.opcode = IBV_WR_SEND;
    const int rc = post(&wr, &sge, wr_id, WcOpcode::kSend, signaled, IBV_SEND_INLINE);
    if (rc == 0) counters_.sends.fetch_add(1, std::memory_order_relaxed);
    return rc;
  }

  int post_recv(void* buffer, uint32_t length, uint32_t lkey, uint64_t wr_id) override {
    if (error_) return EIO;
    // A full receive queue is the caller's accounting slip, not a broken QP (as on shm).
    if (posted_recvs_.load(std::memory_order_relaxed) >= config_.recv_depth) return ENOMEM;
    ibv_sge sge[2] = {{reinterpret_cast<uint64_t>(buffer), length, lkey}, overflow_};
    ibv_recv_wr wr{};
    wr.wr_id = wr_id;
    wr.sg_list = sge;
    wr.num_sge = overflow_.length > 0 ? 2 : 1;
    ibv_recv_wr* bad = nullptr;
    const int rc = ::ibv_post_recv(qp_, &wr, &bad);
    if (rc != 0) {
      SMC_LOG_WARN("verbs: QP {:#x}: ibv_post_recv: {}", qp_->qp_num, std::strerror(rc));
      error_ = true;
      return rc;
    }
    posted_recvs_.fetch_add(1, std::memory_order_relaxed);
    return 0;
  }

  bool set_recv_overflow(void* region, uint32_t length, uint32_t lkey) override {
    overflow_ = {reinterpret_cast<uint64_t>(region), length, lkey};
    return true;
  }

  int poll_send(std::span<WorkCompletion> out) override {
    int reported = 0;
    ibv_wc wc[kPollBatch];
    while (static_cast<size_t>(reported) < out.size()) {
      // Never take more than `out` can hold: a polled completion cannot be put back.
      const int want = static_cast<int>(std::min<size_t>(out.size() - reported, kPollBatch));
      const int n = ::ibv_poll_cq(send_cq_, want, wc);
      if (n < 0) {
        SMC_LOG_WARN("verbs: QP {:#x}: polling the send CQ failed", qp_->qp_num);
        error_ = true;
        break;
      }
      const std::lock_guard lock(send_mutex_);
      for (int i = 0; i < n; ++i) {
        // wr_id is our posting sequence number (see post()): it names the ring slot that
        // holds the caller's wr_id and opcode, which an error completion does not carry.
        const uint64_t seq = wc[i].wr_id;
        if (seq < retired_seq_ || seq >= next_seq_) {
          SMC_LOG_ERROR("verbs: QP {:#x}: send completion for unknown work request {}", qp_->qp_num,
                        seq);
          error_ = true;
          continue;
        }
        const SendSlot& slot = ring_[seq % ring_.size()];
        // RC completes send WRs in posting order, so this one retires every earlier WR
        // too (the unsignaled ones that completed silently).
        retired_seq_ = seq + 1;
        if (wc[i].status == IBV_WC_SUCCESS) {
          if (!slot.report) continue;  // signaled by us only to free send-queue slots
        } else {
          error_ = true;
          log_error_completion("send", wc[i]);
        }
        WorkCompletion& c = out[static_cast<size_t>(reported++)];
        c.wr_id = slot.wr_id;
        c.status = map_wc_status(wc[i].status);
        c.opcode = slot.opcode;
        c.byte_len = 0;
      }
      if (n < want) break;
    }
    return reported;
  }

  int poll_recv(std::span<WorkCompletion> out) override {
    const int max = static_cast<int>(std::min<size_t>(out.size(), kPollBatch));
    ibv_wc wc[kPollBatch];
    const int n = ::ibv_poll_cq(recv_cq_, max, wc);
    if (n < 0) {
      SMC_LOG_WARN("verbs: QP {:#x}: polling the receive CQ failed", qp_->qp_num);
      error_ = true;
      return 0;
    }
    for (int i = 0; i < n; ++i) {
      WorkCompletion& c = out[static_cast<size_t>(i)];
      c.wr_id = wc[i].wr_id;
      c.status = map_wc_status(wc[i].status);
      c.opcode = WcOpcode::kRecv;
      // Only a successful completion's length is defined (verbs leaves it open otherwise).
      c.byte_len = wc[i].status == IBV_WC_SUCCESS ? wc[i].byte_len : 0;
      if (wc[i].status == IBV_WC_SUCCESS) {
        counters_.recvs.fetch_add(1, std::memory_order_relaxed);
      } else {
        error_ = true;
        log_error_completion("receive", wc[i]);
      }
      posted_recvs_.fetch_sub(1, std::memory_order_relaxed);
    }
    return n;
  }

  int notify_fd() const override { return channel_->fd; }

  void arm_recv_notify() override {
    for (ibv_cq* cq : {recv_cq_, send_cq_}) {
      const int rc = ::ibv_req_notify_cq(cq, 0);
      if (rc != 0) {
        // Without the notification the engine would sleep forever: fail the link instead.
        SMC_LOG_WARN("verbs: QP {:#x}: ibv_req_notify_cq: {}", qp_->qp_num, std::strerror(rc));
        error_ = true;
      }
    }
  }

  void consume_notify() override {
    unsigned send_events = 0;
    unsigned recv_events = 0;
    ibv_cq* cq = nullptr;
    void* cq_context = nullptr;
    while (::ibv_get_cq_event(channel_, &cq, &cq_context) == 0) {
      if (cq == send_cq_) {
        ++send_events;
      } else {
        ++recv_events;
      }
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      SMC_LOG_WARN("verbs: QP {:#x}: reading the completion channel: {}", qp_->qp_num,
                   std::strerror(errno));
    }
    // Acking takes a lock in libibverbs: once per CQ per drain, as its man page advises.
    if (send_events > 0) ::ibv_ack_cq_events(send_cq_, send_events);
    if (recv_events > 0) ::ibv_ack_cq_events(recv_cq_, recv_events);
  }

  int64_t next_deadline_ns() const override { return -1; }
  bool in_error() const override { return error_; }
  const QpCounters& counters() const override { return counters_; }
  uint32_t posted_recvs() const override { return posted_recvs_.load(std::memory_order_relaxed); }

  // Called by the async event handler (under the context's QP registry lock): moves the QP
  // to the error state, so that the device flushes its posted work with completions that
  // wake the engine, which then declares the link down.
  void force_error(const char* why) {
    error_ = true;
    ibv_qp_attr attr{};
    attr.qp_state = IBV_QPS_ERR;
    const int rc = ::ibv_modify_qp(qp_, &attr, IBV_QP_STATE);
    if (rc != 0) {
      SMC_LOG_WARN("verbs: QP {:#x}: cannot enter the error state after {}: {}", qp_->qp_num, why,
                   std::strerror(rc));
    } else {
      SMC_LOG_WARN("verbs: QP {:#x} put into the error state after {}", qp_->qp_num, why);
    }
  }

 private:
  static constexpr int kPollBatch = 16;

  // What the caller posted under one send-queue entry.
  struct SendSlot {
    uint64_t wr_id = 0;
    WcOpcode opcode = WcOpcode::kSend;
    bool report = false;  // the caller asked for a completion
  };

  void log_error_completion(const char* queue, const ibv_wc& wc) const {
    // The engine logs each failure by name too; the vendor code is for the device's
    // documentation only. Flushes follow the first error in numbers.
    if (wc.status == IBV_WC_WR_FLUSH_ERR) {
      SMC_LOG_DEBUG("verbs: QP {:#x}: {} work request flushed", qp_->qp_num, queue);
    } else {
      SMC_LOG_WARN("verbs: QP {:#x}: {} completion error: {} (vendor error {:#x})", qp_->qp_num,
                   queue, to_string(map_wc_status(wc.status)), wc.vendor_err);
    }
  }

  int post(ibv_send_wr* wr, ibv_sge* sge, uint64_t wr_id, WcOpcode opcode, bool signaled,
           unsigned flags) {
    if (error_) return EIO;
    if (!connected_) return ENOTCONN;
    // Held across ibv_post_send so that sequence numbers follow posting order, which is
    // the order the completions come back in.
    const std::lock_guard lock(send_mutex_);
    if (next_seq_ - retired_seq_ >= ring_.size()) return EAGAIN;
    // Unsignaled WRs only leave the send queue when a later signaled one completes: sign
    // one of every half queue so that a caller who never asks still gets slots back.
    const bool forced = !signaled && unsignaled_run_ + 1 >= std::max<size_t>(1, ring_.size() / 2);
    ring_[next_seq_ % ring_.size()] = SendSlot{wr_id, opcode, signaled};
    wr->wr_id = next_seq_;
    wr->sg_list = sge;
    wr->num_sge = 1;
    wr->send_flags = flags | ((signaled || forced) ? IBV_SEND_SIGNALED : 0);
    ibv_send_wr* bad = nullptr;
    const int rc = ::ibv_post_send(qp_, wr, &bad);
    if (rc != 0) {
      // The queue is accounted for, so this is the QP's state or a bad request.
      SMC_LOG_WARN("verbs: QP {:#x}: ibv_post_send: {}", qp_->qp_num, std::strerror(rc));
      error_ = true;
      return rc;
    }
    ++next_seq_;
    unsignaled_run_ = (signaled || forced) ? 0 : unsignaled_run_ + 1;
    return 0;
  }

  bool fail(std::string* error, const char* what, int err = -1) {
    *error = errno_text(what, err < 0 ? errno : err);
    SMC_LOG_WARN("verbs: {}: {}", context_.name, *error);
    return false;
  }

  std::shared_ptr<Pd> pd_;
  Context& context_;  // kept alive by pd_
  const QpConfig config_;
  ibv_comp_channel* channel_ = nullptr;
  ibv_cq* send_cq_ = nullptr;
  ibv_cq* recv_cq_ = nullptr;
  ibv_qp* qp_ = nullptr;
  bool registered_ = false;
  uint32_t psn_ = 0;
  uint32_t max_inline_ = 0;
  std::atomic<bool> connected_{false};
  std::atomic<bool> error_{false};
  // Send-queue accounting, shared by the posting thread and the poll_send thread. Each
  // posted WR gets the next sequence number; those below retired_seq_ have left the
  // queue, so at most ring_.size() (the send depth) are ever in it.
  std::mutex send_mutex_;
  std::vector<SendSlot> ring_;
  uint64_t next_seq_ = 0;
  uint64_t retired_seq_ = 0;
  size_t unsignaled_run_ = 0;
  std::atomic<uint32_t> posted_recvs_{0};
  // The second scatter element of every receive (set_recv_overflow); length 0: none.
  ibv_sge overflow_{};
  QpCounters counters_;
};

std::unique_ptr<QueuePair> create_verbs_qp(std::shared_ptr<Pd> pd, const QpConfig& config,
                                           std::string* error) {
  auto qp = std::make_unique<VerbsQp>(std::move(pd), config);
  if (!qp->init(error)) return nullptr;
  return qp;
}

void force_qp_error(VerbsQp* qp, const char* why) {
  qp->force_error(why);
}

}  // namespace smcpre::rdma::verbs
