#include "core/stats/connection_counters.h"

#include <time.h>

#include <new>

namespace smcpre::core {

std::shared_ptr<ConnectionStats> ConnectionStats::open(int fd, Role role) {
  stats::ConnectionSlot* slot = stats::acquire_connection_slot();
  // A failed allocation leaves the connection unlisted; it works just the same.
  std::shared_ptr<ConnectionStats> s(new (std::nothrow) ConnectionStats(slot));
  if (!s) {
    stats::release_connection_slot(slot);
    return nullptr;
  }
  sockaddr_storage local{};
  sockaddr_storage peer{};
  socklen_t length = sizeof local;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length) != 0) local = {};
  length = sizeof peer;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &length) != 0) peer = {};
  stats::set_address(slot->local_family_port, slot->local_addr_hi, slot->local_addr_lo, local);
  stats::set_address(slot->peer_family_port, slot->peer_addr_hi, slot->peer_addr_lo, peer);
  stats::set(slot->role, role == Role::kServer ? 1 : 0);
  timespec now{};
  clock_gettime(CLOCK_REALTIME, &now);
  stats::set(slot->opened_realtime_ns,
             static_cast<uint64_t>(now.tv_sec) * 1000000000u + static_cast<uint64_t>(now.tv_nsec));
  stats::set(slot->state, stats::kConnHandshake);
  return s;
}

ConnectionStats::~ConnectionStats() {
  stats::release_connection_slot(slot_);
}

void ConnectionStats::on_smc(bool verbs_device, bool rnr_counted, uint64_t link_group,
                             uint32_t local_token) {
  stats::set(slot_->path, verbs_device ? stats::kPathSmcVerbs : stats::kPathSmcShm);
  stats::set(slot_->rnr_counted, rnr_counted ? 1 : 0);
  stats::set(slot_->link_group, link_group);
  stats::set(slot_->local_token, local_token);
  stats::set(slot_->state, stats::kConnActive);
  if (!counted_) stats::add(stats::segment().process.connections_smc);
  counted_ = true;
}

void ConnectionStats::on_fallback(uint32_t reason) {
  stats::set(slot_->path, stats::kPathTcp);
  stats::set(slot_->reason, reason);
  stats::set(slot_->state, stats::kConnActive);
  if (!counted_) stats::count_fallback(reason);
  counted_ = true;
}

}  // namespace smcpre::core
