// A link group: the RDMA relationship with one peer process (RFC 7609 "LGR"). It owns the
// protection domain, the link, the table of connections by alert token, and a pool of
// RMBs that later connections between the same pair reuse.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "config/config.h"
#include "config/fd_budget.h"
#include "core/datapath/link.h"
#include "core/wire/cdc.h"
#include "core/wire/llc.h"
#include "rdma/device.h"

namespace smcpre::core {

struct PeerIdentity {
  std::array<uint8_t, 8> peer_id{};
  rdma::Gid gid{};
  rdma::Mac mac{};
  bool operator==(const PeerIdentity&) const = default;
};

// What the first contact's CLC handshake settled for a link group.
struct GroupTerms {
  // The LLC version: 2 in an SMC-Rv2 group, as Linux speaks there.
  llc::Version llc_version = llc::Version::kV1;
  // SMC-Rv2 release 1: the agreed connections and links per group, which CONFIRM LINK
  // repeats (0 connections: not negotiated, no limit but the group's own).
  uint8_t max_conns = 0;
  uint8_t max_links = 1;
};

class LinkGroup final : public LinkOwner, public std::enable_shared_from_this<LinkGroup> {
 public:
  // Creates the protection domain, the queue pair and its receive buffers; the link is
  // connected later by connect().
  static std::shared_ptr<LinkGroup> create(rdma::Device& device, rdma::Role role,
                                           const PeerIdentity& peer, const config::Config& config,
                                           const GroupTerms& terms, std::string* error);
  ~LinkGroup();

  rdma::Role role() const { return role_; }
  rdma::Device& device() { return *device_; }
  const PeerIdentity& peer() const { return peer_; }
  Link& link() { return *link_; }
  uint32_t peer_qp_num() const { return peer_qp_num_; }
  rdma::QpEndpoint local_endpoint() const { return link_->qp().local_endpoint(); }

  // INIT -> RTR -> RTS towards the peer. Then the link is the progress thread's to watch
  // (ProgressThread::add_link).
  bool connect(const rdma::QpEndpoint& remote, int timeout_ms, std::string* error);
  // First contact completed (CONFIRM LINK exchanged): later connections may reuse it.
  void set_active();
  bool active() const {
    return active_.load(std::memory_order_acquire) && !retired_.load(std::memory_order_acquire) &&
           !link_->failed();
  }

  // Housekeeping, called by the progress thread about once a second:
  // - keepalive: after keepalive_ms with nothing received, a TEST LINK; if nothing at all
  //   comes back within as long again, the peer is taken for gone and the link goes down;
  // - linger: a group without connections for linger_ms (the client waits 10 s longer,
  //   so the server normally ends it) is retired and its link deleted with DELETE LINK.
  void maintain(int64_t now_ns, const config::Config& config);
  bool failed() const { return link_->failed(); }
  bool retired() const { return retired_.load(std::memory_order_acquire) || link_->failed(); }

  // Connections by alert token (the token is ours: CDCs addressed to us carry it).
  // add_connection gives the connection its token (0: the group takes no more).
  uint32_t add_connection(const std::shared_ptr<ConnectionEvents>& connection);
  void remove_connection(uint32_t token);
  std::shared_ptr<ConnectionEvents> find_connection(uint32_t token) override;
  size_t connection_count();
  // Connections still open both ways (neither end has closed or aborted them): those a
  // link failure resets.
  size_t open_connection_count();

  // Registered buffers (RMBs and send buffers): registered once, reused by later
  // connections of this group, deregistered only with the group. A buffer the peer might
  // still write into (or our HCA still read from) is given back with a quarantine and is
  // not handed out again before it ends: a late RDMA WRITE must neither hit a deregistered
  // key (that would take the whole link down) nor another connection's data.
  std::unique_ptr<rdma::MemoryRegion> take_buffer(uint32_t size, std::string* error);
  void give_back_buffer(std::unique_ptr<rdma::MemoryRegion> buffer, bool quarantine);

  // The link went down (LinkOwner): each connection is told after its queued messages
  // (`may_run_here`: see Reaper).
  void on_link_down(const char* why, bool may_run_here) override;
  void close_all_at_exit();
  llc::ConfirmLink make_confirm_link(bool response) const override;

  uint32_t id() const { return id_; }
  // The descriptors of the link (its queue pair's) and of its first memory area,
  // reserved before the group was created: config/fd_budget.h.
  void hold_fds(config::FdReservation fds) { fds_ = std::move(fds); }

 private:
  LinkGroup(rdma::Role role, const PeerIdentity& peer);

  const rdma::Role role_;
  const PeerIdentity peer_;
  uint32_t id_ = 0;
  rdma::Device* device_ = nullptr;
  std::unique_ptr<rdma::ProtectionDomain> pd_;
  GroupTerms terms_;
  // Version 2: where receives longer than a pool buffer continue (LinkLlc), and its
  // registration. Declared before link_, whose queue pair writes into it.
  std::unique_ptr<uint8_t[]> overflow_;
  std::unique_ptr<rdma::MemoryRegion> overflow_region_;
  std::unique_ptr<Link> link_;
  uint32_t peer_qp_num_ = 0;
  std::atomic<bool> active_{false};
  config::FdReservation fds_;
  std::atomic<bool> retired_{false};  // under table_mutex_ when set: no connection joins
  // maintain()'s bookkeeping (progress thread only).
  uint64_t seen_recvs_ = 0;
  int64_t last_receipt_ns_ = 0;
  int64_t test_sent_ns_ = 0;
  int64_t idle_since_ns_ = 0;
  int64_t delete_sent_ns_ = 0;

  std::mutex table_mutex_;
  std::vector<std::shared_ptr<ConnectionEvents>> connections_;  // index = (token & 0xffff) - 1
  std::vector<uint16_t> token_generation_;
  size_t live_connections_ = 0;

  struct FreeBuffer {
    std::unique_ptr<rdma::MemoryRegion> buffer;
    int64_t reusable_at_ns = 0;
  };
  std::mutex buffer_mutex_;
  std::vector<FreeBuffer> free_buffers_;
};

}  // namespace smcpre::core
