#include "core/engine_state.h"

#include <sys/random.h>

#include <algorithm>
#include <chrono>

#include "config/log.h"
#include "core/datapath/abandoned.h"
#include "core/connection.h"
#include "core/local_address.h"
#include "core/stats/segment.h"
#include "core/wire/decline.h"

namespace smcpre::core {
namespace {
std::atomic<EngineState*> g_state{nullptr};
std::atomic<uint64_t> g_generation{1};
std::atomic<uint64_t> g_forks{0};
std::mutex g_create_mutex;
}  // namespace

EngineState::EngineState(const config::Config& config) : config_(config) {}

EngineState* EngineState::get() {
  EngineState* state = g_state.load(std::memory_order_acquire);
  if (state) return state;
  const config::Config& config = config::current();
  if (!config.enabled) return nullptr;
  std::lock_guard lock(g_create_mutex);
  state = g_state.load(std::memory_order_acquire);
  if (!state) {
    state = new EngineState(config);  // lives as long as the process
    g_state.store(state, std::memory_order_release);
  }
  return state;
}

void EngineState::reset_after_fork() {
  // The parent's state (its threads, locks possibly held by threads that do not exist
  // here, its link groups) is abandoned, not destroyed: the child starts afresh and
  // leaves the parent's connections alone.
  keep_abandoned(g_state.exchange(nullptr, std::memory_order_acq_rel));
  new (&g_create_mutex) std::mutex();
  g_generation.fetch_add(1);
  note_fork();
}

EngineState* EngineState::get_if_created() {
  return g_state.load(std::memory_order_acquire);
}

uint64_t EngineState::generation() {
  return g_generation.load(std::memory_order_acquire);
}

uint64_t EngineState::forks() {
  return g_forks.load(std::memory_order_acquire);
}

void EngineState::note_fork() {
  g_forks.fetch_add(1, std::memory_order_acq_rel);
}

namespace {
std::atomic<bool> g_stage_shm_writes{false};
constexpr int64_t kPortListMaxAgeNs = 2'000'000'000;

uint32_t code(DeclineCode c) {
  return static_cast<uint32_t>(c);
}

bool peer_is_local(int fd) {
  sockaddr_storage peer{};
  socklen_t len = sizeof peer;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) != 0) return false;
  return is_local_address(normalized(reinterpret_cast<const sockaddr*>(&peer), len));
}
}  // namespace

void EngineState::stage_shm_writes_for_tests(bool staged) {
  g_stage_shm_writes.store(staged);
}

rdma::Device* EngineState::device_for(int fd, uint32_t* decline) {
  std::lock_guard lock(mutex_);
  switch (config_.device) {
    case config::DeviceChoice::kNone:
      SMC_LOG_DEBUG("no SMC device (SMCPRE_DEVICE=none)");
      *decline = code(DeclineCode::kNoSmcDev);
      return nullptr;
    case config::DeviceChoice::kShm:
      return shm_device_locked(decline);
    case config::DeviceChoice::kAuto:
      // A peer on this host is reached through shared memory, as kernel SMC prefers its
      // loopback device to RoCE for local peers.
      if (peer_is_local(fd)) return shm_device_locked(decline);
      return verbs_device_locked(fd, decline);
    case config::DeviceChoice::kVerbs:
      return verbs_device_locked(fd, decline);
  }
  *decline = code(DeclineCode::kNoSmcDev);
  return nullptr;
}

rdma::Device* EngineState::shm_device_locked(uint32_t* decline) {
  if (!shm_tried_) {
    shm_tried_ = true;
    rdma::ShmOptions options;
    options.allowed_uids = config_.shm_allowed_uids;
    options.any_uid = config_.shm_any_uid;
    options.handshake_timeout_ms = static_cast<int>(config_.handshake_timeout_ms);
    options.staged_writes = g_stage_shm_writes.load();
    std::string error;
    shm_ = rdma::open_shm_device(options, &error);
    if (shm_) {
      SMC_LOG_INFO("device shm opened");
      note_device_locked(*shm_);
    } else {
      SMC_LOG_WARN("no shm device: {}", error);
    }
  }
  if (!shm_) *decline = code(DeclineCode::kNoSmcDev);
  return shm_.get();
}

rdma::Device* EngineState::verbs_device_locked(int fd, uint32_t* decline) {
  *decline = code(DeclineCode::kNoSmcRDev);
  rdma::SocketRoute route;
  std::string why;
  if (!rdma::route_of_socket(fd, &route, &why)) {
    SMC_LOG_INFO("no route information for this connection ({}): no SMC-R", why);
    return nullptr;
  }
  const int64_t now = now_ns();
  if (ports_listed_ns_ == 0 || now - ports_listed_ns_ > kPortListMaxAgeNs) {
    std::string error;
    ports_ = rdma::list_ports(&error);
    ports_listed_ns_ = now;
    if (!error.empty()) SMC_LOG_WARN("cannot list RDMA devices: {}", error);
  }
  const auto choice =
      rdma::choose_port(ports_, route, config_.verbs_device, config_.verbs_port, &why);
  if (!choice) {
    SMC_LOG_INFO("no RDMA port for this connection: {}", why);
    return nullptr;
  }
  const std::string key =
      choice->device + ":" + std::to_string(choice->port) + ":" + std::to_string(choice->gid_index);
  auto it = verbs_.find(key);
  if (it == verbs_.end()) {
    std::string error;
    auto device = rdma::open_verbs_device(choice->device, choice->port,
                                          static_cast<int>(choice->gid_index), &error);
    if (!device) {
      SMC_LOG_WARN("cannot open RDMA device {} port {}: {}", choice->device, choice->port, error);
      ports_listed_ns_ = 0;  // look again next time: the port may have changed
      return nullptr;
    }
    SMC_LOG_INFO("device {} port {} (gid index {}) opened for {}", choice->device, choice->port,
                 choice->gid_index, route.ifname);
    note_device_locked(*device);
    it = verbs_.emplace(key, std::move(device)).first;
  }
  *decline = 0;
  return it->second.get();
}

void EngineState::note_device_locked(rdma::Device& device) {
  if (!first_mac_) first_mac_ = device.mac();
}

const std::array<uint8_t, 8>& EngineState::peer_id() {
  std::lock_guard lock(mutex_);
  if (!peer_id_set_) {
    // 2 random bytes + a MAC: identifies this system instance (RFC 7609).
    if (getrandom(peer_id_.data(), 2, 0) != 2) peer_id_[0] = peer_id_[1] = 0x5a;
    if (first_mac_) std::copy(first_mac_->begin(), first_mac_->end(), peer_id_.begin() + 2);
    peer_id_set_ = true;
  }
  return peer_id_;
}

std::shared_ptr<LinkGroup> EngineState::find_group(const PeerIdentity& peer, rdma::Role role,
                                                   rdma::Device* device,
                                                   std::optional<uint32_t> peer_qp_num,
                                                   bool include_pending) {
  std::lock_guard lock(mutex_);
  std::shared_ptr<LinkGroup> found;
  for (auto it = groups_.begin(); it != groups_.end();) {
    auto group = it->lock();
    if (!group || group->failed()) {
      it = groups_.erase(it);
      continue;
    }
    const bool usable = group->active() || (include_pending && !group->retired());
    if (!found && usable && group->role() == role && group->peer() == peer &&
        &group->device() == device && (!peer_qp_num || group->peer_qp_num() == *peer_qp_num)) {
      found = group;
    }
    ++it;
  }
  return found;
}

void EngineState::close_all_at_exit() {
  std::vector<std::shared_ptr<LinkGroup>> groups;
  {
    std::lock_guard lock(mutex_);
    for (auto& weak : groups_) {
      if (auto g = weak.lock()) groups.push_back(std::move(g));
    }
  }
  for (auto& g : groups) g->close_all_at_exit();
}

bool EngineState::begin_first_contact(const PeerIdentity& peer, rdma::Device* device,
                                      int64_t deadline_ns) {
  std::unique_lock lock(mutex_);
  const auto key = std::make_pair(peer, device);
  const auto deadline =
      std::chrono::steady_clock::time_point(std::chrono::nanoseconds(deadline_ns));
  while (std::find(first_contacts_.begin(), first_contacts_.end(), key) != first_contacts_.end()) {
    if (first_contact_done_.wait_until(lock, deadline) == std::cv_status::timeout) return false;
  }
  first_contacts_.push_back(key);
  return true;
}

void EngineState::end_first_contact(const PeerIdentity& peer, rdma::Device* device) {
  std::vector<std::function<void()>> woken;
  {
    std::lock_guard lock(mutex_);
    const auto key = std::make_pair(peer, device);
    auto it = std::find(first_contacts_.begin(), first_contacts_.end(), key);
    if (it != first_contacts_.end()) first_contacts_.erase(it);
    for (auto w = turn_waiters_.begin(); w != turn_waiters_.end();) {
      if (w->key == key) {
        woken.push_back(std::move(w->on_free));
        w = turn_waiters_.erase(w);
      } else {
        ++w;
      }
    }
  }
  first_contact_done_.notify_all();
  for (auto& on_free : woken) on_free();
}

bool EngineState::try_first_contact(const PeerIdentity& peer, rdma::Device* device,
                                    std::function<void()> on_free) {
  std::lock_guard lock(mutex_);
  const auto key = std::make_pair(peer, device);
  if (std::find(first_contacts_.begin(), first_contacts_.end(), key) == first_contacts_.end()) {
    first_contacts_.push_back(key);
    return true;
  }
  turn_waiters_.push_back({key, std::move(on_free)});
  return false;
}

size_t EngineState::live_group_count() {
  std::lock_guard lock(mutex_);
  size_t count = 0;
  for (auto& weak : groups_) {
    if (auto group = weak.lock(); group && !group->failed()) ++count;
  }
  return count;
}

void EngineState::add_group(std::shared_ptr<LinkGroup> group) {
  std::lock_guard lock(mutex_);
  groups_.push_back(group);
}

}  // namespace smcpre::core
