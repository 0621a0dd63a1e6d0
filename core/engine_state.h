// Process-wide engine state: the configuration, the device (opened on first need), our
// SMC identity, and the link groups by peer. Replaced wholesale in a fork child.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "config/config.h"
#include "core/link_group.h"
#include "rdma/device.h"

namespace smcpre::core {

class EngineState {
 public:
  explicit EngineState(const config::Config& config);

  // nullptr when smcpre is disabled for this process.
  static EngineState* get();
  static EngineState* get_if_created();
  static void reset_after_fork();
  static uint64_t generation();

  const config::Config& config() const { return config_; }

  // The device for SMC (opened once). nullptr if none: *decline gets the reason code.
  rdma::Device* device(uint32_t* decline);
  const std::array<uint8_t, 8>& peer_id();

  // An active link group to `peer` (server side: by the client's identity; client
  // side: also by the server's QP number from CLC Accept).
  std::shared_ptr<LinkGroup> find_group(const PeerIdentity& peer, rdma::Role role,
                                        std::optional<uint32_t> peer_qp_num);
  void add_group(std::shared_ptr<LinkGroup> group);
  // Process exit: every connection still open is closed the way the kernel would.
  void close_all_at_exit();

 private:
  const config::Config& config_;
  std::mutex mutex_;
  bool device_tried_ = false;
  uint32_t device_decline_ = 0;
  std::unique_ptr<rdma::Device> device_;
  std::array<uint8_t, 8> peer_id_{};
  bool peer_id_set_ = false;
  std::vector<std::weak_ptr<LinkGroup>> groups_;
};

}  // namespace smcpre::core
