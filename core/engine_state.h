// Process-wide engine state: the configuration, the device (opened on first need), our
// SMC identity, and the link groups by peer. Replaced wholesale in a fork child.
#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"
#include "core/datapath/link_group.h"
#include "rdma/device.h"
#include "rdma/port_select.h"

namespace smcpre::core {

class EngineState {
 public:
  explicit EngineState(const config::Config& config);

  // nullptr when smcpre is disabled for this process.
  static EngineState* get();
  static EngineState* get_if_created();
  // In a fork child (core/process_objects.h): the parent's state is abandoned.
  static void reset_after_fork();
  // Changes in the child at every fork: objects of an older generation are the parent's.
  static uint64_t generation();
  // Counts the fork() calls this process made or came from (parent and child both count),
  // so that an object can tell whether another process may hold a copy of its socket.
  static uint64_t forks();
  static void note_fork();

  const config::Config& config() const { return config_; }

  // The device for the connected TCP socket `fd`, per SMCPRE_DEVICE:
  //   auto            shm when the peer is on this host, else as `verbs`
  //   shm             the shm device
  //   verbs           the RoCE port whose netdev carries the connection's route
  //   <ibdev>[:port]  that device (and port)
  // Devices are opened once and kept. nullptr if none fits: *decline gets the reason.
  rdma::Device* device_for(int fd, uint32_t* decline);
  const std::array<uint8_t, 8>& peer_id();

  // An active link group to `peer` on `device` (server side: by the client's identity;
  // client side: also by the server's QP number from CLC Accept).
  // With include_pending, a group whose first contact is still under way counts too (the
  // caller then waits for it to turn active).
  std::shared_ptr<LinkGroup> find_group(const PeerIdentity& peer, rdma::Role role,
                                        rdma::Device* device, std::optional<uint32_t> peer_qp_num,
                                        bool include_pending = false);

  // At most one first contact (a new link group) per peer and device at a time, as Linux
  // serializes them: a server handshake that finds no group waits here for one under
  // way, then looks again. False if it is still under way at the deadline (the caller
  // then makes a group of its own). end_first_contact() must follow a true return.
  bool begin_first_contact(const PeerIdentity& peer, rdma::Device* device, int64_t deadline_ns);
  void end_first_contact(const PeerIdentity& peer, rdma::Device* device);
  // The form that never waits: takes the turn if it is free (true), else keeps `on_free`
  // and calls it, on the thread that ends the turn and with no lock held, when it ends.
  bool try_first_contact(const PeerIdentity& peer, rdma::Device* device,
                         std::function<void()> on_free);
  void add_group(std::shared_ptr<LinkGroup> group);
  // Link groups whose link is up.
  size_t live_group_count();
  // Process exit: every connection still open is closed the way the kernel would.
  void close_all_at_exit();

  // Tests: open the shm device with ShmOptions::staged_writes, so the engine takes the
  // send-buffer path a verbs device needs. Call before the first connection.
  static void stage_shm_writes_for_tests(bool staged);

 private:
  const config::Config& config_;
  rdma::Device* shm_device_locked(uint32_t* decline);
  rdma::Device* verbs_device_locked(int fd, uint32_t* decline);
  void note_device_locked(rdma::Device& device);

  std::mutex mutex_;
  bool shm_tried_ = false;
  std::unique_ptr<rdma::Device> shm_;
  // Verbs devices by "<ibdev>:<port>:<gid index>", and the port list they were chosen
  // from (looked up again when older than kPortListMaxAgeNs: ports go up and down).
  std::map<std::string, std::unique_ptr<rdma::Device>> verbs_;
  std::vector<rdma::PortInfo> ports_;
  int64_t ports_listed_ns_ = 0;
  std::optional<rdma::Mac> first_mac_;
  std::array<uint8_t, 8> peer_id_{};
  bool peer_id_set_ = false;
  std::vector<std::weak_ptr<LinkGroup>> groups_;
  std::condition_variable first_contact_done_;
  std::vector<std::pair<PeerIdentity, rdma::Device*>> first_contacts_;
  struct TurnWaiter {
    std::pair<PeerIdentity, rdma::Device*> key;
    std::function<void()> on_free;
  };
  std::vector<TurnWaiter> turn_waiters_;  // under mutex_
};

}  // namespace smcpre::core
