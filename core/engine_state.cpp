#include "core/engine_state.h"

#include <sys/random.h>

#include "config/log.h"
#include "core/decline.h"
#include "core/progress.h"

namespace smcpre::core {
namespace {
std::atomic<EngineState*> g_state{nullptr};
std::atomic<uint64_t> g_generation{1};
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
  g_state.store(nullptr, std::memory_order_release);
  new (&g_create_mutex) std::mutex();
  g_generation.fetch_add(1);
  reset_progress_thread_after_fork();
}

EngineState* EngineState::get_if_created() {
  return g_state.load(std::memory_order_acquire);
}

uint64_t EngineState::generation() {
  return g_generation.load(std::memory_order_acquire);
}

rdma::Device* EngineState::device(uint32_t* decline) {
  std::lock_guard lock(mutex_);
  if (!device_tried_) {
    device_tried_ = true;
    std::string error;
    switch (config_.device) {
      case config::DeviceChoice::kNone:
        device_decline_ = static_cast<uint32_t>(DeclineCode::kNoSmcDev);
        SMC_LOG_INFO("no SMC device (SMCPRE_DEVICE=none)");
        break;
      case config::DeviceChoice::kVerbs:
        device_ = rdma::open_verbs_device(config_.verbs_device, config_.verbs_port, -1, &error);
        break;
      case config::DeviceChoice::kAuto:
      case config::DeviceChoice::kShm: {
        rdma::ShmOptions options;
        options.allowed_uids = config_.shm_allowed_uids;
        device_ = rdma::open_shm_device(options, &error);
        break;
      }
    }
    if (!device_ && device_decline_ == 0) {
      device_decline_ = static_cast<uint32_t>(DeclineCode::kNoSmcRDev);
      SMC_LOG_WARN("no SMC device: {}", error);
    } else if (device_) {
      SMC_LOG_INFO("device {} opened", device_->name());
    }
  }
  if (!device_) *decline = device_decline_;
  return device_.get();
}

const std::array<uint8_t, 8>& EngineState::peer_id() {
  std::lock_guard lock(mutex_);
  if (!peer_id_set_) {
    // 2 random bytes + a MAC: identifies this system instance (RFC 7609).
    if (getrandom(peer_id_.data(), 2, 0) != 2) peer_id_[0] = peer_id_[1] = 0x5a;
    if (device_) {
      const rdma::Mac mac = device_->mac();
      std::copy(mac.begin(), mac.end(), peer_id_.begin() + 2);
    }
    peer_id_set_ = true;
  }
  return peer_id_;
}

std::shared_ptr<LinkGroup> EngineState::find_group(const PeerIdentity& peer, rdma::Role role,
                                                   std::optional<uint32_t> peer_qp_num) {
  std::lock_guard lock(mutex_);
  std::shared_ptr<LinkGroup> found;
  for (auto it = groups_.begin(); it != groups_.end();) {
    auto group = it->lock();
    if (!group || group->failed()) {
      it = groups_.erase(it);
      continue;
    }
    if (!found && group->active() && group->role() == role && group->peer() == peer &&
        (!peer_qp_num || group->peer_qp_num() == *peer_qp_num)) {
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

void EngineState::add_group(std::shared_ptr<LinkGroup> group) {
  std::lock_guard lock(mutex_);
  groups_.push_back(group);
}

}  // namespace smcpre::core
