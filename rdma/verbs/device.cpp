// The rdma-core (libibverbs) device: real RC queue pairs on an RDMA NIC or Soft-RoCE.
// Object lifetimes follow verbs' dependency order: every MR and QP holds a reference to
// its PD, and the PD to the device context, so destruction can never free a parent first.
// Each QP has a send and a receive CQ on one completion channel (the engine's notify fd);
// the context's async events are drained by the progress thread, which puts a QP that the
// device reports broken into error so that its link goes down through flushed completions.
// This file opens the device and holds its PDs and memory regions; the queue pair is in
// rdma/verbs/qp.cpp.
#include "rdma/device.h"

#include <fmt/format.h>
#include <ifaddrs.h>
#include <infiniband/verbs.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <sys/mman.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <mutex>
#include <string>
#include <unordered_set>

#include "config/log.h"
#include "config/sys.h"
#include "rdma/verbs/attrs.h"
#include "rdma/verbs/context.h"

namespace smcpre::rdma {
namespace verbs {

std::string errno_text(const char* what, int err) {
  return std::string(what) + ": " + std::strerror(err);
}

Context::~Context() {
  if (ctx != nullptr && ::ibv_close_device(ctx) != 0) {
    SMC_LOG_WARN("verbs: ibv_close_device {}: {}", name, std::strerror(errno));
  }
}

Pd::~Pd() {
  if (pd == nullptr) return;
  const int rc = ::ibv_dealloc_pd(pd);
  if (rc != 0) SMC_LOG_WARN("verbs: ibv_dealloc_pd: {}", std::strerror(rc));
}

}  // namespace verbs

namespace {

using verbs::Context;
using verbs::errno_text;
using verbs::Pd;
using verbs::VerbsQp;

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
    // An int, not the enumerator: ibv_reg_mr() is a macro that ands the flags with
    // IBV_ACCESS_OPTIONAL_RANGE, of another enum type (an enum mix C++20 deprecates).
    constexpr int kAccess = IBV_ACCESS_LOCAL_WRITE;
    ibv_mr* mr = ::ibv_reg_mr(pd->pd, addr, length, kAccess);
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
    return verbs::create_verbs_qp(pd_, config, error);
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
                      .max_inline = max_inline_,
                      .roce_v2_gid = context_->roce_v2};
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
        if (it != context_->qps.end()) verbs::force_qp_error(*it, what);
        break;
      }
      case AsyncAction::kAllQpsError:
        for (VerbsQp* qp : context_->qps) verbs::force_qp_error(qp, what);
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
  c->roce_v2 = entry.gid_type == IBV_GID_TYPE_ROCE_V2;
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
