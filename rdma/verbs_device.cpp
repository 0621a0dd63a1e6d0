// The rdma-core (libibverbs) device: real RC queue pairs on an RDMA NIC or Soft-RoCE.
// Object lifetimes follow verbs' dependency order: every MR and QP holds a reference to
// its PD, and the PD to the device context, so destruction can never free a parent first.
#include <ifaddrs.h>
#include <infiniband/verbs.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <sys/mman.h>
#include <sys/random.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <deque>
#include <mutex>
#include <string>

#include "config/log.h"
#include "config/sys.h"
#include "rdma/device.h"

namespace smcpre::rdma {
namespace {

std::string errno_text(const char* what, int err) {
  return std::string(what) + ": " + std::strerror(err);
}

// The opened device context plus what open_verbs_device chose on it.
struct Context {
  ibv_context* ctx = nullptr;
  uint8_t port = 1;
  int gid_index = 0;
  Gid gid{};
  Mac mac{};
  ibv_mtu active_mtu = IBV_MTU_1024;
  std::string name;
  ~Context() {
    if (ctx != nullptr) ::ibv_close_device(ctx);
  }
};

struct Pd {
  std::shared_ptr<Context> context;
  ibv_pd* pd = nullptr;
  ~Pd() {
    if (pd != nullptr) ::ibv_dealloc_pd(pd);
  }
};

WcStatus map_status(ibv_wc_status status) {
  switch (status) {
    case IBV_WC_SUCCESS:
      return WcStatus::kSuccess;
    case IBV_WC_LOC_LEN_ERR:
      return WcStatus::kLocalLengthError;
    case IBV_WC_LOC_PROT_ERR:
      return WcStatus::kLocalProtectionError;
    case IBV_WC_WR_FLUSH_ERR:
      return WcStatus::kFlushError;
    case IBV_WC_REM_ACCESS_ERR:
      return WcStatus::kRemoteAccessError;
    case IBV_WC_RETRY_EXC_ERR:
      return WcStatus::kRetryExceeded;
    case IBV_WC_RNR_RETRY_EXC_ERR:
      return WcStatus::kRnrRetryExceeded;
    default:
      return WcStatus::kGeneralError;
  }
}

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
      ::munmap(mem, length);
      return nullptr;
    }
    return std::unique_ptr<MemoryRegion>(new VerbsMemoryRegion(std::move(pd), mr, mem, length));
  }
  ~VerbsMemoryRegion() override {
    ::ibv_dereg_mr(mr_);
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

class VerbsQp final : public QueuePair {
 public:
  VerbsQp(std::shared_ptr<Pd> pd, const QpConfig& config) : pd_(std::move(pd)), config_(config) {}

  ~VerbsQp() override {
    if (qp_ != nullptr) ::ibv_destroy_qp(qp_);
    if (recv_cq_ != nullptr) {
      if (unacked_events_ > 0) ::ibv_ack_cq_events(recv_cq_, unacked_events_);
      ::ibv_destroy_cq(recv_cq_);
    }
    if (send_cq_ != nullptr) ::ibv_destroy_cq(send_cq_);
    if (channel_ != nullptr) ::ibv_destroy_comp_channel(channel_);
  }

  bool init(std::string* error) {
    if (config_.send_depth == 0 || config_.recv_depth == 0) {
      *error = "queue depths must be positive";
      return false;
    }
    ibv_context* ctx = pd_->context->ctx;
    channel_ = ::ibv_create_comp_channel(ctx);
    if (channel_ == nullptr) return fail(error, "ibv_create_comp_channel");
    // consume_notify() must never block the event loop; no fd leaks into exec'd children.
    const int flags = sys::fcntl(channel_->fd, F_GETFL);
    if (flags < 0 || sys::fcntl(channel_->fd, F_SETFL, flags | O_NONBLOCK) != 0 ||
        sys::fcntl(channel_->fd, F_SETFD, FD_CLOEXEC) != 0) {
      return fail(error, "fcntl(completion channel)");
    }
    send_cq_ = ::ibv_create_cq(ctx, static_cast<int>(config_.send_depth), nullptr, nullptr, 0);
    if (send_cq_ == nullptr) return fail(error, "ibv_create_cq(send)");
    recv_cq_ = ::ibv_create_cq(ctx, static_cast<int>(config_.recv_depth), nullptr, channel_, 0);
    if (recv_cq_ == nullptr) return fail(error, "ibv_create_cq(recv)");

    ibv_qp_init_attr attr{};
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

    ibv_qp_attr init{};
    init.qp_state = IBV_QPS_INIT;
    init.pkey_index = 0;
    init.port_num = pd_->context->port;
    init.qp_access_flags = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE;
    const int rc = ::ibv_modify_qp(
        qp_, &init, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);
    if (rc != 0) return fail(error, "ibv_modify_qp(INIT)", rc);

    uint32_t random = 0;
    if (::getrandom(&random, sizeof random, 0) != sizeof random) random = qp_->qp_num * 2654435761u;
    psn_ = random & 0xffffff;
    return true;
  }

  QpEndpoint local_endpoint() const override {
    QpEndpoint ep;
    ep.gid = pd_->context->gid;
    ep.mac = pd_->context->mac;
    ep.qp_num = qp_->qp_num;
    ep.psn = psn_;
    ep.mtu = local_mtu();
    return ep;
  }

  bool connect(const QpEndpoint& remote, Role role, int timeout_ms, std::string* error) override {
    (void)role;        // verbs needs no rendezvous: both sides only program their own QP
    (void)timeout_ms;  // modify_qp does not wait for the peer
    if (connected_) {
      *error = "connect() called twice on one QP";
      return false;
    }
    const auto remote_mtu = static_cast<uint8_t>(remote.mtu);
    if (remote_mtu < static_cast<uint8_t>(PathMtu::k256) ||
        remote_mtu > static_cast<uint8_t>(PathMtu::k4096)) {
      *error = "peer announced an invalid path MTU";
      return false;
    }
    const auto mtu = std::min(static_cast<uint8_t>(local_mtu()), remote_mtu);

    ibv_qp_attr rtr{};
    rtr.qp_state = IBV_QPS_RTR;
    rtr.path_mtu = static_cast<ibv_mtu>(mtu);
    rtr.dest_qp_num = remote.qp_num & 0xffffff;
    rtr.rq_psn = remote.psn & 0xffffff;
    rtr.max_dest_rd_atomic = 1;
    rtr.min_rnr_timer = config_.min_rnr_timer;
    rtr.ah_attr.is_global = 1;
    std::memcpy(rtr.ah_attr.grh.dgid.raw, remote.gid.data(), remote.gid.size());
    rtr.ah_attr.grh.sgid_index = static_cast<uint8_t>(pd_->context->gid_index);
    rtr.ah_attr.grh.hop_limit = 64;
    rtr.ah_attr.port_num = pd_->context->port;
    int rc = ::ibv_modify_qp(qp_, &rtr,
                             IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
                                 IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER);
    if (rc != 0) return fail(error, "ibv_modify_qp(RTR)", rc);

    ibv_qp_attr rts{};
    rts.qp_state = IBV_QPS_RTS;
    rts.timeout = config_.timeout;
    rts.retry_cnt = config_.retry_count;
    rts.rnr_retry = config_.rnr_retry;
    rts.sq_psn = psn_;
    rts.max_rd_atomic = 1;
    rc = ::ibv_modify_qp(qp_, &rts,
                         IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
                             IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC);
    if (rc != 0) return fail(error, "ibv_modify_qp(RTS)", rc);
    connected_ = true;
    SMC_LOG_DEBUG("verbs: QP {:#x} connected to QP {:#x}, mtu code {}", qp_->qp_num, remote.qp_num,
                  mtu);
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
    const int rc = post(&wr, &sge, wr_id, signaled, 0);
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
    const int rc = post(&wr, &sge, wr_id, signaled, IBV_SEND_INLINE);
    if (rc == 0) counters_.sends.fetch_add(1, std::memory_order_relaxed);
    return rc;
  }

  int post_recv(void* buffer, uint32_t length, uint32_t lkey, uint64_t wr_id) override {
    if (error_) return EIO;
    ibv_sge sge{reinterpret_cast<uint64_t>(buffer), length, lkey};
    ibv_recv_wr wr{};
    wr.wr_id = wr_id;
    wr.sg_list = &sge;
    wr.num_sge = 1;
    ibv_recv_wr* bad = nullptr;
    const int rc = ::ibv_post_recv(qp_, &wr, &bad);
    if (rc != 0) {
      error_ = true;
      return rc;
    }
    posted_recvs_.fetch_add(1, std::memory_order_relaxed);
    return 0;
  }

  int poll_send(std::span<WorkCompletion> out) override {
    int reported = 0;
    ibv_wc wc[16];
    while (static_cast<size_t>(reported) < out.size()) {
      // Never take more than `out` can hold: a polled completion cannot be put back.
      const int want = static_cast<int>(std::min<size_t>(out.size() - reported, 16));
      const int n = ::ibv_poll_cq(send_cq_, want, wc);
      if (n <= 0) {
        if (n < 0) error_ = true;
        break;
      }
      const std::lock_guard lock(send_mutex_);
      for (int i = 0; i < n; ++i) {
        bool forced = false;
        if (wc[i].status == IBV_WC_SUCCESS && !signals_.empty()) {
          // RC send completions arrive in posting order: the oldest signaled WR retires
          // itself and the unsignaled ones posted before it.
          const Signal s = signals_.front();
          signals_.pop_front();
          outstanding_ -= std::min(outstanding_, s.slots);
          forced = s.forced;
        } else if (wc[i].status != IBV_WC_SUCCESS) {
          error_ = true;
        }
        if (forced) continue;
        out[static_cast<size_t>(reported++)] = to_wc(wc[i]);
      }
      if (n < want) break;
    }
    return reported;
  }

  int poll_recv(std::span<WorkCompletion> out) override {
    const int max = static_cast<int>(std::min<size_t>(out.size(), 16));
    ibv_wc wc[16];
    const int n = ::ibv_poll_cq(recv_cq_, max, wc);
    if (n < 0) {
      error_ = true;
      return 0;
    }
    for (int i = 0; i < n; ++i) {
      if (wc[i].status != IBV_WC_SUCCESS) error_ = true;
      if (wc[i].status == IBV_WC_SUCCESS) counters_.recvs.fetch_add(1, std::memory_order_relaxed);
      posted_recvs_.fetch_sub(1, std::memory_order_relaxed);
      out[static_cast<size_t>(i)] = to_wc(wc[i]);
    }
    return n;
  }

  int notify_fd() const override { return channel_->fd; }
  void arm_recv_notify() override {
    if (::ibv_req_notify_cq(recv_cq_, 0) != 0) error_ = true;
  }
  void consume_notify() override {
    ibv_cq* cq = nullptr;
    void* cq_context = nullptr;
    while (::ibv_get_cq_event(channel_, &cq, &cq_context) == 0) ++unacked_events_;
    // Acking takes a lock in libibverbs: do it in batches, as its man page advises.
    if (unacked_events_ > 0) {
      ::ibv_ack_cq_events(recv_cq_, unacked_events_);
      unacked_events_ = 0;
    }
  }

  int64_t next_deadline_ns() const override { return -1; }
  bool in_error() const override { return error_; }
  const QpCounters& counters() const override { return counters_; }
  uint32_t posted_recvs() const override { return posted_recvs_.load(std::memory_order_relaxed); }

  uint32_t max_inline() const { return max_inline_; }

 private:
  struct Signal {
    uint32_t slots;  // send-queue entries freed when this WR completes
    bool forced;     // signaled by us only to free slots: not reported to the caller
  };

  PathMtu local_mtu() const {
    return static_cast<PathMtu>(std::min(static_cast<uint8_t>(pd_->context->active_mtu),
                                         static_cast<uint8_t>(config_.mtu)));
  }

  static WorkCompletion to_wc(const ibv_wc& wc) {
    WorkCompletion out;
    out.wr_id = wc.wr_id;
    out.status = map_status(wc.status);
    out.byte_len = wc.byte_len;
    switch (wc.opcode) {
      case IBV_WC_RDMA_WRITE:
        out.opcode = WcOpcode::kRdmaWrite;
        break;
      case IBV_WC_RECV:
        out.opcode = WcOpcode::kRecv;
        break;
      default:
        out.opcode = WcOpcode::kSend;
        break;
    }
    return out;
  }

  int post(ibv_send_wr* wr, ibv_sge* sge, uint64_t wr_id, bool signaled, unsigned flags) {
    if (error_) return EIO;
    if (!connected_) return ENOTCONN;
    // Held across ibv_post_send so that signals_ is in posting order, which is the order
    // the completions come back in.
    const std::lock_guard lock(send_mutex_);
    if (outstanding_ >= config_.send_depth) return EAGAIN;
    // Unsignaled WRs only leave the send queue when a later signaled one completes: sign
    // one of every half queue so that a caller who never asks still gets slots back.
    const bool forced = !signaled && unsignaled_run_ + 1 >= std::max(1u, config_.send_depth / 2);
    wr->wr_id = wr_id;
    wr->sg_list = sge;
    wr->num_sge = 1;
    wr->send_flags = flags | ((signaled || forced) ? IBV_SEND_SIGNALED : 0);
    ibv_send_wr* bad = nullptr;
    const int rc = ::ibv_post_send(qp_, wr, &bad);
    if (rc != 0) {
      error_ = true;
      return rc;
    }
    ++outstanding_;
    if (signaled || forced) {
      signals_.push_back({unsignaled_run_ + 1, forced});
      unsignaled_run_ = 0;
    } else {
      ++unsignaled_run_;
    }
    return 0;
  }

  bool fail(std::string* error, const char* what, int err = -1) {
    *error = errno_text(what, err < 0 ? errno : err);
    return false;
  }

  std::shared_ptr<Pd> pd_;
  QpConfig config_;
  ibv_comp_channel* channel_ = nullptr;
  ibv_cq* send_cq_ = nullptr;
  ibv_cq* recv_cq_ = nullptr;
  ibv_qp* qp_ = nullptr;
  uint32_t psn_ = 0;
  uint32_t max_inline_ = 0;
  bool connected_ = false;
  std::atomic<bool> error_{false};
  // Send-queue accounting, shared by the posting thread and the poll_send thread.
  std::mutex send_mutex_;
  uint32_t outstanding_ = 0;
  uint32_t unsignaled_run_ = 0;
  std::deque<Signal> signals_;
  unsigned unacked_events_ = 0;
  std::atomic<uint32_t> posted_recvs_{0};
  QpCounters counters_;
};

class VerbsPd final : public ProtectionDomain {
 public:
  explicit VerbsPd(std::shared_ptr<Pd> pd) : pd_(std::move(pd)) {}
  std::unique_ptr<MemoryRegion> register_memory(size_t length, std::string* error) override {
    return VerbsMemoryRegion::create(pd_, length, error);
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
  DeviceCaps caps() const override { return DeviceCaps{false, max_inline_}; }
  Gid gid() const override { return context_->gid; }
  Mac mac() const override { return context_->mac; }
  std::unique_ptr<ProtectionDomain> alloc_pd(std::string* error) override {
    auto pd = std::make_shared<Pd>();
    pd->context = context_;
    pd->pd = ::ibv_alloc_pd(context_->ctx);
    if (pd->pd == nullptr) {
      *error = errno_text("ibv_alloc_pd", errno);
      return nullptr;
    }
    return std::make_unique<VerbsPd>(std::move(pd));
  }

 private:
  std::shared_ptr<Context> context_;
  uint32_t max_inline_;
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

// Prefers a RoCEv2 GID carrying an IPv4 address (routable, what SMC-R over IPv4 uses),
// then any valid GID.
bool choose_gid(Context* c, int gid_table_len, int wanted, std::string* error) {
  int fallback = -1;
  ibv_gid_entry fallback_entry{};
  for (int i = 0; i < gid_table_len; ++i) {
    if (wanted >= 0 && i != wanted) continue;
    ibv_gid_entry entry{};
    if (::ibv_query_gid_ex(c->ctx, c->port, static_cast<uint32_t>(i), &entry, 0) != 0) continue;
    bool zero = true;
    for (uint8_t b : entry.gid.raw) zero = zero && b == 0;
    if (zero) continue;
    if (entry.gid_type == IBV_GID_TYPE_ROCE_V2 && is_ipv4_mapped(entry.gid)) {
      fallback = i;
      fallback_entry = entry;
      break;
    }
    if (fallback < 0) {
      fallback = i;
      fallback_entry = entry;
    }
  }
  if (fallback < 0) {
    *error = "no valid GID on " + c->name;
    return false;
  }
  c->gid_index = fallback;
  std::memcpy(c->gid.data(), fallback_entry.gid.raw, c->gid.size());
  c->mac = netdev_mac(fallback_entry.ndev_ifindex);
  return true;
}

// Creates a throwaway QP to learn how much inline data the device accepts.
uint32_t probe_max_inline(ibv_context* ctx) {
  uint32_t result = 0;
  ibv_pd* pd = ::ibv_alloc_pd(ctx);
  if (pd == nullptr) return 0;
  ibv_cq* cq = ::ibv_create_cq(ctx, 1, nullptr, nullptr, 0);
  if (cq != nullptr) {
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
  return result;
}

}  // namespace

std::unique_ptr<Device> open_verbs_device(const std::string& name, int port, int gid_index,
                                          std::string* error) {
  if (port < 0 || port > 255) {
    *error = "invalid RDMA port number";
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
    if (::ibv_query_device(c->ctx, &dev_attr) != 0) {
      why = errno_text(("ibv_query_device " + c->name).c_str(), errno);
      continue;
    }
    const int first = port == 0 ? 1 : port;
    const int last = port == 0 ? dev_attr.phys_port_cnt : port;
    for (int p = first; p <= last; ++p) {
      ibv_port_attr pattr{};
      if (::ibv_query_port(c->ctx, static_cast<uint8_t>(p), &pattr) != 0) continue;
      if (pattr.state != IBV_PORT_ACTIVE) {
        why = c->name + " port " + std::to_string(p) + " is not active";
        continue;
      }
      c->port = static_cast<uint8_t>(p);
      c->active_mtu = pattr.active_mtu;
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
  const uint32_t max_inline = probe_max_inline(chosen->ctx);
  SMC_LOG_INFO("verbs: using {} port {} gid index {}, max inline {}", chosen->name, chosen->port,
               chosen->gid_index, max_inline);
  return std::make_unique<VerbsDevice>(std::move(chosen), max_inline);
}

}  // namespace smcpre::rdma
