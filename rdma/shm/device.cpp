// The shm device: identity, rendezvous listener, protection domains, memory regions.
#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <unordered_map>
#include <utility>

#include "config/high_fd.h"
#include "config/log.h"
#include "config/sys.h"
#include "rdma/shm/arena.h"
#include "rdma/shm/qp.h"
#include "rdma/shm/state.h"

namespace smcpre::rdma {
namespace shm {
namespace {

// A pending client connection is dropped if no server QP claims it within the CLC
// handshake timeout (the server's connect call ends by then); this when none is given.
constexpr int64_t kDefaultPendingTtlNs = 30'000'000'000;
// A server waiting for its hello re-checks the pending table at least this often, in
// case another thread of the process accepted the connection meanwhile.
constexpr int kRendezvousSliceMs = 2;
// How long an announcement of a new region may wait for a peer that does not read.
constexpr int kAnnounceTimeoutMs = 1000;

constexpr uint8_t kGidPrefix[8] = {0xfe, 0x80, 0, 0, 0, 0, 0, 0};

// Memory keys are unique within the process, like a verbs device's keys within a PD;
// a peer cannot guess another PD's key and a stale key never aliases a new region.
std::mutex g_keys_mutex;
// Heap-allocated and never freed: engine threads may still release keys (a link torn down
// because the peer exited) while static destructors run at exit. A fork child gets a
// fresh table (reset_devices_after_fork): a parent thread may have been changing this
// one, which is kept, abandoned, where the new one points (reachable, not leaked).
struct KeyTable {
  std::unordered_set<uint32_t> keys;
  KeyTable* abandoned = nullptr;
};
KeyTable* g_key_table = new KeyTable;

uint32_t allocate_key() {
  std::lock_guard lock(g_keys_mutex);
  for (int attempt = 0; attempt < 64; ++attempt) {
    const uint32_t key = random_nonzero(32);
    if (key == 0) return 0;
    if (g_key_table->keys.insert(key).second) return key;
  }
  return 0;
}

void release_key(uint32_t key) {
  std::lock_guard lock(g_keys_mutex);
  g_key_table->keys.erase(key);
}

bool parse_mac(const char* text, Mac* mac) {
  unsigned v[6];
  if (std::sscanf(text, "%2x:%2x:%2x:%2x:%2x:%2x", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]) != 6) {
    return false;
  }
  bool nonzero = false;
  for (int i = 0; i < 6; ++i) {
    (*mac)[i] = static_cast<uint8_t>(v[i]);
    nonzero |= v[i] != 0;
  }
  return nonzero;
}

// The MAC of the first (by name) non-loopback interface that has one. CLC carries a MAC;
// a real one makes captures read naturally, but nothing depends on it.
bool host_mac(Mac* mac) {
  DIR* dir = ::opendir("/sys/class/net");
  if (dir == nullptr) return false;
  std::vector<std::string> names;
  while (dirent* entry = ::readdir(dir)) {
    std::string name = entry->d_name;
    if (name != "." && name != ".." && name != "lo") names.push_back(std::move(name));
  }
  ::closedir(dir);
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    const std::string path = "/sys/class/net/" + name + "/address";
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) continue;
    char text[64] = {};
    const ssize_t n = sys::read(fd.get(), text, sizeof text - 1);
    if (n > 0 && parse_mac(text, mac)) return true;
  }
  return false;
}

}  // namespace

bool peer_uid_allowed(uint32_t uid, uint32_t own_uid, std::span<const uint32_t> allowed) {
  return uid == own_uid || uid == 0 ||
         std::find(allowed.begin(), allowed.end(), uid) != allowed.end();
}

Gid gid_for_instance(uint64_t instance_id) {
  Gid gid{};
  std::copy(std::begin(kGidPrefix), std::end(kGidPrefix), gid.begin());
  for (int i = 0; i < 8; ++i) gid[8 + i] = static_cast<uint8_t>(instance_id >> (56 - 8 * i));
  return gid;
}

bool instance_from_gid(const Gid& gid, uint64_t* instance_id) {
  if (!std::equal(std::begin(kGidPrefix), std::end(kGidPrefix), gid.begin())) return false;
  uint64_t id = 0;
  for (int i = 0; i < 8; ++i) id = (id << 8) | gid[8 + i];
  *instance_id = id;
  return id != 0;
}

// ---- DeviceState ----

std::shared_ptr<DeviceState> DeviceState::create(const ShmOptions& options, std::string* error) {
  std::shared_ptr<DeviceState> state(new DeviceState());
  uint64_t id = 0;
  while (id == 0) {
    if (!random_bytes(&id, sizeof id)) {
      *error = "getrandom failed: no device instance id";
      return nullptr;
    }
  }
  state->instance_id_ = id;
  state->gid_ = gid_for_instance(id);
  if (!host_mac(&state->mac_)) {
    uint8_t tail[3];
    if (!random_bytes(tail, sizeof tail)) {
      *error = "getrandom failed: no MAC";
      return nullptr;
    }
    state->mac_ = Mac{0x02, 0x00, 0x00, tail[0], tail[1], tail[2]};
  }
  state->own_uid_ = ::geteuid();
  state->owner_pid_ = ::getpid();
  state->allowed_uids_.assign(options.allowed_uids.begin(), options.allowed_uids.end());
  state->any_uid_ = options.any_uid;
  state->staged_writes_ = options.staged_writes;
  state->pending_ttl_ns_ = options.handshake_timeout_ms > 0
                               ? int64_t{options.handshake_timeout_ms} * 1'000'000
                               : kDefaultPendingTtlNs;
  return state;
}

DeviceState::~DeviceState() = default;

bool DeviceState::uid_allowed(uint32_t uid) const {
  return any_uid_ || peer_uid_allowed(uid, own_uid_, allowed_uids_);
}

bool DeviceState::allocate_qp_num(uint32_t* qp_num, std::string* error) {
  std::lock_guard lock(mutex_);
  if (::getpid() != owner_pid_) {
    // The listener belongs to the parent; a forked child must open its own device.
    *error = "shm device inherited across fork(); open a new one in the child";
    return false;
  }
  if (!listener_.valid() && !start_listener_locked(error)) return false;
  for (int attempt = 0; attempt < 64; ++attempt) {
    const uint32_t candidate = random_nonzero(24);
    if (candidate == 0) break;
    if (qp_nums_.insert(candidate).second) {
      *qp_num = candidate;
      return true;
    }
  }
  *error = "cannot allocate a QP number";
  return false;
}

void DeviceState::release_qp_num(uint32_t qp_num) {
  std::lock_guard lock(mutex_);
  qp_nums_.erase(qp_num);
}

bool DeviceState::start_listener_locked(std::string* error) {
  UniqueFd sock(
      sys::move_fd_high(sys::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)));
  if (!sock.valid()) {
    *error = errno_text("rendezvous socket", errno);
    return false;
  }
  sockaddr_un addr;
  const socklen_t len = rendezvous_address(instance_id_, &addr);
  if (sys::bind(sock.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    *error = errno_text("rendezvous bind", errno);
    return false;
  }
  if (sys::listen(sock.get(), SOMAXCONN) != 0) {
    *error = errno_text("rendezvous listen", errno);
    return false;
  }
  listener_ = std::move(sock);
  SMC_LOG_DEBUG("shm: device {:016x} listening for rendezvous", instance_id_);
  return true;
}

void DeviceState::accept_locked(int64_t now) {
  for (;;) {
    UniqueFd sock(sys::move_fd_high(
        sys::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK)));
    if (!sock.valid()) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        SMC_LOG_WARN("shm: rendezvous accept failed: {}", std::strerror(errno));
      }
      return;
    }
    ucred cred{};
    socklen_t cred_len = sizeof cred;
    if (sys::getsockopt(sock.get(), SOL_SOCKET, SO_PEERCRED, &cred, &cred_len) != 0) {
      SMC_LOG_WARN("shm: rendezvous SO_PEERCRED failed: {}", std::strerror(errno));
      continue;
    }
    if (!uid_allowed(cred.uid)) {
      // Closed before anything is read: the fds its hello may carry die with the socket.
      const uint64_t n = ++counts_.refused_uid;
      last_refused_uid_ = cred.uid;
      last_refused_ns_ = now;
      if (log::thinned(n)) {
        SMC_LOG_WARN(
            "shm: rendezvous from pid {} uid {} refused: uid not allowed (SMCPRE_SHM_UIDS); "
            "{} refused so far",
            cred.pid, cred.uid, n);
      }
      continue;
    }
    const size_t held = static_cast<size_t>(
        std::count_if(pending_.begin(), pending_.end(),
                      [&](const PendingRendezvous& p) { return p.uid == cred.uid; }));
    if (held >= kMaxPendingPerUid || pending_.size() >= kMaxPending) evict_locked(cred.uid, held);
    PendingRendezvous p;
    p.sock = std::move(sock);
    p.uid = cred.uid;
    p.pid = cred.pid;
    p.accepted_ns = now;
    pending_.push_back(std::move(p));
  }
}

// Makes room for one more connection from `uid`, which holds `held`: its own oldest goes
// if it is at its cap, else the oldest of whichever uid holds the most.
void DeviceState::evict_locked(uint32_t uid, size_t held) {
  uint32_t victim_uid = uid;
  if (held < kMaxPendingPerUid) {
    std::unordered_map<uint32_t, size_t> per_uid;
    size_t most = 0;
    for (const PendingRendezvous& p : pending_) {
      const size_t count = ++per_uid[p.uid];
      if (count > most) {
        most = count;
        victim_uid = p.uid;
      }
    }
  }
  const auto it = std::find_if(pending_.begin(), pending_.end(),
                               [&](const PendingRendezvous& p) { return p.uid == victim_uid; });
  if (it == pending_.end()) return;
  const uint64_t n = ++counts_.evicted;
  if (log::thinned(n)) {
    SMC_LOG_WARN(
        "shm: too many rendezvous connections pending (uid {} holds the most; at most {} per "
        "uid, {} in all): dropping its oldest; {} dropped so far",
        victim_uid, kMaxPendingPerUid, kMaxPending, n);
  }
  if (it->have_hello) {
    recent_evictions_.push_back(Evicted{it->uid, it->hello.to_qp_num, it->hello.to_psn});
    if (recent_evictions_.size() > kMaxPending) recent_evictions_.pop_front();
  }
  pending_.erase(it);
}

// Why no hello for (qp_num, psn) arrived, where the listener knows more than "none came".
std::string DeviceState::refusal_locked(uint32_t qp_num, uint32_t psn, int64_t since_ns) const {
  for (const Evicted& e : recent_evictions_) {
    if (e.to_qp_num == qp_num && e.to_psn == psn) {
      return fmt::format(
          "rendezvous hello from uid {} dropped: too many pending rendezvous connections "
          "(rendezvous full)",
          e.uid);
    }
  }
  if (last_refused_ns_ >= since_ns && counts_.refused_uid > 0) {
    // The hello we waited for may have been one of them (it cannot be told before reading).
    return fmt::format(
        "no rendezvous hello from an allowed uid named this QP; peer credentials rejected "
        "(uid {}) at the rendezvous socket",
        last_refused_uid_);
  }
  return "no rendezvous hello naming this QP and PSN arrived (wrong nonce, or peer gone)";
}

RendezvousCounts DeviceState::rendezvous_counts() {
  std::lock_guard lock(mutex_);
  RendezvousCounts c = counts_;
  c.pending = pending_.size();
  return c;
}

void DeviceState::read_hellos_locked() {
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (it->have_hello) {
      ++it;
      continue;
    }
    ReceivedMsg m;
    std::string why;
    const RecvStatus status = recv_message(it->sock.get(), &m, &why);
    if (status == RecvStatus::kWouldBlock) {
      ++it;
      continue;
    }
    if (status == RecvStatus::kMessage && m.msg.header.type == uint16_t(MsgType::kHello)) {
      it->have_hello = true;
      it->hello = m.msg.endpoint;
      it->ring_fd = std::move(m.fds[0]);
      it->event_fd = std::move(m.fds[1]);
      ++it;
      continue;
    }
    if (status == RecvStatus::kMessage) why = "first message is not a hello";
    if (status == RecvStatus::kEof) why = "closed before its hello";
    // 1, 2, 4, 8...: a flood of garbage does not flood the log.
    const uint64_t n = ++counts_.dropped;
    if (log::thinned(n)) {
      SMC_LOG_WARN("shm: rendezvous connection from pid {} dropped: {}; {} dropped so far", it->pid,
                   why, n);
    }
    it = pending_.erase(it);
  }
}

void DeviceState::expire_locked(int64_t now) {
  std::erase_if(pending_, [&](const PendingRendezvous& p) {
    if (now - p.accepted_ns < pending_ttl_ns_) return false;
    ++counts_.expired;
    SMC_LOG_INFO("shm: rendezvous from pid {} for QP {:#x} never claimed; dropped", p.pid,
                 p.have_hello ? p.hello.to_qp_num : 0);
    return true;
  });
}

bool DeviceState::take_rendezvous(uint32_t qp_num, uint32_t psn, int64_t deadline_ns,
                                  PendingRendezvous* out, std::string* error) {
  std::vector<pollfd> watch;
  const int64_t started_ns = now_ns();
  for (;;) {
    watch.clear();
    {
      std::lock_guard lock(mutex_);
      if (!listener_.valid()) {
        *error = "shm device has no rendezvous listener";
        return false;
      }
      const int64_t now = now_ns();
      accept_locked(now);
      read_hellos_locked();
      expire_locked(now);
      for (auto it = pending_.begin(); it != pending_.end(); ++it) {
        if (it->have_hello && it->hello.to_qp_num == qp_num && it->hello.to_psn == psn) {
          *out = std::move(*it);
          pending_.erase(it);
          return true;
        }
      }
      watch.push_back(pollfd{listener_.get(), POLLIN, 0});
      for (const PendingRendezvous& p : pending_) {
        if (!p.have_hello) watch.push_back(pollfd{p.sock.get(), POLLIN, 0});
      }
    }
    const int left = ms_until(deadline_ns);
    if (left <= 0) {
      std::lock_guard lock(mutex_);
      *error = refusal_locked(qp_num, psn, started_ns);
      return false;
    }
    // Waits without the lock so that other QPs' connect calls proceed; fds that another
    // thread closes meanwhile only cause an early wakeup.
    sys::poll(watch.data(), watch.size(), std::min(left, kRendezvousSliceMs));
  }
}

// ---- PdState ----

void PdState::add_region(const AnnouncedRegion& region) {
  std::lock_guard lock(mutex_);
  regions_.push_back(region);
  for (ShmQp* qp : qps_) qp->announce_region(region, kAnnounceTimeoutMs);
}

void PdState::remove_region(uint32_t rkey) {
  std::lock_guard lock(mutex_);
  std::erase_if(regions_, [&](const AnnouncedRegion& r) { return r.rkey == rkey; });
}

bool PdState::attach(ShmQp* qp, std::string* error) {
  std::lock_guard lock(mutex_);
  for (const AnnouncedRegion& region : regions_) {
    if (!qp->announce_region(region, kAnnounceTimeoutMs)) {
      *error = "cannot announce memory regions to the peer";
      return false;
    }
  }
  qps_.push_back(qp);
  return true;
}

void PdState::detach(ShmQp* qp) {
  std::lock_guard lock(mutex_);
  std::erase(qps_, qp);
}

// ---- objects behind the public interface ----

namespace {

class ShmMemoryRegion final : public MemoryRegion {
 public:
  ShmMemoryRegion(std::shared_ptr<PdState> pd, std::unique_ptr<MemoryArena::Slice> memory,
                  size_t length, uint32_t lkey, uint32_t rkey)
      : pd_(std::move(pd)), memory_(std::move(memory)) {
    addr_ = memory_->addr();
    length_ = length;
    lkey_ = lkey;
    rkey_ = rkey;
  }
  ~ShmMemoryRegion() override {
    // Peers that mapped the region keep their mapping until their QP goes away; they
    // are never told, as with verbs, where a deregistered rkey simply stops working.
    pd_->remove_region(rkey_);
    release_key(lkey_);
    release_key(rkey_);
  }

  int fd() const { return memory_->fd(); }
  uint64_t offset() const { return memory_->offset(); }

 private:
  std::shared_ptr<PdState> pd_;
  std::unique_ptr<MemoryArena::Slice> memory_;
};

// Local-only memory (receive buffers): the receiving QP copies messages into it in this
// process, so nothing is shared or announced; the key only names the registration.
class ShmLocalRegion final : public MemoryRegion {
 public:
  ShmLocalRegion(void* addr, size_t length, uint32_t lkey) {
    addr_ = addr;
    length_ = length;
    lkey_ = lkey;
  }
  ~ShmLocalRegion() override { release_key(lkey_); }
};

class ShmProtectionDomain final : public ProtectionDomain {
 public:
  explicit ShmProtectionDomain(std::shared_ptr<DeviceState> device)
      : state_(std::make_shared<PdState>(std::move(device))), arena_(MemoryArena::create()) {}

  std::unique_ptr<MemoryRegion> register_memory(size_t length, std::string* error) override {
    if (length == 0 || length > kMaxRegionBytes) {
      *error = "memory region size out of range: " + std::to_string(length);
      return nullptr;
    }
    auto memory = arena_->allocate(length, error);
    if (!memory) return nullptr;
    const uint32_t lkey = allocate_key();
    const uint32_t rkey = lkey == 0 ? 0 : allocate_key();
    if (rkey == 0) {
      if (lkey != 0) release_key(lkey);
      *error = "cannot allocate memory keys";
      return nullptr;
    }
    auto mr = std::make_unique<ShmMemoryRegion>(state_, std::move(memory), length, lkey, rkey);
    state_->add_region(AnnouncedRegion{rkey, mr->remote_addr(), length, mr->fd(), mr->offset()});
    return mr;
  }

  std::unique_ptr<MemoryRegion> register_local(void* addr, size_t length,
                                               std::string* error) override {
    if (addr == nullptr || length == 0 || length > kMaxRegionBytes) {
      *error = "local memory region out of range: " + std::to_string(length) + " bytes";
      return nullptr;
    }
    const uint32_t lkey = allocate_key();
    if (lkey == 0) {
      *error = "cannot allocate a memory key";
      return nullptr;
    }
    return std::make_unique<ShmLocalRegion>(addr, length, lkey);
  }

  std::unique_ptr<QueuePair> create_qp(const QpConfig& config, std::string* error) override {
    return ShmQp::create(state_, config, error);
  }

 private:
  std::shared_ptr<PdState> state_;
  // RMBs and send buffers are slices of a few memfds, not a memfd each.
  std::shared_ptr<MemoryArena> arena_;
};

class ShmDevice final : public Device {
 public:
  explicit ShmDevice(std::shared_ptr<DeviceState> state) : state_(std::move(state)) {}

  std::string name() const override { return "shm"; }
  DeviceCaps caps() const override {
    return DeviceCaps{.kind = DeviceKind::kShm,
                      .reports_rnr = true,
                      .write_from_any_memory = !state_->staged_writes(),
                      .max_inline = 64,
                      .link_notices_peer_exit = true};
  }
  Gid gid() const override { return state_->gid(); }
  Mac mac() const override { return state_->mac(); }
  std::unique_ptr<ProtectionDomain> alloc_pd(std::string*) override {
    return std::make_unique<ShmProtectionDomain>(state_);
  }

 private:
  std::shared_ptr<DeviceState> state_;
};

}  // namespace
}  // namespace shm

void reset_devices_after_fork() {
  // The parent's regions are abandoned in the child, never released, so their keys need
  // not stay reserved: keys are unique within a PD, and the child's PDs are all new.
  new (&shm::g_keys_mutex) std::mutex();
  auto* fresh = new shm::KeyTable;
  fresh->abandoned = shm::g_key_table;
  shm::g_key_table = fresh;
}

std::unique_ptr<Device> open_shm_device(const ShmOptions& options, std::string* error) {
  auto state = shm::DeviceState::create(options, error);
  if (!state) return nullptr;
  SMC_LOG_DEBUG("shm: device {:016x} opened", state->instance_id());
  return std::make_unique<shm::ShmDevice>(std::move(state));
}

}  // namespace smcpre::rdma
