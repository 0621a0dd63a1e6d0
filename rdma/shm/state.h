// The shm device's process-wide state, implemented in rdma/shm/device.cpp: the device
// (identity, rendezvous listener and its table of pending client connections) and
// protection domains (memory regions, and the QPs to which new regions are announced).
// The queue pair is in rdma/shm/qp.h; both include this, neither the other.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <unordered_set>
#include <vector>

#include "rdma/device.h"
#include "rdma/shm/memory.h"
#include "rdma/shm/wire.h"

namespace smcpre::rdma::shm {

class ShmQp;

// The uid check both ends of a rendezvous apply to SO_PEERCRED: our own uid, root (who
// can read our memory anyway), or one listed in ShmOptions::allowed_uids.
bool peer_uid_allowed(uint32_t uid, uint32_t own_uid, std::span<const uint32_t> allowed);

// GID layout: fe80:0000:0000:0000 followed by the device's 64-bit instance id.
Gid gid_for_instance(uint64_t instance_id);
// False if `gid` is not an shm device GID.
bool instance_from_gid(const Gid& gid, uint64_t* instance_id);

// Bounds on what strangers can make a server hold at its rendezvous socket (an abstract
// UNIX socket any local user can connect to). A connection from a uid that may not
// attach is closed at once, before its hello (and the fds in it) is read. Each allowed
// uid may hold kMaxPendingPerUid connections, all together kMaxPending: beyond that the
// oldest of the uid that holds the most goes, so that a flooding uid evicts its own
// connections, not other users' genuine ones.
constexpr size_t kMaxPendingPerUid = 16;
constexpr size_t kMaxPending = 256;

// What the rendezvous listener refused so far (for tests and logs).
struct RendezvousCounts {
  size_t pending = 0;        // connections held now
  uint64_t refused_uid = 0;  // closed at accept: uid not allowed
  uint64_t evicted = 0;      // dropped for a newer one: a cap was reached
  uint64_t expired = 0;      // never claimed within the handshake timeout
  uint64_t dropped = 0;      // closed or sent something else before a hello
};

// A client connection the listener accepted, with its hello once it has arrived.
struct PendingRendezvous {
  UniqueFd sock;
  uint32_t uid = 0;
  int32_t pid = 0;
  int64_t accepted_ns = 0;
  bool have_hello = false;
  EndpointMsg hello{};
  UniqueFd ring_fd;
  UniqueFd event_fd;
};

// State shared by the device object, its PDs and QPs (whichever the engine destroys
// last keeps it alive).
class DeviceState {
 public:
  static std::shared_ptr<DeviceState> create(const ShmOptions& options, std::string* error);
  ~DeviceState();

  uint64_t instance_id() const { return instance_id_; }
  const Gid& gid() const { return gid_; }
  const Mac& mac() const { return mac_; }
  bool uid_allowed(uint32_t uid) const;
  bool staged_writes() const { return staged_writes_; }

  // A QP number unique among this device's live QPs. The first call also starts the
  // rendezvous listener.
  bool allocate_qp_num(uint32_t* qp_num, std::string* error);
  void release_qp_num(uint32_t qp_num);

  // Server side of the rendezvous: waits (until deadline_ns) for the client connection
  // whose hello names this QP (qp_num, psn). Accepts and reads hellos for other QPs
  // meanwhile, keeping them for their own connect call.
  bool take_rendezvous(uint32_t qp_num, uint32_t psn, int64_t deadline_ns, PendingRendezvous* out,
                       std::string* error);

  RendezvousCounts rendezvous_counts();

 private:
  // A hello dropped for a newer one, remembered so that the server QP it named can say
  // why it failed.
  struct Evicted {
    uint32_t uid = 0;
    uint32_t to_qp_num = 0;
    uint32_t to_psn = 0;
  };

  DeviceState() = default;
  bool start_listener_locked(std::string* error);
  void accept_locked(int64_t now);
  void read_hellos_locked();
  void expire_locked(int64_t now);
  void evict_locked(uint32_t uid, size_t held);
  std::string refusal_locked(uint32_t qp_num, uint32_t psn, int64_t since_ns) const;

  uint64_t instance_id_ = 0;
  Gid gid_{};
  Mac mac_{};
  uint32_t own_uid_ = 0;
  pid_t owner_pid_ = 0;
  std::vector<uint32_t> allowed_uids_;
  bool any_uid_ = false;
  bool staged_writes_ = false;
  int64_t pending_ttl_ns_ = 0;

  std::mutex mutex_;
  UniqueFd listener_;
  std::vector<PendingRendezvous> pending_;
  std::unordered_set<uint32_t> qp_nums_;
  RendezvousCounts counts_;
  uint32_t last_refused_uid_ = 0;
  int64_t last_refused_ns_ = 0;
  std::deque<Evicted> recent_evictions_;  // the last kMaxPending
};

// A region as announced to the QPs of its PD.
struct AnnouncedRegion {
  uint32_t rkey = 0;
  uint64_t addr = 0;
  uint64_t length = 0;
  int fd = -1;          // the memfd holding it (owned by the region's arena chunk)
  uint64_t offset = 0;  // where it starts in that memfd (page-aligned)
};

// A protection domain's regions and connected QPs. Regions are exposed to QPs of their
// own PD only: a QP that connects gets every region registered so far, and a region
// registered later is sent to every connected QP at once.
class PdState {
 public:
  explicit PdState(std::shared_ptr<DeviceState> device) : device_(std::move(device)) {}

  const std::shared_ptr<DeviceState>& device() const { return device_; }

  void add_region(const AnnouncedRegion& region);
  void remove_region(uint32_t rkey);
  // Announces the current regions to `qp`, then keeps it informed of new ones.
  bool attach(ShmQp* qp, std::string* error);
  void detach(ShmQp* qp);

 private:
  std::shared_ptr<DeviceState> device_;
  std::mutex mutex_;
  std::vector<AnnouncedRegion> regions_;
  std::vector<ShmQp*> qps_;
};

}  // namespace smcpre::rdma::shm
