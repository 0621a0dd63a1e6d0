// The rdma-core (libibverbs) device: real RC queue pairs on an RDMA NIC or Soft-RoCE.
// Object lifetimes follow verbs' dependency order: every MR and QP holds a reference to
// its PD, and the PD to the device context, so destruction can never free a parent first.
// Each QP has a send and a receive CQ on one completion channel (the engine's notify fd);
// the context's async events are drained by the progress thread, which puts a QP that the
// device reports broken into error so that its link goes down through flushed completions.
#include "rdma/device.h"

#include <fmt/format.h>
#include <ifaddrs.h>
#include <infiniband/verbs.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <sys/mman.h>
#include <sys/random.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <mutex>
#include <string>
#include <unordered_set>
#include <vector>

#include "config/log.h"
#include "config/sys.h"
#include "rdma/verbs/attrs.h"

namespace smcpre::rdma {
namespace {

std::string errno_text(const char* what, int err) {
  return std::string(what) + ": " + std::strerror(err);
}

class VerbsQp;

// The opened device context plus what open_verbs_device chose on it. It outlives the
// Device object as long as any PD, MR or QP on it lives.
struct Context {
  ibv_context* ctx = nullptr;
  uint8_t port = 1;
  int gid_index = 0;
  Gid gid{};
  Mac mac{};
  PathMtu active_mtu = PathMtu::k1024;
  std::string name;
  // Live QPs, so that the async event handler can put one (or all, when the device dies)
  // into error. A QP leaves before it is destroyed; the handler acts only on members.
  std::mutex qps_mutex;
  std::unordered_set<VerbsQp*> qps;

  ~Context() {
    if (ctx != nullptr && ::ibv_close_device(ctx) != 0) {
      SMC_LOG_WARN("verbs: ibv_close_device {}: {}", name, std::strerror(errno));
    }
  }
};

struct Pd {
  std::shared_ptr<Context> context;
  ibv_pd* pd = nullptr;
  ~Pd() {
    if (pd == nullptr) return;
    const int rc = ::ibv_dealloc_pd(pd);
    if (rc != 0) SMC_LOG_WARN("verbs: ibv_dealloc_pd: {}", std::strerror(rc));
  }
};

class VerbsMemoryRegion final : public MemoryRegion {
 public:
  static std::unique_ptr<MemoryRegion> create(std::shared_ptr<Pd> pd, size_t length,
                                              std::string* error) {
    if (length == 0) {
      *error = "cannot register an empty region";
      return nullptr;
    }
    // mmap gives page-aligned, zeroed memory; MADV_DONTFORK keeps a fork()ing application
    // from copy-on-write-splitting pages the HCA has pinned.
    void* mem = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
      *error = errno_text("mmap", errno);
      return nullptr;
    }
    if (::madvise(mem, length, MADV_DONTFORK) != 0) {
      *error = errno_text("madvise(MADV_DONTFORK)", errno);
      ::munmap(mem, length);
      return nullptr;
    }
    ibv_mr* mr =
        ::ibv_reg_mr(pd->pd, mem, length, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
    if (mr == nullptr) {
      *error = errno_text("ibv_reg_mr", errno);
      SMC_LOG_WARN("verbs: registering {} bytes failed: {}", length, *error);
      ::munmap(mem, length);
      return nullptr;
    }
    return std::unique_ptr<MemoryRegion>(new VerbsMemoryRegion(std::move(pd), mr, mem, length));
  }
  ~VerbsMemoryRegion() override {
    const int rc = ::ibv_dereg_mr(mr_);
    if (rc != 0) SMC_LOG_WARN("verbs: ibv_dereg_mr: {}", std::strerror(rc));
    ::munmap(addr_, length_);
  }

 private:
  VerbsMemoryRegion(std::shared_ptr<Pd> pd, ibv_mr* mr, void* mem, size_t length)
      : pd_(std::move(pd)), mr_(mr) {
    addr_ = mem;
    length_ = length;
    lkey_ = mr->lkey;
    rkey_ = mr->rkey;
  }
  std::shared_ptr<Pd> pd_;
  ibv_mr* mr_;
};

// Memory the caller owns, registered for local writes only (receive buffers): no rkey a
// peer could use. Deregistering leaves the memory to its owner.
class VerbsLocalRegion final : public MemoryRegion {
 public:
  static std::unique_ptr<MemoryRegion> create(std::shared_ptr<Pd> pd, void* addr, size_t length,
                                              std::string* error) {
    if (addr == nullptr || length == 0) {
      *error = "cannot register an empty region";
      return nullptr;
    }
    ibv_mr* mr = ::ibv_reg_mr(pd->pd, addr, length, IBV_ACCESS_LOCAL_WRITE);
    if (mr == nullptr) {
      *error = errno_text("ibv_reg_mr", errno);
      SMC_LOG_WARN("verbs: registering {} bytes of receive buffers failed: {}", length, *error);
      return nullptr;
    }
    return std::unique_ptr<MemoryRegion>(new VerbsLocalRegion(std::move(pd), mr));
  }
  ~VerbsLocalRegion() override {
    const int rc = ::ibv_dereg_mr(mr_);
    if (rc != 0) SMC_LOG_WARN("verbs: ibv_dereg_mr: {}", std::strerror(rc));
  }

 private:
  VerbsLocalRegion(std::shared_ptr<Pd> pd, ibv_mr* mr) : pd_(std::move(pd)), mr_(mr) {
    addr_ = mr->addr;
    length_ = mr->length;
    lkey_ = mr->lkey;
    rkey_ = 0;
  }
  std::shared_ptr<Pd> pd_;
  ibv_mr* mr_;
};

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
    attr.cap.max_recv_sge = 1;
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
    ibv_sge sge{reinterpret_cast<uint64_t>(buffer), length, lkey};
    ibv_recv_wr wr{};
    wr.wr_id = wr_id;
    wr.sg_list = &sge;
    wr.num_sge = 1;
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
  QpCounters counters_;
};

class VerbsPd final : public ProtectionDomain {
 public:
  explicit VerbsPd(std::shared_ptr<Pd> pd) : pd_(std::move(pd)) {}
  std::unique_ptr<MemoryRegion> register_memory(size_t length, std::string* error) override {
    return VerbsMemoryRegion::create(pd_, length, error);
  }
  std::unique_ptr<MemoryRegion> register_local(void* addr, size_t length,
                                               std::string* error) override {
    return VerbsLocalRegion::create(pd_, addr, length, error);
  }
  std::unique_ptr<QueuePair> create_qp(const QpConfig& config, std::string* error) override {
    auto qp = std::make_unique<VerbsQp>(pd_, config);
    if (!qp->init(error)) return nullptr;
    return qp;
  }

 private:
  std::shared_ptr<Pd> pd_;
};

class VerbsDevice final : public Device {
 public:
  VerbsDevice(std::shared_ptr<Context> context, uint32_t max_inline)
      : context_(std::move(context)), max_inline_(max_inline) {}
  std::string name() const override { return context_->name; }
  DeviceCaps caps() const override {
    return DeviceCaps{.kind = DeviceKind::kVerbs,
                      .reports_rnr = false,
                      .write_from_any_memory = false,
                      .max_inline = max_inline_};
  }
  Gid gid() const override { return context_->gid; }
  Mac mac() const override { return context_->mac; }
  std::unique_ptr<ProtectionDomain> alloc_pd(std::string* error) override {
    auto pd = std::make_shared<Pd>();
    pd->context = context_;
    pd->pd = ::ibv_alloc_pd(context_->ctx);
    if (pd->pd == nullptr) {
      *error = errno_text("ibv_alloc_pd", errno);
      SMC_LOG_WARN("verbs: {}: {}", context_->name, *error);
      return nullptr;
    }
    return std::make_unique<VerbsPd>(std::move(pd));
  }

  int async_fd() const override { return context_->ctx->async_fd; }

  void handle_async_events() override {
    ibv_async_event event{};
    while (::ibv_get_async_event(context_->ctx, &event) == 0) {
      handle(event);
      // Acked only now: until then verbs keeps the QP or CQ the event names from being
      // destroyed, so handle() may use it.
      ::ibv_ack_async_event(&event);
    }
    // The fd is non-blocking: EAGAIN ends a drain. Anything else would repeat on every
    // wakeup, so it is said once.
    if (errno != EAGAIN && errno != EWOULDBLOCK && !read_failed_.exchange(true)) {
      SMC_LOG_WARN("verbs: {}: reading async events: {}", context_->name, std::strerror(errno));
    }
  }

 private:
  void handle(const ibv_async_event& event) {
    const AsyncPolicy policy = async_policy(event.event_type);
    const auto type = static_cast<size_t>(event.event_type);
    const uint64_t count =
        (type < event_counts_.size() ? event_counts_[type].fetch_add(1) : other_events_++) + 1;
    std::string where;
    switch (policy.element) {
      case AsyncElement::kQp:
        where = fmt::format(" on QP {:#x}", event.element.qp->qp_num);
        break;
      case AsyncElement::kPort:
        where = fmt::format(" on port {}", event.element.port_num);
        break;
      case AsyncElement::kCq:
      case AsyncElement::kSrq:
      case AsyncElement::kWq:
      case AsyncElement::kNone:
        break;
    }
    const char* what = ::ibv_event_type_str(event.event_type);
    if (policy.benign) {
      SMC_LOG_INFO("verbs: {}: async event '{}'{} (#{})", context_->name, what, where, count);
    } else {
      SMC_LOG_WARN("verbs: {}: async event '{}'{} (#{})", context_->name, what, where, count);
    }

    const std::lock_guard lock(context_->qps_mutex);
    switch (policy.action) {
      case AsyncAction::kNone:
        break;
      case AsyncAction::kQpError: {
        void* owner = policy.element == AsyncElement::kCq ? event.element.cq->cq_context
                                                          : event.element.qp->qp_context;
        // Only a QP of ours that is still registered: one being destroyed has left.
        auto it = context_->qps.find(static_cast<VerbsQp*>(owner));
        if (it != context_->qps.end()) (*it)->force_error(what);
        break;
      }
      case AsyncAction::kAllQpsError:
        for (VerbsQp* qp : context_->qps) qp->force_error(what);
        break;
    }
  }

  std::shared_ptr<Context> context_;
  uint32_t max_inline_;
  // Per ibv_event_type, for the log lines.
  std::array<std::atomic<uint64_t>, IBV_EVENT_WQ_FATAL + 1> event_counts_{};
  std::atomic<uint64_t> other_events_{0};
  std::atomic<bool> read_failed_{false};
};

bool is_ipv4_mapped(const ibv_gid& gid) {
  static constexpr uint8_t kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return std::memcmp(gid.raw, kPrefix, sizeof kPrefix) == 0;
}

// RoCE: the MAC of the GID's netdev. getifaddrs lists AF_PACKET addresses with the MAC.
Mac netdev_mac(uint32_t ifindex) {
  Mac mac{};
  char name[IF_NAMESIZE] = {};
  if (ifindex == 0 || ::if_indextoname(ifindex, name) == nullptr) return mac;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return mac;
  for (ifaddrs* it = list; it != nullptr; it = it->ifa_next) {
    if (it->ifa_addr == nullptr || it->ifa_addr->sa_family != AF_PACKET) continue;
    if (std::strcmp(it->ifa_name, name) != 0) continue;
    const auto* ll = reinterpret_cast<const sockaddr_ll*>(it->ifa_addr);
    if (ll->sll_halen == mac.size()) std::memcpy(mac.data(), ll->sll_addr, mac.size());
    break;
  }
  ::freeifaddrs(list);
  return mac;
}

bool gid_entry(Context* c, int index, ibv_gid_entry* entry) {
  if (::ibv_query_gid_ex(c->ctx, c->port, static_cast<uint32_t>(index), entry, 0) != 0) {
    return false;
  }
  return std::any_of(std::begin(entry->gid.raw), std::end(entry->gid.raw),
                     [](uint8_t b) { return b != 0; });
}

void adopt_gid(Context* c, int index, const ibv_gid_entry& entry) {
  c->gid_index = index;
  std::memcpy(c->gid.data(), entry.gid.raw, c->gid.size());
  c->mac = netdev_mac(entry.ndev_ifindex);
}

// `wanted` >= 0: exactly that index, which must hold a GID. Otherwise a RoCEv2 GID
// carrying an IPv4 address (routable, what SMC-R over IPv4 uses), else any valid GID.
bool choose_gid(Context* c, int gid_table_len, int wanted, std::string* error) {
  const std::string where = c->name + " port " + std::to_string(c->port);
  if (wanted >= 0) {
    ibv_gid_entry entry{};
    if (wanted >= gid_table_len) {
      *error = "GID index " + std::to_string(wanted) + " is out of range: " + where + " has " +
               std::to_string(gid_table_len) + " GIDs";
      return false;
    }
    if (!gid_entry(c, wanted, &entry)) {
      *error = "GID index " + std::to_string(wanted) + " of " + where + " holds no GID";
      return false;
    }
    adopt_gid(c, wanted, entry);
    return true;
  }
  int chosen = -1;
  ibv_gid_entry chosen_entry{};
  for (int i = 0; i < gid_table_len; ++i) {
    ibv_gid_entry entry{};
    if (!gid_entry(c, i, &entry)) continue;
    if (entry.gid_type == IBV_GID_TYPE_ROCE_V2 && is_ipv4_mapped(entry.gid)) {
      chosen = i;
      chosen_entry = entry;
      break;
    }
    if (chosen < 0) {
      chosen = i;
      chosen_entry = entry;
    }
  }
  if (chosen < 0) {
    *error = "no valid GID on " + where;
    return false;
  }
  adopt_gid(c, chosen, chosen_entry);
  return true;
}

// Creates a throwaway QP to learn how much inline data the device accepts (0 if none).
uint32_t probe_max_inline(Context* c) {
  uint32_t result = 0;
  ibv_pd* pd = ::ibv_alloc_pd(c->ctx);
  if (pd == nullptr) {
    SMC_LOG_WARN("verbs: {}: ibv_alloc_pd: {}", c->name, std::strerror(errno));
    return 0;
  }
  ibv_cq* cq = ::ibv_create_cq(c->ctx, 1, nullptr, nullptr, 0);
  if (cq == nullptr) {
    SMC_LOG_WARN("verbs: {}: ibv_create_cq: {}", c->name, std::strerror(errno));
  } else {
    for (uint32_t want : {256u, 128u, 64u}) {
      ibv_qp_init_attr attr{};
      attr.send_cq = cq;
      attr.recv_cq = cq;
      attr.qp_type = IBV_QPT_RC;
      attr.cap = {1, 1, 1, 1, want};
      ibv_qp* qp = ::ibv_create_qp(pd, &attr);
      if (qp == nullptr) continue;
      result = attr.cap.max_inline_data;
      ::ibv_destroy_qp(qp);
      break;
    }
    ::ibv_destroy_cq(cq);
  }
  ::ibv_dealloc_pd(pd);
  if (result == 0) SMC_LOG_WARN("verbs: {} takes no inline data", c->name);
  return result;
}

// The progress thread polls the async fd and must never block reading it; it must not
// leak into exec'd children either.
bool prepare_async_fd(Context* c, std::string* error) {
  const int fd = c->ctx->async_fd;
  const int flags = sys::fcntl(fd, F_GETFL);
  if (flags < 0 || sys::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0 ||
      sys::fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
    *error = errno_text(("fcntl(async fd of " + c->name + ")").c_str(), errno);
    return false;
  }
  return true;
}

}  // namespace

std::unique_ptr<Device> open_verbs_device(const std::string& name, int port, int gid_index,
                                          std::string* error) {
  if (port < 0 || port > 255) {
    *error = "invalid RDMA port number " + std::to_string(port);
    return nullptr;
  }
  if (gid_index < -1 || gid_index > 255) {
    *error = "invalid GID index " + std::to_string(gid_index);
    return nullptr;
  }
  int count = 0;
  ibv_device** list = ::ibv_get_device_list(&count);
  if (list == nullptr || count == 0) {
    if (list != nullptr) ::ibv_free_device_list(list);
    *error = "no RDMA device found";
    return nullptr;
  }
  std::shared_ptr<Context> chosen;
  std::string why =
      name.empty() ? "no RDMA device with an active port" : "RDMA device " + name + " not found";
  for (int i = 0; i < count && !chosen; ++i) {
    const char* dev_name = ::ibv_get_device_name(list[i]);
    if (dev_name == nullptr || (!name.empty() && name != dev_name)) continue;
    auto c = std::make_shared<Context>();
    c->name = dev_name;
    c->ctx = ::ibv_open_device(list[i]);
    if (c->ctx == nullptr) {
      why = errno_text(("ibv_open_device " + c->name).c_str(), errno);
      continue;
    }
    ibv_device_attr dev_attr{};
    if (const int rc = ::ibv_query_device(c->ctx, &dev_attr); rc != 0) {
      why = errno_text(("ibv_query_device " + c->name).c_str(), rc);
      continue;
    }
    const int first = port == 0 ? 1 : port;
    const int last = port == 0 ? dev_attr.phys_port_cnt : port;
    for (int p = first; p <= last; ++p) {
      ibv_port_attr pattr{};
      if (const int rc = ::ibv_query_port(c->ctx, static_cast<uint8_t>(p), &pattr); rc != 0) {
        why = errno_text(("ibv_query_port " + c->name + " port " + std::to_string(p)).c_str(), rc);
        continue;
      }
      if (pattr.state != IBV_PORT_ACTIVE) {
        why = c->name + " port " + std::to_string(p) + " is not active";
        continue;
      }
      if (pattr.active_mtu < IBV_MTU_256 || pattr.active_mtu > IBV_MTU_4096) {
        why = c->name + " port " + std::to_string(p) + " reports an invalid active MTU";
        continue;
      }
      c->port = static_cast<uint8_t>(p);
      c->active_mtu = static_cast<PathMtu>(pattr.active_mtu);
      if (!choose_gid(c.get(), pattr.gid_tbl_len, gid_index, &why)) continue;
      chosen = c;
      break;
    }
  }
  ::ibv_free_device_list(list);
  if (!chosen) {
    *error = why;
    return nullptr;
  }
  if (!prepare_async_fd(chosen.get(), error)) return nullptr;
  const uint32_t max_inline = probe_max_inline(chosen.get());
  SMC_LOG_INFO("verbs: using {} port {} gid index {}, active MTU code {}, max inline {}",
               chosen->name, chosen->port, chosen->gid_index, static_cast<int>(chosen->active_mtu),
               max_inline);
  return std::make_unique<VerbsDevice>(std::move(chosen), max_inline);
}

}  // namespace smcpre::rdma
